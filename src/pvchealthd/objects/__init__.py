"""Upstream's `pvchealthd.objects` package: only MonitoringInstance is provided."""
