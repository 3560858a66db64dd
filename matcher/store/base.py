"""The store contract: narrow protocols, each method with its promise, that every backend keeps.

The store is the source of truth; each replica's in-memory index is rebuilt from it and kept
current by following its change log. SQLite (``matcher.store.sqlite``) is the embedded
default; a PostgreSQL backend for several replicas implements the same protocols, and one
conformance suite (``tests/store/test_contract.py``) runs against every backend. The bank is
the only caller. The values returned are those of ``matcher.records``.

Promises every backend keeps (DESIGN.md rules 2-4):

- **Acknowledged means committed.** A mutating method returns only after its transaction is
  durably committed; if it raises, nothing of it was committed. Each one writes its change-log
  and audit rows in the same transaction.
- **Withdrawal is real.** Withdrawing an item deletes its hash rows (no soft delete) and clears
  what could identify the image (its fingerprint, its label); the item row keeps numbers and
  dates only. The backend also makes sure the deleted values leave its files (SQLite:
  secure_delete and a WAL reset; PostgreSQL: its own means), without a caller asking.
- **Hash values are sealed at rest.** Every backend stores an item's codes only as the blob of
  ``matcher.store.crypto.ItemCipher.seal_item`` (AES-GCM, its key outside the database) and
  its secret key only wrapped (``seal_secret``); no value is ever in its files in clear.
- **Hash values stay in one table.** Only the sealed item codes hold values. The change log records
  (op, item id, hash count); a follower reads an added item's codes by item id
  (``item_codes``), so after a withdrawal no copy of a value remains anywhere in the store.
  (The allowlist's values, hashes of public benign pictures and generated patterns, sit in
  clear in their own table: they are about no one.)
  Audit rows carry counts and names, checked by ``matcher.audit.check_detail``.
- **Ids are never reused.** Item ids only grow (gaps allowed), and index entry ids derive from
  them (``records.entry_ids``), so a stale index can never find a new, unrelated hash behind an
  old id.

The change log and concurrent writers. A position is an opaque string made by the backend
(``""`` is the beginning). The promise of ``changes_since``: a follower that always asks from
the position the previous batch returned sees every committed change exactly once, and an
item's "remove" after its "add". A backend must never hand out a position that a transaction
still running could later commit *behind*:

- SQLite has one writer at a time, so a change row's sequence number is its commit order and
  the position is simply the last sequence number read.
- PostgreSQL (the replicas issue) allocates sequence numbers before commit, so several writers
  commit out of sequence order: a reader that took "the highest seq so far" would skip a row
  committed a moment later with a lower seq. Its rule: read only rows of transactions older
  than the oldest one still running (``xid < pg_snapshot_xmin(pg_current_snapshot())``), and
  put that horizon into the position, never the highest seq seen.

Nothing anywhere assumes that the ids of one enrollment are contiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from matcher.principal import Principal, Role
from matcher.records import (
    AllowlistAdded,
    AllowlistCodes,
    AllowlistEntry,
    AllowlistSource,
    ApiKeyRecord,
    AuditEntry,
    CaseRecord,
    ChangeBatch,
    CodeChunk,
    ItemRecord,
    KeyPolicy,
    NewItem,
    Organisation,
    Quarantine,
    QuarantineReason,
    ReportReason,
    ReviewEntry,
    VerdictRecord,
)
from matcher.signals import Hash

__all__ = [
    "AccountStore",
    "AddedItems",
    "AllowlistStore",
    "AuditReader",
    "CaseStore",
    "ChangeFeed",
    "GuessStore",
    "MatchStore",
    "ProbeRecord",
    "ProbeStore",
    "ProbeTally",
    "Snapshot",
    "Store",
]


@dataclass(frozen=True, slots=True)
class AddedItems:
    """What ``add_items`` committed: one record per item of the call, in order, whether each
    was ``created`` now (False: the case already held an identical item, returned as it is),
    and the case after the commit."""

    items: list[ItemRecord]
    created: list[bool]
    case: CaseRecord


class AccountStore(Protocol):
    """Organisations and API keys (stored by hash only)."""

    def create_organisation(self, name: str, *, actor: Principal) -> Organisation:
        """Create an organisation; ``Conflict`` if the name is taken."""
        ...

    def get_organisation(self, org_id: int) -> Organisation | None:
        """One organisation, or None."""
        ...

    def list_organisations(self) -> list[Organisation]:
        """Every organisation, by id."""
        ...

    def create_api_key(
        self,
        name: str,
        role: Role,
        org_id: int | None,
        key_hash: bytes,
        prefix: str,
        *,
        actor: Principal,
    ) -> ApiKeyRecord:
        """Store a new key by its hash; ``NotFound`` for an unknown organisation, ``Conflict``
        for a hash already stored."""
        ...

    def find_api_key(self, key_hash: bytes) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not, or None."""
        ...

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, by id, without key material (only its display prefix)."""
        ...

    def revoke_api_key(self, key_id: int, *, actor: Principal) -> ApiKeyRecord:
        """Revoke a key (idempotent: the first revocation time stays); ``NotFound`` if none."""
        ...

    def key_policy(self, key_id: int) -> KeyPolicy:
        """The key's policy (grants, stricter thresholds, budget, suspension); the default
        ``KeyPolicy()`` for a key that never had one set. Read fresh: every replica sees a
        suspension or a grant as soon as it is committed. ``throttled_until`` comes from the
        probing counts (``throttle_probes``), not from the policy ``set_key_policy`` writes."""
        ...

    def set_key_policy(
        self,
        key_id: int,
        policy: KeyPolicy,
        *,
        actor: Principal,
        action: str,
        detail: dict[str, object] | None = None,
    ) -> KeyPolicy:
        """Replace the key's policy, with one audit row of ``action`` (``key.policy``,
        ``key.suspend``, ``key.restore``) naming the key and ``detail`` (counts, never a hash
        value) in the same transaction; ``NotFound`` if there is no such key."""
        ...

    def record_audit(
        self,
        action: str,
        *,
        actor: Principal,
        case_id: int | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Write one audit row for an event that changes no other state (a probing alarm, a
        refused victim attempt). ``detail`` passes ``audit.check_detail``."""
        ...


