"""pvc: the command-line client of a PVC cluster; it talks to the cluster only over HTTP API v1."""
