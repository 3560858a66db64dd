"""Who is asking: roles and principals, shared by the bank (permissions) and the store (audit).

A ``Principal`` is what the service's auth layer produces from a credential (an API key, or a
victim's case number and secret) and what every audit row records. It carries no secret.

>>> p = Principal.key(7, Role.PRACTITIONER, org_id=3, name="helpline")
>>> p.audit_name
'key:7'
>>> p.may_act_for(3), p.may_act_for(4)
(True, False)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Principal", "Role"]


class Role(enum.StrEnum):
    """What an API key may do (see DESIGN.md, "Identities and roles")."""

    PARTNER = "partner"
    """Partner platforms: match, report feedback."""
    PRACTITIONER = "practitioner"
    """Helplines: create cases, enroll, case status and withdrawal for their organisation."""
    ADMIN = "admin"
    """Operators: keys, organisations, statistics; may also withdraw any case."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a bank method.

    ``kind`` is ``"key"`` (an API key, with ``key_id`` and ``role``), ``"victim"`` (someone who
    proved a case number and secret) or ``"operator"`` (local tooling with direct access to the
    data folder, e.g. the CLI creating the first key). ``org_id`` is the organisation the caller
    belongs to, when it has one.
    """

    kind: str
    role: Role | None = None
    org_id: int | None = None
    key_id: int | None = None
    name: str = ""

    @classmethod
    def key(
        cls, key_id: int, role: Role, *, org_id: int | None = None, name: str = ""
    ) -> Principal:
        """A caller authenticated by API key ``key_id``."""
        return cls("key", role, org_id, key_id, name)

    @classmethod
    def victim(cls) -> Principal:
        """A person who proved a case's number and secret (no organisation, no key)."""
        return cls("victim")

    @classmethod
    def operator(cls, name: str = "") -> Principal:
        """Local tooling run by whoever holds the data folder; acts with admin rights."""
        return cls("operator", Role.ADMIN, name=name)

    @property
    def audit_name(self) -> str:
        """How audit rows name this caller: stable, short, and free of secrets."""
        if self.kind == "key":
            return f"key:{self.key_id}"
        return self.kind

    def has(self, *roles: Role) -> bool:
        """True when the caller holds one of ``roles``."""
        return self.role in roles

    def may_act_for(self, org_id: int) -> bool:
        """True when the caller may see and change cases owned by organisation ``org_id``.

        Practitioners act for their own organisation only; admins and operators for any.
        """
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.PRACTITIONER and self.org_id == org_id
