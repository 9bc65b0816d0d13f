"""One exception hierarchy. Each error carries the HTTP status it implies and,
where there is one, a hint that tells the operator how to fix it."""

from __future__ import annotations


class PkgdepotError(Exception):
    """Base of every error pkgdepot raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(PkgdepotError):
    """The configuration file or a command-line option is invalid."""

    status = 500


class BadRequest(PkgdepotError):
    """The client's request is malformed or hostile (traversal, NUL, bad Range)."""

    status = 400


class Unauthorized(PkgdepotError):
    """The admin API was called without a bearer token."""

    status = 401


class Forbidden(PkgdepotError):
    """The request is well-formed but not allowed (open proxy, private upstream)."""

    status = 403


class NotFound(PkgdepotError):
    """No such repository or file."""

    status = 404


class MethodNotAllowed(PkgdepotError):
    """Only GET and HEAD (and CONNECT to allowed hosts) are served."""

    status = 405


class RangeNotSatisfiable(PkgdepotError):
    """The Range header asks for bytes the file does not have."""

    status = 416


class UpstreamError(PkgdepotError):
    """Every upstream failed (connection refused, reset, 5xx, bad body)."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """Upstream did not answer in time."""

    status = 504


class VerificationError(PkgdepotError):
    """A file does not match the size or hash that a signed index vouches for,
    or a signature does not verify. Such a file is never kept."""

    status = 502


class StoreError(PkgdepotError):
    """The data directory is unusable (permissions, damaged catalog, disk full)."""

    status = 503


class FormatError(PkgdepotError):
    """Repository metadata could not be parsed."""

    status = 502
