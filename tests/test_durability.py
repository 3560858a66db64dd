"""Acknowledged means durable: SIGKILL a writer at random moments, then check every ack.

A child process enrolls and withdraws in a loop over a real data folder and prints a line after
each call returns (that is its acknowledgement). The parent kills it with SIGKILL at a random
moment, starts a new child on the same folder (which must start up cleanly from whatever was
left; now and then it is killed during that start-up too), and repeats. Every few kills, and
at the end, the parent opens the folder itself and checks:

- every item of an acknowledged enrollment matches, unless it (or its case) was withdrawn since;
- no item of an acknowledged withdrawal (a whole case or one item) matches, and its hash rows
  are gone;
- every enrollment is all or nothing, even one cut short by the kill.

SIGKILL stops the process at any instruction, but the kernel still writes out what the process
had handed it; surviving power loss is what ``synchronous=FULL`` (fsync per commit) is for,
and that cannot be tested from here.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import ItemState, NewItem, Query
from matcher.signals import PDQ, Hash

# Each enrollment line lists its items: hex hashes joined by "," within an item and "/"
# between items. Items are numbered in enrollment order within a case, and an enrollment
# call's items are new (random hashes), so the ledger knows every item's number.
_CHILD = r"""
import os, random, sys
from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import NewItem
from matcher.signals import PDQ, Hash

data, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
bank = Bank.open(data)
operator = Principal.operator("durability")
orgs = bank.accounts.list_organisations(by=operator)
org = orgs[0] if orgs else bank.accounts.create_organisation("Durability", by=operator)
me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
print("ready", flush=True)
mine = []
while True:
    roll = rng.random()
    if mine and roll < 0.15:
        number = mine.pop(rng.randrange(len(mine)))
        print("withdrawing", number, flush=True)
        bank.withdraw(number, by=me)
        print("withdrawn", number, flush=True)
        continue
    if mine and roll < 0.3:
        number = rng.choice(mine)
        held = bank.case_status(number, by=me).items
        if held:
            item = rng.choice(held).number
            print("withdrawing-item", number, item, flush=True)
            bank.withdraw_item(number, item, by=me)
            print("withdrawn-item", number, item, flush=True)
            continue
    if not mine or rng.random() < 0.3:
        mine.append(bank.create_case(by=me).number)
    number = mine[-1]
    items = [[os.urandom(32).hex() for _ in range(rng.randint(1, 30))]
             for _ in range(rng.randint(1, 4))]
    print("enrolling", number, "/".join(",".join(i) for i in items), flush=True)
    bank.enroll(
        number,
        [NewItem([Hash.from_hex(PDQ, h, quality=80) for h in i]) for i in items],
        by=me,
    )
    print("enrolled", number, flush=True)
