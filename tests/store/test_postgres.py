"""What only the PostgreSQL store has to prove: commits out of sequence order, durable commits,
notifications, migrations in step with SQLite's, replicas migrating together.

The promises both backends share are in ``test_contract.py`` (run against both).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import psycopg

from matcher.bank.follower import IndexFollower
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
    assert postgres_schema.SCHEMA_VERSION == sqlite_schema.SCHEMA_VERSION == 4
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
