"""Probing counts in the store, so that every replica counts one prober's queries together.

``matcher.bank.probing`` explains the bounds (near-identical hashes, hashes at one item's
edge, spread). Counted per replica, a prober who sends its queries round-robin over N replicas
would need N times each bound before an alarm. Here the counts that decide the alarms are the
store's (``ProbeStore``): after a request's search, if anything matched, one worker thread
(never the event loop) records what it hit and reads the key's counts back, in one
transaction that waits for any other one of the same key, and the service refuses the request
if a bound is crossed. A request that matched nothing costs nothing here: no digest, no store
call (``any(results)`` on the event loop).

What is recorded, per partner key (its id in clear), for the query hashes that hit an item
only (``ItemMatch.matched``: a query's other hashes, its other views or padding, are not):

- *near*: for each such hash of a watched signal (``ProbeLimits.near_bits``: PDQ), a keyed
  digest of its value and keyed digests of its two halves (128 bits each for PDQ); and, for
  the check only, never stored, the digests of its one-bit neighbours (256 for PDQ). A hash
  is *near* when a neighbour's digest was recorded before it within ``near_window_seconds``
  (or earlier in the request). The store finds such pairs by equality, never seeing a
  value: a neighbour differs in one half only, so it shares the other half's digest; the
  store reads the rows sharing either half's digest (two index lookups per hash) and counts
  the hash near when one of their digests is a neighbour's (``_NearMac``). Until issue 15
  it looked up all 257 digests of each hash instead (1.5-2.2 ms of CPU per hit upload);
  the pairs found are the same. Each arrival of a near hash counts, a re-sent one too,
  as the per-replica detector counts it (a refused probe stays refused when sent again).
  Distances above one bit are not shared (the per-replica detector, which holds values in
  memory, watches its own queries at ``near_bits``).
- *edge* and *spread*: per (item, query) hit, a keyed digest of the item's partner-facing id,
  a keyed digest of the query's hashes, and whether the query sat within ``edge_margin`` of
  the threshold, within ``edge_window_seconds``; a re-sent query adds nothing there.

Digests are 64 bits (a signed integer column), keyed with keys derived from the store's
secret key (the same on every replica): BLAKE2b for queries and items; for near digests
AES-CBC-MAC, one key per signal (``_NearMac``), computed for a hash and its 256 neighbours in
two AES calls. What a copy of the database shows:

- without the store key: per key id, opaque numbers and times: how many distinct queries hit
  something, in how many distinct (unnamed) items, how many were one bit from another, and
  (two rows with an equal half digest) which of a key's hit hashes agree exactly on one half
  of their bits, as copies of one picture do, and which half; not which bits, nor any
  value. No hash value, no item id, nothing to link a row to a case.
- with the store key (which also unseals the stored hashes, so the bank is lost anyway): the
  rows can be tested against guesses. A guessed hash can be confirmed as queried by that key
  (with a hit) in the window; an unknown query hash cannot be read back, since it is one of
  about 2^130 values within the threshold of a stored hash, except copies within a few bits
  of a stored hash (C(256, 4) = 1.7e8 guesses per stored hash), which tell the thief nothing
  the stored hash does not. The half digests let the thief also test a guessed half: so
  they learn which queried hashes agree with a stored hash on one half, still not the other
  half (2^128 values; a query within 8 bits of the stored hash in that half, C(128, 8) =
  1.4e12 guesses, where the whole-value digest alone needed C(256, 8) = 4.1e14): again
  copies of a stored picture, which tell nothing the stored hash does not. Halves, and not
  smaller pieces, for that reason: with pieces of 16 bits, a query differing from a known
  hash within one piece would be read back in 65,536 guesses. Items: the thief can link a
  row to an item by digesting every item id (they are the store's ids, encoded), so they
  learn which key matched which item and when, within the window (a day): what
  ``match_counts`` tells per item, plus the key.

Windows slide: a row counts while it is younger than its window; a digest seen again after
its window is recorded afresh. Each replica deletes rows past their windows about once an
hour (``trim_probes``). An admin's restore of a suspended key clears its rows. The records
commit without waiting for a disk sync (they are acknowledged to no one): a crash of the
database loses at most its last fraction of a second of them.

Decision latency. ``record_probes`` is serialised per key, and a request's answer is sent
only after its record committed: of requests sprayed at every replica at once, each sees the
counts of all those recorded before it, so no hit is answered past a bound (zero extra
answers among those the bounds count). What a replica may still answer after another
replica throttled or suspended the key: requests that hit nothing, for up to the key cache
period (2 s) until it re-reads the key (``KeyPolicy.throttled_until``, ``suspended``), as for
any revoked key; and a re-sent edge query already recorded. Misses were never counted.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from matcher.bank.probing import Alarm, ProbeLimits, worst_alarm
from matcher.records import ItemMatch, Query
from matcher.signals import SignalType
from matcher.store.base import ProbeRecord, ProbeStore, ProbeTally

__all__ = ["ProbeCheck", "SharedProbes"]

log = logging.getLogger("matcher.probing")

_TRIM_SECONDS = 3600.0


def _number(mac: hashlib.blake2b) -> int:
    return int.from_bytes(mac.digest(), "big", signed=True)


class _NearMac:
    """Keyed 64-bit digests of one signal's values, of all their one-bit neighbours, and of
    their two halves.

    AES-CBC-MAC over the value (zero-padded to whole blocks: the length is fixed per signal,
    and the key is the signal's own, derived from the store's secret key), which is a
    pseudo-random function for messages of one fixed length. It is computed for a whole
    batch in one ECB call per block: a PDQ hash and its 256 neighbours take about 20 us,
    where a BLAKE2b call per neighbour took 550 us.

    The halves' digests are what the store looks a value's neighbours up by. Two values one
    bit apart differ in one half only, so they share the other half's digest (the pigeonhole
    principle, as the index's multi-index hashing): the store reads the held rows sharing
    either half's digest (two index lookups per hash, where it looked up 257 digests until
    issue 15) and, only when a row other than the value's own shares a half with it, asks for
    the value's neighbours' digests (computed here, never stored) and counts the value near
    when the row's digest is one of them. Exactly the pairs the 257 lookups found: a row
    sharing a half that is not one bit away is passed over. A half's digest is the CBC-MAC,
    under a key of its own, of a block naming the half followed by the half zero-padded to
    whole blocks (one message length per signal, so a PRF again). What they show in a copy
    of the database: see the module docstring."""

    def __init__(self, secret: bytes, signal: SignalType) -> None:
        key = hashlib.blake2b(
            signal.name.encode(), key=secret, digest_size=32, person=b"matcher-pnear"
        ).digest()
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        self._length = signal.byte_length
        self._width = -(-signal.byte_length // 16) * 16
        bits = signal.bits
        self._flips = np.zeros((bits, self._width), np.uint8)
        index = np.arange(bits)
        self._flips[index, index // 8] = (128 >> (index % 8)).astype(np.uint8)
        half_key = hashlib.blake2b(
            signal.name.encode(), key=secret, digest_size=32, person=b"matcher-phalf"
        ).digest()
        self._halves = Cipher(algorithms.AES(half_key), modes.ECB())
        self._cut = self._length // 2  # a one-bit difference lies on one side of it
        self._half_width = -(-(self._length - self._cut) // 16) * 16
        named = np.zeros((2, 16), np.uint8)
        named[:, 0] = (1, 2)  # the block naming the half
        self._local = threading.local()
        encrypt = self._encryptor(self._halves)
        self._half_start = np.frombuffer(encrypt.update(named.tobytes()), np.uint8).reshape(2, 16)

    def _encryptor(self, cipher: Cipher[modes.ECB]) -> CipherContext:
        # An ECB context holds no state between blocks, so each thread keeps one per key
        # (made each call, it cost about 90 us of a request's check).
        held: dict[int, CipherContext] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = {}
        context = held.get(id(cipher))
        if context is None:
            context = held[id(cipher)] = cipher.encryptor()
        return context

    def _mac(
        self, cipher: Cipher[modes.ECB], state: np.ndarray, messages: np.ndarray
    ) -> np.ndarray:
        encrypt = self._encryptor(cipher)
        for start in range(0, messages.shape[1], 16):
            block = (state ^ messages[:, start : start + 16]).tobytes()
            state = np.frombuffer(encrypt.update(block), np.uint8).reshape(-1, 16)
        return state[:, :8].copy().view(">i8").reshape(-1)

    def neighbours(self, value: bytes) -> frozenset[int]:
        """The digests of ``value``'s one-bit neighbours (asked by the store only for a hash
        that shares a half with another one: copies, and probes)."""
        padded = np.zeros(self._width, np.uint8)
        padded[: self._length] = np.frombuffer(value, np.uint8)
        messages = padded[None, :] ^ self._flips
        state = np.zeros((len(messages), 16), np.uint8)
        return frozenset(self._mac(self._cipher, state, messages).tolist())

    def entries(
        self, values: list[bytes]
    ) -> list[tuple[int, tuple[int, int], Callable[[], frozenset[int]]]]:
        """Per value, its digest, its halves' digests and how to get its neighbours'."""
        count = len(values)
        raw = np.frombuffer(b"".join(values), np.uint8).reshape(count, self._length)
        padded = np.zeros((count, self._width), np.uint8)
        padded[:, : self._length] = raw
        digests = self._mac(self._cipher, np.zeros((count, 16), np.uint8), padded).tolist()
        halves = np.zeros((count, 2, self._half_width), np.uint8)
        halves[:, 0, : self._cut] = raw[:, : self._cut]
        halves[:, 1, : self._length - self._cut] = raw[:, self._cut :]
        start = np.broadcast_to(self._half_start, (count, 2, 16)).reshape(-1, 16)
        tags = self._mac(self._halves, start, halves.reshape(-1, self._half_width)).tolist()
        return [
            (digest, (tags[2 * i], tags[2 * i + 1]), functools.partial(self.neighbours, value))
            for i, (digest, value) in enumerate(zip(digests, values, strict=True))
        ]


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """What the store's counts say about one request: an alarm to raise, else ``wait``
    seconds while the key is throttled (by any replica; 0: answer)."""

    alarm: Alarm | None
    wait: float = 0.0


class SharedProbes:
    """The store-counted probing bounds of one replica (see the module docstring).

    Thread-safe (each call is one store transaction); called from the service's worker
    threads. ``clock`` is wall time: replicas keep their clocks in step (NTP), and a skew of
    a second moves a row's window by that much.
    """

    def __init__(
        self,
        store: ProbeStore,
        secret_key: bytes,
        limits: ProbeLimits,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.limits = limits
        self._clock = clock
        key = secret_key[:64]
        self._secret = key
        self._near: dict[str, _NearMac] = {}
        self._query = hashlib.blake2b(key=key, digest_size=8, person=b"matcher-pquery")
        self._item = hashlib.blake2b(key=key, digest_size=8, person=b"matcher-pitem")
        self._trimmed = clock()

    def _near_entries(
        self, signal: SignalType, values: list[bytes]
    ) -> list[tuple[int, tuple[int, int], Callable[[], frozenset[int]]]]:
        mac = self._near.get(signal.name)
        if mac is None:
            mac = self._near[signal.name] = _NearMac(self._secret, signal)
        return mac.entries(values)

    def _query_digest(self, query: Query) -> int:
        mac = self._query.copy()
        # One update of the whole text: the same digest as one update per piece, for less.
        mac.update(
            b"".join(
                b"%s\0%s%s" % (h.signal.name.encode(), len(h.value).to_bytes(2, "big"), h.value)
                for h in query.hashes
            )
        )
        return _number(mac)

    def _item_digest(self, item_id: str) -> int:
        mac = self._item.copy()
        mac.update(item_id.encode())
        return _number(mac)

    def record_of(
        self,
        queries: Sequence[Query],
        results: Sequence[Sequence[ItemMatch]],
        thresholds: Callable[[SignalType], int],
    ) -> tuple[ProbeRecord, dict[int, str]]:
        """The digests of a request's hits, and the item id behind each item digest."""
        limits = self.limits
        watched: dict[SignalType, list[bytes]] = {}
        seen: set[tuple[str, bytes]] = set()
        hits: list[tuple[int, int, bool]] = []
        items: dict[int, str] = {}
        for query, matches in zip(queries, results, strict=True):
            if not matches:
                continue
            digest = self._query_digest(query)
            for m in matches:
                for i in m.matched:  # the hashes that hit, not the query's others
                    h = query.hashes[i]
                    if limits.near_bits.get(h.signal.name, 0) > 0 and (
                        (h.signal.name, h.value) not in seen
                    ):
                        seen.add((h.signal.name, h.value))
                        watched.setdefault(h.signal, []).append(h.value)
                slot = self._item_digest(m.item_id)
                items[slot] = m.item_id
                margin = limits.edge_margin.get(m.signal.name)
                edge = (
                    margin is not None
                    and m.distance is not None
                    and m.distance > thresholds(m.signal) - margin
                )
                hits.append((slot, digest, edge))
        near = [e for signal, values in watched.items() for e in self._near_entries(signal, values)]
        return ProbeRecord(near, hits), items

    def check(
        self,
        key_id: int,
        queries: Sequence[Query],
        results: Sequence[Sequence[ItemMatch]],
        thresholds: Callable[[SignalType], int],
    ) -> ProbeCheck:
        """Record a request's hits for ``key_id`` and decide on the store's counts (one
        transaction; call it only when something matched)."""
        record, items = self.record_of(queries, results, thresholds)
        now = self._clock()
        limits = self.limits
        tally = self._store.record_probes(
            key_id,
            record,
            now=int(now * 1000),
            near_since=int((now - limits.near_window_seconds) * 1000),
            edge_since=int((now - limits.edge_window_seconds) * 1000),
        )
        if now - self._trimmed >= _TRIM_SECONDS:
            self._trim(now)
        alarm = worst_alarm(self.alarms(tally, items))
        if alarm is not None:
            return ProbeCheck(alarm)
        return ProbeCheck(None, max(0.0, tally.throttled_until / 1000 - now))

    def alarms(self, tally: ProbeTally, items: dict[int, str]) -> list[Alarm]:
        """The bounds ``tally`` crosses that this request adds to: a near hash of the request
        past the near bound (new, or a re-sent one: a refused probe stays refused), an item
        whose edge or spread count it grew (re-sending a recorded query adds nothing there)."""
        limits = self.limits
        alarms = []
        if tally.near_touched:
            if tally.near >= limits.near_suspend:
                alarms.append(Alarm("near", "suspend", tally.near))
            elif tally.near >= limits.near_throttle:
                alarms.append(Alarm("near", "throttle", tally.near))
        for slot, (edge, spread, grown) in tally.items.items():
            if not grown:
                continue
            if edge < limits.edge_share * spread:
                edge = 0  # mostly honest copies well inside: their few edge cases are noise
            for kind, count, throttle, suspend in (
                ("edge", edge, limits.edge_throttle, limits.edge_suspend),
                ("spread", spread, limits.spread_throttle, limits.spread_suspend),
            ):
                if count >= suspend:
                    alarms.append(Alarm(kind, "suspend", count, items.get(slot)))
                elif count >= throttle:
                    alarms.append(Alarm(kind, "throttle", count, items.get(slot)))
        return alarms

    def _trim(self, now: float) -> None:
        self._trimmed = now
        limits = self.limits
        try:
            self._store.trim_probes(
                near_before=int((now - limits.near_window_seconds) * 1000),
                edge_before=int((now - limits.edge_window_seconds) * 1000),
            )
        except Exception:  # the counts went in; the trim is tried again in an hour
            log.exception("probing: trimming old probing counts failed")
