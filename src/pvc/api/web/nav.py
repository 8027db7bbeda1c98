"""The UI's navigation: one list, in the order the bar shows it.

A page that is not built yet (`built=False`) is served by pages/placeholder.py as a plain
"not yet" page, so no link is ever broken. Building one: add `pages/<key>.py` with its router
(see pages/nodes.py), list it in pages/__init__.py, and set `built=True` here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NavItem:
    key: str          # the `active` key pages pass to render.page
    label: str
    path: str
    built: bool
    about: str        # what the page is for (the "not yet" page says it)


NAV: tuple[NavItem, ...] = (
    NavItem("dashboard", "Dashboard", "/", True, "Cluster health, faults, nodes, VMs and running tasks."),
    NavItem("nodes", "Nodes", "/nodes", True, "Nodes, their states, flush/ready and primary hand-over."),
    NavItem("vms", "VMs", "/vms", True, "Every VM with search and filters; start, stop, migrate; consoles."),
    NavItem("storage", "Storage", "/storage", True, "Ceph status, OSDs, pools, volumes and snapshots."),
    NavItem("networks", "Networks", "/networks", True, "Networks, DHCP leases and reservations, ACLs."),
    NavItem("provisioner", "Provisioner", "/provisioner", True,
            "Templates, userdata, scripts, profiles and OVAs; create VMs from a profile."),
    NavItem("tasks", "Tasks", "/tasks", True, "Tasks queued and run by the workers: follow and cancel."),
)