class CaseStore(Protocol):
    """Cases and their items: enrollment, status, withdrawal."""

    def create_case(
        self, org_id: int, number: str, secret_hash: str, *, actor: Principal
    ) -> CaseRecord:
        """Create an active case; ``Conflict`` if the number is taken, ``NotFound`` for an
        unknown organisation."""
        ...

    def get_case(self, number: str) -> CaseRecord | None:
        """The case with this (normalised) number, or None."""
        ...

    def get_case_by_id(self, case_id: int) -> CaseRecord | None:
        """The case with this id, or None."""
        ...

    def list_items(self, case_id: int) -> list[ItemRecord]:
        """Every item ever enrolled into the case, withdrawn ones included, by number."""
        ...

    def get_item(self, case_id: int, number: int) -> ItemRecord | None:
        """Item ``number`` of the case, or None."""
        ...

    def add_items(self, case_id: int, items: Sequence[NewItem], *, actor: Principal) -> AddedItems:
        """Enroll ``items`` into an active case: all of them or none, in one transaction.

        Duplicate hashes within an item are dropped (the first one's quality is kept); positions
        are given after that, in the order sent. An item whose set of (signal, value) is that of
        an active item of the case (same keyed fingerprint, also within this call) is not
        stored again: the held one is returned with ``created`` False, so a retried call adds
        nothing. New items are numbered on after the case's highest number. One "add" change
        per new item, one ``case.enroll`` audit row. ``NotFound`` for an unknown case,
        ``Conflict`` for a withdrawn one, ``InvalidInput`` for no items.
        """
        ...

    def withdraw_item(self, case_id: int, number: int, *, actor: Principal) -> ItemRecord:
        """Withdraw one item: delete its hashes, clear its fingerprint and label, mark it
        withdrawn (one "remove" change, one ``item.withdraw`` audit row). Withdrawing a
        withdrawn item changes nothing and returns it. ``NotFound`` if there is no such item."""
        ...

    def withdraw_case(self, case_id: int, *, actor: Principal) -> CaseRecord:
        """Withdraw a case and every active item of it, as ``withdraw_item`` does, in one
        transaction (one ``case.withdraw`` audit row). Idempotent. ``NotFound`` if none."""
        ...

    def case_counts(self) -> dict[str, int]:
        """Number of cases per state (states with none are left out)."""
        ...

    def hash_counts(self) -> dict[str, int]:
        """Number of stored hashes per signal type, in registry order (no scan)."""
        ...

    def item_count(self) -> int:
        """Number of active items."""
        ...


