"""The bank's small cryptography: case numbers, withdrawal secrets, API keys, opaque match ids.

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
import hashlib
import hmac
import secrets

from matcher.errors import InvalidInput

__all__ = [
    "MatchIds",
    "hash_api_key",
    "hash_secret",
    "new_api_key",
    "new_case_number",
    "new_secret",
    "normalise",
    "normalise_case_number",
    "verify_secret",
    "verify_secret_absent",
]

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


_ABSENT = hash_secret(new_secret())


def verify_secret_absent(secret: str) -> bool:
    """Spend the same time as ``verify_secret`` for a case that does not exist; always False.

    Without this, a fast "no such case" would tell a guesser which case numbers exist.
    """
    verify_secret(secret, _ABSENT)
    return False


def new_api_key() -> str:
    """A fresh API key: ``mk_`` and 32 base32 characters (160 random bits), shown once."""
    return "mk_" + _random_base32(32)


def hash_api_key(key: str) -> bytes:
    """The stored form of an API key (SHA-256; see the module docstring for why not a KDF)."""
    return hashlib.sha256(key.strip().encode()).digest()


class MatchIds:
    """Opaque, stable match ids: a keyed permutation of the store's hash row ids.

    Partners must not learn row ids (they reveal enrollment order and bank size), yet a match
    id must map back to its row for feedback without a lookup table of 10 million random
    tokens. A four-round Feistel network over 64 bits with keyed BLAKE2b as its round function
    is a pseudo-random permutation (Luby-Rackoff): ids look random, never collide, and decode
    with the key. The key lives in the store, so every replica gives the same ids.
    """

    _ROUNDS = 4
    _PREFIX = "m_"

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

    def encode(self, row_id: int) -> str:
        """The match id of hash row ``row_id``."""
        return f"{self._PREFIX}{self._permute(row_id, range(self._ROUNDS)):016x}"

    def decode(self, match_id: str) -> int:
        """The hash row id behind ``match_id``, or ``InvalidInput`` when it is malformed."""
        text = match_id.strip()
        body = text.removeprefix(self._PREFIX)
        if body == text or len(body) != 16:
            raise InvalidInput("match id is malformed", field="match_id")
        try:
            value = int(body, 16)
        except ValueError:
            raise InvalidInput("match id is malformed", field="match_id") from None
        # Decoding runs the rounds backwards: swap the halves, apply the same rounds in reverse
        # order, and swap back.
        left, right = value >> 32, value & 0xFFFFFFFF
        for i in reversed(range(self._ROUNDS)):
            left, right = right ^ self._f(i, left), left
        return (left << 32) | right
