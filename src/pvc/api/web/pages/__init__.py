"""The UI's pages, one module per area of the navigation (pvc.api.web.nav).

A module holds the area's routes (pages, their `/events/...` live streams, their POST actions),
all on a router made by `guard.ui_router()`; its templates are `pvc/web/templates/<area>/`
(fragments `_*.html`); its tests `tests/integration/test_ui_<area>.py` (routes, no browser) and
`tests/ui/test_<area>.py` (Chromium). ROUTERS lists them in the order they are mounted.
"""

from __future__ import annotations

from fastapi import APIRouter

from pvc.api.web.pages import (
    auth,
    console,
    dashboard,
    faults,
    networks,
    networks_rules,
    nodes,
    placeholder,
    provisioner,
    provisioner_jobs,
    provisioner_templates,
    storage,
    storage_volumes,
    tasks,
    vm_config,
    vms,
)


def routers() -> list[APIRouter]:
    return [auth.router, auth.private, dashboard.router, faults.router, nodes.router, console.router,
            console.sockets, vms.router, vm_config.router, tasks.router, networks.router,
            networks_rules.router, storage.router,
            storage_volumes.router, provisioner.router, provisioner_templates.router,
            provisioner_jobs.router, placeholder.router()]
