"""The match dispatcher: concurrent requests gathered into one bank search, answered as alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from matcher.bank import Bank
from matcher.principal import Principal, Role
from matcher.records import ItemMatch, NewItem, Query
from matcher.service.dispatch import MatchDispatcher
from matcher.signals import Hash
from tests.service_fixtures import Running, flip_bits, random_pdq


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[Bank]:
    with Bank.open(tmp_path / "data") as bank:
        yield bank


def _enroll(bank: Bank, items: Sequence[Sequence[Hash]]) -> None:
    me = Principal.operator("tests")
    org = bank.accounts.create_organisation("Helpline", by=me)
    practitioner = Principal.key(1, Role.PRACTITIONER, org_id=org.id)
    case = bank.create_case(by=practitioner)
    bank.enroll(case.number, [NewItem(list(hashes)) for hashes in items], by=practitioner)


def _requests(rng: np.random.Generator, stored: list[list[Hash]], n: int) -> list[list[Query]]:
    """``n`` requests of 1-3 uploads, each upload 1-25 hashes, some near a stored hash."""
    out = []
    for _ in range(n):
        uploads = []
        for _ in range(int(rng.integers(1, 4))):
            hashes = [random_pdq(rng) for _ in range(int(rng.integers(1, 26)))]
            if rng.random() < 0.5:
                item = stored[int(rng.integers(len(stored)))]
                near = flip_bits(item[int(rng.integers(len(item)))], int(rng.integers(0, 40)), rng)
                hashes[int(rng.integers(len(hashes)))] = near
            uploads.append(Query(hashes))
        out.append(uploads)
    return out


def _hashes(queries: Sequence[Query]) -> int:
    return sum(len(q.hashes) for q in queries)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_concurrent_requests_get_what_each_would_get_alone(bank: Bank, workers: int) -> None:
    rng = np.random.default_rng(5)
    stored = [[random_pdq(rng) for _ in range(20)] for _ in range(30)]
    _enroll(bank, stored)
    requests = _requests(rng, stored, 60)
    alone = [bank.match(r) for r in requests]
    assert sum(len(m) for r in alone for m in r) > 10  # hits as well as misses

    async def main() -> tuple[list[list[list[ItemMatch]]], int]:
        dispatcher: MatchDispatcher[Query, list[ItemMatch]] = MatchDispatcher(
            bank.match, workers=workers, batch_hashes=200, size=_hashes
        )
        try:
            answers = await asyncio.gather(*(dispatcher.match(r) for r in requests))
            return list(answers), dispatcher.batches
        finally:
            dispatcher.close()

    answers, batches = asyncio.run(main())
    assert answers == alone
    if workers:
        # All 60 arrive while the first search runs: they share few searches, none over 200.
        assert batches < len(requests) // 2
    else:
        assert batches == len(requests)


def test_a_failing_request_fails_alone() -> None:
    seen: list[int] = []

    def match(queries: Sequence[int]) -> list[int]:
        seen.append(len(queries))
        if any(q < 0 for q in queries):
            raise ValueError("negative")
        return [q * 2 for q in queries]

    async def main() -> list[object]:
        dispatcher: MatchDispatcher[int, int] = MatchDispatcher(match, workers=1)
        try:
            return await asyncio.gather(
                *(dispatcher.match(r) for r in ([1], [2, 3], [-1], [4])), return_exceptions=True
            )
        finally:
            dispatcher.close()

    first, second, bad, last = asyncio.run(main())
    assert (first, second, last) == ([2], [4, 6], [8])
    assert isinstance(bad, ValueError)
    # The first ran alone at once; the other three together, failed, then one by one.
    assert seen == [1, 4, 2, 1, 1]


def test_a_caller_that_gave_up_is_not_searched_for() -> None:
    release = threading.Event()
    seen: list[list[str]] = []

    def match(queries: Sequence[str]) -> list[str]:
        seen.append(list(queries))
        release.wait(10)
        return list(queries)

    async def main() -> list[str]:
        dispatcher: MatchDispatcher[str, str] = MatchDispatcher(match, workers=1)
        try:
            busy = asyncio.ensure_future(dispatcher.match(["first"]))
            await asyncio.sleep(0.05)
            gone = asyncio.ensure_future(dispatcher.match(["gone"]))
            kept = asyncio.ensure_future(dispatcher.match(["kept"]))
            await asyncio.sleep(0.05)
            gone.cancel()
            release.set()
            return [*(await busy), *(await kept)]
        finally:
            dispatcher.close()

    assert asyncio.run(main()) == ["first", "kept"]
    assert seen == [["first"], ["kept"]]


def test_matches_through_grpc_from_many_callers(service: Running) -> None:
    """The server's Match path: 40 concurrent uploads, each answered as ``Bank.match`` alone."""
    rng = np.random.default_rng(9)
    stored = [[random_pdq(rng) for _ in range(10)] for _ in range(20)]
    service.enroll(stored)
    requests = _requests(rng, stored, 40)
    alone = [service.bank.match(r) for r in requests]
    from matcher.client import AsyncClient

    async def main() -> list[list[list[tuple[str, int]]]]:
        async with AsyncClient(service.target, service.keys["exact"]) as client:  # distances
            answers = await asyncio.gather(*(client.match(r) for r in requests))
        return [[[(m.item_id, m.distance) for m in q.matches] for q in a] for a in answers]

    expected = [[[(m.item_id, m.distance) for m in q] for q in a] for a in alone]
    assert asyncio.run(main()) == expected
    assert any(q for a in expected for q in a)


def test_workers_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        MatchDispatcher(lambda q: list(q), workers=-1)
