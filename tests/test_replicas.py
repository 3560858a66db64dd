"""Several replicas on one real PostgreSQL: real ``matcher serve`` processes on real ports.

Enroll through one replica, match through the other; withdraw through one and never get a
match through the other; SIGKILL one, the other keeps serving, the restarted one catches up.
And, in process, a follower that fell behind a trimmed log reloads from a snapshot.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from matcher.bank import Bank
from matcher.client import Client
from matcher.errors import Allowlisted, Conflict, NotFound, PermissionDenied, RateLimited
from matcher.principal import Principal, Role
from matcher.records import CaseState, NewItem, Query
from matcher.signals import MD5, PDQ, PHASH, Hash
from matcher.store.postgres import PostgresStore
from tests.service_fixtures import flip_bits

OPERATOR = Principal.operator("test")


def photo() -> NewItem:
    return NewItem(
        [Hash(PDQ, os.urandom(32), 90), Hash(PHASH, os.urandom(8)), Hash(MD5, os.urandom(16))]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One ``matcher serve`` process on the shared store."""

    url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # Configured through the environment only, as a container would be.
        env = dict(
            os.environ,
            MATCHER_STORE=self.url,
            # Every interface, IPv6 too: a victim test calls from [::1], another address.
            MATCHER_ADDRESS=f"[::]:{self.port}",
            MATCHER_METRICS_ADDRESS="off",
            MATCHER_FOLLOW_POLL="0.2",
            MATCHER_GRACE="0",
            **self.env,
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "matcher.cli", "serve"], env=env, stdout=out, stderr=out
            )

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with Client(self.target, timeout=2) as c:
            while not c.healthy():
                assert self.process is not None and self.process.poll() is None, (
                    self.log.read_text()
                )
                if time.monotonic() > deadline:
                    raise AssertionError("replica never turned SERVING:\n" + self.log.read_text())
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass
class Cluster:
    a: Replica
    b: Replica
    keys: dict[str, str]

    def client(self, replica: Replica, role: str) -> Client:
        return Client(replica.target, self.keys[role], timeout=10)


@contextmanager
def _cluster(postgres_url: str, tmp_path: Path, env: dict[str, str]) -> Iterator[Cluster]:
    with Bank.open(postgres_url, load=False) as bank:
        org = bank.accounts.create_organisation("Helpline", by=OPERATOR)
        keys = {
            "practitioner": bank.accounts.create_api_key(
                "h", Role.PRACTITIONER, org_id=org.id, by=OPERATOR
            ).key,
            "partner": bank.accounts.create_api_key(
                "p", Role.PARTNER, org_id=None, by=OPERATOR
            ).key,
            "admin": bank.accounts.create_api_key("ops", Role.ADMIN, org_id=None, by=OPERATOR).key,
            "partner2": bank.accounts.create_api_key(
                "q", Role.PARTNER, org_id=None, by=OPERATOR
            ).key,
        }
    a = Replica(postgres_url, _free_port(), tmp_path / "a.log", env=env)
    b = Replica(postgres_url, _free_port(), tmp_path / "b.log", env=env)
    for r in (a, b):
        r.start()
    try:
        for r in (a, b):
            r.wait_serving()
        yield Cluster(a, b, keys)
    finally:
        for r in (a, b):
            r.stop()


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    with _cluster(postgres_url, tmp_path, {}) as running:
        yield running


