"""The bank: the domain of matcher. Cases, enrollment, matching, withdrawal, feedback, keys.

The bank joins the durable store (the truth) and the in-memory index (the speed). It knows
nothing of gRPC: the service converts requests into these calls and maps ``matcher.errors`` to
status codes.

How the two are kept honest:

- **Enroll** commits to the store first and only then adds to the index, so an acknowledged
  enrollment is durable (it survives a crash before the index update: start-up rebuilds the
  index from the store).
- **Withdraw** deletes from the store (commit), then removes from the index.
- **Match** searches the index, then checks every candidate against the store in one batched
  query (no query at all when there is no candidate, the usual case). The check reads in a
  fresh transaction that begins after the index search, so any withdrawal committed before the
  match call began is visible to it: a withdrawn hash is never returned, even by a stale index
  (a lagging replica, a race with a concurrent withdrawal). An in-memory "active ids" set would
  be cheaper but exactly as stale as the index on a replica, which is what the check guards
  against.
- Enroll and withdraw run under one bank lock around "store commit, then index update", so
  the index applies mutations in commit order (an enroll racing a withdrawal of the same case
  cannot leave withdrawn ids in the index). SQLite has a single writer anyway, so the lock
  costs no write throughput. Match takes no bank lock: the index's search is safe alongside
  its mutations, and the store gives each thread its own read connection.

Start-up: ``load()`` (or ``start_loading()`` in the background) reads every stored hash from a
consistent snapshot in big blocks, builds a new index, then applies the change-log rows
committed during the load (writes keep working while the bank loads: enrollments and
withdrawals commit to the store and are picked up by this catch-up). Until then ``ready`` is
False and ``match`` raises ``Unavailable``; the service's health check reports NOT_SERVING.

Calling from asyncio: every method blocks (a commit waits for fsync, a secret check runs
scrypt for tens of milliseconds, a large batch match takes a while), so a grpc.aio servicer
should call them through ``asyncio.to_thread`` or its own executor, never on the event loop.

Permissions are checked here as well as in the service's auth layer: a practitioner acts only
for its own organisation's cases (others look like they do not exist: ``NotFound``); admins and
local operators act for any organisation (an admin can create a practitioner key for any
organisation anyway, so refusing would protect nothing).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from tqdm import tqdm

from matcher import credentials
from matcher.errors import (
    Conflict,
    InvalidDistance,
    InvalidInput,
    LowQuality,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from matcher.index import Index
from matcher.principal import Principal, Role
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.store import (
    DEFAULT_DATA_DIR,
    ApiKeyRecord,
    AuditEntry,
    CaseRecord,
    CaseState,
    CodeChunk,
    Organisation,
    Store,
    open_store,
)

__all__ = [
    "Bank",
    "BankStats",
    "CaseStatus",
    "EnrollResult",
    "Match",
    "NewApiKey",
    "NewCase",
    "Query",
]


@dataclass(frozen=True, slots=True)
class Query:
    """One image to look up: its hashes (e.g. PDQ, its 8 dihedral variants, pHash).

    ``max_distance`` narrows the match distance: None means each signal type's default; an int
    applies to every hash of the query; a mapping gives it per signal type name (e.g.
    ``{"pdq": 20}``; types it leaves out keep their default). A distance above what a signal
    type allows is refused (``InvalidDistance``), never silently capped.
    """

    hashes: Sequence[Hash]
    max_distance: int | Mapping[str, int] | None = None

    def distance_for(self, signal: SignalType, *, field: str = "") -> int:
        """The distance to search ``signal`` at for this query (validated)."""
        asked = self.max_distance
        if isinstance(asked, Mapping):
            unknown = set(asked) - set(SIGNALS)
            if unknown:
                raise InvalidDistance(
                    f"max_distance names unknown signal types: {', '.join(sorted(unknown))}",
                    field=field,
                )
            asked = asked.get(signal.name)
        return signal.check_distance(asked, field=field)


@dataclass(frozen=True, slots=True)
class Match:
    """One stored entry that matched a query: an opaque stable id, never the stored value."""

    match_id: str
    signal: SignalType
    distance: int


@dataclass(frozen=True, slots=True)
class NewCase:
    """A created case. ``secret`` is shown once: only its hash is stored."""

    number: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A created API key. ``key`` is shown once: only its hash is stored."""

    record: ApiKeyRecord
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What one enrollment committed: hashes added, duplicates skipped, the case's new total."""

    case_number: str
    added: int
    duplicates: int
    hash_count: int


