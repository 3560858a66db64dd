"""Encryption at rest, backup and restore, against a real server on a real data folder.

- no enrolled value is in any file of the data folder or of a backup: raw, hex or base64;
- the key is beside the folder (mode 0600), never in it; a sealed folder without its key, or
  with another, is refused with one line; MATCHER_STORE_KEY wins over the key file;
- ``matcher rotate-key`` reseals everything; old backups need the old key;
- ``matcher backup`` while serving, ``matcher restore``: a withdrawal made after the backup
  stays withdrawn (the ledger), and item ids given after the backup are never given again.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from matcher.bank import Bank
from matcher.cli import main
from matcher.errors import Unavailable
from matcher.principal import Principal
from matcher.records import NewItem
from matcher.service import Server, ServerConfig
from matcher.signals import MD5, PDQ, PHASH, Hash
from matcher.store import SQLiteStore
from matcher.store.crypto import KEY_ENV, ItemCipher
from tests.service_fixtures import Running, flip_bits, start_server, stop_server

OPERATOR = Principal.operator("tests")


def forms(value: bytes) -> list[bytes]:
    """A value as it could sit in a file: raw, hex (both cases), base64 (both alphabets)."""
    return [
        value,
        value.hex().encode(),
        value.hex().upper().encode(),
        base64.b64encode(value),
        base64.urlsafe_b64encode(value),
        base64.b64encode(value).rstrip(b"="),
    ]


def files_under(*roots: Path) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        found += [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return found


def leaks(values: list[bytes], *roots: Path) -> list[tuple[str, int]]:
    """Every (file, value index) where a value shows in one of its forms."""
    out = []
    for path in files_under(*roots):
        blob = path.read_bytes()
        for i, v in enumerate(values):
            if any(form in blob for form in forms(v)):
                out.append((path.name, i))
    return out


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def photo(rng: np.random.Generator) -> list[Hash]:
    pdqs = [Hash(PDQ, rng.bytes(32), 90) for _ in range(5)]
    return [*pdqs, Hash(PHASH, rng.bytes(8)), Hash(MD5, rng.bytes(16))]


def serve_again(data: Path, keys: dict[str, str]) -> tuple[Running, threading.Thread]:
    """A server on an existing folder (no new organisations or keys)."""
    bank = Bank.open(data, load=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None)
    server = asyncio.run_coroutine_threadsafe(Server.start(bank, config), loop).result(30)
    assert bank.wait_ready(120)
    return Running(bank, server, loop, data, keys), thread


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Running, threading.Thread]]:
    running, thread = start_server(tmp_path / "data")
    assert running.bank.wait_ready(120)
    yield running, thread
    if thread.is_alive():
        stop_server(running, thread)


def test_no_enrolled_value_is_in_any_file_of_the_data_folder_or_its_backups(
    served: tuple[Running, threading.Thread], tmp_path: Path
) -> None:
    service, _ = served
    rng = np.random.default_rng(10)
    photos = [photo(rng) for _ in range(6)]
    case, _ = service.enroll([NewItem(p) for p in photos[:3]])
    service.enroll([NewItem(p) for p in photos[3:]])
    values = [h.value for p in photos for h in p]
    with service.client("partner") as c:  # served from the sealed store
        assert all(len(r.matches) == 1 for r in c.match([p[:1] for p in photos]))
    backup = tmp_path / "backups" / "one.mbk"
    backup.parent.mkdir()
    taken = cli("backup", "--data", str(service.data), "--to", str(backup))  # while serving
    assert taken.exit_code == 0, taken.output
    with service.client() as c:
        c.withdraw_item_with_secret(case.number, case.secret, 2)
    data = service.data
    assert {p.name for p in files_under(data)} >= {"matcher.db", "matcher.db-wal"}
    assert leaks(values, data, backup.parent) == []
    # The store's secret key (of match ids and fingerprints) is in no file in clear either.
    assert leaks([service.bank.store.secret_key()], data, backup.parent) == []
    # The key lives beside the folder, owner-only; nothing of it is in the folder.
    key_file = data.parent / "data.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert not any(p.suffix == ".key" for p in files_under(data))
    for name in ("matcher.db", "matcher.db-wal", "withdrawals.jsonl"):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name
    assert backup.stat().st_mode & 0o777 == 0o600
    # Control: the search finds a value planted in any of its forms.
    for i, form in enumerate(forms(values[7])):
        planted = data / f"planted-{i}"
        planted.write_bytes(b"x" + form + b"y")
        assert leaks(values, data) == [(planted.name, 7)]
        planted.unlink()


def test_enroll_back_up_withdraw_restore_gives_no_match(
    served: tuple[Running, threading.Thread], tmp_path: Path
) -> None:
    service, thread = served
    rng = np.random.default_rng(11)
    gone, kept, case_gone = photo(rng), photo(rng), photo(rng)
    case, _ = service.enroll([NewItem(gone), NewItem(kept)])
    other, _ = service.enroll([NewItem(case_gone)])
    backup = tmp_path / "b.mbk"
    assert cli("backup", "--data", str(service.data), "--to", str(backup)).exit_code == 0
    with service.client() as c:
        c.withdraw_item_with_secret(case.number, case.secret, 1)  # after the backup
        c.withdraw_with_secret(other.number, other.secret)
    late, _ = service.enroll([NewItem(photo(rng))])  # lost by the restore
    late_case = service.bank.store.get_case(late.number)
    assert late_case is not None
    (late_item,) = service.bank.store.list_items(late_case.id)
    data = service.data
    stop_server(service, thread)
    # Restore refuses a folder a server holds; here none does.
    restored = cli("restore", "--data", str(data), "--from", str(backup))
    assert restored.exit_code == 0, restored.output
    assert "2 later withdrawal(s) applied again" in restored.stdout
    again, again_thread = serve_again(data, service.keys)
    try:
        with again.client("partner") as c:  # the partner key is in the backup
            got = c.match([[flip_bits(gone[0], 5, rng)], case_gone[:1], kept[:1]])
        # Withdrawn after the backup: still withdrawn. Kept: restored, and served.
        assert [len(r.matches) for r in got] == [0, 0, 1]
        store = again.bank.store
        restored = store.get_case(case.number)
        assert restored is not None
        assert [i.state for i in store.list_items(restored.id)] == ["withdrawn", "active"]
        assert store.get_case(late.number) is None  # enrolled after the backup: not in it
        # Item ids given before the restore are never given again.
        fresh = store.create_case(restored.org_id, "NEW1-NEW1-NEW1", "scrypt$x", actor=OPERATOR)
        (item,) = store.add_items(fresh.id, [NewItem(photo(rng))], actor=OPERATOR).items
        assert item.id > late_item.id
    finally:
        stop_server(again, again_thread)


def test_restore_refuses_a_folder_in_use_and_a_damaged_or_foreign_backup(
    served: tuple[Running, threading.Thread], tmp_path: Path
) -> None:
    service, _ = served
    backup = tmp_path / "b.mbk"
    assert cli("backup", "--data", str(service.data), "--to", str(backup)).exit_code == 0
    from matcher.store.lock import FolderLock

    with FolderLock.acquire(service.data, "matcher serve"):
        busy = cli("restore", "--data", str(service.data), "--from", str(backup))
    assert busy.exit_code == 1 and "in use by matcher serve (pid" in busy.output
    assert len(busy.output.strip().splitlines()) == 1
    damaged = tmp_path / "damaged.mbk"
    raw = bytearray(backup.read_bytes())
    raw[-40] ^= 1
    damaged.write_bytes(bytes(raw))
    cut = tmp_path / "cut.mbk"
    cut.write_bytes(backup.read_bytes()[:-100])
    for bad in (damaged, cut):
        out = cli(
            "restore",
            "--data",
            str(tmp_path / "elsewhere"),
            "--key-file",
            str(service.data.parent / "data.key"),
            "--from",
            str(bad),
        )
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1
    foreign = cli(
        "restore",
        "--data",
        str(tmp_path / "x"),
        "--key-file",
        str(tmp_path / "none.key"),
        "--from",
        str(backup),
    )
    assert foreign.exit_code == 1 and "none.key is missing" in foreign.output


def test_a_backup_restores_into_a_new_folder_with_its_key(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    hashes = photo(rng)
    with SQLiteStore(tmp_path / "data") as store:
        org = store.create_organisation("H", actor=OPERATOR)
        c = store.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=OPERATOR)
        store.add_items(c.id, [NewItem(hashes)], actor=OPERATOR)
    backup = tmp_path / "b.mbk"
    assert cli("backup", "--data", str(tmp_path / "data"), "--to", str(backup)).exit_code == 0
    new = tmp_path / "new"
    out = cli(
        "restore",
        "--data",
        str(new),
        "--key-file",
        str(tmp_path / "data.key"),
        "--from",
        str(backup),
    )
    assert out.exit_code == 0, out.output
    with SQLiteStore(new, key_file=tmp_path / "data.key") as store:
        assert store.hash_counts() == {"pdq": 5, "phash": 1, "md5": 1}


# -- the key


def _sealed_folder(tmp_path: Path) -> tuple[Path, list[Hash]]:
    op = OPERATOR
    data = tmp_path / "data"
    hashes = photo(np.random.default_rng(5))
    with SQLiteStore(data) as store:
        org = store.create_organisation("H", actor=op)
        c = store.create_case(org.id, "AAAA-BBBB-CCCC", "scrypt$x", actor=op)
        store.add_items(c.id, [NewItem(hashes)], actor=op)
    return data, hashes


def test_a_sealed_folder_without_its_key_or_with_another_is_refused(tmp_path: Path) -> None:
    data, _ = _sealed_folder(tmp_path)
    key = tmp_path / "data.key"
    text = key.read_text()
    key.unlink()
    with pytest.raises(Unavailable, match=r"data\.key is missing"):
        SQLiteStore(data)
    assert not key.exists()  # never given a new key
    SQLiteStore(tmp_path / "other").close()  # another store, another key
    (tmp_path / "other.key").rename(key)
    with pytest.raises(Unavailable, match="does not open the data"):
        SQLiteStore(data)
    key.write_text(text)
    SQLiteStore(data).close()
    out = cli(
        "backup",
        "--data",
        str(data),
        "--key-file",
        str(tmp_path / "missing.key"),
        "--to",
        str(tmp_path / "b.mbk"),
    )
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "missing.key" in out.output


def test_the_environment_variable_wins_over_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = _sealed_folder(tmp_path)
    key = tmp_path / "data.key"
    text = key.read_text()
    key.write_text("1:" + base64.b64encode(os.urandom(32)).decode())  # a wrong file...
    monkeypatch.setenv(KEY_ENV, ",".join(text.splitlines()[1:]))  # ...the right variable
    with SQLiteStore(data) as store:
        assert store.hash_counts()["pdq"] == 5
    monkeypatch.setenv(KEY_ENV, "1:" + base64.b64encode(os.urandom(32)).decode())
    key.write_text(text)
    with pytest.raises(Unavailable, match="MATCHER_STORE_KEY"):
        SQLiteStore(data)
    monkeypatch.setenv(KEY_ENV, "not a key")
    with pytest.raises(Unavailable, match="malformed"):
        SQLiteStore(data)


def test_rotate_key_reseals_everything_and_old_backups_need_the_old_key(tmp_path: Path) -> None:
    data, hashes = _sealed_folder(tmp_path)
    key = tmp_path / "data.key"
    with SQLiteStore(data) as store:
        secret = store.secret_key()
        first = {ItemCipher.key_id(b) for b in _blobs(data)}
    old_backup = tmp_path / "old.mbk"
    assert cli("backup", "--data", str(data), "--to", str(old_backup)).exit_code == 0
    old_text = key.read_text()
    out = cli("rotate-key", "--data", str(data))
    assert out.exit_code == 0, out.output
    assert "store key 2 now seals 1 item(s); old keys kept" in out.stdout
    assert {ItemCipher.key_id(b) for b in _blobs(data)} == {2} != first
    with SQLiteStore(data) as store:
        assert store.secret_key() == secret  # match ids and fingerprints unchanged
        assert store.hash_counts()["pdq"] == 5
        (chunk, *_) = store.item_codes([store.list_items(1)[0].id])
        assert chunk.codes[0].tobytes() == hashes[0].value
    # The old backup restores while the old key is kept...
    assert cli("restore", "--data", str(data), "--from", str(old_backup)).exit_code == 0
    out = cli("rotate-key", "--data", str(data), "--forget-old")
    assert out.exit_code == 0 and "old keys dropped" in out.stdout
    assert (
        len(
            [
                line
                for line in key.read_text().splitlines()
                if ":" in line and not line.startswith("#")
            ]
        )
        == 1
    )
    # ...and not once it is dropped (the operator kept a copy of the old key file for that).
    refused = cli("restore", "--data", str(data), "--from", str(old_backup))
    assert refused.exit_code == 1 and "needs store key 1" in refused.output
    copy = tmp_path / "old.key"
    copy.write_text(old_text)
    assert (
        cli(
            "restore",
            "--data",
            str(tmp_path / "fresh"),
            "--key-file",
            str(copy),
            "--from",
            str(old_backup),
        ).exit_code
        == 0
    )
    # A folder a server holds cannot be rotated under it.
    from matcher.store.lock import FolderLock

    with FolderLock.acquire(data, "matcher serve"):
        busy = cli("rotate-key", "--data", str(data))
    assert busy.exit_code == 1 and "in use by matcher serve" in busy.output


def _blobs(data: Path) -> list[bytes]:
    import sqlite3

    conn = sqlite3.connect(data / "matcher.db")
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT sealed FROM item_codes")]
    finally:
        conn.close()
