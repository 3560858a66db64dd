"""What a partner learns from a match, and how probing for more is noticed and stopped.

Two attacks read a stored hash back through the match API (FACTS.md, "Attacks on a hash
bank"): with exact distances, one re-upload and its 256 one-bit flips reveal every bit; with
yes/no answers only, a walk out to the threshold and one flip per bit there does the same. So:

- **Bands, not distances** (``Banding``). A match says *strong* or *weak*; the threshold is the
  server's (per bank, stricter per key), never the caller's, since a caller-chosen radius
  answers "is it within d?" for any d, which is a distance by bisection. The strong/weak edge
  is jittered by a few bits with a keyed hash of (key, item, query): the same query always gets
  the same band, but a one-bit flip moves the edge at random, so comparing neighbours at that
  edge tells nothing. The match/no-match edge is not jittered (it is the bank's recall
  promise); it is watched instead.
- **Probing detection**, per partner key (counted in the store by
  ``matcher.bank.probe_counts.SharedProbes``, and per replica by ``ProbeDetector``):

  *near-identical bursts*: query hashes 1 bit apart (``near_bits``) from another query hash of
  the same key in the last ``near_window_seconds``. Natural PDQ hashes are balanced (128 ones:
  the median threshold), so two uploads are never an odd distance apart; 1,000 re-encodings of
  one photo gave no pair at 1 bit, while a flip attack is nothing but such pairs. (pHash is not
  balanced and honest re-encodings are often 1 bit apart, so it is not watched this way.)

  *hashes at one item's edge*: distinct query hashes that hit one item within ``edge_margin``
  of the threshold, in the last ``edge_window_seconds``, while they are at least
  ``edge_share`` of all that hit it. Honest re-uploads sit mostly well inside (re-encoding
  moves PDQ by 4-5 bits on average; 15 of 1,000 harsh re-encodings reached the edge); a
  boundary walk and its flips sit exactly there. And *spread*: distinct query hashes hitting
  one item at all (a high bound, for an averaging attack).

  Past a first bound the key is throttled (``throttle_seconds`` per crossing, and every request
  that adds to a count past it is refused); past a second the key is suspended until an admin
  restores it. Every alarm is logged, audited (key id, item id, counts, never a hash value) and
  counted in ``matcher_probe_alarms``.

Where the counts live. The counts that decide the alarms are in the store, shared by every
replica (``matcher.bank.probe_counts``): for every request that hit something, keyed digests
of its hit query hashes (near pairs are found by equality with the digests of each hash's
one-bit neighbours) and of its (item, query) hits, so a prober who spreads its queries
round-robin over N replicas is throttled and suspended at the same counts as against one.
Only hits are recorded: flip attacks and boundary walks are made of them, and a store write
per upload hash would cost every request and keep a record of partners' uploads. Throttles
(``probe_keys``) and suspensions (the key's policy) are in the store too: every replica
refuses a throttled or suspended key's hits at once, and all its requests within the key
cache period.

``ProbeDetector`` adds a per-replica watch on the near-identical bound over *every* query hash
(misses too), with the values in memory, before the search: a request of 257 one-bit flips is
suspended before it is searched, and a walk sent to one replica is seen at its misses too. Its
state is bounded (``history`` hashes per key and signal, ``max_keys`` keys) and never written
anywhere. On one replica it mostly alarms before the store's counts do (it counts misses too);
over several, the store's counts are the ones that hold.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from matcher.records import ItemMatch, MatchBand, Query
from matcher.signals import SignalType

__all__ = ["Alarm", "Banding", "ProbeDetector", "ProbeLimits", "worst_alarm"]


def _signal_map(**values: int) -> Mapping[str, int]:
    return dict(values)


@dataclass(frozen=True, kw_only=True, slots=True)
class Banding:
    """The bank's thresholds and bands (``matcher serve`` may change them).

    ``match_distance``: the bank's threshold per signal type (default: each signal's default,
    PDQ 31, pHash 8). ``strong_distance``: at most this far is *strong*, give or take
    ``jitter`` bits; beyond it, up to the threshold, *weak*.
    """

    match_distance: Mapping[str, int] = field(default_factory=dict)
    strong_distance: Mapping[str, int] = field(default_factory=lambda: _signal_map(pdq=16, phash=4))
    jitter: Mapping[str, int] = field(default_factory=lambda: _signal_map(pdq=3, phash=1))

    def threshold(self, signal: SignalType, key: Mapping[str, int] | None = None) -> int:
        """The distance a key's queries of ``signal`` are searched at: the bank's, or the key's
        stricter one."""
        bank = min(
            self.match_distance.get(signal.name, signal.default_distance), signal.max_distance
        )
        mine = (key or {}).get(signal.name)
        return bank if mine is None else min(bank, mine)

    def band(self, match: ItemMatch, secret: bytes, key_id: int, query: Query) -> MatchBand:
        """The band of ``match`` for this key and query (deterministic, jittered)."""
        distance = match.distance or 0
        strong = self.strong_distance.get(match.signal.name)
        if strong is None or match.signal.exact:
            return MatchBand.STRONG
        spread = self.jitter.get(match.signal.name, 0)
        if spread:
            mac = hashlib.blake2b(key=secret[:32], digest_size=8, person=b"matcher-band")
            mac.update(struct.pack(">q", key_id))
            mac.update(match.item_id.encode())
            for h in query.hashes:
                mac.update(h.value)
            strong += int.from_bytes(mac.digest(), "big") % (2 * spread + 1) - spread
        return MatchBand.STRONG if distance <= strong else MatchBand.WEAK


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeLimits:
    """The bounds of probing detection (see the module docstring for why these values).

    The defaults: 1,000 honest re-encodings of one photo and a scan of 10,000 uploads trip
    nothing (``tests/test_probing.py``), while the 257-flip attack is suspended in its first
    request and a boundary walk within a few dozen queries.
    """

    near_bits: Mapping[str, int] = field(default_factory=lambda: _signal_map(pdq=1))
    near_window_seconds: float = 3600.0
    near_throttle: int = 8
    near_suspend: int = 32
    edge_margin: Mapping[str, int] = field(default_factory=lambda: _signal_map(pdq=4, phash=1))
    edge_window_seconds: float = 86_400.0
    edge_throttle: int = 6
    edge_suspend: int = 16
    edge_share: float = 0.25
    """The edge bounds count only while at least this share of the distinct hashes that hit
    the item sit at its edge: honest copies of a viral image reach the edge too (15 of the
    fixture's 1,000 re-encodings, 2% of its matches), a prober's queries almost all do."""
    spread_throttle: int = 5_000
    spread_suspend: int = 20_000
    throttle_seconds: float = 60.0
    history: int = 4096
    max_keys: int = 10_000


@dataclass(frozen=True, slots=True)
class Alarm:
    """A bound crossed: ``kind`` (near, edge, spread), ``action`` (throttle, suspend), the
    count that crossed it, and the item (its partner-facing id) for edge and spread."""

    kind: str
    action: str
    count: int
    item_id: str | None = None


def worst_alarm(alarms: Sequence[Alarm]) -> Alarm | None:
    """The alarm to act on: a suspension before a throttle, then the highest count."""
    if not alarms:
        return None
    return max(alarms, key=lambda a: (a.action == "suspend", a.count))


class _Recent:
    """Recent query hashes of one key and signal, found again by pigeonhole pieces: two
    values within ``k`` bits agree exactly on at least one of ``k + 1`` pieces.

    It runs on the event loop for every query hash (misses too), so it is written for the
    interpreter: one dict per piece keyed by the piece's bytes (no tuple per lookup), each
    value's pieces cut once, and ``near`` and ``add`` done in one call."""

    def __init__(self, signal: SignalType, k: int, size: int) -> None:
        self.k = k
        n = signal.byte_length
        cuts = [round(i * n / (k + 1)) for i in range(k + 2)]
        self.pieces = list(itertools.pairwise(cuts))
        self.ring: deque[tuple[float, bytes, list[bytes]]] = deque()
        self.size = size
        # Per piece: the piece's bytes -> {value: how many times the ring holds it}.
        self.by_piece: list[dict[bytes, dict[bytes, int]]] = [{} for _ in self.pieces]

    def near(self, value: bytes) -> bool:
        """True when a different value within ``k`` bits is held."""
        return self._near(value, [value[a:b] for a, b in self.pieces])

    def _near(self, value: bytes, cut: list[bytes]) -> bool:
        me = -1
        for table, piece in zip(self.by_piece, cut, strict=True):
            slot = table.get(piece)
            if not slot:
                continue
            for other in slot:
                if other == value:
                    continue
                if me < 0:
                    me = int.from_bytes(value, "big")
                if (me ^ int.from_bytes(other, "big")).bit_count() <= self.k:
                    return True
        return False

    def add(self, value: bytes, now: float, window: float) -> None:
        self.near_then_add(value, now, window)

    def near_then_add(self, value: bytes, now: float, window: float) -> bool:
        """``near(value)``, then hold ``value`` (dropping what is past the window or the
        size); one cut of its pieces for both."""
        cut = [value[a:b] for a, b in self.pieces]
        found = self._near(value, cut)
        ring = self.ring
        ring.append((now, value, cut))
        for table, piece in zip(self.by_piece, cut, strict=True):
            slot = table.get(piece)
            if slot is None:
                table[piece] = {value: 1}
            else:
                slot[value] = slot.get(value, 0) + 1
        oldest = now - window
        while ring and (len(ring) > self.size or ring[0][0] < oldest):
            _, old, old_cut = ring.popleft()
            for table, piece in zip(self.by_piece, old_cut, strict=True):
                slot = table[piece]
                count = slot[old] - 1
                if count:
                    slot[old] = count
                else:
                    del slot[old]
                    if not slot:
                        del table[piece]
        return found


@dataclass(slots=True)
class _KeyState:
    recent: dict[str, _Recent] = field(default_factory=dict)
    near_events: deque[float] = field(default_factory=deque)
    throttled_until: float = 0.0
    last_seen: float = 0.0


class ProbeDetector:
    """Per-replica near-identical watch over every query hash, per key, and the replica's
    view of throttles. Runs on the service's event loop (no lock needed).

    >>> from matcher.signals import PDQ, Hash
    >>> detector = ProbeDetector(ProbeLimits(near_throttle=2, near_suspend=3))
    >>> base = bytes(16) + b"\\xff" * 16
    >>> qs = [Query([Hash(PDQ, base)])]  # the base, then three one-bit flips of it
    >>> qs += [Query([Hash(PDQ, bytes([1 << i]) + base[1:])]) for i in range(3)]
    >>> detector.before(1, qs)
    Alarm(kind='near', action='suspend', count=3, item_id=None)
    """

    def __init__(self, limits: ProbeLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._keys: dict[int, _KeyState] = {}

    def _state(self, key_id: int, now: float) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            if len(self._keys) >= self.limits.max_keys:
                oldest = sorted(self._keys.items(), key=lambda kv: kv[1].last_seen)
                self._keys = dict(oldest[len(oldest) // 2 :])
            state = self._keys[key_id] = _KeyState()
        state.last_seen = now
        return state

    def forget(self, key_id: int) -> None:
        """Drop a key's counts (when it is suspended: once an admin restores it, it starts
        afresh, whichever replica or tool restored it)."""
        self._keys.pop(key_id, None)

    def throttled(self, key_id: int) -> float:
        """Seconds the key stays throttled (0: not throttled)."""
        state = self._keys.get(key_id)
        return max(0.0, state.throttled_until - self._clock()) if state else 0.0

    def hold(self, key_id: int, seconds: float) -> None:
        """Throttle the key here for ``seconds`` (an alarm from the store's counts)."""
        now = self._clock()
        state = self._state(key_id, now)
        state.throttled_until = max(state.throttled_until, now + seconds)

    def _verdict(self, state: _KeyState, now: float, alarms: list[Alarm]) -> Alarm | None:
        worst = worst_alarm(alarms)
        if worst is not None and worst.action == "throttle":
            state.throttled_until = now + self.limits.throttle_seconds
        return worst

    def before(self, key_id: int, queries: Sequence[Query]) -> Alarm | None:
        """Watch a request's hashes before it is searched: near-identical bursts."""
        limits = self.limits
        now = self._clock()
        state = self._state(key_id, now)
        events = state.near_events
        while events and events[0] < now - limits.near_window_seconds:
            events.popleft()
        start = len(events)
        window = limits.near_window_seconds
        for query in queries:
            for h in query.hashes:
                recent = state.recent.get(h.signal.name)
                if recent is None:
                    k = limits.near_bits.get(h.signal.name, 0)
                    if k <= 0:
                        continue
                    recent = state.recent[h.signal.name] = _Recent(h.signal, k, limits.history)
                if recent.near_then_add(h.value, now, window):
                    events.append(now)
        count = len(events)
        alarms = []
        if count > start:
            if count >= limits.near_suspend:
                alarms.append(Alarm("near", "suspend", count))
            elif count >= limits.near_throttle:
                alarms.append(Alarm("near", "throttle", count))
        return self._verdict(state, now, alarms)
