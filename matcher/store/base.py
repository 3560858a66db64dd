"""What a store is: the records it returns and the ``Store`` protocol every backend implements.

The store is the source of truth; the in-memory index is rebuilt from it. SQLite
(``matcher.store.sqlite``) is the embedded default; a PostgreSQL store for several replicas
will implement the same protocol. The bank is the only caller.

Three promises every backend keeps (DESIGN.md rules 2-4):

- **Acknowledged means committed.** A mutating method returns only after its transaction is
  durably committed; if it raises, nothing of it was committed.
- **Withdrawal is real.** ``withdraw_case`` deletes the hash rows (no soft delete) in the same
  transaction as its change-log and audit rows.
- **Hash values stay in one table.** Only the ``hashes`` table holds hash values. The change log
  records (op, range of hash row ids); a replica that follows it reads the value of an
  added hash from ``hashes`` by id, so after a withdrawal no copy of the value remains
  anywhere. Audit rows carry counts, never values.

Hash row ids are never reused (a stale index holding an old id must never find a new,
unrelated hash behind it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np

from matcher.principal import Principal, Role
from matcher.signals import Hash

__all__ = [
    "AddedHashes",
    "ApiKeyRecord",
    "AuditEntry",
    "CaseRecord",
    "CaseState",
    "Change",
    "CodeChunk",
    "Organisation",
    "Snapshot",
    "Store",
]


class CaseState(enum.StrEnum):
    """The life of a case: enrollable while active; withdrawn is final."""

    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class Organisation:
    """A helpline or partner platform that owns cases or API keys."""

    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """One case as stored. ``secret_hash`` is the KDF output, never the secret itself."""

    id: int
    number: str
    org_id: int
    state: CaseState
    secret_hash: str = field(repr=False)
    hash_count: int
    reported_correct: int
    reported_wrong: int
    created_at: datetime
    withdrawn_at: datetime | None


@dataclass(frozen=True, slots=True)
class AddedHashes:
    """What ``add_hashes`` committed: the new row ids, parallel to ``hashes``, the number of
    duplicates skipped and the case's hash count after the commit.

    ``hashes`` are the ones actually inserted (duplicates of hashes already in the case, or
    repeated within the call, are skipped so that a retried enrollment is idempotent).
    """

    ids: list[int]
    hashes: list[Hash]
    duplicates: int
    hash_count: int


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log row: ``op`` (``"add"`` or ``"remove"``) of the hash rows with ids
    ``first_id`` to ``last_id`` inclusive, every one of which that op touched.

    No value and no signal type: a follower reads added rows from ``hashes`` by id (rows
    withdrawn since are simply absent) and removes by id alone.
    """

    seq: int
    op: str
    first_id: int
    last_id: int

    @property
    def ids(self) -> range:
        """The hash row ids of this change."""
        return range(self.first_id, self.last_id + 1)


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
class CodeChunk:
    """A block of stored hashes of one signal type, ready for ``Index.add_codes``.

    ``ids`` is int64 of shape (n,), ``codes`` uint8 of shape (n, signal bytes).
    """

    signal: str
    ids: np.ndarray
    codes: np.ndarray


class Snapshot(Protocol):
    """A consistent read of every stored hash, used to build the index at start-up.

    ``mark`` is the last change-log sequence number the snapshot includes: after loading, apply
    ``changes_since(mark)`` to catch up with writes made during the load. ``counts`` is the
    number of hashes per signal type in the snapshot (exact: it sizes the index's arrays).
    """

    mark: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Number of hashes in the snapshot."""
        ...

    def chunks(self, rows: int = ...) -> Iterator[CodeChunk]:
        """Yield every stored hash in blocks of at most ``rows``: one signal type after
        another, each in id order."""
        ...


@runtime_checkable
class Store(Protocol):
    """The durable store behind the bank (see the module docstring for its promises)."""

    # -- organisations
    def create_organisation(self, name: str, *, actor: Principal) -> Organisation: ...
    def get_organisation(self, org_id: int) -> Organisation | None: ...
    def list_organisations(self) -> list[Organisation]: ...

    # -- cases and hashes
    def create_case(
        self, org_id: int, number: str, secret_hash: str, *, actor: Principal
    ) -> CaseRecord: ...
    def get_case(self, number: str) -> CaseRecord | None: ...
    def get_case_by_id(self, case_id: int) -> CaseRecord | None: ...
    def case_signal_counts(self, case_id: int) -> dict[str, int]: ...
    def add_hashes(
        self, case_id: int, hashes: Sequence[Hash], *, actor: Principal
    ) -> AddedHashes: ...
    def withdraw_case(self, case_id: int, *, actor: Principal) -> list[tuple[int, str]]: ...
    def active_ids(self, ids: Sequence[int]) -> set[int]: ...
    def case_of_hash(self, hash_id: int) -> int | None: ...
    def hash_counts(self) -> dict[str, int]: ...
    def case_counts(self) -> dict[str, int]: ...

    # -- feedback and audit
    def record_feedback(self, case_id: int, correct: bool, *, actor: Principal) -> None: ...
    def audit_log(
        self, *, case_id: int | None = None, before: int | None = None, limit: int = 100
    ) -> list[AuditEntry]: ...

    # -- API keys
    def create_api_key(
        self,
        name: str,
        role: Role,
        org_id: int | None,
        key_hash: bytes,
        prefix: str,
        *,
        actor: Principal,
    ) -> ApiKeyRecord: ...
    def find_api_key(self, key_hash: bytes) -> ApiKeyRecord | None: ...
    def list_api_keys(self) -> list[ApiKeyRecord]: ...
    def revoke_api_key(self, key_id: int, *, actor: Principal) -> ApiKeyRecord: ...

    # -- loading and following
    def snapshot(self) -> AbstractContextManager[Snapshot]: ...
    def changes_since(self, seq: int, *, limit: int = 100_000) -> list[Change]: ...
    def hashes_by_id(self, ids: Sequence[int]) -> list[tuple[int, str, bytes]]: ...
    def prune_changes(self, upto_seq: int) -> int: ...
    def match_id_key(self) -> bytes: ...
    def purge_wal(self) -> bool: ...

    def close(self) -> None: ...
