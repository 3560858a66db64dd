"""Partners learn whether an upload matches, not what is stored: the attacks of issue 10, run
by a partner key against a real server, and the honest workload that must trip nothing.

Each attack starts from a re-upload 10-20 bits from an enrolled PDQ hash, as a partner holding
one copy of a victim's photo would, and ends with its best guess of the stored hash. Bounds as
shipped (``ProbeLimits()``), except the throttle pause, shortened so the attacks run to their
end quickly (an attacker that waits out every pause gets no further: counts are kept).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.bank.probing import ProbeLimits
from matcher.client import Client
from matcher.errors import InvalidInput, PermissionDenied, RateLimited
from matcher.hashing.compute import pdq
from matcher.principal import Principal
from matcher.records import MatchBand, Query
from matcher.service import ServerConfig
from matcher.service.servicer import ServiceLimits
from matcher.signals import PDQ, Hash
from tests.conftest import shared_path
from tests.service_fixtures import Running, flip_bits, start_server, stop_server

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Running]:
    limits = ServiceLimits(probing=ProbeLimits(throttle_seconds=0.05))
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, limits=limits)
    running, thread = start_server(tmp_path / "data", config)
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


def balanced(rng: np.random.Generator) -> Hash:
    """A random PDQ-like hash: 128 ones, as PDQ's median threshold makes every real one."""
    bits = np.zeros(256, np.uint8)
    bits[rng.choice(256, 128, replace=False)] = 1
    return Hash(PDQ, np.packbits(bits).tobytes(), 90)


def distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def flip(value: bytes, bit: int) -> bytes:
    return (int.from_bytes(value, "big") ^ (1 << bit)).to_bytes(len(value), "big")