@pytest.fixture
def flood_cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Two replicas with flood control's small test bounds (``tests/test_flood.py``), set
    through the environment as an operator would."""
    env = {
        "MATCHER_FLOOD_FLOOR": "20",
        "MATCHER_FLOOD_HISTORY_FACTOR": "4",
        "MATCHER_FLOOD_NORM_FACTOR": "2",
        "MATCHER_FLOOD_FLUSH": "0.1",
    }
    with _cluster(postgres_url, tmp_path, env) as running:
        yield running


def _matched(client: Client, item: NewItem) -> bool:
    (result,) = client.match([item.hashes])
    return bool(result.matches)


def test_enroll_on_one_replica_match_on_the_other_withdraw_and_never_match(
    cluster: Cluster,
) -> None:
    with (
        cluster.client(cluster.a, "practitioner") as a,
        cluster.client(cluster.b, "partner") as b,
        cluster.client(cluster.a, "partner") as a_partner,
    ):
        case = a.create_case()
        for _ in range(20):
            item = photo()
            a.add_items(case.number, [item])
            acked = time.monotonic()
            # Matchable on the other replica soon after the acknowledgement (the bench
            # measures how soon: README, "Deployment").
            while not _matched(b, item):
                assert time.monotonic() - acked < 10, "never propagated"
                time.sleep(0.005)
            assert _matched(a_partner, item)
            number = a.get_case(case.number).items[-1].number
            a.withdraw_item(case.number, number)
            # At once after the acknowledgement, B may still hold the item in its index
            # (mid-catch-up): the store check keeps it out of every answer.
            assert not _matched(b, item)
        b_status = a.get_case(case.number)
        assert b_status.item_count == 0


def test_an_allowlist_entry_added_on_one_replica_applies_on_the_other_at_once(
    cluster: Cluster,
) -> None:
    meme, victim = photo(), photo()
    with (
        cluster.client(cluster.a, "admin") as admin_a,
        cluster.client(cluster.b, "practitioner") as b,
        cluster.client(cluster.b, "partner") as partner_b,
    ):
        case = b.create_case()
        b.add_items(case.number, [meme, victim])  # enrolled before anyone allowlisted it
        assert _matched(partner_b, meme)
        admin_a.add_allowlist([meme.hashes[0]], label="meme: cat")
        # Enrollment on B reads the allowlist's version first: refused with no wait at all.
        with pytest.raises(Allowlisted) as refused:
            b.add_items(case.number, [photo(), NewItem([meme.hashes[0]])])
        assert refused.value.field == "items[1]"
        # Matching on B drops the meme's PDQ hit once B's follow loop has reloaded (a poll);
        # its pHash and digest still match the item, the victim's item is untouched.
        acked = time.monotonic()
        while True:
            (result,) = partner_b.match([meme.hashes[:1]])
            if not result.matches:
                break
            assert time.monotonic() - acked < 10, "never applied on replica B"
            time.sleep(0.05)
        assert _matched(partner_b, victim)


def test_a_quarantine_is_seen_at_once_by_every_replica(cluster: Cluster) -> None:
    with (
        cluster.client(cluster.a, "practitioner") as a,
        cluster.client(cluster.a, "partner") as on_a,
        cluster.client(cluster.b, "partner2") as on_b,
    ):
        case = a.create_case()
        item = photo()
        a.add_items(case.number, [item])
        deadline = time.monotonic() + 10
        while not _matched(on_b, item):
            assert time.monotonic() < deadline, "never propagated"
            time.sleep(0.01)
        (result,) = on_a.match([item.hashes])
        item_id = result.matches[0].item_id
        # One partner's "wrong" on each replica: the second quarantines the item (K = 2), and
        # neither replica matches it on the very next call (no follow-loop wait).
        on_a.report(item_id, correct=False)
        assert _matched(on_b, item)
        on_b.report(item_id, correct=False)
        assert not _matched(on_a, item) and not _matched(on_b, item)
        # A restore through one replica is also effective at once on the other.
        a.review_item(case.number, 1, "restore")
        assert _matched(on_b, item) and _matched(on_a, item)


def test_flood_control_counts_every_replicas_matches(flood_cluster: Cluster) -> None:
    cluster = flood_cluster
    with (
        cluster.client(cluster.a, "practitioner") as a,
        cluster.client(cluster.a, "partner") as on_a,
        cluster.client(cluster.b, "partner2") as on_b,
    ):
        case = a.create_case()
        viral, victim = photo(), photo()
        a.add_items(case.number, [viral, victim])
        for item in (viral, victim):
            deadline = time.monotonic() + 10
            while not _matched(on_b, item):  # the one poll that matches counts once
                assert time.monotonic() < deadline, "never propagated"
                time.sleep(0.01)
        # 12 uploads on each replica: under the floor of 20 on either alone, over it together.
        for client in (on_a, on_b):
            assert sum(bool(r.matches) for r in client.match([viral.hashes] * 12)) == 12
        # The victim's item: 8 on each (17 with the poll), under the floor.
        for client in (on_a, on_b):
            assert sum(bool(r.matches) for r in client.match([victim.hashes] * 8)) == 8
        deadline = time.monotonic() + 15
        while _matched(on_a, viral) or _matched(on_b, viral):
            assert time.monotonic() < deadline, "the flood over two replicas was never stopped"
            time.sleep(0.1)
        time.sleep(0.5)  # a few more flushes
        assert _matched(on_a, victim) and _matched(on_b, victim)
        [entry] = a.review_queue()
        assert entry.number == 1 and entry.quarantine.matches >= 20


@pytest.fixture
def probe_cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Two replicas with a short probing throttle, so that attacks run to their end."""
    with _cluster(postgres_url, tmp_path, {"MATCHER_PROBE_THROTTLE": "0.3"}) as running:
        yield running


