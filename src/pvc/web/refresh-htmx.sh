#!/bin/sh
# Refresh the vendored htmx (static/vendor/htmx/) from the npm registry: the minified build, its
# licence and a VERSION note with the registry's integrity and our own SHA-256 of the file.
#
#   src/pvc/web/refresh-htmx.sh [VERSION]      (default: the newest 2.x release)
#
# npm checks the tarball against the registry's integrity before unpacking. Read the release notes
# before moving to a new major version: the UI sets htmx's config in templates/base.html (no eval,
# no inline styles, same-origin requests only) and relies on 2.x attribute behaviour. Then run
# tests/ui and commit the three files together.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/static/vendor/htmx"
version="${1:-}"
if [ -z "$version" ]; then
    version="$(npm view 'htmx.org@2' version --json | tr -d '[]" \n' | tr ',' '\n' | sort -V | tail -1)"
fi
case "$version" in
    ''|*[!0-9.]*) echo "refresh-htmx: not a release version: '$version'" >&2; exit 1 ;;
esac
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$version" >/dev/null)
tar -xzf "$work/htmx.org-$version.tgz" -C "$work"
integrity="$(npm view "htmx.org@$version" dist.integrity)"
install -m 0644 "$work/package/dist/htmx.min.js" "$dest/htmx.min.js"
install -m 0644 "$work/package/LICENSE" "$dest/LICENSE"
sha="$(sha256sum "$dest/htmx.min.js" | cut -d' ' -f1)"
cat > "$dest/VERSION" <<EOF
htmx.org $version (npm registry, package htmx.org, file dist/htmx.min.js)
npm integrity: $integrity
sha256 of htmx.min.js: $sha
licence: LICENSE (Zero-Clause BSD, from the same package)
refreshed: $(date -u +%Y-%m-%d) by src/pvc/web/refresh-htmx.sh
EOF
echo "htmx $version -> $dest (sha256 $sha)"
