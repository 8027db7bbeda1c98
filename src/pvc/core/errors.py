"""Errors shared by every layer; the API maps them to HTTP status codes."""


class PVCError(Exception):
    """Base class; `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PVCError):
    """The request itself is wrong (bad value, missing field); nothing was changed."""

    status = 400


class NotFound(PVCError):
    status = 404


class Conflict(PVCError):
    """The request is valid but the cluster's current state does not allow it."""

    status = 400


class PreconditionFailed(PVCError):
    """An edit named the version it was based on (If-Match) and the object changed since."""

    status = 412


class ClusterUnavailable(PVCError):
    """ZooKeeper could not be reached; the outcome of a write may be unknown."""

    status = 503


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""