class Prober:
    """A partner asking yes/no questions; waits out throttling, stops when suspended."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.asked = 0
        self.throttled = 0
        self.suspended = False

    def ask(self, values: list[bytes]) -> list[bool] | None:
        while not self.suspended:
            try:
                results = self.client.match([Query([Hash(PDQ, v)]) for v in values])
            except RateLimited as exc:
                self.throttled += 1
                time.sleep(exc.retry_after)
                continue
            except PermissionDenied:
                self.suspended = True
                break
            self.asked += len(values)
            return [bool(r.matches) for r in results]
        return None


def _alarms(running: Running) -> dict[str, float]:
    registry = running.server.metrics.registry
    out = {}
    for kind in ("near", "edge", "spread"):
        for action in ("throttle", "suspend"):
            value = registry.get_sample_value(
                "matcher_probe_alarms_total", {"kind": kind, "action": action}
            )
            if value:
                out[f"{kind}.{action}"] = value
    return out


def _suspensions(running: Running) -> list[dict[str, object]]:
    rows = running.bank.audit_log(by=Principal.operator("tests"), limit=1000)
    return [r.detail for r in rows if r.action == "key.suspend"]


def _enrolled(running: Running, rng: np.random.Generator) -> Hash:
    stored = balanced(rng)
    running.enroll([[stored], [balanced(rng)]])
    return stored


def test_the_257_flip_attack_is_suspended_in_its_first_request(
    guarded: Running, rng: np.random.Generator
) -> None:
    stored = _enrolled(guarded, rng)
    upload = flip_bits(stored, 14, rng).value
    flips = [upload] + [flip(upload, i) for i in range(256)]
    with guarded.client("partner") as partner:
        # As one query: refused outright (a query is one image: at most 64 hashes).
        with pytest.raises(InvalidInput) as err:
            partner.match([Query([Hash(PDQ, v) for v in flips])])
        assert err.value.field == "queries[0].hashes"
        prober = Prober(partner)
        answers = prober.ask(flips)  # as 257 queries of one request
    assert answers is None and prober.suspended and prober.asked == 0
    # Nothing came back: the attacker's best guess is still its own re-upload.
    assert distance(upload, stored.value) == 14
    assert _alarms(guarded) == {"near.suspend": 1}
    [detail] = _suspensions(guarded)
    assert detail["reason"] == "near" and detail["count"] >= 32
    keys = {k.name: k.id for k in guarded.bank.accounts.list_api_keys(by=Principal.operator())}
    assert guarded.bank.accounts.policy(keys["acme"]).suspended


@pytest.mark.parametrize("start", [10, 20])
def test_the_boundary_walk_ends_far_away_and_suspended(
    guarded: Running, rng: np.random.Generator, start: int
) -> None:
    """Walk out one bit at a time until the answer turns to "no match", then flip each bit
    there: the flips that bring it back are bits where the stored hash differs."""
    stored = _enrolled(guarded, rng)
    upload = flip_bits(stored, start, rng).value
    with guarded.client("partner") as partner:
        prober = Prober(partner)
        current, walked = upload, set()
        for bit in rng.permutation(256).tolist():
            answer = prober.ask([flip(current, bit)])
            if answer is None:
                break
            current = flip(current, bit)
            walked.add(bit)
            if not answer[0]:
                break
        found = []
        if not prober.suspended:
            for bit in range(256):
                if bit in walked:
                    continue
                answer = prober.ask([flip(current, bit)])
                if answer is None:
                    break
                if answer[0]:
                    found.append(bit)
    guess = current
    for bit in found:
        guess = flip(guess, bit)
    closest = min(distance(upload, stored.value), distance(guess, stored.value))
    print(
        f"boundary walk from {start} bits: {prober.asked} queries answered, "
        f"{prober.throttled} throttled, {len(found)} bits found, closest guess {closest} bits"
    )
    assert closest >= 8
    assert prober.suspended and prober.throttled >= 1
    assert _alarms(guarded).get("near.suspend") == 1
    assert [d["reason"] for d in _suspensions(guarded)] == ["near"]


def test_probing_the_edge_with_unrelated_hashes_is_caught_too(
    guarded: Running, rng: np.random.Generator
) -> None:
    """An attacker that avoids near-identical queries (each query far from the others) but
    keeps landing on one item's edge trips the edge bound: throttled at 6, suspended at 16."""
    stored = _enrolled(guarded, rng)
    with guarded.client("partner") as partner:
        prober = Prober(partner)
        for _ in range(40):
            if prober.ask([flip_bits(stored, 29, rng).value]) is None:
                break
    assert prober.suspended and prober.asked < 16 and prober.throttled >= 1
    assert set(_alarms(guarded)) == {"edge.throttle", "edge.suspend"}
    [detail] = _suspensions(guarded)
    assert detail["reason"] == "edge" and isinstance(detail["item"], int)


def test_a_suspended_key_works_again_once_an_admin_restores_it(
    guarded: Running, rng: np.random.Generator
) -> None:
    stored = _enrolled(guarded, rng)
    upload = flip_bits(stored, 14, rng).value
    with guarded.client("partner") as partner, guarded.client("admin") as admin:
        assert Prober(partner).ask([upload] + [flip(upload, i) for i in range(40)]) is None
        with pytest.raises(PermissionDenied) as err:
            partner.match([Query([Hash(PDQ, upload)])])
        assert "restore" in str(err.value)
        key_id = next(k.id for k in admin.list_api_keys() if k.name == "acme")
        policy = admin.restore_api_key(key_id)
        assert not policy.suspended
        [result] = partner.match([Query([Hash(PDQ, upload)])])
        assert len(result.matches) == 1  # (strong or weak: 14 bits is near the jittered edge)
    actions = [r.action for r in guarded.bank.audit_log(by=Principal.operator(), limit=50)]
    assert "key.restore" in actions and "key.suspend" in actions


def _reupload(path: Path) -> tuple[Hash, Hash]:
    """A photo's PDQ and that of a re-upload of it (smaller, JPEG quality 60)."""
    image = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(buf, "JPEG", quality=60)
    buf.seek(0)
    return pdq(image), pdq(Image.open(buf).convert("RGB"))


