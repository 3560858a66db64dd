"""The domain's values: what the store returns, the bank answers and the SDK hands back.

One module for every layer, so that the service and the SDK never import a store backend to
name a case, and the SDK returns the same types the bank does. No I/O, no transport imports.

Items. What a victim enrolls and withdraws is an *item*: one image (later one video) of a case,
holding all of that image's hashes (every detection view of a profile, its pHash, its
digests). Partners get one answer per matched item, never one per hash. Inside the service an
item's hashes are index *entries* whose ids carry the item id in their high bits::

    entry id = item id << ITEM_BITS | position of the hash in the item

so the index's answers group into items with one shift, an item's entries are known from its
id and hash count alone (a withdrawal needs no lookup of deleted rows), and entry ids are never
reused because item ids never are.

>>> ids = entry_ids(5, 3)
>>> ids.tolist() == [5 << ITEM_BITS, (5 << ITEM_BITS) + 1, (5 << ITEM_BITS) + 2]
True
>>> item_ids_of(ids).tolist()
[5, 5, 5]
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from matcher.errors import InvalidInput
from matcher.principal import Role
from matcher.signals import SIGNALS, Hash, SignalType

__all__ = [
    "ALLOWLIST_LABEL_LENGTH",
    "ITEM_BITS",
    "MAX_ITEM_HASHES",
    "MAX_LABEL_LENGTH",
    "AllowlistAdded",
    "AllowlistCodes",
    "AllowlistEntry",
    "AllowlistSource",
    "ApiKeyRecord",
    "AuditEntry",
    "BankStats",
    "CaseRecord",
    "CaseState",
    "CaseStatus",
    "Change",
    "ChangeBatch",
    "CodeChunk",
    "EnrollResult",
    "ItemKind",
    "ItemMatch",
    "ItemRecord",
    "ItemState",
    "ItemStatus",
    "KeyPolicy",
    "MatchBand",
    "NewApiKey",
    "NewCase",
    "NewItem",
    "Organisation",
    "PartnerReport",
    "Quarantine",
    "QuarantineReason",
    "Query",
    "QueryResult",
    "ReportReason",
    "ReviewDecision",
    "ReviewEntry",
    "VerdictRecord",
    "entry_ids",
    "item_ids_of",
]

ITEM_BITS = 16
"""Low bits of an index entry id that number the hashes of one item."""

MAX_ITEM_HASHES = 1 << ITEM_BITS
"""The most hashes one item may hold (an enroll-profile image holds about 230)."""


def entry_ids(item_id: int, hash_count: int) -> np.ndarray:
    """The index entry ids of an item's hashes, in the order they were enrolled."""
    return (np.int64(item_id) << ITEM_BITS) + np.arange(hash_count, dtype=np.int64)


def item_ids_of(entries: np.ndarray) -> np.ndarray:
    """The item id of each index entry id."""
    return np.asarray(entries, dtype=np.int64) >> ITEM_BITS


# -- states and kinds


class CaseState(enum.StrEnum):
    """The life of a case: enrollable while active; withdrawn is final."""

    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class ItemState(enum.StrEnum):
    """The life of an item: matched while active; withdrawn is final (its hashes are gone)."""

    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class ReportReason(enum.StrEnum):
    """Why a partner reported a match (optional, with a verdict): reason codes, never free
    text, so nothing a partner types reaches a practitioner or an audit row."""

    NOT_THE_IMAGE = "not_the_image"
    """A different picture (a false match)."""
    WIDELY_SHARED = "widely_shared"
    """A widely shared, public picture (a meme, a celebrity photo): it should not be banked."""
    FEATURELESS = "featureless"
    """A near-uniform or patterned picture (a flat colour, a grid) that matches too much."""
    OTHER = "other"
    """Something else."""


class QuarantineReason(enum.StrEnum):
    """Why an item stopped matching until a practitioner reviews it."""

    REPORTS = "reports"
    """Enough distinct partners reported its matches wrong (``matcher serve
    --quarantine-after``)."""
    FLOOD = "flood"
    """Its match rate jumped far above its own history and the bank's norm (flood control,
    ``matcher.bank.flood``)."""


class ReviewDecision(enum.StrEnum):
    """A practitioner's decision on a quarantined item."""

    RESTORE = "restore"
    """It is the victim's image: match it again (earlier verdicts stop counting)."""
    WITHDRAW = "withdraw"
    """It should not be in the bank: withdraw it (its hashes are deleted)."""


class ItemKind(enum.StrEnum):
    """What an item is. Videos arrive with a later issue; the kind is stored from the start."""

    IMAGE = "image"
    VIDEO = "video"


# -- accounts


