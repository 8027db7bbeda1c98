"""lbvt: libvirtd answers on this node's configured URI (`hypervisor.libvirt_uri`; upstream
checks the local libvirtd). Refuses when the hypervisor subsystem is off or the libvirt Python
binding is missing. Delta 50 when libvirtd does not answer."""

from __future__ import annotations

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "lbvt"


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not self.config.get("enable_hypervisor", True):
            return "the hypervisor subsystem is off on this node"
        try:
            import libvirt  # noqa: F401
        except ImportError:
            return "the libvirt Python binding is not installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        import libvirt

        uri = str(self.config.get("libvirt_uri") or "qemu:///system")
        libvirt.registerErrorHandler(lambda *_: None, None)     # errors come back as exceptions
        try:
            conn = libvirt.openReadOnly(uri)
            try:
                version = conn.getLibVersion()
                domains = conn.numOfDomains()
            finally:
                conn.close()
        except libvirt.libvirtError as exc:
            self.plugin_result.set_health_delta(50)
            self.plugin_result.set_message(f"libvirtd at {uri} does not answer: {exc}")
            return self.plugin_result
        text = f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"
        self.plugin_result.set_health_delta(0)
        self.plugin_result.set_message(f"libvirtd {text} answers ({domains} running domain(s))")
        self.plugin_result.set_data({"version": text, "running_domains": domains})
        return self.plugin_result
