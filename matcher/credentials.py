"""The bank's small cryptography: case numbers, secrets, API keys, item ids and fingerprints.

Nothing here touches storage. What is stored is always a derived value: a withdrawal secret is
kept only as an scrypt hash (it may be typed by a person, so it gets a slow KDF), an API key
only as its SHA-256 (it is 160 random bits, so a fast hash cannot be brute-forced and keeps
per-call authentication cheap).

Text forms use Crockford's base32 (no I, L, O, U), so a person can read a case number or secret
over the phone; parsing forgives case, dashes, spaces and the look-alike letters.

>>> normalise("7kq2 m9xd-4fj8") == normalise("7KQ2-M9XD-4FJ8")
True
>>> ids = MatchIds(b"k" * 32)
>>> ids.decode(ids.encode(42))
42
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from matcher.errors import NotFound
from matcher.signals import Hash

__all__ = [
    "MatchIds",
    "hash_api_key",
    "hash_secret",
    "item_fingerprint",
    "new_api_key",
    "new_case_number",
    "new_secret",
    "normalise",
    "normalise_case_number",
    "verify_secret",
    "verify_secret_absent",
]

_HEX = frozenset("0123456789abcdefABCDEF")
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FORGIVE = str.maketrans({"I": "1", "L": "1", "O": "0", "-": None, " ": None})

# scrypt at n=2**14, r=8 costs ~16 MiB and some tens of milliseconds: cheap for one withdrawal,
# expensive for a guessing attack on a stolen database. The parameters are stored with each hash
# so that they can be raised later without invalidating existing secrets.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def _random_base32(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _group(text: str, size: int) -> str:
    return "-".join(text[i : i + size] for i in range(0, len(text), size))


def normalise(text: str) -> str:
    """Canonical form of a typed case number or secret: upper case, no separators."""
    return text.strip().upper().translate(_FORGIVE)


def normalise_case_number(text: str) -> str:
    """The stored form of a typed case number (``7kq2m9xd4fj8`` -> ``7KQ2-M9XD-4FJ8``)."""
    return _group(normalise(text), 4)


def new_case_number() -> str:
    """A fresh case number such as ``7KQ2-M9XD-4FJ8`` (60 random bits; not a secret)."""
    return _group(_random_base32(12), 4)


def new_secret() -> str:
    """A fresh withdrawal secret such as ``ABCDE-FGHJK-MNPQR-STVWX`` (100 random bits)."""
    return _group(_random_base32(20), 5)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        normalise(secret).encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def hash_secret(secret: str) -> str:
    """The stored form of a withdrawal secret: ``scrypt$n$r$p$salt$hash`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches the stored hash; the final comparison is constant-time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


@functools.cache
def _absent() -> str:
    # Made on first use, not at import: one scrypt run (~80 ms) would otherwise land on every
    # command that imports this module (`matcher keys` among them).
    return hash_secret(new_secret())


def verify_secret_absent(secret: str) -> bool:
    """Spend the same time as ``verify_secret`` for a case that does not exist; always False.

    Without this, a fast "no such case" would tell a guesser which case numbers exist.
    """
    verify_secret(secret, _absent())
    return False


def new_api_key() -> str:
    """A fresh API key: ``mk_`` and 32 base32 characters (160 random bits), shown once."""
    return "mk_" + _random_base32(32)


def hash_api_key(key: str) -> bytes:
    """The stored form of an API key (SHA-256; see the module docstring for why not a KDF)."""
    return hashlib.sha256(key.strip().encode()).digest()


def item_fingerprint(key: bytes, hashes: Iterable[Hash]) -> bytes:
    """An item's identity within its case: HMAC-SHA256 under the store's key of its sorted set
    of (signal, value), so the same image enrolled twice (a retried call) is recognised.

    Keyed, so the stored fingerprint tells nothing about the values without the key; the order
    of the hashes, repeats and qualities do not change it.

    >>> from matcher.signals import Hash
    >>> a, b = Hash.parse("phash:" + "a5" * 8), Hash.parse("md5:" + "0" * 32)
    >>> item_fingerprint(b"k" * 32, [a, b, a]) == item_fingerprint(b"k" * 32, [b, a])
    True
    """
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name, value in sorted({(h.signal.name, h.value) for h in hashes}):
        # Length-prefixed parts: no two different sets can give the same byte stream.
        part = name.encode() + b"\0" + value
        mac.update(len(part).to_bytes(4, "big") + part)
    return mac.digest()


class MatchIds:
    """Opaque, stable item ids for partners: a keyed permutation of the store's item ids.

    Partners must not learn item ids (they reveal enrollment order and bank size), yet an id
    must map back to its item for feedback without a lookup table of random tokens. A
    four-round Feistel network over 64 bits with keyed BLAKE2b as its round function is a
    pseudo-random permutation (Luby-Rackoff): ids look random, never collide, and decode with
    the key. The key lives in the store, so every replica gives the same ids.
    """

    _ROUNDS = 4
    _PREFIX = "m_"
    _MAX_ID = 2**63 - 1  # store ids are int64

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("match id key must be at least 16 bytes")
        self._key = key[:64]

    def _f(self, round_: int, half: int) -> int:
        data = bytes([round_]) + half.to_bytes(4, "big")
        return int.from_bytes(hashlib.blake2b(data, key=self._key, digest_size=4).digest(), "big")

    def _permute(self, value: int, rounds: range) -> int:
        left, right = value >> 32, value & 0xFFFFFFFF
        for i in rounds:
            left, right = right, left ^ self._f(i, right)
        return (left << 32) | right

    def encode(self, item_id: int) -> str:
        """The partner-facing id of item ``item_id``."""
        return f"{self._PREFIX}{self._permute(item_id, range(self._ROUNDS)):016x}"

    def decode(self, text: str) -> int:
        """The item id behind ``text``; ``NotFound`` for anything that is not an id we made.

        Not ``InvalidInput``: to a partner, a malformed id and an id of a withdrawn item are
        alike (there is nothing to report on), and no value ever overflows the store's int64.
        """
        body = text.strip().removeprefix(self._PREFIX)
        if body == text.strip() or len(body) != 16 or not _HEX.issuperset(body):
            raise NotFound("no such match")
        value = int(body, 16)
        # Decoding runs the rounds backwards: swap the halves, apply the same rounds in reverse
        # order, and swap back.
        left, right = value >> 32, value & 0xFFFFFFFF
        for i in reversed(range(self._ROUNDS)):
            left, right = right ^ self._f(i, left), left
        item_id = (left << 32) | right
        if not 0 < item_id <= self._MAX_ID:
            raise NotFound("no such match")
        return item_id
