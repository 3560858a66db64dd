"""The registry of signal types and the ``Hash`` value object.

Every other module asks this one what a signal type is: its bit length, how far apart two hashes
may be and still match, its quality floor, and how its text form is parsed. Adding a signal type
means adding one line to ``_TYPES``.

>>> h = Hash.parse("phash:" + "f" * 16)
>>> h.signal.name, h.signal.bits
('phash', 64)
>>> h - Hash.parse("phash:" + "f" * 15 + "0")
4
>>> Hash.parse(str(h)) == h
True
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from matcher.errors import InvalidDistance, InvalidHash, LowQuality

__all__ = [
    "MD5",
    "PDQ",
    "PHASH",
    "SHA256",
    "SIGNALS",
    "Hash",
    "SignalType",
    "signal_type",
]

_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class SignalType:
    """One kind of hash.

    ``default_distance`` is what a match uses when the caller asks for nothing else;
    ``max_distance`` is the most any caller may ask for (the index is built to be exact up to
    it). Exact signals (file digests) match only at distance 0. ``quality_floor`` is the lowest
    quality score accepted for enrollment, or ``None`` where the signal has no quality.
    """

    name: str
    bits: int
    default_distance: int
    max_distance: int
    quality_floor: int | None
    description: str

    @property
    def exact(self) -> bool:
        """True for cryptographic digests, which only ever match themselves."""
        return self.max_distance == 0

    @property
    def hex_length(self) -> int:
        """Number of hex digits in the text form."""
        return self.bits // 4

    @property
    def byte_length(self) -> int:
        """Number of bytes in the binary form."""
        return self.bits // 8

    def parse_hex(self, text: str, *, field: str = "") -> bytes:
        """Parse this signal's hex text into bytes, or raise ``InvalidHash`` naming the problem.

        The message says what is wrong (length, characters) but never repeats the value.
        """
        text = text.strip()
        if len(text) != self.hex_length:
            raise InvalidHash(
                f"{self.name} hash must have {self.hex_length} hex digits, got {len(text)}",
                field=field,
            )
        if not _HEX.issuperset(text):
            raise InvalidHash(f"{self.name} hash contains non-hex characters", field=field)
        return bytes.fromhex(text)

    def check_distance(self, distance: int | None, *, field: str = "") -> int:
        """Return the distance to use for a request that asked for ``distance`` (None: default)."""
        if distance is None:
            return self.default_distance
        if not 0 <= distance <= self.max_distance:
            raise InvalidDistance(
                f"{self.name} match distance must be between 0 and {self.max_distance}, "
                f"got {distance}",
                field=field,
            )
        return distance

    def check_quality(self, quality: int | None, *, field: str = "") -> None:
        """Refuse a hash whose quality is below this signal's floor (``LowQuality``)."""
        if self.quality_floor is None or quality is None:
            return
        if not 0 <= quality <= 100:
            raise LowQuality(f"{self.name} quality must be 0-100, got {quality}", field=field)
        if quality < self.quality_floor:
            raise LowQuality(
                f"{self.name} quality {quality} is below the floor of {self.quality_floor}: "
                "the image is too flat or too small to hash reliably",
                field=field,
            )

    def meets_floor(self, quality: int | None) -> bool:
        """The one quality rule: may a hash of this quality be enrolled (and trusted as a
        query view)? True where the signal has no floor; False for an unknown quality where
        it has one (a flat, collision-prone hash cannot be told from a good one).

        >>> PDQ.meets_floor(50), PDQ.meets_floor(49), PDQ.meets_floor(None), MD5.meets_floor(None)
        (True, False, False, True)
        """
        if self.quality_floor is None:
            return True
        return quality is not None and quality >= self.quality_floor

    def check_enrollable(self, quality: int | None, *, field: str = "") -> None:
        """Refuse (``LowQuality``) a hash that ``meets_floor`` rejects, saying why."""
        if self.quality_floor is not None and quality is None:
            raise LowQuality(
                f"{self.name} hash needs its quality score (0-100) to be enrolled", field=field
            )
        self.check_quality(quality, field=field)


