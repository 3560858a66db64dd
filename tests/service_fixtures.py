"""A real matcher server on a free port, in a thread with its own event loop, for the tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matcher.bank import Bank
from matcher.client import Client
from matcher.principal import Principal, Role
from matcher.records import EnrollResult, NewCase, NewItem
from matcher.service import Server, ServerConfig
from matcher.signals import PDQ, PHASH, Hash


@dataclass
class Running:
    """A running server, its data folder, and the keys created for it."""

    bank: Bank
    server: Server
    loop: asyncio.AbstractEventLoop
    data: Path
    keys: dict[str, str] = field(default_factory=dict)
    org_ids: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, role: str | None = None, **kwargs: Any) -> Client:
        return Client(self.target, self.keys.get(role) if role else None, **kwargs)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def enroll(
        self, items: Sequence[NewItem | Sequence[Hash]], *, role: str = "practitioner"
    ) -> tuple[NewCase, EnrollResult]:
        """A new case of Helpline A holding ``items``: the case (with its secret) and the
        enrollment's result."""
        with self.client(role) as c:
            case = c.create_case()
            return case, c.add_items(case.number, items)


def start_server(
    data: Path, config: ServerConfig | None = None, *, load: bool = True
) -> tuple[Running, threading.Thread]:
    bank = Bank.open(data, load=False)
    accounts = bank.accounts
    me = Principal.operator("tests")
    keys: dict[str, str] = {}
    orgs = {
        name: accounts.create_organisation(name, by=me).id for name in ("Helpline A", "Helpline B")
    }
    keys["admin"] = accounts.create_api_key("ops", Role.ADMIN, org_id=None, by=me).key
    keys["partner"] = accounts.create_api_key("acme", Role.PARTNER, org_id=None, by=me).key
    # A partner an admin granted exact distances (and its own max_distance): a risk, on purpose.
    exact = accounts.create_api_key("audited", Role.PARTNER, org_id=None, by=me)
    accounts.update_key_policy(exact.record.id, exact_distances=True, by=me)
    keys["exact"] = exact.key
    keys["practitioner"] = accounts.create_api_key(
        "a", Role.PRACTITIONER, org_id=orgs["Helpline A"], by=me
    ).key
    keys["practitioner_b"] = accounts.create_api_key(
        "b", Role.PRACTITIONER, org_id=orgs["Helpline B"], by=me
    ).key
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = config or ServerConfig(address="127.0.0.1:0", metrics_address="127.0.0.1:0")
    server = asyncio.run_coroutine_threadsafe(Server.start(bank, config, load=load), loop).result(
        30
    )
    return Running(bank, server, loop, data, keys, orgs), thread


def stop_server(running: Running, thread: threading.Thread) -> None:
    running.run(running.server.stop(grace=0, drain=0))
    running.loop.call_soon_threadsafe(running.loop.stop)
    thread.join(10)
    running.bank.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Running]:
    running, thread = start_server(tmp_path / "data")
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_pdq(rng: np.random.Generator, quality: int = 90) -> Hash:
    return Hash(PDQ, rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), quality)


def random_phash(rng: np.random.Generator) -> Hash:
    return Hash(PHASH, rng.integers(0, 256, 8, dtype=np.uint8).tobytes())


def flip_bits(h: Hash, n: int, rng: np.random.Generator) -> Hash:
    """``h`` with ``n`` distinct bits flipped: a near-duplicate at exactly distance ``n``."""
    bits = np.unpackbits(np.frombuffer(h.value, np.uint8))
    idx = rng.choice(bits.size, n, replace=False)
    bits[idx] ^= 1
    return Hash(h.signal, np.packbits(bits).tobytes(), h.quality)