def test_an_honest_workload_trips_nothing_and_loses_no_match(
    guarded: Running, rng: np.random.Generator
) -> None:
    """A scan of 10,000 uploads among which 30 real re-uploads of enrolled photos, then 1,000
    re-uploads of one enrolled photo in varied encodings (``fixtures/reencodings.txt``), in
    batches as a pipeline sends them: every match the bank's threshold promises comes back,
    and no bound is crossed."""
    photos = sorted(shared_path("photos", "bsds500", "val").glob("*.jpg"))[:30]
    pairs = [_reupload(p) for p in photos]
    lines = (FIXTURES / "reencodings.txt").read_text().split()
    viral = Hash(PDQ, bytes.fromhex(lines[0]), 90)
    copies = [Hash(PDQ, bytes.fromhex(line), 90) for line in lines[1:]]
    assert len(copies) == 1000
    enrolled = [viral] + [Hash(PDQ, original.value, 90) for original, _ in pairs]
    enrolled += [balanced(rng) for _ in range(500)]
    guarded.enroll([[h] for h in enrolled])
    uploads = [balanced(rng) for _ in range(10_000 - len(pairs))] + [r for _, r in pairs]
    order = rng.permutation(len(uploads))
    scan = [uploads[i] for i in order] + copies

    bank = np.unpackbits(
        np.frombuffer(b"".join(h.value for h in enrolled), np.uint8).reshape(-1, 32), axis=1
    )
    got: list[int] = []
    with guarded.client("partner") as partner:
        for start in range(0, len(scan), 100):
            batch = scan[start : start + 100]
            got += [len(r.matches) for r in partner.match([Query([h]) for h in batch])]
    queries = np.unpackbits(
        np.frombuffer(b"".join(h.value for h in scan), np.uint8).reshape(-1, 32), axis=1
    )
    expected = [int(((bank != q).sum(1) <= PDQ.default_distance).sum()) for q in queries]
    assert got == expected
    reuploads_found = sum(1 for i, j in enumerate(order) if j >= len(uploads) - 30 and got[i])
    copies_found = sum(1 for n in got[-1000:] if n)
    print(f"honest: {reuploads_found}/30 re-uploads, {copies_found}/1000 copies matched")
    assert reuploads_found == sum(expected[i] > 0 for i, j in enumerate(order) if j >= 9970)
    assert reuploads_found >= 25
    assert copies_found == sum(1 for n in expected[-1000:] if n) >= 850
    assert _alarms(guarded) == {}
    actions = {r.action for r in guarded.bank.audit_log(by=Principal.operator(), limit=1000)}
    assert not actions & {"match.probe", "key.suspend"}


# -- limits per hash, caps, budgets, thresholds per key


def test_limits_charge_per_hash_and_cap_queries_and_requests(tmp_path: Path) -> None:
    limits = ServiceLimits(max_request_hashes=300)
    config = ServerConfig(
        address="127.0.0.1:0", metrics_address=None, rate=1.0, burst=100, limits=limits
    )
    running, thread = start_server(tmp_path / "data", config)
    rng = np.random.default_rng(5)
    try:
        assert running.bank.wait_ready(120)
        with running.client("exact") as other:  # (its own bucket)
            with pytest.raises(InvalidInput) as err:  # 6 queries of 60: over the request cap
                other.match([Query([balanced(rng) for _ in range(60)]) for _ in range(6)])
            assert err.value.field == "queries"
        with running.client("partner") as partner:
            partner.match([Query([balanced(rng) for _ in range(60)])])  # 60 of 100 tokens
            with pytest.raises(RateLimited):  # one query, but 60 more hashes
                partner.match([Query([balanced(rng) for _ in range(60)])])
    finally:
        stop_server(running, thread)