@dataclass(frozen=True, slots=True)
class Organisation:
    """A helpline or partner platform that owns cases or API keys."""

    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as listed: its id, name, role, organisation and a short display prefix."""

    id: int
    name: str
    role: Role
    org_id: int | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What the server lets one API key learn and spend, set by an admin (stored per key).

    ``exact_distances``: the key's matches carry exact Hamming distances and its queries may
    choose their own (stricter) ``max_distance``. A risk, granted explicitly: with exact
    distances one re-upload and its 256 one-bit flips read a stored PDQ hash back.
    ``max_distance``: per signal type name, a threshold stricter than the bank's for this key.
    ``daily_hashes``: at most this many query hashes per UTC day (None: no budget).
    ``suspended_at``: set when probing detection suspended the key (``suspend_reason`` says
    which bound); the key is refused until an admin restores it. ``throttled_until``: while
    in the future, probing detection throttles the key (every replica refuses its matches);
    kept with the probing counts, not set through ``set_key_policy``.
    """

    exact_distances: bool = False
    max_distance: Mapping[str, int] = field(default_factory=dict)
    daily_hashes: int | None = None
    suspended_at: datetime | None = None
    suspend_reason: str = ""
    named_in_reports: bool = False
    """The partner agreed that its name (the key's name) is shown to the owning organisation
    beside its verdicts in the case status; otherwise its verdicts are counts only."""
    throttled_until: datetime | None = None

    @property
    def suspended(self) -> bool:
        """True while probing detection holds the key suspended."""
        return self.suspended_at is not None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A created API key. ``key`` is shown once: only its hash is stored."""

    record: ApiKeyRecord
    key: str = field(repr=False)


# -- cases and items as stored


@dataclass(frozen=True, slots=True)
class Quarantine:
    """An item's open quarantine: why, since when, and the counts that triggered it.

    ``partners`` is the number of distinct partner keys whose current verdict was "wrong"
    (reason ``reports``); ``matches`` the uploads that returned the item in the flood window
    (reason ``flood``); 0 where it does not apply.

    >>> Quarantine(QuarantineReason.REPORTS, datetime(2026, 1, 1), partners=2).description
    '2 partners reported its matches as wrong'
    """

    reason: QuarantineReason
    since: datetime
    partners: int = 0
    matches: int = 0

    @property
    def description(self) -> str:
        """The reason in plain words, for a practitioner and for the victim."""
        if self.reason is QuarantineReason.FLOOD:
            return (
                f"it matched {self.matches:,} uploads within an hour, far more than usual: "
                "possibly a widely shared picture"
            )
        return f"{self.partners} partners reported its matches as wrong"


@dataclass(frozen=True, slots=True)
class PartnerReport:
    """One partner's current verdict on an item, named because the partner agreed
    (``KeyPolicy.named_in_reports``); shown to the owning organisation only."""

    partner: str
    correct: bool
    reason: ReportReason | None
    at: datetime


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """One case as stored. ``secret_hash`` is the KDF output, never the secret itself.

    ``hash_count`` and ``item_count`` count what is held now (0 once withdrawn); the reported
    counts are the sums over the case's items, withdrawn ones included.
    """

    id: int
    number: str
    org_id: int
    state: CaseState
    secret_hash: str = field(repr=False)
    item_count: int
    hash_count: int
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None


MAX_LABEL_LENGTH = 200
"""The longest item label accepted, in characters."""


@dataclass(frozen=True, slots=True)
class NewItem:
    """One item to enroll: its kind, all of its hashes, and an optional label.

    Checked here, once, wherever it is built (wire, CLI, SDK): at least one hash and at most
    ``MAX_ITEM_HASHES``; every hash enrollable by its signal's quality rule
    (``SignalType.check_enrollable``); a label of at most ``MAX_LABEL_LENGTH`` characters. Errors
    name the field inside the item (``hashes[3]``, ``label``); callers locate them further with
    ``InvalidInput.at``. The label is stored only because a practitioner typed it on purpose
    (e.g. "photo 2"): file names and paths are never sent for it, since they can identify a
    person.

    >>> NewItem([Hash.parse("md5:" + "0" * 32)]).kind
    <ItemKind.IMAGE: 'image'>
    """

    hashes: Sequence[Hash]
    kind: ItemKind = ItemKind.IMAGE
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.hashes:
            raise InvalidInput("an item needs at least one hash", field="hashes")
        if len(self.hashes) > MAX_ITEM_HASHES:
            raise InvalidInput(
                f"an item holds at most {MAX_ITEM_HASHES} hashes, got {len(self.hashes)}",
                field="hashes",
            )
        for i, h in enumerate(self.hashes):
            h.signal.check_enrollable(h.quality, field=f"hashes[{i}]")
        if self.label is not None and len(self.label) > MAX_LABEL_LENGTH:
            raise InvalidInput(f"a label has at most {MAX_LABEL_LENGTH} characters", field="label")


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item as stored: numbered 1, 2, ... within its case; counts, never a hash value.

    ``id`` is the store's own id (it names the item's index entries; never shown outside the
    service). ``hashes_by_signal`` is empty once withdrawn.
    """

    id: int
    case_id: int
    number: int
    kind: ItemKind
    state: ItemState
    label: str | None
    hash_count: int
    hashes_by_signal: Mapping[str, int]
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None
    quarantine: Quarantine | None = None
    """Set while the item is quarantined (it is active but matches nothing)."""
    reviewed_at: datetime | None = None
    """When a practitioner last restored it from quarantine (verdicts before count no more)."""


