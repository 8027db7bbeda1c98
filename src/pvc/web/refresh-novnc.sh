#!/bin/sh
# Refresh the vendored noVNC (static/vendor/novnc/) from the npm registry (package @novnc/novnc):
# its ES modules (core/, vendor/pako/), its licences and a VERSION note with the registry's
# integrity and our own SHA-256 of every file shipped.
#
#   src/pvc/web/refresh-novnc.sh [VERSION]      (default: the newest 1.x release)
#
# npm checks the tarball against the registry's integrity before unpacking. The console page
# imports core/rfb.js as an ES module from our own origin (the CSP allows only 'self'); read the
# release notes before a new major version, run tests/ui/test_console*.py and commit the directory.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/static/vendor/novnc"
version="${1:-}"
if [ -z "$version" ]; then
    version="$(npm view '@novnc/novnc@1' version --json | tr -d '[]" \n' | tr ',' '\n' | sort -V | tail -1)"
fi
case "$version" in
    ''|*[!0-9.]*) echo "refresh-novnc: not a release version: '$version'" >&2; exit 1 ;;
esac
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@novnc/novnc@$version" >/dev/null)
tar -xzf "$work/novnc-novnc-$version.tgz" -C "$work"
integrity="$(npm view "@novnc/novnc@$version" dist.integrity)"
rm -rf "$dest/core" "$dest/vendor" "$dest/docs"
mkdir -p "$dest/docs"
cp -r "$work/package/core" "$work/package/vendor" "$dest/"
install -m 0644 "$work/package/LICENSE.txt" "$dest/LICENSE.txt"
for f in "$work"/package/docs/LICENSE*; do install -m 0644 "$f" "$dest/docs/"; done
sums="$(cd "$dest" && find core vendor -type f -name '*.js' | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
cat > "$dest/VERSION" <<END
@novnc/novnc $version (npm registry, package @novnc/novnc, directories core/ and vendor/pako/)
npm integrity: $integrity
sha256 of the sorted sha256sum list of core/**/*.js and vendor/**/*.js: $sums
licence: LICENSE.txt (noVNC: MPL-2.0; pako: MIT), the licence texts in docs/
refreshed: $(date -u +%Y-%m-%d) by src/pvc/web/refresh-novnc.sh
END
echo "noVNC $version -> $dest"
