"""The SDK: ``Client`` and ``AsyncClient`` have the same methods and return the domain's own
values (``matcher.records``), against a real server on a real socket."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matcher import records
from matcher.client import AsyncClient, Client, _enroll_batches, as_dict
from matcher.errors import InvalidInput, LowQuality, NotFound, Unauthenticated
from matcher.records import NewItem, Query
from matcher.signals import PDQ, Hash
from tests.service_fixtures import Running, flip_bits, random_pdq, random_phash


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_sync_and_async_clients_have_the_same_methods() -> None:
    sync, asynchronous = _public(Client), _public(AsyncClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        other = asynchronous[name]
        assert list(signature.parameters) == list(other.parameters), name
        for p, q in zip(signature.parameters.values(), other.parameters.values(), strict=True):
            assert (p.kind, p.default) == (q.kind, q.default), name
    for name, member in inspect.getmembers(AsyncClient, inspect.isfunction):
        if name in sync and name != "stream_match":
            assert inspect.iscoroutinefunction(member), name
    assert inspect.isasyncgenfunction(AsyncClient.stream_match)
    planned = {
        "match", "stream_match", "report", "create_case", "add_items", "enroll", "get_case",
        "get_case_with_secret", "withdraw", "withdraw_item", "withdraw_with_secret",
        "withdraw_item_with_secret", "create_api_key", "list_api_keys", "revoke_api_key",
        "create_organization", "stats", "healthy", "close", "update_key_policy",
        "restore_api_key", "add_allowlist", "list_allowlist", "remove_allowlist_entry",
        "seed_allowlist",
        "review_queue", "review_item",
    }  # fmt: skip
    assert planned == set(sync)


_EXPECTED: dict[str, type | tuple[type, ...]] = {
    "create_organization": records.Organisation,
    "create_api_key": records.NewApiKey,
    "list_api_keys": records.ApiKeyRecord,
    "revoke_api_key": records.ApiKeyRecord,
    "update_key_policy": records.KeyPolicy,
    "restore_api_key": records.KeyPolicy,
    "create_case": records.NewCase,
    "add_items": records.EnrollResult,
    "enroll": records.EnrollResult,
    "get_case": records.CaseStatus,
    "get_case_with_secret": records.CaseStatus,
    "match": records.QueryResult,
    "stream_match": records.QueryResult,
    "report": type(None),
    "withdraw_item": records.ItemStatus,
    "withdraw_item_with_secret": records.ItemStatus,
    "withdraw": records.CaseStatus,
    "withdraw_with_secret": records.CaseStatus,
    "stats": records.BankStats,
    "healthy": bool,
    "add_allowlist": records.AllowlistAdded,
    "list_allowlist": records.AllowlistEntry,
    "remove_allowlist_entry": records.AllowlistEntry,
    "seed_allowlist": tuple,
}


def _check_types(got: dict[str, Any]) -> None:
    assert got.keys() == _EXPECTED.keys()
    for name, value in got.items():
        values = value if isinstance(value, list) else [value]
        assert values, name
        for v in values:
            assert isinstance(v, _EXPECTED[name]), (name, type(v))
            json.dumps(as_dict(v))  # the CLI's JSON output of any result
    match = got["match"][0]
    assert isinstance(match.matches[0], records.ItemMatch)
    assert match.matches[0].signal is PDQ
    status = got["get_case"]
    assert all(isinstance(i, records.ItemStatus) for i in status.items)
    assert all(isinstance(i, records.ItemStatus) for i in got["add_items"].items)


def test_the_sync_client_returns_records(service: Running, rng: np.random.Generator) -> None:
    photo = random_pdq(rng)
    got: dict[str, Any] = {}
    with (
        service.client("admin") as admin,
        service.client("partner") as partner,
        service.client("practitioner") as c,
        service.client() as victim,
    ):
        got["create_organization"] = org = admin.create_organization("Platform D")
        got["create_api_key"] = new = admin.create_api_key("d", "partner", organization=org.id)
        got["list_api_keys"] = admin.list_api_keys()
        got["update_key_policy"] = admin.update_key_policy(new.record.id, daily_hashes=10**6)
        got["restore_api_key"] = admin.restore_api_key(new.record.id)
        assert got["restore_api_key"].daily_hashes == 10**6
        got["revoke_api_key"] = admin.revoke_api_key(new.record.id)
        got["create_case"] = case = c.create_case()
        got["add_items"] = c.add_items(case.number, [NewItem([photo], label="one")])
        got["enroll"] = c.enroll(case.number, [[random_pdq(rng)], [random_phash(rng)]])
        got["get_case"] = c.get_case(case.number)
        got["get_case_with_secret"] = victim.get_case_with_secret(case.number, case.secret)
        got["match"] = partner.match([Query([flip_bits(photo, 4, rng)], query_id="u")])
        got["stream_match"] = [r for batch in partner.stream_match([[[photo]]]) for r in batch]
        got["report"] = partner.report(got["match"][0].matches[0].item_id, correct=True)
        got["withdraw_item"] = c.withdraw_item(case.number, 2)
        got["withdraw_item_with_secret"] = victim.withdraw_item_with_secret(
            case.number, case.secret, 3
        )
        got["stats"] = admin.stats()
        got["withdraw"] = c.withdraw(case.number)
        second = c.create_case()
        got["withdraw_with_secret"] = victim.withdraw_with_secret(second.number, second.secret)
        got["healthy"] = victim.healthy()
        got["add_allowlist"] = added = admin.add_allowlist([random_pdq(rng)], label="meme")
        got["list_allowlist"] = admin.list_allowlist()
        got["remove_allowlist_entry"] = admin.remove_allowlist_entry(added.entries[0].id)
        got["seed_allowlist"] = admin.seed_allowlist()
    _check_types(got)
    assert got["get_case"].items[0].label == "one"
    assert got["get_case_with_secret"] == got["get_case"]
    assert got["withdraw"].state is records.CaseState.WITHDRAWN


def test_the_async_client_returns_records(service: Running, rng: np.random.Generator) -> None:
    photo = random_pdq(rng)

    async def main() -> dict[str, Any]:
        got: dict[str, Any] = {}

        def client(role: str | None) -> AsyncClient:
            return AsyncClient(service.target, service.keys[role] if role else None)

        async with (
            client("admin") as admin,
            client("partner") as partner,
            client("practitioner") as c,
            client(None) as victim,
        ):
            got["create_organization"] = org = await admin.create_organization("Platform D")
            got["create_api_key"] = new = await admin.create_api_key(
                "d", "partner", organization=org.id
            )
            got["list_api_keys"] = await admin.list_api_keys()
            got["update_key_policy"] = await admin.update_key_policy(new.record.id, daily_hashes=5)
            got["restore_api_key"] = await admin.restore_api_key(new.record.id)
            got["revoke_api_key"] = await admin.revoke_api_key(new.record.id)
            got["create_case"] = case = await c.create_case()
            got["add_items"] = await c.add_items(case.number, [NewItem([photo], label="one")])
            got["enroll"] = await c.enroll(case.number, [[random_pdq(rng)], [random_phash(rng)]])
            got["get_case"] = await c.get_case(case.number)
            got["get_case_with_secret"] = await victim.get_case_with_secret(
                case.number, case.secret
            )
            got["match"] = await partner.match([Query([flip_bits(photo, 4, rng)])])
            got["stream_match"] = [
                r async for batch in partner.stream_match([[[photo]]]) for r in batch
            ]
            got["report"] = await partner.report(got["match"][0].matches[0].item_id, True)
            got["withdraw_item"] = await c.withdraw_item(case.number, 2)
            got["withdraw_item_with_secret"] = await victim.withdraw_item_with_secret(
                case.number, case.secret, 3
            )
            got["stats"] = await admin.stats()
            got["withdraw"] = await c.withdraw(case.number)
            second = await c.create_case()
            got["withdraw_with_secret"] = await victim.withdraw_with_secret(
                second.number, second.secret
            )
            got["healthy"] = await victim.healthy()
            got["add_allowlist"] = added = await admin.add_allowlist([random_pdq(rng)], label="m")
            got["list_allowlist"] = await admin.list_allowlist()
            got["remove_allowlist_entry"] = await admin.remove_allowlist_entry(added.entries[0].id)
            got["seed_allowlist"] = await admin.seed_allowlist()
        return got

    got = asyncio.run(main())
    _check_types(got)
    assert got["get_case_with_secret"] == got["get_case"]


def test_errors_are_ours_with_their_field(service: Running, rng: np.random.Generator) -> None:
    with service.client("practitioner") as c:
        number = c.create_case().number
        with pytest.raises(LowQuality) as err:
            c.add_items(number, [[random_pdq(rng)], [Hash(PDQ, bytes(32))]])  # no quality
        assert err.value.field == "items[1].hashes[0].quality"
        with pytest.raises(NotFound):
            c.get_case("AAAA-BBBB-CCCC")
        with pytest.raises(InvalidInput) as bad:
            c.get_case("")
        assert bad.value.field == "case"
    with service.client("partner") as partner, pytest.raises(InvalidInput) as err:
        partner.match([Query([Hash(PDQ, bytes(32))], max_distance=32)])
    assert err.value.field == "max_distance"
    with Client(service.target, "mk_wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.stats()


def _calls(service: Running, method: str) -> float:
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = re.search(rf'matcher_requests_total{{code="OK",method="{method}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_enroll_batches_calls_and_sums_them(service: Running, rng: np.random.Generator) -> None:
    items = [NewItem([random_pdq(rng) for _ in range(1 + i % 4)]) for i in range(30)]
    planned = len(_enroll_batches(items, 10))
    assert planned > 7
    with service.client("practitioner") as c:
        number = c.create_case().number
        result = c.enroll(number, items, max_hashes=10)
        calls = _calls(service, "AddItems")
        assert calls == planned
        assert (result.added, result.existing, result.item_count) == (30, 0, 30)
        assert [i.number for i in result.items] == list(range(1, 31))
        assert result.hash_count == sum(len(i.hashes) for i in items)
        # Retry-safe: enrolling the same items again adds nothing.
        again = c.enroll(number, items, max_hashes=1000)
        assert (again.added, again.existing, again.item_count) == (0, 30, 30)
        assert _calls(service, "AddItems") == calls + 1


def test_enroll_batches_keep_items_whole_and_in_order() -> None:
    items = [NewItem([Hash(PDQ, bytes([i]) * 32, 90)] * n) for i, n in enumerate([3, 9, 2, 2, 7])]
    batches = _enroll_batches(items, max_hashes=8)
    assert [[len(i.hashes) for i in b] for b in batches] == [[3], [9], [2, 2], [7]]
    assert [i for b in batches for i in b] == items
    many = [NewItem([Hash(PDQ, bytes(32), 90)])] * 2500
    assert [len(b) for b in _enroll_batches(many, max_hashes=100_000)] == [1000, 1000, 500]


def test_the_sdk_converts_nothing_itself() -> None:
    """One home for each conversion: the SDK builds and reads messages only through
    ``matcher.contract`` (the module the server uses), never field by field."""
    import matcher.client

    source = Path(matcher.client.__file__).read_text()
    for own_conversion in ("hashes_pb2", "Timestamp", "ToDatetime", "SignalCount", ".Value("):
        assert own_conversion not in source, own_conversion
