"""PVC: a hyperconverged virtualization cluster manager."""

__version__ = "1.0.3"
