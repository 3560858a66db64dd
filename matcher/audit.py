"""The audit vocabulary and the guard that keeps hash values out of audit rows.

Outside any backend on purpose: every store (SQLite now, PostgreSQL later) records the same
actions with the same names, and every one of them calls ``check_detail`` before it writes a
row, so rule 2 of DESIGN.md ("hash values never appear in audit records") does not depend on
each backend remembering it.

>>> check_detail({"added": 3, "kind": "image"})
{'added': 3, 'kind': 'image'}
>>> check_detail({"value": "a5" * 16})
Traceback (most recent call last):
...
ValueError: audit detail 'value' looks like a hash value
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping

__all__ = ["Action", "check_detail", "encode_detail"]


class Action(enum.StrEnum):
    """Every action an audit row may record (``AuditEntry.action``)."""

    ORG_CREATE = "org.create"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    CASE_CREATE = "case.create"
    CASE_ENROLL = "case.enroll"
    CASE_WITHDRAW = "case.withdraw"
    ITEM_WITHDRAW = "item.withdraw"
    MATCH_REPORT = "match.report"
    KEY_POLICY = "key.policy"
    KEY_SUSPEND = "key.suspend"
    KEY_RESTORE = "key.restore"
    MATCH_PROBE = "match.probe"
    VICTIM_REFUSED = "victim.refused"
    ALLOWLIST_ADD = "allowlist.add"
    ALLOWLIST_REMOVE = "allowlist.remove"
    ALLOWLIST_SEED = "allowlist.seed"
    ENROLL_REFUSED = "case.enroll_refused"
    ITEM_QUARANTINE = "item.quarantine"
    ITEM_REVIEW = "item.review"


# Names of the schema-1 actions that schema 2 renamed (the migration rewrites old rows).
RENAMED_V1 = {"organisation.create": Action.ORG_CREATE, "match.feedback": Action.MATCH_REPORT}

# The shortest hash we hold is pHash, 64 bits = 16 hex digits: a run of 16 or more hex digits
# in an audit value is refused, whatever it really is. Case numbers (dash every 4), key
# prefixes and signal names never look like that.
_HEXISH = re.compile(r"[0-9a-fA-F]{16,}")
_MAX_TEXT = 100

Detail = dict[str, int | str | bool | None]


def check_detail(detail: Mapping[str, object]) -> Detail:
    """Return ``detail`` if it holds only counts, flags and short names; else ``ValueError``.

    Refused: bytes of any kind, text of more than 100 characters, text holding a run of 16 or
    more hex digits (what a hash value looks like), and anything that is not an int, bool,
    short str or None. The message names the key, never the value.
    """
    out: Detail = {}
    for key, value in detail.items():
        if not isinstance(key, str) or _HEXISH.search(key):
            raise ValueError("audit detail keys must be short names")
        if value is None or isinstance(value, bool | int):
            out[key] = value
            continue
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise ValueError(f"audit detail {key!r} must be a count or a short name")
        if _HEXISH.search(value):
            raise ValueError(f"audit detail {key!r} looks like a hash value")
        out[key] = value
    return out


def encode_detail(detail: Mapping[str, object]) -> str:
    """``check_detail``, then the JSON text a backend stores (keys sorted, so rows compare)."""
    return json.dumps(check_detail(detail), sort_keys=True)
