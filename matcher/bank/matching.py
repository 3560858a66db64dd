"""The bank: cases and items, enrollment, matching, withdrawal, feedback, status, audit.

The bank joins the durable store (the truth) and the in-memory index (the speed), kept in step
by the ``IndexFollower``. It knows nothing of gRPC: the service converts requests into these
calls (``matcher.contract``) and maps ``matcher.errors`` to status codes.

How the two are kept honest:

- **Enroll** commits to the store first and only then asks the follower to catch up, so an
  acknowledged enrollment is durable (it survives a crash before the index update: start-up
  rebuilds the index from the store) and matchable when the call returns.
- **Withdraw** deletes from the store (commit), then the follower catches up (removal).
- **Match** searches the index, groups the hits per item (an entry id's high bits are its item
  id), then checks every candidate item against the store in one query (none at all when there
  is no candidate, the usual case). The check reads in a fresh transaction that begins after
  the index search, so any withdrawal committed before the match call began is visible to it:
  a withdrawn item is never returned, even by a stale index (a lagging replica, a race with a
  concurrent withdrawal).
- There is no bank lock: the follower applies the change log in log order under its own lock,
  whichever thread committed what, and the index allows searches alongside its mutations.

Start-up: ``load()`` (or ``start_loading()`` in the background) compiles the index kernels
(``warm_up``) and loads the index from a snapshot; until then ``ready`` is False and ``match``
raises ``Unavailable``, while enrollment and withdrawal keep working (the load's catch-up picks
them up). ``Bank.open(..., load=False)`` compiles nothing.

Calling from asyncio: every method blocks (a commit waits for fsync, a secret check runs
scrypt for tens of milliseconds, a large batch match takes a while), so a grpc.aio servicer
should call them through ``asyncio.to_thread`` or its own executor, never on the event loop.

Permissions are checked here as well as in the service's auth layer: a practitioner acts only
for its own organisation's cases (others look like they do not exist: ``NotFound``); admins and
local operators act for any organisation.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np

from matcher import credentials
from matcher.audit import Action, check_detail
from matcher.bank.accounts import Accounts, require
from matcher.bank.allowlist import REFUSAL, Allowlist
from matcher.bank.flood import FloodControl, FloodRule
from matcher.bank.follower import IndexFollower, Progress
from matcher.errors import (
    Allowlisted,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from matcher.index import warm_up
from matcher.principal import Principal, Role
from matcher.records import (
    ALLOWLIST_LABEL_LENGTH,
    ITEM_BITS,
    AllowlistAdded,
    AllowlistEntry,
    AllowlistSource,
    AuditEntry,
    BankStats,
    CaseRecord,
    CaseStatus,
    EnrollResult,
    ItemMatch,
    ItemRecord,
    ItemState,
    ItemStatus,
    NewCase,
    NewItem,
    PartnerReport,
    Quarantine,
    Query,
    ReportReason,
    ReviewDecision,
    ReviewEntry,
)
from matcher.signals import SIGNALS, Hash, SignalType
from matcher.store import DEFAULT_DATA_DIR, Store, open_store

__all__ = ["DEFAULT_QUARANTINE_AFTER", "Bank"]

_NO_CASE = "no case with this number and secret"
_NO_ITEM = "no item with this case number, secret and item number"
_SIGNAL_ORDER = {name: i for i, name in enumerate(SIGNALS)}


DEFAULT_QUARANTINE_AFTER = 2
"""Distinct partners whose "wrong" verdicts quarantine an item (``--quarantine-after``)."""

_MAX_NOTE = 100  # a review note goes into the audit row, whose texts hold 100 characters


def _item_status(
    case_number: str, item: ItemRecord, reports: Sequence[PartnerReport] = ()
) -> ItemStatus:
    return ItemStatus(
        case_number=case_number,
        number=item.number,
        kind=item.kind,
        state=item.state,
        label=item.label,
        hash_count=item.hash_count,
        hashes_by_signal=dict(item.hashes_by_signal),
        reported_correct=item.reported_correct,
        reported_wrong=item.reported_wrong,
        created_at=item.created_at,
        withdrawn_at=item.withdrawn_at,
        quarantine=item.quarantine,
        reviewed_at=item.reviewed_at,
        partner_reports=tuple(reports),
    )


def _allowlist_label(label: str) -> str:
    label = (label or "").strip()
    if not label:
        raise InvalidInput("give a label saying what the picture is", field="label")
    if len(label) > ALLOWLIST_LABEL_LENGTH:
        raise InvalidInput(
            f"a label has at most {ALLOWLIST_LABEL_LENGTH} characters", field="label"
        )
    try:
        check_detail({"label": label})
    except ValueError:
        raise InvalidInput(
            "a label must not look like a hash value (16 or more hex digits)", field="label"
        ) from None
    return label


class Bank:
    """The domain object the service (and the CLI) calls. Safe to share between threads.

    >>> import tempfile
    >>> from matcher.principal import Principal, Role
    >>> from matcher.signals import Hash
    >>> bank = Bank.open(tempfile.mkdtemp())
    >>> org = bank.accounts.create_organisation("Helpline", by=Principal.operator())
    >>> me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
    >>> case = bank.create_case(by=me)
    >>> h = Hash.parse("phash:" + "a5" * 8)
    >>> bank.enroll(case.number, [NewItem([h])], by=me).added
    1
    >>> [m.distance for m in bank.match([Query([h])])[0]]
    [0]
    >>> bank.withdraw(case.number, by=me).state
    <CaseState.WITHDRAWN: 'withdrawn'>
    >>> bank.match([Query([h])])
    [[]]
    >>> bank.close()
    """

    def __init__(
        self,
        store: Store,
        *,
        follower: IndexFollower | None = None,
        allowlist_seed: bool = True,
        quarantine_after: int = DEFAULT_QUARANTINE_AFTER,
        flood: FloodRule | None = None,
    ) -> None:
        self._store = store
        self._follower = IndexFollower(store) if follower is None else follower
        self.allowlist = Allowlist(store)
        """The allowlist in memory (``matcher.bank.allowlist``), reloaded by the follow loop."""
        self.seed_new_allowlist = allowlist_seed
        """Seed an allowlist never seeded before when loading (``matcher serve
        --no-allowlist-seed`` turns it off)."""
        self._follower.after_catch_up.append(self.allowlist.refresh)
        self._ids = credentials.MatchIds(store.secret_key())
        self._load_error: BaseException | None = None
        self._loaded = threading.Event()
        self.accounts = Accounts(store)
        """Organisations, API keys and authentication (the same store)."""
        self.quarantine_after = quarantine_after
        """Distinct partners whose current "wrong" verdicts quarantine an item (0: never)."""
        self.flood = FloodControl(store, flood)
        """This replica's match counts and the flood rule (``matcher.bank.flood``)."""
        self._events_lock = threading.Lock()
        self.verdicts: Counter[str] = Counter()
        """Verdicts recorded by this replica, by verdict (``correct``, ``wrong``): metrics."""
        self.quarantines: Counter[str] = Counter()
        """Quarantines opened by this replica's calls, by reason: metrics (flood ones are
        ``flood.quarantined``)."""

    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        load: bool = True,
        allowlist_seed: bool = True,
    ) -> Bank:
        """Open the store at ``store`` (a folder or a store URL, see ``open_store``) and, by
        default, compile the kernels and load the index before returning. ``allowlist_seed``:
        seed an allowlist never seeded before, when loading."""
        bank = cls(open_store(store), allowlist_seed=allowlist_seed)
        if load:
            bank.load()
        return bank

    @property
    def store(self) -> Store:
        """The store behind this bank (for tooling and tests; the service uses the bank)."""
        return self._store

    @property
    def follower(self) -> IndexFollower:
        """The follower that keeps this bank's index in step with the store."""
        return self._follower

    def close(self) -> None:
        """Stop following the store (if a follow loop runs) and flood control's flushes, and
        close it. The bank is unusable afterwards."""
        self._follower.stop_following()
        self.flood.stop()
        self._store.close()

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start-up

    @property
    def ready(self) -> bool:
        """True once the index holds everything in the store: the service may serve."""
        return self._follower.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loaded (True) or ``timeout`` (False); re-raise a failed load's error."""
        done = self._loaded.wait(timeout)
        if self._load_error is not None:
            raise Unavailable("loading the index failed") from self._load_error
        return done and self.ready

    def start_loading(self, progress: Progress | None = None) -> threading.Thread:
        """``load`` in a background thread (the service answers health checks meanwhile)."""

        def run() -> None:
            try:
                self.load(progress)
            except BaseException as exc:  # kept for wait_ready(); a thread has nobody to raise to
                self._load_error = exc
                self._loaded.set()

        thread = threading.Thread(target=run, name="matcher-index-load", daemon=True)
        thread.start()
        return thread

    def load(self, progress: Progress | None = None) -> float:
        """Compile the index kernels, then load the index; return the load's seconds.

        ``progress`` is called with ``(hashes done, total)`` while loading (the CLI draws it).
        """
        warm_up()
        # The stand-in secret hash for unknown case numbers is made once per process: make it
        # now, so that the first victim call for a missing case costs what every later one does.
        credentials.verify_secret_absent("")
        if self.seed_new_allowlist:
            self._seed_once()
        self.allowlist.reload()
        seconds = self._follower.load(progress)
        self._loaded.set()
        return seconds

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

    def enroll(self, case: str, items: Sequence[NewItem], *, by: Principal) -> EnrollResult:
        """Enroll items (images) into a case: all of them or none.

        Each ``NewItem`` was checked when it was built (hash count, quality floor, label). The
        result is returned only after the store committed (acknowledged means durable) and the
        index caught up (matchable now). An item the case already holds (the same hashes) is
        not added again (``existing``), so a retry after a lost reply is safe.
        """
        if not items:
            raise InvalidInput("an enrollment needs at least one item", field="items")
        record = self._own_case(case, by)
        self._check_allowlist(record, items, by)
        added = self._store.add_items(record.id, items, actor=by)
        self._follower.catch_up()
        new = sum(added.created)
        return EnrollResult(
            case_number=record.number,
            items=[_item_status(record.number, i) for i in added.items],
            added=new,
            existing=len(added.created) - new,
            item_count=added.case.item_count,
            hash_count=added.case.hash_count,
        )

    def _check_allowlist(self, record: CaseRecord, items: Sequence[NewItem], by: Principal) -> None:
        """Refuse the call if any item looks like an allowlist entry (read fresh: an entry an
        admin added on another replica a moment ago counts)."""
        self.allowlist.refresh()
        for i, item in enumerate(items):
            if self.allowlist.first_near(item.hashes) is None:
                continue
            self.allowlist.count_refused()
            # Audited without any hash or entry: which item of the call, and how many items.
            self._store.record_audit(
                Action.ENROLL_REFUSED,
                actor=by,
                case_id=record.id,
                detail={"item": i, "items": len(items), "reason": "allowlist"},
            )
            raise Allowlisted(REFUSAL, field=f"items[{i}]")

    def case_status(self, case: str, *, by: Principal) -> CaseStatus:
        """The case's state, counts and items (its organisation's practitioners, admins),
        with the verdicts of partners who agreed to be named (``KeyPolicy.named_in_reports``):
        only the owning organisation sees them, never the victim."""
        return self._status(self._own_case(case, by), named=True)

    def case_status_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """The case's state, counts and items, for its victim (case number and secret).

        A wrong number and a wrong secret look alike and take the same time (``NotFound``).
        """
        return self._status(self._victim_case(case_number, secret))

    def withdraw(self, case: str, *, by: Principal) -> CaseStatus:
        """Withdraw a case for its organisation: delete the hashes of all its items, now.

        When this returns, the hash rows are gone from the store and no match returns them.
        Withdrawing a withdrawn case changes nothing and succeeds (safe to retry).
        """
        return self._withdraw_case(self._own_case(case, by), by)

    def withdraw_item(self, case: str, number: int, *, by: Principal) -> ItemStatus:
        """Withdraw one item of a case; its other items keep matching. Idempotent.

        ``NotFound`` when the case has no item ``number``.
        """
        record = self._own_case(case, by)
        return self._withdraw_item(record, number, by, missing="no such item")

    def withdraw_with_secret(self, case_number: str, secret: str) -> CaseStatus:
        """Withdraw a case as its victim, with the case number and the secret.

        A wrong number and a wrong secret look alike and take the same time (``NotFound``),
        so guessing learns nothing about which case numbers exist. The service rate-limits
        failed attempts.
        """
        return self._withdraw_case(self._victim_case(case_number, secret), Principal.victim())

    def withdraw_item_with_secret(self, case_number: str, secret: str, number: int) -> ItemStatus:
        """Withdraw one item as the case's victim.

        A wrong case number, a wrong secret and a wrong item number all give the same
        ``NotFound`` after the same secret check, so none of them can be told apart.
        """
        record = self._victim_case(case_number, secret, missing=_NO_ITEM)
        return self._withdraw_item(record, number, Principal.victim(), missing=_NO_ITEM)

    def _victim_case(self, case_number: str, secret: str, *, missing: str = _NO_CASE) -> CaseRecord:
        record = self._store.get_case(credentials.normalise_case_number(case_number))
        if record is None:
            credentials.verify_secret_absent(secret)
            raise NotFound(missing)
        if not credentials.verify_secret(secret, record.secret_hash):
            raise NotFound(missing)
        return record

    def _withdraw_case(self, record: CaseRecord, by: Principal) -> CaseStatus:
        fresh = self._store.withdraw_case(record.id, actor=by)
        self._follower.catch_up()
        return self._status(fresh)

    def _withdraw_item(
        self, record: CaseRecord, number: int, by: Principal, *, missing: str
    ) -> ItemStatus:
        if not isinstance(number, int) or number < 1:
            raise NotFound(missing)
        try:
            item = self._store.withdraw_item(record.id, number, actor=by)
        except NotFound:
            raise NotFound(missing) from None
        self._follower.catch_up()
        return _item_status(record.number, item)

    def _partner_reports(self, items: Sequence[ItemRecord]) -> dict[int, list[PartnerReport]]:
        """Named partners' current verdicts per item id (partners who agreed only)."""
        if not any(i.reported_correct or i.reported_wrong for i in items):
            return {}
        verdicts = self._store.item_verdicts([i.id for i in items])
        if not verdicts:
            return {}
        names = {k.id: k.name for k in self._store.list_api_keys()}
        named = {
            key_id
            for key_id in {v.key_id for v in verdicts}
            if self._store.key_policy(key_id).named_in_reports
        }
        out: dict[int, list[PartnerReport]] = {}
        for v in verdicts:
            if v.key_id in named:
                out.setdefault(v.item_id, []).append(
                    PartnerReport(names.get(v.key_id, ""), v.correct, v.reason, v.at)
                )
        return out

    def _status(self, record: CaseRecord, *, named: bool = False) -> CaseStatus:
        items = self._store.list_items(record.id)
        reports = self._partner_reports(items) if named else {}
        by_signal: Counter[str] = Counter()
        for item in items:
            by_signal.update(item.hashes_by_signal)
        return CaseStatus(
            number=record.number,
            state=record.state,
            item_count=record.item_count,
            hash_count=record.hash_count,
            hashes_by_signal={n: by_signal[n] for n in SIGNALS if by_signal[n]},
            reported_correct=record.reported_correct,
            reported_wrong=record.reported_wrong,
            created_at=record.created_at,
            withdrawn_at=record.withdrawn_at,
            items=[_item_status(record.number, i, reports.get(i.id, ())) for i in items],
            org_id=record.org_id,
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

    def match(self, queries: Sequence[Query]) -> list[list[ItemMatch]]:
        """For each query (one image), every active item with a hash within distance of one of
        the query's hashes: one ``ItemMatch`` per item, best first. ``Unavailable`` until ready.

        Per item: the closest hit (smallest distance relative to each signal's bit length, so
        PDQ and pHash compare; ties go to the signal listed first in the registry) and
        ``hits``, how many of the query's hashes hit the item. Items sort by that relative
        distance, then by item id. Every candidate item is checked against the store first
        (see the module docstring). Queries arrive validated (``Query.__post_init__``).
        """
        if not self._follower.ready:
            raise Unavailable("the index is still loading")
        index = self._follower.index
        # Group the query hashes by (signal type, distance): one index search per group.
        groups: dict[tuple[SignalType, int], list[tuple[int, int, bytes]]] = {}
        for qi, query in enumerate(queries):
            # A query's distance per signal type, asked once per type, not once per hash.
            mine: dict[SignalType, list[tuple[int, int, bytes]]] = {}
            for hi, h in enumerate(query.hashes):
                group = mine.get(h.signal)
                if group is None:
                    searched = (h.signal, query.distance_for(h.signal))
                    group = mine[h.signal] = groups.setdefault(searched, [])
                group.append((qi, hi, h.value))
        best: list[dict[int, tuple[float, int, int, SignalType]]] = [{} for _ in queries]
        hits: list[dict[int, list[int]]] = [{} for _ in queries]
        for (signal, distance), entries in groups.items():
            codes = np.frombuffer(b"".join(v for _, _, v in entries), dtype=np.uint8).reshape(
                len(entries), signal.byte_length
            )
            order = _SIGNAL_ORDER[signal.name]
            results = index.search(signal, codes, distance)
            blocked = self._suppressed(signal, codes, results)
            for k, ((qi, hi, _), (ids, dists)) in enumerate(zip(entries, results, strict=True)):
                if not len(ids) or (blocked is not None and blocked[k]):
                    continue
                # Results come sorted by distance: an item's first entry is its nearest.
                items, first = np.unique(ids >> ITEM_BITS, return_index=True)
                found = best[qi]
                for item, d in zip(items.tolist(), dists[first].tolist(), strict=True):
                    hits[qi].setdefault(item, []).append(hi)
                    key = (d / signal.bits, order, d, signal)
                    held = found.get(item)
                    if held is None or key[:2] < held[:2]:
                        found[item] = key
        candidates = [item for found in best for item in found]
        if not candidates:
            return [[] for _ in queries]
        active = self._store.active_items(candidates)
        out: list[list[ItemMatch]] = []
        returned: list[int] = []
        for found, counts in zip(best, hits, strict=True):
            ranked = sorted(
                (rel, self._ids.encode(item), signal, d, item)
                for item, (rel, _, d, signal) in found.items()
                if item in active
            )
            returned.extend(r[4] for r in ranked)
            out.append(
                [
                    ItemMatch(i, signal, d, len(counts[item]), matched=tuple(sorted(counts[item])))
                    for _, i, signal, d, item in ranked
                ]
            )
        # Flood control counts the uploads that returned each item: one dict increment per
        # result, flushed to the store in the background (matcher.bank.flood).
        if returned:
            self.flood.count(returned)
        return out

    def _suppressed(
        self, signal: SignalType, codes: np.ndarray, results: list[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray | None:
        """Which query hashes' hits to drop: those that hit an item and are near an allowlist
        entry. None (nothing asked) when the allowlist holds no entry of this signal type or
        no hash hit anything, so an upload that matches nothing pays no more than before."""
        if not self.allowlist.holds(signal):
            return None
        hit = [k for k, (ids, _) in enumerate(results) if len(ids)]
        if not hit:
            return None
        near = self.allowlist.near(signal, codes[hit])
        if not near.any():
            return None
        blocked = np.zeros(len(results), bool)
        blocked[np.asarray(hit)[near]] = True
        self.allowlist.count_suppressed(int(near.sum()))
        return blocked

    def item_number(self, item_id: str) -> int | None:
        """The store's id of the item behind a partner-facing id (for audit rows: an id, not
        a hash value), or None for an id we never made."""
        try:
            return self._ids.decode(item_id)
        except NotFound:
            return None

    def report(
        self,
        item_id: str,
        correct: bool,
        *,
        by: Principal,
        reason: ReportReason | None = None,
    ) -> Quarantine | None:
        """Record a partner key's verdict on a matched item ("right" or "wrong", with an
        optional reason code): one current verdict per key and item, a later one replacing the
        earlier. When ``quarantine_after`` distinct partners' current verdicts (given since
        the item's last review) say "wrong", the item is quarantined at once, on every
        replica, and the quarantine is returned (None otherwise).

        ``NotFound`` when the id is none we gave or its item was withdrawn since.
        """
        require(by, Role.PARTNER, Role.ADMIN)
        quarantine = self._store.record_feedback(
            self._ids.decode(item_id),
            bool(correct),
            actor=by,
            reason=reason,
            quarantine_after=self.quarantine_after or None,
        )
        with self._events_lock:
            self.verdicts["correct" if correct else "wrong"] += 1
            if quarantine is not None:
                self.quarantines[str(quarantine.reason)] += 1
        return quarantine

    # -- review

    def review_queue(self, *, by: Principal, org_id: int | None = None) -> list[ReviewEntry]:
        """Quarantined items waiting for review, the oldest first: a practitioner's own
        organisation's, or (admins) every organisation's or ``org_id``'s."""
        if by.role is Role.PRACTITIONER:
            if by.org_id is None or (org_id is not None and org_id != by.org_id):
                raise PermissionDenied("a practitioner reviews its own organisation's items")
            return self._store.review_queue(by.org_id)
        require(by, Role.ADMIN)
        return self._store.review_queue(org_id)

    def review_item(
        self, case: str, number: int, decision: ReviewDecision, *, by: Principal, note: str = ""
    ) -> ItemStatus:
        """A practitioner's decision on a quarantined item of its organisation: ``RESTORE``
        (it matches again at once; verdicts given before no longer count, and flood control
        leaves it alone from now on) or ``WITHDRAW`` (as ``withdraw_item``). Both audited
        (``item.review``, with ``note`` if given: at most 100 characters, never a hash).

        ``NotFound`` for no such item, ``Conflict`` if it is not quarantined.
        """
        if len(note) > _MAX_NOTE:
            raise InvalidInput(f"a review note has at most {_MAX_NOTE} characters", field="note")
        record = self._own_case(case, by)
        if not isinstance(number, int) or number < 1:
            raise NotFound("no such item")
        item = self._store.get_item(record.id, number)
        if item is None or item.state is not ItemState.ACTIVE:
            raise NotFound("no such item")
        if item.quarantine is None:
            raise Conflict("the item is not quarantined: there is nothing to review")
        detail: dict[str, object] = {"item": number, "decision": str(decision)}
        if note:
            detail["note"] = note
        try:
            check_detail(detail)
        except ValueError:
            raise InvalidInput("a review note may not hold a hash value", field="note") from None
        if decision is ReviewDecision.RESTORE:
            restored = self._store.restore_item(record.id, number, actor=by, note=note)
            return _item_status(record.number, restored)
        detail["reason"] = str(item.quarantine.reason)
        withdrawn = self._withdraw_item(record, number, by, missing="no such item")
        self._store.record_audit(Action.ITEM_REVIEW, actor=by, case_id=record.id, detail=detail)
        return withdrawn

    # -- the allowlist (admins)

    def _seed_once(self) -> AllowlistAdded | None:
        from matcher.allowlist_seed import seed_entries

        entries = [(Hash.parse(e.hash), e.label) for e in seed_entries()]
        return self._store.seed_allowlist(entries, actor=Principal.operator("seed"))

    def allowlist_add(self, hashes: Sequence[Hash], *, label: str, by: Principal) -> AllowlistAdded:
        """Add hashes of a benign, widely shared picture to the allowlist (admin): from now on
        no item looking like it is enrolled, and matches on it are suppressed, on every
        replica. ``label`` (required, at most 100 characters, e.g. "meme: distracted
        boyfriend") is what operators and the audit trail see; hashes already held count as
        ``existing``."""
        require(by, Role.ADMIN)
        label = _allowlist_label(label)
        if not hashes:
            raise InvalidInput("give at least one hash to add", field="hashes")
        added = self._store.add_allowlist_entries(
            hashes, label=label, source=AllowlistSource.ADMIN, actor=by
        )
        self.allowlist.refresh()
        return added

    def allowlist_entries(self, *, by: Principal) -> list[AllowlistEntry]:
        """Every allowlist entry, without values (admin)."""
        require(by, Role.ADMIN)
        return self._store.list_allowlist()

    def allowlist_remove(self, entry_id: int, *, by: Principal) -> AllowlistEntry:
        """Remove one allowlist entry (admin); ``NotFound`` if there is none."""
        require(by, Role.ADMIN)
        entry = self._store.remove_allowlist_entry(entry_id, actor=by)
        self.allowlist.refresh()
        return entry

    def allowlist_seed(self, *, by: Principal) -> AllowlistAdded:
        """Add the generated seed again (admin): entries an operator removed come back,
        held ones are counted as ``existing``."""
        require(by, Role.ADMIN)
        from matcher.allowlist_seed import seed_entries

        entries = [(Hash.parse(e.hash), e.label) for e in seed_entries()]
        added = self._store.seed_allowlist(entries, actor=by, again=True)
        assert added is not None  # again=True always runs
        self.allowlist.refresh()
        return added

    # -- operators

    def stats(self, *, by: Principal) -> BankStats:
        """Index sizes per signal type, stored hashes, cases per state, active items (admin)."""
        require(by, Role.ADMIN)
        index = self._follower.index
        return BankStats(
            ready=self.ready,
            indexed={name: index.size(s) for name, s in SIGNALS.items()},
            stored=self._store.hash_counts(),
            cases=self._store.case_counts(),
            items=self._store.item_count(),
            load_seconds=self._follower.load_seconds,
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
            require(by, Role.ADMIN)
            return self._store.audit_log(before=before, limit=limit)
        case_id = self._own_case(case, by).id
        return self._store.audit_log(case_id=case_id, before=before, limit=limit)
