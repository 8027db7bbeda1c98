"""The web UI's templates and static files (DESIGN D17), served by pvcapid (pvc.api.web).

No Python logic lives here: only where the files are. Templates are Jinja2, rendered with
autoescape always on; static files are the UI's CSS, its small script and vendored htmx.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
