"""One exception tree for the whole project.

Catch at whatever level fits: ``MatcherError`` catches everything of ours; the middle classes
catch a family. No module here imports a transport (gRPC, HTTP): the service maps these classes
to status codes in one table, the CLI turns them into one-line messages.

Messages name the bad field or value kind, never a hash value: hashes are sensitive, and error
text ends up in logs.

    MatcherError
     +-- InvalidInput (also a ValueError)
     |    +-- InvalidHash          bad hex, wrong length, unknown signal type
     |    +-- LowQuality           a PDQ hash below the quality floor
     |    +-- InvalidDistance      a match distance above the signal's maximum
     +-- ImageError               a file that gives no image hash
     |    +-- UnsupportedImage     not an image format we can read
     |    +-- CorruptImage         truncated or damaged
     |    +-- ImageTooLarge        over the decompression-bomb pixel limit
     +-- NotFound                 a case or key that does not exist
     +-- Unauthenticated          no credential, or one we do not know (or revoked)
     +-- PermissionDenied         the caller may not do this
     +-- RateLimited              over a rate limit; retry after ``retry_after`` seconds
     +-- Conflict                 the state does not allow this (e.g. case withdrawn)
     +-- Unavailable              not ready yet (index loading), or shutting down
"""

from __future__ import annotations

__all__ = [
    "Allowlisted",
    "Conflict",
    "CorruptImage",
    "ImageError",
    "ImageTooLarge",
    "InvalidDistance",
    "InvalidHash",
    "InvalidInput",
    "LowQuality",
    "MatcherError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedImage",
]


class MatcherError(Exception):
    """The base of every error this project raises on purpose."""


class InvalidInput(MatcherError, ValueError):
    """A value from outside (wire, CLI, file) is malformed.

    ``field`` names where the bad value sits (e.g. ``queries[3].hashes[0].value``) so the
    service can report it as a field violation.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.reason = message

    def at(self, field: str) -> InvalidInput:
        """Return a copy of this error located at ``field`` (prefixing any inner field)."""
        inner = f"{field}.{self.field}" if self.field else field
        return type(self)(self.reason, field=inner)


class InvalidHash(InvalidInput):
    """A hash that cannot be parsed: unknown signal type, wrong length or bad hex."""


class LowQuality(InvalidInput):
    """A hash whose quality score is below its signal type's floor."""


class InvalidDistance(InvalidInput):
    """A requested match distance outside what the signal type allows."""


class ImageError(MatcherError):
    """A file could not be turned into image hashes."""

    kind = "error"


class UnsupportedImage(ImageError):
    """The file is not in an image format we can decode."""

    kind = "unsupported"


class CorruptImage(ImageError):
    """The file looks like an image but is truncated or damaged."""

    kind = "corrupt"


class ImageTooLarge(ImageError):
    """The image declares more pixels than the configured limit (decompression-bomb guard)."""

    kind = "too_large"


class NotFound(MatcherError):
    """The thing asked for does not exist (or the caller may not know that it does)."""


class Unauthenticated(MatcherError):
    """The caller gave no credential, or one that is unknown, wrong or revoked."""


class PermissionDenied(MatcherError):
    """The caller is known but may not do this."""


class RateLimited(MatcherError):
    """The caller is over a rate limit; ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(MatcherError):
    """The request is well formed but the current state does not allow it."""


class Allowlisted(Conflict):
    """An enrollment was refused: a picture of it looks like one on the allowlist (a widely
    shared or featureless picture, ``matcher.bank.allowlist``). ``field`` names the item
    (``items[2]``); the message never says which allowlist entry it resembles, nor how close.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.reason = message
        self.field = field

    def at(self, field: str) -> Allowlisted:
        """Return a copy located at ``field`` (prefixing any inner field)."""
        inner = f"{field}.{self.field}" if self.field else field
        return type(self)(self.reason, field=inner)


class Unavailable(MatcherError):
    """The service cannot answer now (index still loading, shutting down); retry later."""