def _balanced(rng: np.random.Generator) -> Hash:
    """A PDQ-like hash with 128 ones, as every real one has."""
    bits = np.zeros(256, np.uint8)
    bits[rng.choice(256, 128, replace=False)] = 1
    return Hash(PDQ, np.packbits(bits).tobytes(), 90)


def _flip(value: bytes, bit: int) -> bytes:
    return (int.from_bytes(value, "big") ^ (1 << bit)).to_bytes(len(value), "big")


def _stored(cluster: Cluster, rng: np.random.Generator) -> Hash:
    """A PDQ hash enrolled through A and matchable on B (checked with a key that is not
    attacking, so the attackers' counts start at zero)."""
    stored = _balanced(rng)
    with (
        cluster.client(cluster.a, "practitioner") as a,
        Client(cluster.b.target, cluster.keys["admin"], timeout=10) as watcher,
    ):
        case = a.create_case()
        a.add_items(case.number, [NewItem([stored])])
        deadline = time.monotonic() + 10
        while not watcher.match([Query([stored])])[0].matches:
            assert time.monotonic() < deadline, "never propagated"
            time.sleep(0.01)
    return stored


def _attack(clients: list[Client], values: list[bytes]) -> list[str]:
    """One query per request, round-robin over ``clients``; a throttled query is not sent
    again (the attacker moves on), the attack ends at the suspension."""
    outcomes = []
    for i, value in enumerate(values):
        try:
            clients[i % len(clients)].match([Query([Hash(PDQ, value)])])
            outcomes.append("answered")
        except RateLimited as exc:
            outcomes.append("throttled")
            time.sleep(exc.retry_after + 0.05)
        except PermissionDenied:
            outcomes.append("suspended")
            break
    return outcomes


def test_a_flip_attack_spread_over_replicas_is_stopped_at_one_replicas_counts(
    probe_cluster: Cluster, rng: np.random.Generator
) -> None:
    """A re-upload and its one-bit flips, each query a hit: sent to one replica by one key
    and alternating between two replicas by another, both are throttled at the 8th
    near-identical query and suspended at the 32nd (on one replica its own detector decides,
    over two the store's counts do); then both replicas refuse the suspended key's hits."""
    cluster = probe_cluster
    stored = _stored(cluster, rng)
    upload = flip_bits(stored, 14, rng).value
    values = [upload] + [_flip(upload, bit) for bit in range(40)]
    expected = ["answered"] * 8 + ["throttled"] * 24 + ["suspended"]
    with cluster.client(cluster.a, "partner2") as alone:
        assert _attack([alone], values) == expected
    with cluster.client(cluster.a, "partner") as a, cluster.client(cluster.b, "partner") as b:
        assert _attack([a, b], values) == expected
        for replica in (a, b):  # the suspending one at once; the other by the store's counts
            with pytest.raises(PermissionDenied):
                replica.match([Query([Hash(PDQ, upload)])])


def test_an_edge_attack_spread_over_replicas_is_stopped_at_one_replicas_counts(
    probe_cluster: Cluster, rng: np.random.Generator
) -> None:
    """Unrelated queries that all land at one item's edge (29 bits out of 31): throttled at
    the 6th and suspended at the 16th, on one replica as over two."""
    cluster = probe_cluster
    stored = _stored(cluster, rng)
    values = [flip_bits(stored, 29, rng).value for _ in range(30)]
    expected = ["answered"] * 5 + ["throttled"] * 10 + ["suspended"]
    with cluster.client(cluster.a, "partner2") as alone:
        assert _attack([alone], values) == expected
    with cluster.client(cluster.a, "partner") as a, cluster.client(cluster.b, "partner") as b:
        assert _attack([a, b], values) == expected


