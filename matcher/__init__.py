"""matcher: find re-uploads of intimate images shared without consent, from hashes alone.

The public surface is what ``__all__`` lists; everything else is private and may change.
"""

from matcher.errors import (
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
    Unauthenticated,
    Unavailable,
    UnsupportedImage,
)
from matcher.signals import MD5, PDQ, PHASH, SHA256, SIGNALS, Hash, SignalType, signal_type

__version__ = "0.1.0"

__all__ = [
    "MD5",
    "PDQ",
    "PHASH",
    "SHA256",
    "SIGNALS",
    "Conflict",
    "CorruptImage",
    "Hash",
    "ImageError",
    "ImageTooLarge",
    "InvalidDistance",
    "InvalidHash",
    "InvalidInput",
    "LowQuality",
    "MatcherError",
    "NotFound",
    "PermissionDenied",
    "SignalType",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedImage",
    "__version__",
    "signal_type",
]
