"""The withdrawal ledger: one JSON line per withdrawal, kept outside the database, so that a
database restored to an earlier point never brings back what was withdrawn after it.

A line is ``{"at": ms, "case": case id, "item": item id or null}`` (null: the whole case):
ids and times, never a hash value, a number or a label. It is appended and fsynced before the
withdrawal commits, so every acknowledged withdrawal is in it; a crash in between leaves a line
for a withdrawal that was asked for but not committed, which re-applying carries out (what the
victim wanted), and a crash mid-append leaves at most a cut last line, which readers skip.

SQLite keeps it beside the database (``withdrawals.jsonl``, re-applied by ``matcher
restore``). On PostgreSQL each replica writes its own file (``matcher serve --ledger``: a
withdrawal is written by the replica that took it), and ``matcher ledger apply`` re-applies
every replica's file to a restored database (``apply``): idempotent, so applying a file twice,
or a line whose withdrawal the restored database already holds, changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from matcher.errors import Unavailable
from matcher.principal import Principal
from matcher.records import CaseRecord, CaseState, ItemRecord, ItemState

__all__ = ["Applied", "append", "apply", "expand_path", "read", "read_all"]


def expand_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``{host}`` replaced by this machine's host name, so replicas that share
    one volume (and one setting) still write a file each."""
    return Path(os.fspath(path).replace("{host}", socket.gethostname()))


def append(path: str | os.PathLike[str], entry: dict[str, object]) -> None:
    """Append one line and fsync it (and the folder, when the file is new, so the file itself
    survives a power cut); ``Unavailable`` when it cannot be written (the withdrawal then
    does not commit)."""
    path = Path(path)
    try:
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except OSError as exc:
        raise Unavailable(f"cannot write the withdrawal ledger {path}: {exc.strerror}") from None


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every entry of one ledger file (empty if there is none); lines that do not parse (a cut
    last line) are skipped."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                out.append(entry)
    return out


def read_all(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """The entries of several ledgers (one per replica), oldest first."""
    entries = [e for p in paths for e in read(p)]
    return sorted(entries, key=lambda e: int(e.get("at") or 0))


class _Withdrawing(Protocol):
    """What re-applying needs of a store (both backends have it)."""

    def get_case_by_id(self, case_id: int) -> CaseRecord | None: ...

    def list_items(self, case_id: int) -> list[ItemRecord]: ...

    def withdraw_item(
        self, case_id: int, number: int, *, actor: Principal, ledger: bool = True
    ) -> ItemRecord: ...

    def withdraw_case(
        self, case_id: int, *, actor: Principal, ledger: bool = True
    ) -> CaseRecord: ...


@dataclass
class Applied:
    """What re-applying ledgers did: the ids whose withdrawal took effect again, and the
    entries that changed nothing (already withdrawn, or unknown: enrolled after the restore
    point, so not in the restored database)."""

    items: list[int] = field(default_factory=list)
    cases: list[int] = field(default_factory=list)
    unchanged: int = 0

    @property
    def count(self) -> int:
        """Withdrawals that took effect again."""
        return len(self.items) + len(self.cases)


def apply(store: _Withdrawing, entries: Sequence[dict[str, Any]], *, actor: Principal) -> Applied:
    """Withdraw again every item and case of ``entries`` that is active in ``store``."""
    done = Applied()
    for entry in entries:
        case_id, item_id = entry.get("case"), entry.get("item")
        if case_id is None:
            done.unchanged += 1
            continue
        case = store.get_case_by_id(int(case_id))
        if case is None:
            done.unchanged += 1
        elif item_id is not None:
            held = [i for i in store.list_items(case.id) if i.id == int(item_id)]
            if held and held[0].state == ItemState.ACTIVE:
                store.withdraw_item(case.id, held[0].number, actor=actor, ledger=False)
                done.items.append(int(item_id))
            else:
                done.unchanged += 1
        elif case.state == CaseState.ACTIVE or case.item_count:
            store.withdraw_case(case.id, actor=actor, ledger=False)
            done.cases.append(case.id)
        else:
            done.unchanged += 1
    return done
