"""Encryption at rest, for every backend: hash values and the store's secret key are sealed
with AES-256-GCM under a key kept outside the database.

Why: perceptual hashes can be inverted into rough pictures (Hawkes et al. 2024), so a copied
database file, WAL or backup must not hold a single hash value. What is sealed:

- **an item's codes**, as one blob per item (``seal_item`` / ``open_item``): the item is the
  unit of enrollment and of withdrawal, so one authenticated blob per item costs one AES-GCM
  call per ~230 hashes; a row per hash would cost one call per hash (10M hashes: ~15 s of
  calls alone, measured here), the per-item layout ~0.1 s. The item id is the associated data:
  a blob moved to another item's row does not open.
- **the store's secret key** (the key of match ids and item fingerprints,
  ``seal_secret`` / ``open_secret``): it stays in the database, so every replica shares it,
  but only wrapped.

What is not sealed (and a copied data folder therefore shows): case numbers, dates, counts,
item labels, organisation and key names, API-key and victim-secret hashes (scrypt/HMAC, not
reversible), the audit trail. None of these is a hash value.

The key: a **keyring** of 32-byte keys, each with a small integer id; the first is the
current one (new blobs), the others only open older blobs and backups. Where it comes from
(``load_keyring``), first match wins:

1. the environment variable ``MATCHER_STORE_KEY`` (the keyring text itself), for secret
   stores that inject variables; a key file is then not read, nor written;
2. the file ``key_file`` (``--key-file``, or ``MATCHER_KEY_FILE``);
3. the default file beside the data folder: ``<folder>.key`` (``./matcher-data.key`` for
   ``./matcher-data``), *outside* the folder, so a copy of the folder (or of a backup) is not
   also a copy of its key.

A key file is made with mode 0600 when a new store is created; an existing store whose key
cannot be found is refused (``Unavailable``), never given a new key. Keyring text: one key a
line, ``<id>:<base64 of 32 bytes>``, current first; ``#`` starts a comment. (Commas also
separate keys, for a one-line environment variable.)

Blob format: ``0x01 | key id (4 bytes, big-endian) | nonce (12 random bytes) | ciphertext+tag``.
Nonces are random, not derived from ids: a restored backup reuses item ids that were given
after it was taken, and a counter nonce would then repeat under the same key.

The plaintext of an item (``pack_item``): a header of ``(signal name, count)`` per signal type,
then for each signal its positions (uint16), qualities (int16, -1 for none) and values,
each section contiguous so ``open_item`` unpacks it with a few numpy views, no per-hash loop.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matcher.errors import Unavailable
from matcher.signals import SIGNALS, Hash

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "ItemCipher",
    "Keyring",
    "OpenedItem",
    "default_key_file",
    "load_keyring",
    "pack_item",
    "write_keyring",
]

KEY_ENV = "MATCHER_STORE_KEY"
"""Environment variable holding the keyring text itself (wins over any key file)."""

KEY_FILE_ENV = "MATCHER_KEY_FILE"
"""Environment variable naming the key file (``--key-file`` sets the same)."""

_FORMAT = 1
_HEADER = struct.Struct(">BI")  # format, key id
_NONCE = 12
_KEY_BYTES = 32


def default_key_file(data_dir: str | os.PathLike[str]) -> Path:
    """The key file beside (not inside) a data folder: ``<folder>.key``.

    >>> default_key_file("/srv/matcher-data")
    PosixPath('/srv/matcher-data.key')
    """
    folder = Path(os.path.abspath(data_dir))
    return folder.with_name(folder.name + ".key")


@dataclass(frozen=True)
class Keyring:
    """Store keys by id; ``current`` seals, every key opens.

    >>> ring = Keyring.generate()
    >>> Keyring.parse(ring.text()) == ring
    True
    >>> ring.rotated().current != ring.current
    True
    """

    keys: Mapping[int, bytes]
    current: int
    source: str = field(default="", compare=False)
    """Where it was read from (a file path, or the environment variable's name)."""

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring of one fresh random key (id 1)."""
        return cls({1: os.urandom(_KEY_BYTES)}, 1)

    def rotated(self, *, keep_old: bool = True) -> Keyring:
        """A new random key made current; the old ones kept (to open older blobs and
        backups) unless ``keep_old`` is False."""
        new_id = max(self.keys) + 1
        keys = {new_id: os.urandom(_KEY_BYTES)}
        if keep_old:
            keys.update(self.keys)
        return Keyring(keys, new_id, self.source)

    def only_current(self) -> Keyring:
        """The current key alone (after a rotation, once nothing needs the old keys)."""
        return Keyring({self.current: self.keys[self.current]}, self.current, self.source)

    def text(self) -> str:
        """The keyring as key-file text (current key first)."""
        order = [self.current, *sorted(k for k in self.keys if k != self.current)]
        lines = [f"{k}:{base64.b64encode(self.keys[k]).decode()}" for k in order]
        return (
            "# matcher store keys: keep secret, keep a copy apart from backups\n"
            + "\n".join(lines)
            + "\n"
        )

    @classmethod
    def parse(cls, text: str, source: str = "") -> Keyring:
        """Read keyring text; ``Unavailable`` naming ``source`` if it is malformed."""
        keys: dict[int, bytes] = {}
        order: list[int] = []
        pieces = [p for raw in text.splitlines() for p in raw.split("#", 1)[0].split(",")]
        for piece in pieces:
            line = piece.strip()
            if not line:
                continue
            ident, sep, material = line.partition(":")
            try:
                if not sep or not ident.isdigit():
                    raise ValueError
                key = base64.b64decode(material.strip(), validate=True)
            except (ValueError, binascii.Error):
                raise Unavailable(
                    f"the store key in {source or 'the keyring'} is malformed "
                    "(expected lines of <id>:<base64 of 32 bytes>)"
                ) from None
            if len(key) != _KEY_BYTES or int(ident) in keys:
                raise Unavailable(
                    f"the store key in {source or 'the keyring'} is malformed "
                    f"(each key is 32 bytes with its own id)"
                )
            keys[int(ident)] = key
            order.append(int(ident))
        if not keys:
            raise Unavailable(f"no store key in {source or 'the keyring'}")
        return cls(keys, order[0], source)


def write_keyring(path: str | os.PathLike[str], ring: Keyring) -> None:
    """Write ``ring`` to ``path`` atomically (a temporary file renamed over it), mode 0600,
    fsynced with its folder: after a crash the file is the old keyring or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ring.text().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_keyring(
    key_file: str | os.PathLike[str] | None,
    *,
    create: bool,
    environ: Mapping[str, str] | None = None,
) -> Keyring:
    """The store keyring: ``MATCHER_STORE_KEY`` if set, else ``key_file`` (see the module
    docstring for the order). A missing file is made with a new key when ``create`` (a new
    store), else ``Unavailable`` naming the file."""
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        return Keyring.parse(env[KEY_ENV], KEY_ENV)
    if key_file is None:
        raise Unavailable(f"no store key: set {KEY_ENV} or give a key file")
    path = Path(key_file)
    try:
        return Keyring.parse(path.read_text(), str(path))
    except FileNotFoundError:
        if not create:
            raise Unavailable(
                f"the store key file {path} is missing: this data folder's hash values cannot "
                f"be read without it (give --key-file, {KEY_FILE_ENV} or {KEY_ENV})"
            ) from None
    except OSError as exc:
        raise Unavailable(f"cannot read the store key file {path}: {exc.strerror}") from None
    ring = Keyring(Keyring.generate().keys, 1, str(path))
    try:
        write_keyring(path, ring)
    except OSError as exc:
        raise Unavailable(f"cannot create the store key file {path}: {exc.strerror}") from None
    return ring


@dataclass(frozen=True, slots=True)
class OpenedItem:
    """An opened item's codes per signal type: positions (uint16) and codes (n x width)."""

    signals: dict[str, tuple[np.ndarray, np.ndarray]]


def pack_item(hashes: Sequence[Hash]) -> bytes:
    """The plaintext of an item: its hashes grouped by signal type (registry order), each
    group's positions (the hash's index in ``hashes``), qualities and values contiguous."""
    groups: dict[str, list[int]] = {}
    for pos, h in enumerate(hashes):
        groups.setdefault(h.signal.name, []).append(pos)
    names = [n for n in SIGNALS if n in groups]
    head = [struct.pack(">H", len(names))]
    body = []
    for name in names:
        positions = groups[name]
        encoded = name.encode()
        head.append(struct.pack(">B", len(encoded)) + encoded + struct.pack(">I", len(positions)))
        body.append(np.asarray(positions, dtype=">u2").tobytes())
        quality = [-1 if (q := hashes[p].quality) is None else int(q) for p in positions]
        body.append(np.asarray(quality, dtype=">i2").tobytes())
        body.append(b"".join(hashes[p].value for p in positions))
    return b"".join(head + body)


def unpack_item(plain: bytes) -> OpenedItem:
    """The inverse of ``pack_item``, as numpy views (codes without qualities)."""
    (n_signals,) = struct.unpack_from(">H", plain, 0)
    at = 2
    header: list[tuple[str, int]] = []
    for _ in range(n_signals):
        (length,) = struct.unpack_from(">B", plain, at)
        name = plain[at + 1 : at + 1 + length].decode()
        (count,) = struct.unpack_from(">I", plain, at + 1 + length)
        header.append((name, count))
        at += 1 + length + 4
    view = memoryview(plain)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, count in header:
        width = SIGNALS[name].byte_length
        positions = np.frombuffer(view[at : at + 2 * count], dtype=">u2")
        at += 4 * count  # positions and qualities
        codes = np.frombuffer(view[at : at + width * count], dtype=np.uint8).reshape(count, width)
        at += width * count
        out[name] = (positions, codes)
    if at != len(plain):
        raise Unavailable("a sealed item does not have the expected layout")
    return OpenedItem(out)


def unpack_hashes(plain: bytes) -> list[Hash]:
    """Every hash of an item's plaintext, in position order (with qualities)."""
    (n_signals,) = struct.unpack_from(">H", plain, 0)
    at = 2
    header: list[tuple[str, int]] = []
    for _ in range(n_signals):
        (length,) = struct.unpack_from(">B", plain, at)
        header.append(
            (
                plain[at + 1 : at + 1 + length].decode(),
                *struct.unpack_from(">I", plain, at + 1 + length),
            )
        )
        at += 1 + length + 4
    found: list[tuple[int, Hash]] = []
    for name, count in header:
        signal = SIGNALS[name]
        positions = struct.unpack_from(f">{count}H", plain, at)
        qualities = struct.unpack_from(f">{count}h", plain, at + 2 * count)
        at += 4 * count
        for i in range(count):
            value = plain[at + i * signal.byte_length : at + (i + 1) * signal.byte_length]
            quality = None if qualities[i] < 0 else qualities[i]
            found.append((positions[i], Hash(signal, value, quality)))
        at += signal.byte_length * count
    return [h for _, h in sorted(found, key=lambda pair: pair[0])]


class ItemCipher:
    """Seals and opens item blobs and wrapped secrets with a ``Keyring`` (thread-safe).

    >>> from matcher.signals import PDQ
    >>> cipher = ItemCipher(Keyring.generate())
    >>> blob = cipher.seal_item(7, [Hash(PDQ, bytes(32))])
    >>> bytes(32) in blob
    False
    >>> cipher.open_item(7, blob).signals["pdq"][1].shape
    (1, 32)
    >>> cipher.open_item(8, blob)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    matcher.errors.Unavailable: a sealed value does not open with the store key ...
    """

    def __init__(self, ring: Keyring) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.ring = ring
        self._aead = {k: AESGCM(v) for k, v in ring.keys.items()}

    # -- raw sealing

    def seal(self, plain: bytes, context: bytes) -> bytes:
        """Seal ``plain`` under the current key, bound to ``context`` (associated data)."""
        nonce = os.urandom(_NONCE)
        head = _HEADER.pack(_FORMAT, self.ring.current)
        return head + nonce + self._aead[self.ring.current].encrypt(nonce, plain, head + context)

    def open(self, blob: bytes, context: bytes) -> bytes:
        """Open a sealed blob; ``Unavailable`` for an unknown key id or a failed tag."""
        from cryptography.exceptions import InvalidTag

        blob = bytes(blob)
        if len(blob) < _HEADER.size + _NONCE + 16:
            raise Unavailable("a sealed value is truncated")
        fmt, key_id = _HEADER.unpack_from(blob)
        aead = self._aead.get(key_id)
        if aead is None and fmt == _FORMAT:
            aead = self._reload(key_id)
        if fmt != _FORMAT or aead is None:
            raise Unavailable(
                f"a sealed value needs store key {key_id}, which the keyring "
                f"({self.ring.source or 'given'}) does not hold"
            )
        nonce = blob[_HEADER.size : _HEADER.size + _NONCE]
        try:
            return aead.decrypt(
                nonce, blob[_HEADER.size + _NONCE :], blob[: _HEADER.size] + context
            )
        except InvalidTag:
            raise Unavailable(
                "a sealed value does not open with the store key (wrong key, or the data was "
                "altered)"
            ) from None

    def _reload(self, key_id: int) -> Any:
        """Read the key file again for a key this keyring lacks: after ``matcher rotate-key``
        on a shared store, a replica still running with the old keyring opens what is sealed
        under the new key as soon as the new file is in place, without a restart. The new keys
        only open; this cipher goes on sealing with its current key until it is made again."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        source = self.ring.source
        if not source or source == KEY_ENV:
            return None
        try:
            fresh = Keyring.parse(Path(source).read_text(), source)
        except (OSError, ValueError, Unavailable):
            return None
        if key_id not in fresh.keys:
            return None
        self._aead = {**{k: AESGCM(v) for k, v in fresh.keys.items()}, **self._aead}
        return self._aead[key_id]

    @staticmethod
    def key_id(blob: bytes) -> int:
        """The id of the key a blob was sealed with."""
        return int(_HEADER.unpack_from(bytes(blob[: _HEADER.size]))[1])

    def reseal(self, blob: bytes, context: bytes) -> bytes:
        """``blob`` sealed again under the current key (rotation)."""
        return self.seal(self.open(blob, context), context)

    # -- items and secrets

    @staticmethod
    def item_context(item_id: int) -> bytes:
        """The associated data of an item's blob: its id."""
        return b"matcher/item/" + struct.pack(">Q", item_id)

    @staticmethod
    def secret_context(name: str) -> bytes:
        """The associated data of a wrapped secret: its name."""
        return b"matcher/secret/" + name.encode()

    def seal_item(self, item_id: int, hashes: Sequence[Hash]) -> bytes:
        """The blob of an item's hashes (positions are their order in ``hashes``)."""
        return self.seal(pack_item(hashes), self.item_context(item_id))

    def open_item(self, item_id: int, blob: bytes) -> OpenedItem:
        """An item's codes per signal type, from its blob."""
        return unpack_item(self.open(blob, self.item_context(item_id)))

    def open_item_hashes(self, item_id: int, blob: bytes) -> list[Hash]:
        """An item's hashes with qualities, in position order (migrations, tools)."""
        return unpack_hashes(self.open(blob, self.item_context(item_id)))

    def seal_secret(self, name: str, value: bytes) -> bytes:
        """Wrap a secret (e.g. the store's secret key) for storage."""
        return self.seal(value, self.secret_context(name))

    def open_secret(self, name: str, blob: bytes) -> bytes:
        """Unwrap a secret sealed by ``seal_secret``."""
        return self.open(blob, self.secret_context(name))
