"""Compatibility names for health plugins written for upstream PVC's pvchealthd
(`pvchealthd.objects.MonitoringInstance`), and the process that runs them (`pvchealthd.host`).

Upstream's plugin files, and operators' own, run unchanged: pvc.node.health hands each one to
the host, which runs it in a process of its own with a timeout."""
