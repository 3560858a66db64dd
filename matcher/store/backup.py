"""``matcher backup`` and ``matcher restore`` for the SQLite store: a consistent, encrypted
snapshot taken while serving, and a restore that never brings back a withdrawal.

Why not copy the files: a copy of ``matcher.db`` while serving misses what is still in the WAL
(500 acknowledged hashes were lost that way). ``backup`` uses SQLite's online backup API, which
copies one consistent committed state while writers go on, into memory; the bytes are then
sealed with the store key (AES-256-GCM in 1 MiB chunks, each bound to its index, to the
header and to whether it is the last, so a chunk cannot be dropped, reordered or cut off) and
written with mode 0600. Inside, hash values are sealed a second time already (item blobs); the
whole-file seal also hides case numbers, labels and the audit trail.

A restore puts a backup back under a stopped server (it takes the folder lock), then
re-applies the **withdrawal ledger** (``withdrawals.jsonl`` beside the database, one line per
withdrawal, ids and times only): an item or case withdrawn after the backup was taken is
withdrawn again before anything can match it. It also keeps item and change-log ids from
going backwards, so an id given out after the backup is never given to another image.

File layout: ``MAGIC | header length (4 bytes) | header JSON | chunks``, each chunk
``length (4 bytes) | sealed``; the header (schema version, time taken, byte count, key id)
holds no secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.errors import InvalidInput, Unavailable
from matcher.principal import Principal
from matcher.store.crypto import ItemCipher, Keyring, load_keyring
from matcher.store.lock import FolderLock

__all__ = ["BackupInfo", "RestoreInfo", "read_backup", "restore", "take_backup"]

MAGIC = b"MATCHER-BACKUP\x01"
_CHUNK = 1 << 20
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds (its header)."""

    path: Path
    bytes: int
    schema_version: int
    taken_at_ms: int
    key_id: int


@dataclass(frozen=True)
class RestoreInfo:
    """What a restore did."""

    schema_version: int
    taken_at_ms: int
    reapplied: int
    """Withdrawals of the ledger that took effect again (made after the backup)."""


def _context(header: bytes, index: int, last: bool) -> bytes:
    return MAGIC + hashlib.sha256(header).digest()[:16] + struct.pack(">Q?", index, last)


