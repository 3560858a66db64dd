"""Accounts: organisations, API keys and authentication. Needs the store only.

Kept apart from matching so that the tools that manage keys (``matcher keys create``) open the
store and nothing else: no index, no numba kernel to compile.

>>> import tempfile
>>> from matcher.principal import Principal, Role
>>> with Accounts.open(tempfile.mkdtemp()) as accounts:
...     new = accounts.create_api_key("acme", Role.PARTNER, by=Principal.operator())
...     accounts.authenticate(new.key).role
<Role.PARTNER: 'partner'>
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from matcher import credentials
from matcher.audit import Action
from matcher.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from matcher.principal import Principal, Role
from matcher.records import ApiKeyRecord, KeyPolicy, NewApiKey, Organisation
from matcher.signals import SIGNALS
from matcher.store.base import AccountStore, ProbeStore

__all__ = ["Accounts", "require"]


def require(by: Principal, *roles: Role) -> None:
    """Refuse (``PermissionDenied``) a caller that holds none of ``roles``."""
    if not by.has(*roles):
        raise PermissionDenied(f"requires role {' or '.join(str(r) for r in roles)}")


class _KeyStore(AccountStore, ProbeStore, Protocol):
    """What accounts need of a store: keys, and the probing counts a restore clears."""


class Accounts:
    """Organisations and API keys over any ``AccountStore``. Safe to share between threads.

    Every method but ``authenticate`` and ``policy`` is for admins (and local operators, who
    act as admins).
    """

    def __init__(self, store: _KeyStore) -> None:
        self._store = store

    @classmethod
    def open(cls, store: str | os.PathLike[str]) -> Accounts:
        """Accounts over the store at ``store`` (a folder or a store URL, see ``open_store``),
        closed with ``close`` (or ``with``). Opens nothing but the store."""
        from matcher.store import open_store

        return cls(open_store(store))

    def close(self) -> None:
        """Close the store (the bank's too, for ``bank.accounts``: close the bank instead)."""
        close = getattr(self._store, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_organisation(self, name: str, *, by: Principal) -> Organisation:
        """Create an organisation (admin). ``Conflict`` if the name is taken."""
        require(by, Role.ADMIN)
        name = name.strip()
        if not name:
            raise InvalidInput("organisation name must not be empty", field="name")
        return self._store.create_organisation(name, actor=by)

    def list_organisations(self, *, by: Principal) -> list[Organisation]:
        """Every organisation (admin)."""
        require(by, Role.ADMIN)
        return self._store.list_organisations()

    def get_organisation(self, org_id: int, *, by: Principal) -> Organisation:
        """One organisation (admin); ``NotFound`` if there is none."""
        require(by, Role.ADMIN)
        org = self._store.get_organisation(org_id)
        if org is None:
            raise NotFound("no such organisation")
        return org

    def create_api_key(
        self, name: str, role: Role, *, org_id: int | None = None, by: Principal
    ) -> NewApiKey:
        """Create an API key (admin); the key text is in the result and nowhere else.

        Practitioner keys must belong to an organisation (their cases are its cases).
        """
        require(by, Role.ADMIN)
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
        require(by, Role.ADMIN)
        return self._store.list_api_keys()

    def revoke_api_key(self, key_id: int, *, by: Principal) -> ApiKeyRecord:
        """Revoke an API key (admin); it stops working on its next use."""
        require(by, Role.ADMIN)
        return self._store.revoke_api_key(key_id, actor=by)

    def authenticate(self, key: str) -> Principal:
        """The principal behind an API key, or ``Unauthenticated`` (unknown or revoked)."""
        record = self._store.find_api_key(credentials.hash_api_key(key))
        if record is None or not record.active:
            raise Unauthenticated("unknown or revoked API key")
        return Principal.key(record.id, record.role, org_id=record.org_id, name=record.name)

    # -- key policies: grants, stricter thresholds, budgets, suspension

    def policy(self, key_id: int) -> KeyPolicy:
        """The key's policy, for the service's guard (which caches it with the key)."""
        return self._store.key_policy(key_id)

    def _policy(self, key_id: int) -> KeyPolicy:
        if not any(k.id == key_id for k in self._store.list_api_keys()):
            raise NotFound("no such API key")
        return self._store.key_policy(key_id)

    def update_key_policy(
        self,
        key_id: int,
        *,
        exact_distances: bool | None = None,
        max_distance: Mapping[str, int] | None = None,
        daily_hashes: int | None = None,
        named_in_reports: bool | None = None,
        by: Principal,
    ) -> KeyPolicy:
        """Change what a key may learn and spend (admin); arguments left None stay as they are.

        ``named_in_reports=True`` records that the partner agreed to have its name (the key's
        name) shown beside its verdicts to the organisations owning the items it reports on.

        ``exact_distances=True`` is a risk an admin takes knowingly: that key's matches carry
        exact distances, enough to read a stored hash back from one re-upload. ``max_distance``
        may only be stricter than the bank's threshold (an empty mapping clears it);
        ``daily_hashes`` of 0 clears the budget. A suspension is left as it is (see
        ``restore_api_key``).
        """
        require(by, Role.ADMIN)
        held = self._policy(key_id)
        changes: dict[str, object] = {}
        detail: dict[str, object] = {}
        if exact_distances is not None:
            changes["exact_distances"] = bool(exact_distances)
            detail["exact_distances"] = bool(exact_distances)
        if max_distance is not None:
            checked = {}
            for name, distance in max_distance.items():
                signal = SIGNALS.get(name)
                if signal is None:
                    raise InvalidInput(f"unknown signal type {name!r}", field="max_distance")
                if not 0 <= distance <= signal.default_distance:
                    raise InvalidInput(
                        f"a key's {name} threshold must be 0-{signal.default_distance} "
                        "(stricter than the bank's)",
                        field="max_distance",
                    )
                checked[name] = int(distance)
                detail[f"max_{name}"] = int(distance)
            changes["max_distance"] = checked
        if daily_hashes is not None:
            if daily_hashes < 0:
                raise InvalidInput("daily_hashes must not be negative", field="daily_hashes")
            changes["daily_hashes"] = daily_hashes or None
            detail["daily_hashes"] = daily_hashes
        if named_in_reports is not None:
            changes["named_in_reports"] = bool(named_in_reports)
            detail["named_in_reports"] = bool(named_in_reports)
        policy = dataclasses.replace(held, **changes)  # type: ignore[arg-type]
        return self._store.set_key_policy(
            key_id, policy, actor=by, action=Action.KEY_POLICY, detail=detail
        )

    def suspend_api_key(
        self, key_id: int, *, reason: str, detail: Mapping[str, int] | None = None, by: Principal
    ) -> KeyPolicy:
        """Suspend a key (probing detection does, as an operator): refused until restored.
        ``detail`` holds counts only (audited); a suspended key stays suspended."""
        require(by, Role.ADMIN)
        held = self._store.key_policy(key_id)
        if held.suspended:
            return held
        policy = dataclasses.replace(held, suspended_at=datetime.now(UTC), suspend_reason=reason)
        return self._store.set_key_policy(
            key_id,
            policy,
            actor=by,
            action=Action.KEY_SUSPEND,
            detail={"reason": reason, **(detail or {})},
        )

    def restore_api_key(self, key_id: int, *, by: Principal) -> KeyPolicy:
        """Lift a key's suspension (admin); restoring an active key changes nothing."""
        require(by, Role.ADMIN)
        held = self._policy(key_id)
        if not held.suspended:
            return held
        # Its probing counts go first: restored, it starts afresh on every replica (the
        # counts that suspended it would suspend it again at its next hit).
        self._store.reset_probes(key_id)
        policy = dataclasses.replace(held, suspended_at=None, suspend_reason="")
        return self._store.set_key_policy(key_id, policy, actor=by, action=Action.KEY_RESTORE)
