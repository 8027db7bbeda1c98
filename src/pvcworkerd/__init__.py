"""Compatibility name for provisioner scripts of newer upstream PVC (`pvcworkerd.Daemon.config`)."""