@dataclass(frozen=True, slots=True)
class CaseStatus:
    """A case as its owner (or its victim) may see it."""

    number: str
    org_id: int
    state: CaseState
    hash_count: int
    hashes_by_signal: dict[str, int]
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None

    @property
    def match_count(self) -> int:
        """Matches reported by partners so far (right or wrong)."""
        return self.reported_correct + self.reported_wrong


@dataclass(frozen=True, slots=True)
class BankStats:
    """Sizes for operators and metrics; no hash values.

    ``indexed`` counts live index entries per signal type, ``stored`` the store's rows (the two
    agree once ready), ``cases`` the cases per state, ``load_seconds`` the last start-up.
    """

    ready: bool
    indexed: dict[str, int]
    stored: dict[str, int]
    cases: dict[str, int]
    load_seconds: float | None


def _progress_default() -> bool | None:
    # tqdm's own rule with disable=None: draw only on a terminal. MATCHER_PROGRESS=0 silences it.
    return False if os.environ.get("MATCHER_PROGRESS") == "0" else None


class Bank:
    """The domain object the service (and the CLI) calls. Safe to share between threads.

    >>> import tempfile
    >>> from matcher.principal import Principal, Role
    >>> bank = Bank.open(tempfile.mkdtemp(), progress=False)
    >>> org = bank.create_organisation("Helpline", by=Principal.operator())
    >>> me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
    >>> case = bank.create_case(by=me)
    >>> h = Hash.parse("phash:" + "a5" * 8)
    >>> bank.enroll(case.number, [h], by=me).added
    1
    >>> [m.distance for m in bank.match([Query([h])])[0]]
    [0]
    >>> bank.withdraw(case.number, by=me).state
    <CaseState.WITHDRAWN: 'withdrawn'>
    >>> bank.match([Query([h])])
    [[]]
    >>> bank.close()
    """

    def __init__(self, store: Store, *, progress: bool | None = None) -> None:
        self._store = store
        self._index = Index()
        self._match_ids = credentials.MatchIds(store.match_id_key())
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._load_seconds: float | None = None
        self._progress = _progress_default() if progress is None else progress

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        load: bool = True,
        progress: bool | None = None,
    ) -> Bank:
        """Open the store in ``data_dir`` and (by default) load the index before returning."""
        bank = cls(open_store(data_dir), progress=progress)
        if load:
            bank.load()
        return bank

    @property
    def store(self) -> Store:
        """The store behind this bank (for tooling and tests; the service uses the bank)."""
        return self._store

    def close(self) -> None:
        """Close the store. The bank is unusable afterwards."""
        self._ready.clear()
        self._store.close()

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start-up

    @property
    def ready(self) -> bool:
        """True once the index holds everything in the store: the service may serve."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ready (True) or ``timeout`` (False); re-raise a failed load's error."""
        done = self._ready.wait(timeout)
        if self._load_error is not None:
            raise Unavailable("loading the index failed") from self._load_error
        return done

    def start_loading(self) -> threading.Thread:
        """Load the index in a background thread (the service starts serving health meanwhile)."""

        def run() -> None:
            try:
                self.load()
            except BaseException as exc:  # kept for wait_ready(); a thread has nobody to raise to
                self._load_error = exc
                self._ready.set()

        thread = threading.Thread(target=run, name="matcher-index-load", daemon=True)
        thread.start()
        return thread

    def load(self, *, progress: bool | None = None) -> float:
        """Rebuild the index from the store; return the seconds it took. The bank is ready after.

        Reads every hash from one consistent snapshot in big blocks (no per-hash objects),
        builds a fresh index with one bulk add per signal type, then, under the bank lock,
        applies the change-log rows committed since the snapshot and swaps the index in.
        """
        show = self._progress if progress is None else progress
        started = time.perf_counter()
        with self._store.snapshot() as snap:
            # Exact per-signal counts let each signal's ids and codes land in one preallocated
            # array: no per-hash objects, no concatenation copy.
            arrays = {
                name: (np.empty(n, np.int64), np.empty((n, SIGNALS[name].byte_length), np.uint8))
                for name, n in snap.counts.items()
            }
            filled = dict.fromkeys(arrays, 0)
            spill: dict[str, list[CodeChunk]] = {}  # only if the counts were ever wrong
            bar = tqdm(
                total=snap.total,
                unit="hash",
                unit_scale=True,
                desc="loading index",
                disable=None if show is None else not show,
                mininterval=0.5,
            )
            with bar:
                for chunk in snap.chunks():
                    ids, codes = arrays[chunk.signal]
                    at, n = filled[chunk.signal], len(chunk.ids)
                    if at + n <= len(ids):
                        ids[at : at + n] = chunk.ids
                        codes[at : at + n] = chunk.codes
                        filled[chunk.signal] = at + n
                    else:
                        spill.setdefault(chunk.signal, []).append(chunk)
                    bar.update(n)
            mark = snap.mark
        index = Index()
        for name in list(arrays):
            ids, codes = arrays.pop(name)
            ids, codes = ids[: filled[name]], codes[: filled[name]]
            if name in spill:
                ids = np.concatenate([ids, *(c.ids for c in spill[name])])
                codes = np.concatenate([codes, *(c.codes for c in spill[name])])
            index.add_codes(SIGNALS[name], ids, codes)
            del ids, codes  # free this signal's arrays before the next one is added
        with self._lock:
            self._catch_up(index, mark)
            self._index = index
            self._load_seconds = time.perf_counter() - started
            self._ready.set()
        # The snapshot's long read may have held back the WAL purge of a withdrawal made
        # during the load; finish it now.
        self._store.purge_wal()
        return self._load_seconds

    def _catch_up(self, index: Index, mark: int) -> int:
        """Apply change-log rows after ``mark`` to ``index``; return the new mark.

        Ids are never reused, so an id has at most one "add" and one "remove": anything removed
        is dropped, and the values of the rest are read from the store (absent if withdrawn).
        """
        added: list[int] = []
        removed: set[int] = set()
        while changes := self._store.changes_since(mark):
            for change in changes:
                if change.op == "add":
                    added.extend(change.ids)
                else:
                    removed.update(change.ids)
            mark = changes[-1].seq
        if removed:
            index.remove(removed)
        todo = [i for i in added if i not in removed]
        rows = self._store.hashes_by_id(todo)
        if rows:
            index.add([r[0] for r in rows], [Hash(SIGNALS[r[1]], r[2]) for r in rows])
        return mark

    # -- organisations and keys

    def create_organisation(self, name: str, *, by: Principal) -> Organisation:
        """Create an organisation (admin). ``Conflict`` if the name is taken."""
        self._require(by, Role.ADMIN)
        name = name.strip()
        if not name:
            raise InvalidInput("organisation name must not be empty", field="name")
        return self._store.create_organisation(name, actor=by)

    def list_organisations(self, *, by: Principal) -> list[Organisation]:
        """Every organisation (admin)."""
        self._require(by, Role.ADMIN)
        return self._store.list_organisations()

    def create_api_key(
        self, name: str, role: Role, *, org_id: int | None = None, by: Principal
    ) -> NewApiKey:
        """Create an API key (admin); the key text is in the result and nowhere else.

        Practitioner keys must belong to an organisation (their cases are its cases).
        """
        self._require(by, Role.ADMIN)
        role = Role(role)
        if role is Role.PRACTITIONER and org_id is None:
            raise InvalidInput("a practitioner key needs an organisation", field="org_id")
        if org_id is not None and self._store.get_organisation(org_id) is None:
            raise NotFound("no such organisation")
        key = credentials.new_api_key()
        record = self._store.create_api_key(
            name.strip(), role, org_id, credentials.hash_api_key(key), key[:7], actor=by
        )
        return NewApiKey(record, key)

    def list_api_keys(self, *, by: Principal) -> list[ApiKeyRecord]:
        """Every API key, without key material (admin)."""
        self._require(by, Role.ADMIN)
        return self._store.list_api_keys()

    def revoke_api_key(self, key_id: int, *, by: Principal) -> ApiKeyRecord:
        """Revoke an API key (admin); it stops working on its next use."""
        self._require(by, Role.ADMIN)
        return self._store.revoke_api_key(key_id, actor=by)

    def authenticate(self, key: str) -> Principal:
        """The principal behind an API key, or ``Unauthenticated`` (unknown or revoked)."""
        record = self._store.find_api_key(credentials.hash_api_key(key))
        if record is None or not record.active:
            raise Unauthenticated("unknown or revoked API key")
        return Principal.key(record.id, record.role, org_id=record.org_id, name=record.name)

    # -- cases

    def create_case(self, *, by: Principal, org_id: int | None = None) -> NewCase:
        """Open a case for the caller's organisation (admins name ``org_id``).

        Returns the case number and the withdrawal secret; the secret is shown only here.
        """
        owner = by.org_id if by.role is Role.PRACTITIONER else org_id
        if owner is None or not by.may_act_for(owner):
            raise PermissionDenied("only a practitioner (or an admin naming an org) opens cases")
        secret = credentials.new_secret()
        secret_hash = credentials.hash_secret(secret)
        for _ in range(5):  # 60 random bits: a collision is astronomically rare, but cheap to retry
            number = credentials.new_case_number()
            try:
                self._store.create_case(owner, number, secret_hash, actor=by)
            except Conflict:
                continue
            return NewCase(number, secret)
        raise Conflict("could not allocate a case number")

    def enroll(self, case: str, hashes: Sequence[Hash], *, by: Principal) -> EnrollResult:
        """Add hashes to a case: all of them or none.

        Every hash is checked first (signal types with a quality floor, i.e. PDQ, need a
        quality at or above it, with the reason in the error and the offending position in
        ``field``, e.g. ``hashes[3]``). The result is returned only after the store committed
        (acknowledged means durable); then the hashes are added to the index. Re-sending hashes
        already in the case adds nothing (``duplicates``), so a retry after a lost reply is safe.
        """
        if not hashes:
            raise InvalidInput("an enrollment needs at least one hash", field="hashes")
        for i, h in enumerate(hashes):
            _check_enrollable(h, field=f"hashes[{i}]")
        record = self._own_case(case, by)
        with self._lock:
            added = self._store.add_hashes(record.id, hashes, actor=by)
            if self._ready.is_set() and added.ids:
                self._index.add(added.ids, added.hashes)
            # Before the bank is ready, the loader's catch-up adds these from the change log.
        return EnrollResult(record.number, len(added.ids), added.duplicates, added.hash_count)

    def case_status(self, case: str, *, by: Principal) -> CaseStatus:
        """The case's state and counts (its organisation's practitioners, admins)."""
        return self._status(self._own_case(case, by))

    def withdraw(self, case: str, *, by: Principal) -> CaseStatus:
        """Withdraw a case for its organisation: delete its hashes for good, now.

        When this returns, the hash rows are gone from the store and no match returns them.
        Withdrawing a withdrawn case changes nothing and succeeds (safe to retry).
        """
        return self._withdraw(self._own_case(case, by), by)

    def withdraw_with_secret(self, case: str, secret: str) -> CaseStatus:
        """Withdraw a case as its victim, with the case number and the secret.

        A wrong number and a wrong secret look alike and take the same time (``NotFound``),
        so guessing learns nothing about which case numbers exist. The service rate-limits
        failed attempts.
        """
        record = self._store.get_case(credentials.normalise_case_number(case))
        if record is None:
            credentials.verify_secret_absent(secret)
            raise NotFound("no case with this number and secret")
        if not credentials.verify_secret(secret, record.secret_hash):
            raise NotFound("no case with this number and secret")
        return self._withdraw(record, Principal.victim())

    def _withdraw(self, record: CaseRecord, by: Principal) -> CaseStatus:
        with self._lock:
            removed = self._store.withdraw_case(record.id, actor=by)
            if self._ready.is_set() and removed:
                self._index.remove([hash_id for hash_id, _ in removed])
            # Before the bank is ready, the loader's catch-up applies the removals.
        fresh = self._store.get_case_by_id(record.id)
        assert fresh is not None  # cases are never deleted
        return self._status(fresh)

    def _status(self, record: CaseRecord) -> CaseStatus:
        by_signal = self._store.case_signal_counts(record.id) if record.hash_count else {}
        return CaseStatus(
            number=record.number,
            org_id=record.org_id,
            state=record.state,
            hash_count=record.hash_count,
            hashes_by_signal=by_signal,
            reported_correct=record.reported_correct,
            reported_wrong=record.reported_wrong,
            created_at=record.created_at,
            withdrawn_at=record.withdrawn_at,
        )

    def _own_case(self, case: str, by: Principal) -> CaseRecord:
        if not by.has(Role.PRACTITIONER, Role.ADMIN):
            raise PermissionDenied("only practitioners and admins may act on cases")
        record = self._store.get_case(credentials.normalise_case_number(case))
        # Another organisation's case looks exactly like a missing one.
        if record is None or not by.may_act_for(record.org_id):
            raise NotFound("no such case")
        return record

    # -- matching

    def match(self, queries: Sequence[Query]) -> list[list[Match]]:
        """For each query, every stored entry within distance, best first; ``Unavailable``
        until ready.

        Hashes of one query that hit the same stored entry (e.g. two dihedral variants) give
        it once, at the smallest distance. "Best" compares distances relative to each signal's
        bit length, so PDQ and pHash matches sort together. Every candidate is checked against
        the store first (see the module docstring).
        """
        if not self._ready.is_set():
            raise Unavailable("the index is still loading")
        index = self._index
        # Group the query hashes by (signal type, distance): one index search per group.
        groups: dict[tuple[SignalType, int], list[tuple[int, bytes]]] = {}
        for qi, query in enumerate(queries):
            if not query.hashes:
                raise InvalidInput("a query needs at least one hash", field=f"queries[{qi}]")
            for h in query.hashes:
                distance = query.distance_for(h.signal, field=f"queries[{qi}].max_distance")
                groups.setdefault((h.signal, distance), []).append((qi, h.value))
        best: list[dict[int, tuple[int, SignalType]]] = [{} for _ in queries]
        for (signal, distance), items in groups.items():
            codes = np.frombuffer(b"".join(v for _, v in items), dtype=np.uint8).reshape(
                len(items), signal.byte_length
            )
            for (qi, _), (ids, dists) in zip(
                items, index.search(signal, codes, distance), strict=True
            ):
                found = best[qi]
                for hash_id, d in zip(ids.tolist(), dists.tolist(), strict=True):
                    seen = found.get(hash_id)
                    if seen is None or d < seen[0]:
                        found[hash_id] = (d, signal)
        candidates = [hash_id for found in best for hash_id in found]
        active = self._store.active_ids(candidates) if candidates else set()
        out: list[list[Match]] = []
        for found in best:
            matches = [
                Match(self._match_ids.encode(hash_id), signal, d)
                for hash_id, (d, signal) in found.items()
                if hash_id in active
            ]
            matches.sort(key=lambda m: (m.distance / m.signal.bits, m.match_id))
            out.append(matches)
        return out

    def report(self, match_id: str, correct: bool, *, by: Principal) -> None:
        """Record a partner's verdict on a match ("right" or "wrong") against its case.

        ``NotFound`` when the match id points at nothing (e.g. its case was withdrawn since).
        """
        if not by.has(Role.PARTNER, Role.ADMIN):
            raise PermissionDenied("only partners report on matches")
        case_id = self._store.case_of_hash(self._match_ids.decode(match_id))
        if case_id is None:
            raise NotFound("no such match (it may have been withdrawn)")
        self._store.record_feedback(case_id, bool(correct), actor=by)

    # -- operators

    def stats(self, *, by: Principal) -> BankStats:
        """Index sizes per signal type and case counts per state (admin)."""
        self._require(by, Role.ADMIN)
        index = self._index
        return BankStats(
            ready=self.ready,
            indexed={name: index.size(s) for name, s in SIGNALS.items()},
            stored=self._store.hash_counts(),
            cases=self._store.case_counts(),
            load_seconds=self._load_seconds,
        )

    def audit_log(
        self,
        *,
        by: Principal,
        case: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Recent audit rows, newest first: all (admin) or one case (its practitioners).

        Page backwards with ``before`` = the last entry id of the previous page.
        """
        if case is None:
            self._require(by, Role.ADMIN)
            return self._store.audit_log(before=before, limit=limit)
        case_id = self._own_case(case, by).id
        return self._store.audit_log(case_id=case_id, before=before, limit=limit)

    @staticmethod
    def _require(by: Principal, *roles: Role) -> None:
        if not by.has(*roles):
            raise PermissionDenied(f"requires role {' or '.join(str(r) for r in roles)}")


def _check_enrollable(h: Hash, *, field: str) -> None:
    """Refuse a hash the bank must not store: a missing or too low quality where it matters."""
    floor = h.signal.quality_floor
    if floor is None:
        return
    if h.quality is None:
        # Without a quality we cannot tell a flat, collision-prone hash from a good one.
        raise LowQuality(
            f"{h.signal.name} hash needs its quality score (0-100) to be enrolled", field=field
        )
    h.signal.check_quality(h.quality, field=field)