def test_a_boundary_walk_spread_over_replicas_ends_far_away_and_suspended(
    probe_cluster: Cluster, rng: np.random.Generator
) -> None:
    """The walk of ``tests/test_probing.py``, each query to the other replica, re-sending a
    throttled query until it is answered: suspended before it gets near the stored hash."""
    cluster = probe_cluster
    stored = _stored(cluster, rng)
    upload = flip_bits(stored, 10, rng).value
    asked = throttled = 0
    suspended = False
    with cluster.client(cluster.a, "partner") as a, cluster.client(cluster.b, "partner") as b:
        clients = [a, b]

        def ask(value: bytes) -> bool | None:
            nonlocal asked, throttled, suspended
            while not suspended:
                try:
                    (result,) = clients[(asked + throttled) % 2].match([Query([Hash(PDQ, value)])])
                except RateLimited as exc:
                    throttled += 1
                    time.sleep(exc.retry_after + 0.05)
                    continue
                except PermissionDenied:
                    suspended = True
                    break
                asked += 1
                return bool(result.matches)
            return None

        current, walked = upload, set()
        for bit in rng.permutation(256).tolist():
            answer = ask(_flip(current, bit))
            if answer is None:
                break
            current = _flip(current, bit)
            walked.add(bit)
            if not answer:
                break
        found = []
        if not suspended:
            for bit in range(256):
                if bit in walked:
                    continue
                answer = ask(_flip(current, bit))
                if answer is None:
                    break
                if answer:
                    found.append(bit)
    guess = current
    for bit in found:
        guess = _flip(guess, bit)
    closest = min(
        (int.from_bytes(v, "big") ^ int.from_bytes(stored.value, "big")).bit_count()
        for v in (upload, guess)
    )
    print(f"walk over two replicas: {asked} answered, {throttled} throttled, closest {closest}")
    assert suspended and throttled >= 1 and closest >= 8


def test_a_killed_replica_leaves_the_other_serving_and_catches_up_on_restart(
    cluster: Cluster,
) -> None:
    with cluster.client(cluster.a, "practitioner") as a, cluster.client(cluster.a, "partner") as m:
        case = a.create_case()
        before = photo()
        a.add_items(case.number, [before])
        cluster.b.kill()
        # A keeps serving while B is down, and takes writes.
        assert _matched(m, before)
        during = [photo() for _ in range(5)]
        a.add_items(case.number, during)
        a.withdraw_item(case.number, 1)
        assert all(_matched(m, item) for item in during)
    cluster.b.start()
    cluster.b.wait_serving()
    with cluster.client(cluster.b, "partner") as b:
        # Serving means loaded and caught up: everything committed while it was down is there.
        assert all(_matched(b, item) for item in during)
        assert not _matched(b, before)
        with cluster.client(cluster.a, "practitioner") as a:
            after = photo()
            a.add_items(case.number, [after])
        deadline = time.monotonic() + 10
        while not _matched(b, after):
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_failed_victim_guesses_spread_over_replicas_count_together(cluster: Cluster) -> None:
    """The failure budgets are in the store: 3 wrong guesses through A and 2 through B spend
    the address's 5 (per replica each would still have budget left), so both refuse it now;
    the victim, from another address, still withdraws with the right secret."""
    with cluster.client(cluster.a, "practitioner") as practitioner:
        case = practitioner.create_case()
    with Client(cluster.a.target) as a, Client(cluster.b.target) as b:
        for replica in (a, b, a, b, a):
            with pytest.raises(NotFound):
                replica.get_case_with_secret(case.number, "not the secret")
        for replica in (a, b):
            with pytest.raises(RateLimited) as err:
                replica.withdraw_with_secret(case.number, "not the secret")
            assert 60 < err.value.retry_after <= 900
    with Client(f"[::1]:{cluster.b.port}") as victim:
        assert victim.withdraw_with_secret(case.number, case.secret).state is CaseState.WITHDRAWN