def test_thresholds_are_the_servers_and_stricter_per_key(
    guarded: Running, rng: np.random.Generator
) -> None:
    stored = _enrolled(guarded, rng)
    upload = flip_bits(stored, 24, rng)
    me = Principal.operator("tests")
    accounts = guarded.bank.accounts
    with guarded.client("partner") as partner, guarded.client("exact") as exact:
        with pytest.raises(PermissionDenied) as err:  # a radius of one's own: a distance oracle
            partner.match([Query([upload], max_distance=30)])
        assert "max_distance" in str(err.value)
        [result] = partner.match([Query([upload])])
        assert [(m.band, m.distance) for m in result.matches] == [(MatchBand.WEAK, None)]
        [granted] = exact.match([Query([upload], max_distance=30)])
        assert [m.distance for m in granted.matches] == [24]
        key_id = next(k.id for k in accounts.list_api_keys(by=me) if k.name == "acme")
        accounts.update_key_policy(key_id, max_distance={"pdq": 20}, by=me)
        time.sleep(2.1)  # the key cache period
        assert partner.match([Query([upload])])[0].matches == []
        assert len(partner.match([Query([flip_bits(stored, 12, rng)])])[0].matches) == 1


def test_a_daily_budget_refuses_until_midnight(guarded: Running, rng: np.random.Generator) -> None:
    me = Principal.operator("tests")
    accounts = guarded.bank.accounts
    key_id = next(k.id for k in accounts.list_api_keys(by=me) if k.name == "acme")
    accounts.update_key_policy(key_id, daily_hashes=10, by=me)
    with guarded.client("partner") as partner:
        partner.match([Query([balanced(rng)]) for _ in range(10)])
        with pytest.raises(RateLimited) as err:
            partner.match([Query([balanced(rng)])])
        assert 0 < err.value.retry_after <= 86_400 and "00:00 UTC" in str(err.value)


def test_a_throttle_set_by_another_replica_holds_here_within_the_key_cache_period(
    guarded: Running, rng: np.random.Generator
) -> None:
    """Another replica's throttle is in the store: this server refuses the key's every
    request (misses too) once it re-reads the key, and its hits at once (the store's counts
    say so), with how long it lasts."""
    stored = _enrolled(guarded, rng)
    me = Principal.operator("tests")
    key_id = next(k.id for k in guarded.bank.accounts.list_api_keys(by=me) if k.name == "acme")
    with guarded.client("partner") as partner:
        partner.match([Query([balanced(rng)])])  # the key's policy is cached now
        guarded.bank.store.throttle_probes(
            key_id, int((time.time() + 30) * 1000), actor=me, detail={"key_id": key_id}
        )
        with pytest.raises(RateLimited) as hit:
            partner.match([Query([flip_bits(stored, 5, rng)])])
        assert 25 < hit.value.retry_after <= 30
        time.sleep(2.1)  # the key cache period
        with pytest.raises(RateLimited) as miss:
            partner.match([Query([balanced(rng)])])
        assert 20 < miss.value.retry_after <= 30
    assert _alarms(guarded) == {}  # not a crossing here: no alarm, no audit of its own


def test_the_shared_counts_trim_what_left_their_windows_once_an_hour(tmp_path: Path) -> None:
    """A replica deletes the store's probing rows older than their windows about once an
    hour, on the path that records them: a key's hits of two hours ago are gone, not merely
    out of the count."""
    import sqlite3

    from matcher.bank.probe_counts import SharedProbes
    from matcher.records import ItemMatch
    from matcher.store import SQLiteStore

    now = [1_000_000.0]
    limits = ProbeLimits(edge_window_seconds=3600.0)
    with SQLiteStore(tmp_path / "data") as store:
        shared = SharedProbes(store, store.secret_key(), limits, clock=lambda: now[0])
        value = bytes(16) + b"\xff" * 16

        def hit(v: bytes) -> None:
            match = ItemMatch("m_1", PDQ, 3, 1, matched=(0,))
            shared.check(1, [Query([Hash(PDQ, v)])], [[match]], lambda s: 31)

        def rows() -> int:
            conn = sqlite3.connect(tmp_path / "data" / "matcher.db")
            try:
                return sum(
                    conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("probe_near", "probe_hits")
                )
            finally:
                conn.close()

        hit(value)
        hit(flip(value, 3))
        assert rows() == 4
        now[0] += 2 * 3600  # both windows (an hour each here) are over, and an hour passed
        hit(flip(value, 200))
        assert rows() == 2  # only the new hit's rows