@dataclass(frozen=True, slots=True)
class ItemStatus:
    """An item as its case's owner (or victim) sees it: the public face of ``ItemRecord``."""

    case_number: str
    number: int
    kind: ItemKind
    state: ItemState
    label: str | None
    hash_count: int
    hashes_by_signal: Mapping[str, int]
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None
    quarantine: Quarantine | None = None
    """Set while quarantined: it matches nothing until a practitioner reviews it."""
    reviewed_at: datetime | None = None
    """When it was last restored from quarantine."""
    partner_reports: Sequence[PartnerReport] = ()
    """Current verdicts of the partners who agreed to be named (owning organisation only)."""

    @property
    def name(self) -> str:
        """Its resource name, ``cases/{case_number}/items/{number}``."""
        return f"cases/{self.case_number}/items/{self.number}"

    @property
    def quarantined(self) -> bool:
        """True while the item is quarantined."""
        return self.quarantine is not None

    @property
    def match_count(self) -> int:
        """Matches reported by partners on this item (right or wrong)."""
        return self.reported_correct + self.reported_wrong


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """A partner key's current verdict on an item, as stored (one per item and key)."""

    item_id: int
    key_id: int
    correct: bool
    reason: ReportReason | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    """One quarantined item in a review queue: where it is, why, its counts and dates.

    ``org_id`` is known inside the service; the SDK leaves it None.
    """

    case_number: str
    number: int
    label: str | None
    quarantine: Quarantine
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    reviewed_at: datetime | None = None
    org_id: int | None = None

    @property
    def name(self) -> str:
        """The item's resource name, ``cases/{case_number}/items/{number}``."""
        return f"cases/{self.case_number}/items/{self.number}"


# -- the change log


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log row: an item's hashes were added or removed, all of them at once.

    No value and no signal type: a follower reads an added item's codes from the store by id
    (absent if withdrawn since) and removes by entry ids, ``entry_ids(item_id, hash_count)``.
    """

    op: str  # "add" or "remove"
    item_id: int
    hash_count: int


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """What ``changes_since(position)`` returns: changes, and the position to ask from next.

    The position is the backend's own opaque text: only the store that made it reads it. A
    follower that always asks from the last batch's ``position`` sees every committed change
    once, in an order where an item's "remove" comes after its "add", however concurrent
    writers committed. ``more`` is True when the batch was cut at its limit.
    """

    changes: list[Change]
    position: str
    more: bool = False


@dataclass(frozen=True, slots=True)
class CodeChunk:
    """A block of stored hashes of one signal type, ready for ``Index.add_codes``.

    ``ids`` are index entry ids, int64 of shape (n,); ``codes`` uint8 of shape (n, bytes).
    """

    signal: str
    ids: np.ndarray
    codes: np.ndarray


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, when. ``detail`` holds counts and names, never a hash value or secret."""

    id: int
    at: datetime
    actor: str
    org_id: int | None
    action: str
    case_id: int | None
    detail: dict[str, object]


# -- what the bank answers


@dataclass(frozen=True, slots=True)
class NewCase:
    """A created case. ``secret`` is shown once: only its hash is stored."""

    number: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CaseStatus:
    """A case as its owner (or its victim) may see it: counts and items, never a hash value.

    ``org_id`` is known inside the service; the SDK leaves it None (the wire does not carry it).
    """

    number: str
    state: CaseState
    item_count: int
    hash_count: int
    hashes_by_signal: Mapping[str, int]
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None
    items: Sequence[ItemStatus] = ()
    org_id: int | None = None

    @property
    def match_count(self) -> int:
        """Matches reported by partners so far (right or wrong)."""
        return self.reported_correct + self.reported_wrong


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """What one enrollment committed: the call's items in order (each new or already held),
    how many were new, and the case's totals after the commit."""

    case_number: str
    items: Sequence[ItemStatus]
    added: int
    existing: int
    item_count: int
    hash_count: int