# PDQ at 31 of 256 bits is Meta's published match threshold (used by HMA and StopNCII), and its
# quality floor of 50 is Meta's recommendation below which hashes of flat images collide.
# pHash (64 bits) has no published standard; 8 bits keeps distractor collisions rare on the
# look-alike clothing set while catching re-encodes; callers may go up to 10.
PDQ = SignalType("pdq", 256, 31, 31, 50, "PDQ perceptual hash (Meta), 256 bits")
PHASH = SignalType("phash", 64, 8, 10, None, "DCT perceptual hash (imagehash), 64 bits")
MD5 = SignalType("md5", 128, 0, 0, None, "MD5 of the file bytes (exact)")
SHA256 = SignalType("sha256", 256, 0, 0, None, "SHA-256 of the file bytes (exact)")

_TYPES = [PDQ, PHASH, MD5, SHA256]


def _build_registry(types: list[SignalType]) -> dict[str, SignalType]:
    registry: dict[str, SignalType] = {}
    for t in types:
        if t.name in registry:
            raise ValueError(f"signal type {t.name!r} is registered twice")
        if t.bits % 8:
            raise ValueError(f"signal type {t.name!r} has a bit length that is not whole bytes")
        registry[t.name] = t
    return registry


SIGNALS: dict[str, SignalType] = _build_registry(_TYPES)
"""Every known signal type, by name."""


def signal_type(name: str, *, field: str = "") -> SignalType:
    """Look up a signal type by name (case-insensitive), or raise ``InvalidHash``."""
    try:
        return SIGNALS[name.strip().lower()]
    except KeyError:
        known = ", ".join(SIGNALS)
        raise InvalidHash(f"unknown signal type {name!r} (known: {known})", field=field) from None


@dataclass(frozen=True, slots=True)
class Hash:
    """A hash value of one signal type.

    ``a - b`` is the Hamming distance; ``str(h)`` is ``"<signal>:<hex>"`` and
    ``Hash.parse(str(h)) == h``. ``quality`` (PDQ's 0-100 score) travels with the hash but is not
    part of its identity. ``repr`` hides the value so that a hash printed into a log by mistake
    does not leak it.
    """

    signal: SignalType
    value: bytes
    quality: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.value) != self.signal.byte_length:
            raise InvalidHash(
                f"{self.signal.name} hash must be {self.signal.byte_length} bytes, "
                f"got {len(self.value)}"
            )

    @classmethod
    def from_hex(
        cls, signal: SignalType | str, text: str, *, quality: int | None = None, field: str = ""
    ) -> Hash:
        """Build a hash from a signal type (or its name) and hex text."""
        st = signal_type(signal, field=field) if isinstance(signal, str) else signal
        return cls(st, st.parse_hex(text, field=field), quality)

    @classmethod
    def parse(cls, text: str, *, field: str = "") -> Hash:
        """Parse the text form ``"<signal>:<hex>"``."""
        name, sep, hex_text = text.partition(":")
        if not sep:
            raise InvalidHash("hash text must look like '<signal>:<hex>'", field=field)
        return cls.from_hex(name, hex_text, field=field)

    @property
    def hex(self) -> str:
        """The value as lowercase hex."""
        return self.value.hex()

    def __str__(self) -> str:
        return f"{self.signal.name}:{self.value.hex()}"

    def __repr__(self) -> str:
        return f"Hash({self.signal.name}, <{self.signal.bits} bits>)"

    def __sub__(self, other: object) -> int:
        if not isinstance(other, Hash):
            return NotImplemented
        if other.signal != self.signal:
            raise TypeError(
                f"cannot compare a {self.signal.name} hash with a {other.signal.name} hash"
            )
        xor = int.from_bytes(self.value, "big") ^ int.from_bytes(other.value, "big")
        return xor.bit_count()