class MatchStore(Protocol):
    """What the match path asks the store."""

    def active_items(self, item_ids: Sequence[int]) -> set[int]:
        """The ids among ``item_ids`` of items that are active and not quarantined now: one
        round trip for any number of ids, read fresh, so it sees every commit made before the
        call began (a withdrawal or a quarantine committed before a match is never matched,
        on any replica, even by a stale index)."""
        ...

    def record_feedback(
        self,
        item_id: int,
        correct: bool,
        *,
        actor: Principal,
        reason: ReportReason | None = None,
        quarantine_after: int | None = None,
    ) -> Quarantine | None:
        """Record the calling key's current verdict on an active item, in one transaction.

        One verdict per (item, key): a later one replaces the earlier (its reason too), and
        ``items.reported_correct`` / ``reported_wrong`` stay the counts of the current verdicts
        (a repeat changes nothing; a changed verdict moves from one count to the other). One
        ``match.report`` audit row. With ``quarantine_after`` = K, a "wrong" verdict that brings
        the distinct keys whose current verdict is "wrong" and was given after the item's last
        review to K opens a quarantine (reason ``reports``, one ``item.quarantine`` audit row
        with counts, never names) and returns it; concurrent verdicts quarantine an item
        exactly once. ``NotFound`` for a missing or withdrawn item; ``InvalidInput`` for an
        actor without an API key."""
        ...

    def quarantine_item(
        self, item_id: int, reason: QuarantineReason, *, matches: int = 0
    ) -> Quarantine | None:
        """Quarantine an active item for ``reason`` (flood control: ``matches`` in the window),
        audited (``item.quarantine``), and return it; None when it is withdrawn or missing,
        already quarantined, or (reason ``flood``) restored by a review before: a practitioner
        said it is the victim's image, so a flood of its matches is a real spread."""
        ...

    def item_verdicts(self, item_ids: Sequence[int]) -> list[VerdictRecord]:
        """The current verdicts on ``item_ids`` (one per item and key), by item then key."""
        ...

    def review_queue(self, org_id: int | None = None) -> list[ReviewEntry]:
        """The open quarantines of active items, of organisation ``org_id`` (None: all), the
        oldest quarantine first."""
        ...

    def restore_item(
        self, case_id: int, number: int, *, actor: Principal, note: str = ""
    ) -> ItemRecord:
        """A practitioner's "restore" after review: delete the item's quarantine and set its
        ``reviewed_at`` (verdicts given before no longer count towards a quarantine), with one
        ``item.review`` audit row (``note`` in it if given). ``NotFound`` for no such active
        item, ``Conflict`` if it is not quarantined."""
        ...

    def add_match_counts(self, bucket: int, counts: Mapping[int, int]) -> None:
        """Add ``counts`` (item id -> uploads that returned it) to the hour ``bucket`` (hours
        since the epoch), in one transaction: each replica flushes its own counts every few
        seconds, so the rows hold every replica's matches."""
        ...

    def match_counts(self, item_ids: Sequence[int], since: int) -> dict[int, dict[int, int]]:
        """For each of ``item_ids`` with counts, its uploads per hour bucket from ``since``."""
        ...

    def trim_match_counts(self, before: int) -> int:
        """Delete the match counts of hour buckets before ``before`` (older than anything the
        flood rule reads); return how many rows went. Without it the table grows by a row per
        matched item per hour for ever."""
        ...

    def match_norm(self, since: int, until: int) -> float:
        """The bank's norm: the mean uploads per (item, hour) row over the buckets
        ``since <= bucket < until`` (0.0 when there are none)."""
        ...


