"""Acknowledged means durable: SIGKILL a writer at random moments, then check every ack.

A child process enrolls and withdraws in a loop over a real data folder and prints a line after
each call returns (that is its acknowledgement). The parent kills it with SIGKILL at a random
moment, starts a new child on the same folder (which must start up cleanly from whatever was
left; now and then it is killed during that start-up too), and repeats. Every few kills, and
at the end, the parent opens the folder itself and checks:

- every hash of an acknowledged enrollment matches, unless its case was withdrawn since;
- no hash of an acknowledged withdrawal matches, and its rows are gone;
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

from matcher.bank import Bank, Query
from matcher.principal import Principal, Role
from matcher.signals import PDQ, Hash

_CHILD = r"""
import os, random, sys
from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.signals import PDQ, Hash

data, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
bank = Bank.open(data, progress=False)
operator = Principal.operator("durability")
orgs = bank.list_organisations(by=operator)
org = orgs[0] if orgs else bank.create_organisation("Durability", by=operator)
me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
print("ready", flush=True)
mine = []
while True:
    if mine and rng.random() < 0.25:
        number = mine.pop(rng.randrange(len(mine)))
        print("withdrawing", number, flush=True)
        bank.withdraw(number, by=me)
        print("withdrawn", number, flush=True)
        continue
    if not mine or rng.random() < 0.3:
        mine.append(bank.create_case(by=me).number)
    number = mine[-1]
    batch = [os.urandom(32).hex() for _ in range(rng.randint(1, 40))]
    print("enrolling", number, ",".join(batch), flush=True)
    bank.enroll(number, [Hash.from_hex(PDQ, h, quality=80) for h in batch], by=me)
    print("enrolled", number, flush=True)
"""


@dataclass
class Ledger:
    """What the children acknowledged, and what they were doing when killed."""

    enrolled: dict[str, list[str]] = field(default_factory=dict)  # case -> acked hashes
    attempted: list[tuple[str, list[str]]] = field(default_factory=list)  # every batch tried
    withdrawn: set[str] = field(default_factory=set)
    withdrawing: set[str] = field(default_factory=set)  # asked, maybe not acknowledged

    def read(self, output: str) -> int:
        pending: list[str] | None = None
        acks = 0
        # A line cut by the kill has no newline: only complete lines count.
        for line in output.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            word, *rest = line.split()
            if word == "enrolling":
                pending = rest[1].split(",")
                self.attempted.append((rest[0], pending))
            elif word == "enrolled" and pending is not None:
                self.enrolled.setdefault(rest[0], []).extend(pending)
                acks += 1
            elif word == "withdrawing":
                self.withdrawing.add(rest[0])
            elif word == "withdrawn":
                self.withdrawn.add(rest[0])
                acks += 1
        return acks


def check(data: Path, ledger: Ledger) -> None:
    with Bank.open(data, progress=False) as bank:
        operator = Principal.operator("check")
        for case, hashes in ledger.enrolled.items():
            if case in ledger.withdrawing:
                continue  # the child may have been killed after the withdrawal committed
            got = bank.match([Query([Hash.from_hex(PDQ, h)]) for h in hashes])
            assert all(len(m) == 1 and m[0].distance == 0 for m in got), case
        for case in ledger.withdrawn:
            status = bank.case_status(case, by=operator)
            assert status.state == "withdrawn" and status.hash_count == 0
            record = bank.store.get_case(case)
            assert record is not None and bank.store.case_signal_counts(record.id) == {}
        for case, batch in ledger.attempted:
            if case in ledger.withdrawing:
                continue
            found = [bool(m) for m in bank.match([Query([Hash.from_hex(PDQ, h)]) for h in batch])]
            assert all(found) or not any(found), f"half an enrollment in {case}"
        withdrawn_hashes = [h for case in ledger.withdrawn for h in ledger.enrolled.get(case, [])]
        got = bank.match([Query([Hash.from_hex(PDQ, h)]) for h in withdrawn_hashes])
        assert all(m == [] for m in got)


@pytest.mark.timeout(120)
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    ledger = Ledger()
    env = {**os.environ, "MATCHER_PROGRESS": "0"}
    total_acks = 0
    deadline = time.monotonic() + 30
    rounds = 0
    while rounds < 12 and time.monotonic() < deadline:
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
    print(f"{rounds} kills, {total_acks} acknowledgements, {len(ledger.withdrawn)} withdrawals")
    assert rounds >= 4
    assert total_acks >= 20, "the children acknowledged too little to test anything"
    assert ledger.withdrawn, "no withdrawal was acknowledged"


def test_the_check_itself_catches_a_lost_enrollment(tmp_path: Path) -> None:
    """Guard against a vacuous durability test: an ack the store lacks must fail the check."""
    data = tmp_path / "data"
    with Bank.open(data, progress=False) as bank:
        org = bank.create_organisation("Durability", by=Principal.operator())
        me = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
        case = bank.create_case(by=me).number
    ledger = Ledger()
    ledger.read(f"enrolling {case} {os.urandom(32).hex()}\nenrolled {case}\n")
    with pytest.raises(AssertionError):
        check(data, ledger)