def test_a_replica_writes_its_ledger_before_acknowledging_and_keeps_to_its_pool(
    postgres_url: str, tmp_path: Path
) -> None:
    """``MATCHER_LEDGER`` (``{host}``: the host name, so replicas sharing a volume write a
    file each) holds a withdrawal as soon as it is acknowledged; ``MATCHER_POOL_SIZE`` bounds
    the replica's connections (its pool, plus the one that listens for notifications) under
    concurrent calls."""
    import psycopg

    with Bank.open(postgres_url, load=False) as bank:
        org = bank.accounts.create_organisation("Helpline", by=OPERATOR)
        key = bank.accounts.create_api_key("h", Role.PRACTITIONER, org_id=org.id, by=OPERATOR).key
    replica = Replica(
        postgres_url,
        _free_port(),
        tmp_path / "r.log",
        env={"MATCHER_LEDGER": str(tmp_path / "ledger-{host}.jsonl"), "MATCHER_POOL_SIZE": "2"},
    )
    replica.start()
    try:
        replica.wait_serving()
        ledger = tmp_path / f"ledger-{socket.gethostname()}.jsonl"
        with Client(replica.target, key, timeout=30) as practitioner:
            case = practitioner.create_case()
            practitioner.add_items(case.number, [photo(), photo()])
            assert not ledger.exists()
            practitioner.withdraw_item(case.number, 2)
            assert len(ledger.read_text().splitlines()) == 1
            stop, seen = threading.Event(), []

            def load() -> None:
                with Client(replica.target, key, timeout=30) as c:
                    while not stop.is_set():
                        c.get_case(case.number)

            threads = [threading.Thread(target=load) for _ in range(6)]
            for t in threads:
                t.start()
            with psycopg.connect(postgres_url, autocommit=True) as watch:
                for _ in range(30):
                    row = watch.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend'"
                    ).fetchone()
                    seen.append(int(row[0]))  # type: ignore[index]
                    time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
        assert 2 <= max(seen) <= 3, seen
        assert "no withdrawal ledger" not in replica.log.read_text()
    finally:
        replica.stop()


def test_a_follower_behind_a_trimmed_log_reloads_from_a_snapshot(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as writer, Bank.open(postgres_url) as replica:
        org = writer.create_organisation("Helpline", actor=OPERATOR)
        case = writer.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
        follower = replica.follower
        stale = follower.position
        items = [photo() for _ in range(3)]
        writer.add_items(case.id, items, actor=OPERATOR)
        # Another replica trims the log past this one's position.
        end = writer.changes_since(stale).position
        assert writer.trim_changes(end) == 3
        follower.start_following(poll=0.05, keep_log=None)
        try:
            deadline = time.monotonic() + 30
            while follower.reloads == 0 or not follower.healthy:
                assert time.monotonic() < deadline, "never reloaded"
                time.sleep(0.02)
        finally:
            follower.stop_following()
        found = replica.match([Query(item.hashes) for item in items])
        assert all(found)


def test_the_follow_loop_trims_the_log_it_has_kept_long_enough(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as writer, Bank.open(postgres_url) as replica:
        org = writer.create_organisation("Helpline", actor=OPERATOR)
        case = writer.create_case(org.id, "AAAA-AAAA-AAAA", "scrypt$x", actor=OPERATOR)
        writer.add_items(case.id, [photo(), photo()], actor=OPERATOR)
        follower = replica.follower
        follower.start_following(poll=0.05, keep_log=0.3)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    writer.changes_since("")
                except Conflict:  # trimmed: the loop kept 0.3 s of log, then deleted it
                    break
                assert time.monotonic() < deadline, "never trimmed"
                time.sleep(0.05)
            assert follower.healthy and follower.reloads == 0
        finally:
            follower.stop_following()


def test_readiness_follows_the_follower_and_liveness_the_process(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from matcher.cli import main
    from matcher.service import ServerConfig
    from tests.service_fixtures import start_server, stop_server

    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, stale_after_seconds=0.5)
    running, thread = start_server(tmp_path / "data", config, load=False)
    runner = CliRunner()

    def health(service: str = "") -> tuple[int, str]:
        got = runner.invoke(main, ["health", "--server", running.target, "--service", service])
        return got.exit_code, got.output.strip()

    try:
        # Not loaded: not ready, but alive (a liveness probe must not restart it).
        assert health() == (1, "NOT_SERVING")
        assert health("liveness") == (0, "SERVING")
        running.bank.load()
        deadline = time.monotonic() + 30
        while health()[0] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The follower stops reaching the log's end (as when its store is unreachable):
        # readiness turns NOT_SERVING after stale_after, liveness stays.
        running.bank.follower.stop_following()
        deadline = time.monotonic() + 30
        while health() != (1, "NOT_SERVING"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health("liveness") == (0, "SERVING")
        running.bank.follower.start_following(poll=0.05)
        deadline = time.monotonic() + 30
        while health() != (0, "SERVING"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop_server(running, thread)