"""


@dataclass
class Ledger:
    """What the children acknowledged, and what they were doing when killed."""

    # case -> acknowledged items, in order (item number = position + 1), each its hashes
    enrolled: dict[str, list[list[str]]] = field(default_factory=dict)
    # every call tried: its case, its items and the number its first item gets if it commits
    attempted: list[tuple[str, list[list[str]], int]] = field(default_factory=list)
    withdrawn: set[str] = field(default_factory=set)
    withdrawing: set[str] = field(default_factory=set)  # asked, maybe not acknowledged
    items_withdrawn: set[tuple[str, int]] = field(default_factory=set)
    items_withdrawing: set[tuple[str, int]] = field(default_factory=set)

    def read(self, output: str) -> int:
        pending: list[list[str]] | None = None
        acks = 0
        # A line cut by the kill has no newline: only complete lines count.
        for line in output.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            word, *rest = line.split()
            if word == "enrolling":
                pending = [i.split(",") for i in rest[1].split("/")]
                first = len(self.enrolled.get(rest[0], [])) + 1
                self.attempted.append((rest[0], pending, first))
            elif word == "enrolled" and pending is not None:
                self.enrolled.setdefault(rest[0], []).extend(pending)
                acks += 1
            elif word == "withdrawing":
                self.withdrawing.add(rest[0])
            elif word == "withdrawn":
                self.withdrawn.add(rest[0])
                acks += 1
            elif word == "withdrawing-item":
                self.items_withdrawing.add((rest[0], int(rest[1])))
            elif word == "withdrawn-item":
                self.items_withdrawn.add((rest[0], int(rest[1])))
                acks += 1
        return acks

    def maybe_gone(self, case: str, number: int) -> bool:
        """The item may have been withdrawn (asked for, acknowledged or not)."""
        return case in self.withdrawing or (case, number) in self.items_withdrawing

    def surely_gone(self, case: str, number: int) -> bool:
        """The withdrawal of the item (or its case) was acknowledged."""
        return case in self.withdrawn or (case, number) in self.items_withdrawn


def _queries(hashes: list[str]) -> list[Query]:
    return [Query([Hash.from_hex(PDQ, h)]) for h in hashes]


def check(data: Path, ledger: Ledger) -> None:
    with Bank.open(data) as bank:
        operator = Principal.operator("check")
        for case, items in ledger.enrolled.items():
            for number, hashes in enumerate(items, start=1):
                got = bank.match(_queries(hashes))
                if ledger.surely_gone(case, number):
                    assert all(m == [] for m in got), f"withdrawn item {number} of {case}"
                elif not ledger.maybe_gone(case, number):
                    assert all(len(m) == 1 and m[0].distance == 0 for m in got), case
        for case in ledger.withdrawn:
            status = bank.case_status(case, by=operator)
            assert status.state == "withdrawn" and status.hash_count == 0
            assert all(i.state is ItemState.WITHDRAWN for i in status.items)
        for case, number in ledger.items_withdrawn:
            (held,) = [i for i in bank.case_status(case, by=operator).items if i.number == number]
            assert held.state is ItemState.WITHDRAWN and held.hash_count == 0
        for case, call, first in ledger.attempted:
            if case in ledger.withdrawing:
                continue
            found = []
            for number, item in enumerate(call, start=first):
                hits = [bool(m) for m in bank.match(_queries(item))]
                assert all(hits) or not any(hits), f"half an item in {case}"
                if not ledger.maybe_gone(case, number):
                    found.append(all(hits))
            # All items of a call or none (short of items withdrawn one by one since).
            assert all(found) or not any(found), f"half an enrollment in {case}"
        # No acknowledged enrollment was lost: its items count in the store.
        for case, items in ledger.enrolled.items():
            if case not in ledger.withdrawing:
                assert len(bank.case_status(case, by=operator).items) >= len(items)


@pytest.mark.timeout(120)
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    ledger = Ledger()
    env = {**os.environ, "MATCHER_PROGRESS": "0"}
    total_acks = 0
    rounds = 0

    def enough() -> bool:
        # 12 kills, and enough acknowledged to check: on a loaded machine a child does less
        # before its kill, so the test runs more rounds (up to a few minutes) rather than
        # failing its own floors below.
        tested = total_acks >= 20 and ledger.withdrawn and ledger.items_withdrawn
        return rounds >= 12 and bool(tested)

    deadline = time.monotonic() + 180
    while not enough() and rounds < 60 and time.monotonic() < deadline:
        rounds += 1
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(data), str(rng.randrange(2**31))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        if rng.random() < 0.25:
            # Sometimes kill it during start-up (migrating, loading the index) instead.
            time.sleep(rng.uniform(0.0, 0.6))
            head = b""
        else:
            # Wait for start-up, then let it write for a random while and kill it mid-flight.
            head = child.stdout.readline()
            assert head == b"ready\n", child.stderr.read().decode() if child.stderr else head
            time.sleep(rng.uniform(0.05, 1.2))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()
        total_acks += ledger.read((head + out).decode())
        if rounds % 4 == 0:
            check(data, ledger)
    check(data, ledger)
    print(
        f"{rounds} kills, {total_acks} acknowledgements, {len(ledger.withdrawn)} case and "
        f"{len(ledger.items_withdrawn)} item withdrawals"
    )
    assert rounds >= 4
    assert total_acks >= 20, "the children acknowledged too little to test anything"
    assert ledger.withdrawn, "no withdrawal was acknowledged"
    assert ledger.items_withdrawn, "no item withdrawal was acknowledged"


def test_the_check_itself_catches_a_lost_enrollment(tmp_path: Path) -> None:
    """Guard against a vacuous durability test: an ack the store lacks must fail the check."""
    data = tmp_path / "data"
    with Bank.open(data) as bank:
        org = bank.accounts.create_organisation("Durability", by=Principal.operator())
        me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
        case = bank.create_case(by=me).number
    ledger = Ledger()
    ledger.read(f"enrolling {case} {os.urandom(32).hex()}\nenrolled {case}\n")
    with pytest.raises(AssertionError):
        check(data, ledger)


def test_the_check_itself_catches_a_withdrawn_item_that_still_matches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Bank.open(data) as bank:
        org = bank.accounts.create_organisation("Durability", by=Principal.operator())
        me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
        case = bank.create_case(by=me).number
        value = os.urandom(32).hex()
        bank.enroll(case, [NewItem([Hash.from_hex(PDQ, value, quality=80)])], by=me)
    ledger = Ledger()
    ledger.read(f"enrolling {case} {value}\nenrolled {case}\nwithdrawn-item {case} 1\n")
    with pytest.raises(AssertionError):
        check(data, ledger)