def take_backup(store: Any, dest: str | os.PathLike[str]) -> BackupInfo:
    """Write a consistent, sealed snapshot of the SQLite ``store`` to ``dest`` (atomically:
    a temporary file renamed over it, mode 0600, fsynced). Safe while the store serves."""
    dest = Path(dest)
    memory = sqlite3.connect(":memory:")
    source = sqlite3.connect(store.path)
    try:
        source.backup(memory)  # one step: one consistent committed state
    except sqlite3.Error as exc:
        raise Unavailable(f"cannot read the store for a backup: {exc}") from None
    finally:
        source.close()
    try:
        version = int(memory.execute("SELECT max(version) FROM schema_version").fetchone()[0])
        data = _rollback_header(memory.serialize())
    finally:
        memory.close()
    cipher: ItemCipher = store.cipher
    header = json.dumps(
        {
            "schema_version": version,
            "taken_at_ms": time.time_ns() // 1_000_000,
            "bytes": len(data),
            "key_id": cipher.ring.current,
        },
        sort_keys=True,
    ).encode()
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise Unavailable(f"cannot write the backup {dest}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + _LEN.pack(len(header)) + header)
            starts = range(0, max(len(data), 1), _CHUNK)
            for index, start in enumerate(starts):
                last = index == len(starts) - 1
                sealed = cipher.seal(
                    bytes(data[start : start + _CHUNK]), _context(header, index, last)
                )
                out.write(_LEN.pack(len(sealed)) + sealed)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Unavailable(f"cannot write the backup {dest}: {exc.strerror}") from None
    meta = json.loads(header)
    return BackupInfo(dest, len(data), version, meta["taken_at_ms"], meta["key_id"])


def read_backup(source: str | os.PathLike[str], cipher: ItemCipher) -> tuple[dict[str, Any], bytes]:
    """The header and database bytes of a backup file; ``InvalidInput`` if it is not one,
    ``Unavailable`` if the keyring does not open it or it was altered or cut short."""
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read the backup {path}: {exc.strerror}", field="from") from None
    if not raw.startswith(MAGIC):
        raise InvalidInput(f"{path} is not a matcher backup", field="from")
    at = len(MAGIC)
    (size,) = _LEN.unpack_from(raw, at)
    header = raw[at + 4 : at + 4 + size]
    at += 4 + size
    meta = json.loads(header)
    parts: list[bytes] = []
    index, last = 0, False
    while at < len(raw):
        (size,) = _LEN.unpack_from(raw, at)
        sealed = raw[at + 4 : at + 4 + size]
        at += 4 + size
        last = at >= len(raw)
        parts.append(cipher.open(sealed, _context(header, index, last)))
        index += 1
    if not last:
        raise Unavailable(f"the backup {path} is cut short")
    data = b"".join(parts)
    if len(data) != meta["bytes"]:
        raise Unavailable(f"the backup {path} is cut short")
    return meta, data


def restore(
    data_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    key_file: str | os.PathLike[str] | None = None,
    keyring: Keyring | None = None,
    ledger: str | os.PathLike[str] | None = None,
) -> RestoreInfo:
    """Put the backup ``source`` back as the store of ``data_dir`` (no server may be running
    on it), then re-apply the withdrawal ledger (``ledger``, default the folder's own)."""
    from matcher.store.crypto import KEY_FILE_ENV, default_key_file
    from matcher.store.sqlite import DB_FILENAME, LEDGER_FILENAME, SQLiteStore

    folder = Path(data_dir)
    if key_file is None:
        key_file = os.environ.get(KEY_FILE_ENV) or default_key_file(folder)
    ring = keyring or load_keyring(key_file, create=False)
    meta, data = read_backup(source, ItemCipher(ring))
    entries = _read_ledger(Path(ledger) if ledger else folder / LEDGER_FILENAME)
    with FolderLock.acquire(folder, "matcher restore"):
        path = folder / DB_FILENAME
        floors = _id_floors(path)
        memory = sqlite3.connect(":memory:")
        try:
            memory.deserialize(_rollback_header(data))
            if memory.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise Unavailable(f"the backup {source} holds a damaged database")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            target = sqlite3.connect(path)
            try:
                memory.backup(target)
                target.execute("PRAGMA journal_mode=WAL")
                for name, floor in floors.items():
                    cur = target.execute(
                        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?",
                        (floor, name),
                    )
                    if not cur.rowcount:
                        target.execute("INSERT INTO sqlite_sequence VALUES (?, ?)", (name, floor))
                target.commit()
            finally:
                target.close()
        finally:
            memory.close()
        with SQLiteStore(folder, keyring=ring) as store:
            applied = store.reapply_withdrawals(entries, actor=Principal.operator("restore"))
            version = store.schema_version
    return RestoreInfo(version, int(meta["taken_at_ms"]), applied)


def _rollback_header(data: bytes) -> bytes:
    """The database bytes with the header saying "rollback journal" instead of "WAL" (bytes
    18-19 of the SQLite header): an in-memory database cannot open a WAL-mode image. The
    restored file is put back in WAL mode."""
    if len(data) < 20 or data[18:20] == b"\x01\x01":
        return data
    return data[:18] + b"\x01\x01" + data[20:]


def _read_ledger(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a crash mid-append leaves at most a partial last line
    return out


def _id_floors(path: Path) -> dict[str, int]:
    """The highest item and change ids the current database ever gave (if it is readable),
    so a restore of an older backup does not give them out again."""
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {str(name): int(seq) for name, seq in rows if name in ("items", "changes")}
