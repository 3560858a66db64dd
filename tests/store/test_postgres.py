"""What only the PostgreSQL store has to prove: commits out of sequence order, durable commits,
notifications, migrations in step with SQLite's, replicas migrating together.

The promises both backends share are in ``test_contract.py`` (run against both).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from matcher.bank.follower import IndexFollower
from matcher.errors import Unavailable
from matcher.principal import Principal
from matcher.records import NewItem
from matcher.signals import MD5, PDQ, SIGNALS, Hash
from matcher.store import SQLiteStore, open_store, postgres_schema, sqlite_schema
from matcher.store.postgres import PostgresStore

OPERATOR = Principal.operator("test")


def pdq_item() -> NewItem:
    return NewItem([Hash(PDQ, os.urandom(32), 90)])


def md5_item() -> NewItem:
    return NewItem([Hash(MD5, os.urandom(16))])


def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_open_store_opens_postgres_urls(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        assert store.schema_version == postgres_schema.SCHEMA_VERSION
        key = store.secret_key()
    with open_store(postgres_url.replace("postgresql://", "postgres://")) as again:
        assert again.secret_key() == key


def test_two_writers_committing_in_the_opposite_order_of_their_ids(postgres_url: str) -> None:
    """Writer A takes change seq n and stays open; writer B takes seq n+1 and commits first.
    A follower reading between the two commits must not move past A's row (a follower that
    kept "the highest seq seen" would skip it for ever); once A commits, it reads both."""
    store = PostgresStore(postgres_url)
    writer_b = PostgresStore(postgres_url)
    org = store.create_organisation("Helpline", actor=OPERATOR)
    case_a = store.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    case_b = store.create_case(org.id, "BBBB-BBBB-BBBB", "scrypt$x", actor=OPERATOR)
    store.add_items(case_a.id, [pdq_item()], actor=OPERATOR)  # makes the pdq counter row
    follower = IndexFollower(store, batch=1)
    follower.load()
    loaded = follower.position
    # A blocker holds the pdq counter row: writer A (pdq items) stops there, after its change
    # row took its seq and before it commits. Writer B (md5 only) does not touch that row.
    blocker = psycopg.connect(postgres_url)
    blocker.execute("SELECT hashes FROM signal_counts WHERE signal = 'pdq' FOR UPDATE")
    added: dict[str, int] = {}

    def write_a() -> None:
        added["a"] = store.add_items(case_a.id, [pdq_item()], actor=OPERATOR).items[0].id

    thread = threading.Thread(target=write_a)
    thread.start()
    peek = psycopg.connect(postgres_url, autocommit=True)
    # A's change row is written (uncommitted): its seq is taken.
    wait_until(
        lambda: (
            peek.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ).fetchone()[0]  # type: ignore[index]
            == 1
        )
    )
    (item_b,) = writer_b.add_items(case_b.id, [md5_item()], actor=OPERATOR).items
    rows = peek.execute("SELECT seq, item_id FROM changes ORDER BY seq").fetchall()
    # What a naive reader sees now: B's row committed, with a seq above every other.
    assert rows[-1][1] == item_b.id and len(rows) == 2
    # The follower reads nothing yet: B's row waits behind A's horizon, and the position
    # does not move past A.
    assert follower.catch_up() == 0
    assert store.changes_since(loaded).changes == []
    blocker.rollback()  # release A
    thread.join(10)
    assert not thread.is_alive()
    seqs = dict(
        (item, seq) for seq, item in peek.execute("SELECT seq, item_id FROM changes").fetchall()
    )
    assert seqs[added["a"]] < seqs[item_b.id]
    applied = 0
    deadline = time.monotonic() + 10
    while applied < 2 and time.monotonic() < deadline:
        applied += follower.catch_up()
    assert applied == 2
    indexed = follower.index
    assert indexed.size(SIGNALS["pdq"]) == 2 and indexed.size(SIGNALS["md5"]) == 1
    for handle in (blocker, peek):
        handle.close()
    writer_b.close()
    store.close()


def test_the_log_is_read_in_transaction_id_order_when_ids_gain_a_digit(postgres_url: str) -> None:
    """Change rows of transactions 9 and 10 (and 99, 100): read a row at a time, each arrives
    once, in id order. Sorting the ids as text (a bug this test caught after it made one
    follower run in a few hundred skip and repeat changes) puts 10 before 9: the follower
    then moves past 9 and never reads it."""
    store = PostgresStore(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        (now,) = conn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        ).fetchone()  # type: ignore[misc]
        assert now > 100  # every id below is of a finished transaction
        for item, xid in enumerate((9, 10, 99, 100), start=1):
            conn.execute(
                "INSERT INTO changes(op, item_id, hash_count, at, xid) "
                "VALUES ('add', %s, 1, 0, %s::text::xid8)",
                (item, str(xid)),
            )
    seen: list[int] = []
    position = ""
    for _ in range(10):
        batch = store.changes_since(position, limit=1)
        seen += [c.item_id for c in batch.changes]
        position = batch.position
        if not batch.more and not batch.changes:
            break
    assert seen == [1, 2, 3, 4]
    store.close()


def test_every_connection_commits_synchronously(postgres_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        name = postgres_url.rsplit("/", 1)[1]
        admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    with PostgresStore(postgres_url) as store, store._conn() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row[0] == "on"


def test_a_write_notifies_a_waiting_follower(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store, PostgresStore(postgres_url) as writer:
        assert store.wait_for_changes(0.05) is False  # listening now; nothing written
        org = writer.create_organisation("Helpline", actor=OPERATOR)
        case = writer.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
        assert store.wait_for_changes(0.05) is False  # no change to the log: no notification
        writer.add_items(case.id, [pdq_item()], actor=OPERATOR)
        started = time.monotonic()
        assert store.wait_for_changes(5.0) is True
        assert time.monotonic() - started < 2.0
        writer.withdraw_case(case.id, actor=OPERATOR)
        assert store.wait_for_changes(5.0) is True


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(opened) == 4
    assert len({s.secret_key() for s in opened}) == 1
    with opened[0]._conn() as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == list(range(1, postgres_schema.SCHEMA_VERSION + 1))
    for s in opened:
        s.close()


def _sqlite_columns(folder: Path, version: int) -> dict[str, list[str]]:
    with SQLiteStore(folder, _migrations=sqlite_schema.MIGRATIONS[:version]):
        pass
    conn = sqlite3.connect(folder / "matcher.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
        for t in tables
        if not t.startswith("sqlite_")
    }
    conn.close()
    return out


def test_migrations_are_kept_in_step_with_sqlite(postgres_url: str, tmp_path: Path) -> None:
    """One schema version means the same tables and columns on both backends (PostgreSQL's
    ``changes.xid`` is its one addition, for the position rule): both at version 3, sealed at
    rest (``matcher.store.crypto``)."""
    assert len(postgres_schema.MIGRATIONS) == len(sqlite_schema.MIGRATIONS)
    assert postgres_schema.SCHEMA_VERSION == sqlite_schema.SCHEMA_VERSION == 6
    lite = _sqlite_columns(tmp_path / "lite", postgres_schema.SCHEMA_VERSION)
    with PostgresStore(postgres_url) as store, store._conn() as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
    pg: dict[str, list[str]] = {}
    for table, column in rows:
        pg.setdefault(table, []).append(column)
    assert pg.pop("changes")[:-1] == lite.pop("changes")
    assert {t: sorted(c) for t, c in pg.items()} == {t: sorted(c) for t, c in lite.items()}


def test_no_value_is_ever_in_the_cluster_files_in_clear(
    postgres_url: str,
    postgres_server,  # type: ignore[no-untyped-def]
) -> None:
    """Sealed at rest on PostgreSQL too: after enrolling, withdrawing and a checkpoint, no
    hash value is anywhere in the cluster's files (tables, WAL), raw, hex or base64."""
    import base64

    with PostgresStore(postgres_url) as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
        items = [pdq_item(), md5_item(), pdq_item()]
        store.add_items(case.id, items, actor=OPERATOR)
        store.withdraw_item(case.id, 2, actor=OPERATOR)
        with store._conn() as conn:
            conn.execute("CHECKPOINT")
        files = postgres_server.data_bytes()
        assert store.secret_key() not in files
    for item in items:
        for h in item.hashes:
            for form in (h.value, h.value.hex().encode(), base64.b64encode(h.value)):
                assert form not in files