class AllowlistStore(Protocol):
    """The allowlist (negative bank): hashes of benign, widely shared pictures that no item may
    resemble (``matcher.bank.allowlist``). Values are stored in clear (they are hashes of public
    pictures) but never leave the store except through ``allowlist_codes``, for the in-memory
    allowlist; listings and audit rows carry ids, signal names, labels and counts only.

    ``meta.allowlist_version`` is bumped in the same transaction as every change, so a replica
    that reads the version (cheap) knows whether to reload; ``meta.allowlist_seeded`` records
    that the seed was added once, so that an operator's removals stick across restarts.
    """

    def add_allowlist_entries(
        self,
        hashes: Sequence[Hash],
        *,
        label: str,
        source: AllowlistSource,
        actor: Principal,
    ) -> AllowlistAdded:
        """Add ``hashes`` with ``label`` in one transaction: a (signal, value) already held is
        not added again (``existing`` counts those and repeats within the call). The version is
        bumped when anything was added; one ``allowlist.add`` audit row (counts, label,
        source) either way. ``InvalidInput`` for no hashes."""
        ...

    def seed_allowlist(
        self,
        entries: Sequence[tuple[Hash, str]],
        *,
        actor: Principal,
        again: bool = False,
    ) -> AllowlistAdded | None:
        """Add the seed ``(hash, label)`` entries (source ``seed``) and mark the allowlist
        seeded, in one transaction; None, with nothing changed, when it was seeded before and
        ``again`` is False. Of several processes seeding a new store at once, exactly one adds
        the seed. One ``allowlist.seed`` audit row (counts) when it runs."""
        ...

    def list_allowlist(self) -> list[AllowlistEntry]:
        """Every entry, by id, without its value."""
        ...

    def remove_allowlist_entry(self, entry_id: int, *, actor: Principal) -> AllowlistEntry:
        """Delete one entry, bump the version, one ``allowlist.remove`` audit row; ``NotFound``
        if there is no such entry."""
        ...

    def allowlist_version(self) -> int:
        """The allowlist's version (0 for one never changed): one cheap read, fresh, so it sees
        every change committed before the call."""
        ...

    def allowlist_codes(self) -> AllowlistCodes:
        """Every entry's value with its id, one chunk per signal type, and the version they
        make up (one consistent read)."""
        ...