@dataclass(frozen=True, slots=True)
class Query:
    """One image to look up: its hashes (e.g. the ``query`` profile's views, its pHash).

    ``max_distance`` narrows the match distance: None means each signal type's default; an int
    applies to every hash of the query; a mapping gives it per signal type name (e.g.
    ``{"pdq": 20}``; types it leaves out keep their default). It is checked here, once: a
    distance above what a signal type of the query allows is refused (``InvalidDistance``,
    with ``field`` "max_distance"), never silently capped.

    >>> Query([Hash.parse("phash:" + "a5" * 8)], 4).distance_for(SIGNALS["phash"])
    4
    """

    hashes: Sequence[Hash]
    max_distance: int | Mapping[str, int] | None = None
    query_id: str = ""

    def __post_init__(self) -> None:
        asked = self.max_distance
        if isinstance(asked, Mapping):
            unknown = set(asked) - set(SIGNALS)
            if unknown:
                raise InvalidInput(
                    f"max_distance names unknown signal types: {', '.join(sorted(unknown))}",
                    field="max_distance",
                )
        for signal in {h.signal for h in self.hashes}:
            self.distance_for(signal)

    def distance_for(self, signal: SignalType) -> int:
        """The distance to search ``signal`` at for this query."""
        asked = self.max_distance
        if isinstance(asked, Mapping):
            asked = asked.get(signal.name)
        return signal.check_distance(asked, field="max_distance")


class MatchBand(enum.StrEnum):
    """How close a match is, coarsely: what a partner learns instead of a distance."""

    STRONG = "strong"
    """Well inside the bank's threshold: almost surely a re-upload."""
    WEAK = "weak"
    """Near the bank's threshold: check before acting."""


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """One enrolled item that matched a query.

    ``item_id`` is opaque and stable (it decodes to nothing outside the service): report
    feedback with it. ``signal`` is that of the query's closest hash to any of the item's
    hashes (closest relative to each signal's length) and ``band`` how close it is, coarsely;
    ``hits`` is how many of the query's hashes matched the item. ``distance`` is the exact
    Hamming distance of that closest hash: the bank always knows it, but the service sends it
    only to keys an admin granted exact distances (``KeyPolicy.exact_distances``), since exact
    distances let a partner read a stored hash back; elsewhere it is None. ``matched``: the
    positions in the query of the hashes that hit the item (the bank's answer only; never
    sent: the service's probing counts record those hashes and no others).
    """

    item_id: str
    signal: SignalType
    distance: int | None
    hits: int
    band: MatchBand = MatchBand.STRONG
    matched: tuple[int, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to one query: the matched items, best first (empty when none matched)."""

    query_id: str
    matches: Sequence[ItemMatch]


@dataclass(frozen=True, slots=True)
class BankStats:
    """Sizes for operators and metrics; no hash values.

    ``indexed`` counts live index entries per signal type, ``stored`` the store's rows (the two
    agree once ready), ``cases`` the cases per state, ``items`` the active items,
    ``load_seconds`` the last start-up.
    """

    ready: bool
    indexed: dict[str, int]
    stored: dict[str, int]
    cases: dict[str, int]
    items: int
    load_seconds: float | None


# -- the allowlist (negative bank)

ALLOWLIST_LABEL_LENGTH = 100
"""The longest allowlist label (it goes into audit rows, which hold short names only)."""


class AllowlistSource(enum.StrEnum):
    """Where an allowlist entry came from."""

    SEED = "seed"
    """The generated seed (``matcher.allowlist_seed``)."""
    ADMIN = "admin"
    """Added by an operator."""


@dataclass(frozen=True, slots=True)
class AllowlistEntry:
    """One allowlist entry as operators see it: never its value (a hash of a benign picture
    says nothing about anyone, but listing values would still hand a poisoner the list of
    what to avoid)."""

    id: int
    signal: str
    label: str
    source: AllowlistSource
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AllowlistAdded:
    """What an addition committed: the entries created now (in the order sent), how many of
    the hashes sent were held already, and the allowlist's version after it (None through the
    SDK: the service does not send its store's version)."""

    entries: list[AllowlistEntry]
    existing: int
    version: int | None = None

    @property
    def added(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class AllowlistCodes:
    """Every allowlist value, for the in-memory allowlist: one ``CodeChunk`` per signal type
    (its ids are entry ids), read in one transaction with the ``version`` they make up."""

    version: int
    chunks: list[CodeChunk]
