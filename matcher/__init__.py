"""matcher: find re-uploads of intimate images shared without consent, from hashes alone.

The public surface is what ``__all__`` lists (pinned by ``tests/test_public_api.py``);
everything else is private and may change. This facade holds what every caller needs: hash
values and signal types, the domain values of an enrollment and a match, and the exception
tree. The heavier parts are their own packages: ``matcher.hashing`` (client-side hashing),
``matcher.client`` (the SDK), ``matcher.scan`` (batch scanning), ``matcher.bank`` and
``matcher.store`` (the service's domain and its store).

>>> import matcher
>>> item = matcher.NewItem([matcher.Hash.parse("md5:" + "0" * 32)], label="photo 1")
>>> item.kind
<ItemKind.IMAGE: 'image'>
"""

from typing import TYPE_CHECKING

from matcher.errors import (
    Allowlisted,
    Conflict,
    CorruptImage,
    ImageError,
    ImageTooLarge,
    InvalidDistance,
    InvalidHash,
    InvalidInput,
    LowQuality,
    MatcherError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnsupportedImage,
)
from matcher.signals import MD5, PDQ, PHASH, SHA256, SIGNALS, Hash, SignalType, signal_type

if TYPE_CHECKING:
    from matcher.records import (
        CaseState,
        CaseStatus,
        EnrollResult,
        ItemKind,
        ItemMatch,
        ItemState,
        ItemStatus,
        NewItem,
        Query,
        QueryResult,
    )

__version__ = "0.1.0"

# The domain values come from matcher.records, which imports numpy: loaded on first use, so
# that `import matcher` (which every `matcher` command does) stays cheap and the CLI can set
# OPENBLAS_NUM_THREADS before numpy starts its threads.
_RECORDS = frozenset(
    {
        "CaseState",
        "CaseStatus",
        "EnrollResult",
        "ItemKind",
        "ItemMatch",
        "ItemState",
        "ItemStatus",
        "NewItem",
        "Query",
        "QueryResult",
    }
)


def __getattr__(name: str) -> object:
    if name in _RECORDS:
        from matcher import records

        return getattr(records, name)
    raise AttributeError(f"module 'matcher' has no attribute {name!r}")


__all__ = [
    "MD5",
    "PDQ",
    "PHASH",
    "SHA256",
    "SIGNALS",
    "Allowlisted",
    "CaseState",
    "CaseStatus",
    "Conflict",
    "CorruptImage",
    "EnrollResult",
    "Hash",
    "ImageError",
    "ImageTooLarge",
    "InvalidDistance",
    "InvalidHash",
    "InvalidInput",
    "ItemKind",
    "ItemMatch",
    "ItemState",
    "ItemStatus",
    "LowQuality",
    "MatcherError",
    "NewItem",
    "NotFound",
    "PermissionDenied",
    "Query",
    "QueryResult",
    "RateLimited",
    "SignalType",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedImage",
    "__version__",
    "signal_type",
]