class Snapshot(Protocol):
    """A consistent read of every stored hash, to build an index from.

    ``position`` is the change-log position the snapshot includes: after loading, follow
    ``changes_since(position)``. ``counts`` are the hashes per signal type in the snapshot
    (exact: they size the index's arrays).
    """

    position: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Number of hashes in the snapshot."""
        ...

    def chunks(self, rows: int = ...) -> Iterator[CodeChunk]:
        """Every stored hash in blocks of about ``rows`` entries, with index entry ids: each
        chunk holds one signal type, and each signal type's entry ids ascend across its chunks
        (chunks of different types may interleave: a backend that seals whole items, see
        ``matcher.store.crypto``, yields one chunk per type per block of items)."""
        ...


class ChangeFeed(Protocol):
    """What a follower (the index of this process or of a replica) reads."""

    def snapshot(self) -> AbstractContextManager[Snapshot]:
        """A consistent read of all hashes (see ``Snapshot``). Writes go on meanwhile."""
        ...

    def changes_since(self, position: str, *, limit: int = 10_000) -> ChangeBatch:
        """Committed changes after ``position`` (``""``: from the beginning), oldest first, at
        most ``limit``, and the position to ask from next (see the module docstring for the
        promise under concurrent writers). ``InvalidInput`` for a position this backend did
        not make; ``Conflict`` for one older than the trimmed log (reload from a snapshot)."""
        ...

    def item_codes(self, item_ids: Sequence[int]) -> list[CodeChunk]:
        """The codes, with entry ids, of the items among ``item_ids`` still active now, one
        chunk per signal type present (withdrawn or unknown items give nothing)."""
        ...

    def trim_changes(self, before: str) -> int:
        """Delete the changes up to ``before`` (a position every follower has passed);
        return how many rows went."""
        ...


class AuditReader(Protocol):
    """The audit trail, for operators and a case's own practitioners."""

    def audit_log(
        self, *, case_id: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The most recent audit rows, newest first, optionally of one case; ``before`` (an
        entry id) pages backwards."""
        ...


class GuessStore(Protocol):
    """Failed victim guesses, counted in time buckets, so that every replica's failures count
    against one budget (``matcher.service.guesses``). A key is opaque bytes of at most 32
    (the caller's keyed hash: never an address or a case number in clear); a bucket is a
    whole number of the caller's time unit."""

    def guess_failures(self, keys: Sequence[bytes], *, since: int) -> dict[bytes, dict[int, int]]:
        """The failures of each of ``keys`` per bucket, for the buckets from ``since`` on (keys
        without any are left out): one read, fresh, so it sees every commit before it."""
        ...

    def add_guess_failure(self, keys: Sequence[bytes], *, bucket: int, prune_before: int) -> None:
        """Count one failure on each of ``keys`` in ``bucket``, and delete every key's buckets
        before ``prune_before``, in one transaction (committed before it returns)."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """What one request of one partner key hit, as keyed digests only (signed 64-bit
    integers, Python ``int``s: ``matcher.bank.probe_counts`` makes them and says what they
    reveal).

    ``near``: per hash of a watched signal in a query that hit something, in request order,
    its digest, the digests of its two halves (stored with it: the store finds a hash's held
    neighbours among the held rows sharing either half's digest, half for half, since a
    one-bit neighbour differs in one half only) and a function giving the digests of its
    one-bit neighbours (for the check only, never stored; called only for a hash that shares
    a half with a held or earlier digest). ``hits``: per (item, query) hit, the item's
    digest, the query's digest and whether the query sat at the item's edge.
    """

    near: Sequence[tuple[int, tuple[int, int], Callable[[], Collection[int]]]] = ()
    hits: Sequence[tuple[int, int, bool]] = ()


@dataclass(frozen=True, slots=True)
class ProbeTally:
    """A key's probing counts right after a ``record_probes`` (every replica's requests).

    ``near``: the key's near arrivals in the near window: each time a recorded hash arrived
    one bit from another one recorded before it (a re-sent probing query counts again, as
    the per-replica detector counts it); ``near_touched``: how many of those this request
    added.
    ``items``: per item digest of the request, ``(edge, spread, grown)``: distinct queries at
    its edge and distinct queries that hit it in the edge window, and whether this request
    added to either. ``throttled_until``: the key's shared throttle (epoch ms, 0 for none).
    """

    near: int
    near_touched: int
    items: Mapping[int, tuple[int, int, bool]]
    throttled_until: int


class ProbeStore(Protocol):
    """Probing counts shared by every replica (``matcher.bank.probe_counts``): per partner
    key, the digests of query hashes that hit something, so that a prober spreading its
    queries over N replicas is counted as one replica would count it. Times are epoch ms.

    ``record_probes`` is check-and-record in one transaction, serialised per key: of two
    requests of one key on two replicas at once, the later one's counts include the first's,
    so no answer is given past a bound because another replica had not committed yet.
    """

    def record_probes(
        self, key_id: int, record: ProbeRecord, *, now: int, near_since: int, edge_since: int
    ) -> ProbeTally:
        """Record ``record`` for ``key_id`` at ``now`` and return the key's counts, in one
        transaction (committed before it returns) that waits for any other one of the same
        key. A near digest is *near* when one of its neighbours shares a half digest with it
        (first half for first half, second for second) and is held since ``near_since`` or
        came earlier in the request; each near arrival counts once (a digest held already
        is not added again, but counts again when near). A (item, query) pair already held
        since ``edge_since`` is not added again (its edge flag may still turn on). Rows older
        than the windows count as absent (a new record refreshes them)."""
        ...

    def throttle_probes(
        self, key_id: int, until: int, *, actor: Principal, detail: dict[str, object]
    ) -> None:
        """Throttle the key until ``until`` (epoch ms; an earlier throttle held is kept if
        later) and write one ``match.probe`` audit row with ``detail`` (counts and ids), in
        one transaction. Every replica reads it through ``key_policy`` (``throttled_until``)
        and the next ``record_probes``."""
        ...

    def reset_probes(self, key_id: int) -> None:
        """Forget the key's probing counts and throttle (a restored key starts afresh)."""
        ...

    def trim_probes(self, *, near_before: int, edge_before: int) -> int:
        """Delete near digests recorded before ``near_before``, (item, query) rows before
        ``edge_before`` and throttles over before ``near_before``; return how many rows went
        (each replica calls it about once an hour, as ``trim_match_counts``)."""
        ...


@runtime_checkable
class Store(
    AccountStore,
    CaseStore,
    MatchStore,
    ChangeFeed,
    AuditReader,
    AllowlistStore,
    GuessStore,
    ProbeStore,
    Protocol,
):
    """A whole backend: every part above, its secret key, and ``close``."""

    def secret_key(self) -> bytes:
        """The store's own random key (32 bytes), the same for every replica: it keys the
        partner-facing item ids (``credentials.MatchIds``) and item fingerprints."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    def __enter__(self) -> Store:
        """``with open_store(url) as store:`` closes it at the end."""
        ...

    def __exit__(self, *exc: object) -> None: ...