# -- the withdrawal ledger, restores and key rotation (PostgreSQL's own means)


def _lines(path: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_withdrawal_is_in_the_replicas_ledger_before_it_commits(
    postgres_url: str, tmp_path: Path
) -> None:
    """A replica's ledger gets one line per withdrawal (ids and a time, no value), fsynced
    before the commit: when it cannot be written, nothing is withdrawn."""
    with PostgresStore(postgres_url, ledger=tmp_path / "a.jsonl") as store:
        org = store.create_organisation("Helpline", actor=OPERATOR)
        case = store.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
        items = store.add_items(case.id, [pdq_item(), pdq_item()], actor=OPERATOR).items
        store.withdraw_item(case.id, 1, actor=OPERATOR)
        store.withdraw_item(case.id, 1, actor=OPERATOR)  # already withdrawn: no line
        store.withdraw_case(case.id, actor=OPERATOR)
        store.withdraw_case(case.id, actor=OPERATOR)
        lines = _lines(tmp_path / "a.jsonl")
        assert [(e["case"], e["item"]) for e in lines] == [(case.id, items[0].id), (case.id, None)]
        assert all(set(e) == {"at", "case", "item"} for e in lines)
    with PostgresStore(postgres_url, ledger=tmp_path / "missing" / "b.jsonl") as broken:
        other = broken.create_case(org.id, "BBBB-BBBB-BBBB", "scrypt$x", actor=OPERATOR)
        (kept,) = broken.add_items(other.id, [pdq_item()], actor=OPERATOR).items
        with pytest.raises(Unavailable):
            broken.withdraw_item(other.id, 1, actor=OPERATOR)
        assert broken.active_items([kept.id]) == {kept.id}


def test_a_restore_to_an_earlier_point_gets_its_later_withdrawals_back_from_the_ledgers(
    postgres_url: str,
    postgres_server,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """The runbook, with PostgreSQL's own tools: pg_dump, then withdrawals through two
    replicas (each with its ledger), then pg_restore into a fresh database and ``matcher
    ledger apply`` with both ledgers: every later withdrawal is back, applying again changes
    nothing, and no item id named in a ledger is given out again."""
    from click.testing import CliRunner

    from matcher.cli import main

    a_ledger, b_ledger, dump = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "db.dump"
    a = PostgresStore(postgres_url, ledger=a_ledger)
    b = PostgresStore(postgres_url, ledger=b_ledger)
    org = a.create_organisation("Helpline", actor=OPERATOR)
    one = a.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    two = a.create_case(org.id, "BBBB-BBBB-BBBB", "scrypt$x", actor=OPERATOR)
    x, y = a.add_items(one.id, [pdq_item(), pdq_item()], actor=OPERATOR).items
    (z,) = a.add_items(two.id, [pdq_item()], actor=OPERATOR).items
    dumped = subprocess.run(
        [str(postgres_server.bin_dir / "pg_dump"), "-Fc", "-f", str(dump), postgres_url],
        capture_output=True,
        text=True,
    )
    assert dumped.returncode == 0, dumped.stderr
    (late,) = b.add_items(one.id, [pdq_item()], actor=OPERATOR).items  # after the dump
    a.withdraw_item(one.id, x.number, actor=OPERATOR)
    b.withdraw_item(one.id, late.number, actor=OPERATOR)
    b.withdraw_case(two.id, actor=OPERATOR)
    a.close()
    b.close()

    restored = postgres_server.database()
    put_back = subprocess.run(
        [str(postgres_server.bin_dir / "pg_restore"), "-d", restored, str(dump)],
        capture_output=True,
        text=True,
    )
    assert put_back.returncode == 0, put_back.stderr
    with PostgresStore(restored) as before:
        assert before.active_items([x.id, y.id, z.id]) == {x.id, y.id, z.id}  # withdrawals lost

    runner = CliRunner()
    args = ["ledger", "apply", "--store", restored, str(a_ledger), str(b_ledger)]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert f"2 withdrawal(s) took effect again: items {x.id}; cases {two.id}" in first.output
    assert "1 of 3 ledger line(s) changed nothing" in first.output  # the late item: unknown
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "0 withdrawal(s) took effect again" in again.output
    with PostgresStore(restored) as after:
        assert after.active_items([x.id, y.id, z.id]) == {y.id}
        (new,) = after.add_items(one.id, [pdq_item()], actor=OPERATOR).items
        assert new.id > late.id  # the ledgers' ids are never given out again
    postgres_server.drop(restored)


def test_rotate_key_reseals_every_item_while_a_replica_keeps_reading(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``matcher rotate-key`` on PostgreSQL reseals every item under a new key; a replica
    still running with the old keyring opens the resealed items once the new key file is in
    place (it reads the file again for a key it lacks), and what it seals meanwhile, under
    the old key, still opens with the new file. ``--forget-old`` is refused there."""
    from click.testing import CliRunner

    from matcher.cli import main
    from matcher.store.crypto import KEY_ENV, ItemCipher

    monkeypatch.delenv(KEY_ENV)
    key_file = tmp_path / "store.key"
    replica = PostgresStore(postgres_url, key_file=key_file)
    org = replica.create_organisation("Helpline", actor=OPERATOR)
    case = replica.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
    (old,) = replica.add_items(case.id, [pdq_item()], actor=OPERATOR).items
    runner = CliRunner()
    refused = runner.invoke(
        main, ["rotate-key", "--store", postgres_url, "--key-file", str(key_file), "--forget-old"]
    )
    assert refused.exit_code != 0 and "SQLite only" in refused.output
    done = runner.invoke(main, ["rotate-key", "--store", postgres_url, "--key-file", str(key_file)])
    assert done.exit_code == 0, done.output
    assert "now seals 1 item(s)" in done.output
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT sealed FROM item_codes WHERE item_id = %s", (old.id,))
        assert ItemCipher.key_id(row.fetchone()[0]) == 2
    # The running replica (keyring of key 1 in memory) reads the resealed item...
    assert len(replica.item_codes([old.id])) == 1
    # ...and seals under key 1 until restarted, which the new file still opens.
    (during,) = replica.add_items(case.id, [pdq_item()], actor=OPERATOR).items
    replica.close()
    with PostgresStore(postgres_url, key_file=key_file) as restarted:
        got = {int(i) for chunk in restarted.item_codes([old.id, during.id]) for i in chunk.ids}
        assert {i >> 16 for i in got} == {old.id, during.id}


def test_the_pool_size_bounds_a_stores_connections(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_store(..., pool_size=N)`` (``matcher serve --pool-size``): however many threads
    call the store at once, it never holds more than N connections to the server."""
    seen: list[int] = []
    with open_store(postgres_url, pool_size=2) as store, psycopg.connect(postgres_url) as watch:
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                with store._conn() as conn:  # type: ignore[attr-defined]
                    conn.execute("SELECT pg_sleep(0.01)")

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in range(40):
            row = watch.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            watch.rollback()
            seen.append(int(row[0]))  # type: ignore[index]
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join()
    assert max(seen) == 2
