"""Partner verdicts, quarantine and review, against a real server (issue 11, items 1, 2, 5).

Each rule has a test that fails without it: a repeated verdict counts once; an item is
quarantined after K distinct partners and not before, at once; a review restores it (or
withdraws it); the practitioner and the victim see the quarantine and its reason; partner
names only where the partner agreed.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from matcher.client import Client
from matcher.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from matcher.principal import Principal, Role
from matcher.records import ItemState, NewItem, QuarantineReason, Query, ReportReason
from matcher.service import ServerConfig
from matcher.v1 import match_pb2, match_pb2_grpc
from tests.service_fixtures import Running, random_pdq, start_server, stop_server


def _matched(client: Client, item: NewItem) -> bool:
    (result,) = client.match([Query(item.hashes)])
    return bool(result.matches)


def _item_id(client: Client, item: NewItem) -> str:
    (result,) = client.match([Query(item.hashes)])
    (match,) = result.matches
    return match.item_id


def test_a_repeated_verdict_counts_once(service: Running, rng: np.random.Generator) -> None:
    item = NewItem([random_pdq(rng)])
    case, _ = service.enroll([item])
    with service.client("partner") as partner:
        item_id = _item_id(partner, item)
        for _ in range(5):
            partner.report(item_id, correct=False, reason="not_the_image")
        # One partner saying "wrong" five times is one partner: no quarantine at K = 2.
        assert _matched(partner, item)
        partner.report(item_id, correct=True)  # and a change of mind replaces the verdict
    with service.client("practitioner") as practitioner:
        (status,) = practitioner.get_case(case.number).items
    assert (status.reported_correct, status.reported_wrong) == (1, 0)
    assert status.quarantine is None


def test_quarantine_after_k_distinct_partners_and_not_before_then_restore(
    service: Running, rng: np.random.Generator
) -> None:
    item, other = NewItem([random_pdq(rng)], label="photo 1"), NewItem([random_pdq(rng)])
    case, _ = service.enroll([item, other])
    with service.client("partner") as one, service.client("exact") as two:
        item_id = _item_id(one, item)
        one.report(item_id, correct=False, reason=ReportReason.WIDELY_SHARED)
        assert _matched(one, item) and _matched(two, item)  # one partner: not yet
        two.report(item_id, correct=False)
        # The second distinct partner quarantines it, effective on the very next match.
        assert not _matched(one, item) and not _matched(two, item)
        assert _matched(one, other)  # the case's other item keeps matching
    with service.client("practitioner") as practitioner:
        first, second = practitioner.get_case(case.number).items
        assert first.state is ItemState.ACTIVE and first.quarantine is not None
        assert first.quarantine.reason is QuarantineReason.REPORTS
        assert first.quarantine.partners == 2
        assert "2 partners reported" in first.quarantine.description
        assert second.quarantine is None
        [entry] = practitioner.review_queue()
        assert (entry.name, entry.label, entry.reported_wrong) == (first.name, "photo 1", 2)
        restored = practitioner.review_item(case.number, 1, "restore", note="checked")
        assert restored.quarantine is None and restored.reviewed_at is not None
        assert practitioner.review_queue() == []
        with pytest.raises(Conflict):  # nothing left to review
            practitioner.review_item(case.number, 1, "restore")
    with service.client("partner") as one:
        assert _matched(one, item)  # matching again at once
        # The verdicts from before the review no longer count: one new one is not enough.
        one.report(item_id, correct=False)
        assert _matched(one, item)
    # The victim sees it too (no partner names), with the reason in plain words.
    with service.client("partner") as one, service.client("exact") as two:
        two.report(item_id, correct=False)
        assert not _matched(one, item)
    with service.client() as anyone:
        mine = anyone.get_case_with_secret(case.number, case.secret).items[0]
    assert mine.quarantine is not None and mine.quarantine.reason is QuarantineReason.REPORTS
    assert mine.partner_reports == ()
    entries = service.bank.audit_log(by=Principal.operator("test"), case=case.number)
    actions = [e.action for e in entries]
    assert actions.count("item.quarantine") == 2 and actions.count("item.review") == 1
    # The victim's own command says so, in words.
    from click.testing import CliRunner

    from matcher.cli import main

    said = CliRunner().invoke(
        main,
        ["status", case.number, "--secret", case.secret],
        env={"MATCHER_SERVER": service.target},
        catch_exceptions=False,
    )
    assert said.exit_code == 0, said.output
    assert "photo 1 (photo 1): active" in said.stdout and "ON HOLD since" in said.stdout
    assert "2 partners reported its matches as wrong" in said.stdout
    assert "photo 2" in said.stdout and said.stdout.count("ON HOLD") == 1
    # And the metrics count the verdicts and the quarantines (no key names, no hash).
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'matcher_verdicts_total{verdict="wrong"} 4.0' in text
    assert 'matcher_quarantines_total{reason="reports"} 2.0' in text
    assert 'matcher_quarantines_total{reason="flood"} 0.0' in text
    assert "matcher_flood_flushes_total" in text
    quarantine = next(e for e in entries if e.action == "item.quarantine")
    assert quarantine.detail == {"item": 1, "reason": "reports", "partners": 2, "matches": 0}


def test_review_withdraw_and_who_may_review(service: Running, rng: np.random.Generator) -> None:
    item = NewItem([random_pdq(rng)])
    case, _ = service.enroll([item])
    with service.client("partner") as one, service.client("exact") as two:
        item_id = _item_id(one, item)
        one.report(item_id, correct=False)
        two.report(item_id, correct=False)
    with service.client("practitioner_b") as stranger:
        assert stranger.review_queue() == []  # another organisation's queue is its own
        with pytest.raises(NotFound):
            stranger.review_item(case.number, 1, "withdraw")
    with service.client("partner") as partner, pytest.raises(PermissionDenied):
        partner.review_queue()
    with service.client("admin") as admin:
        assert [e.case_number for e in admin.review_queue()] == [case.number]
    with service.client("practitioner") as practitioner:
        with pytest.raises(InvalidInput):
            practitioner.review_item(case.number, 1, "restore", note="x" * 101)
        gone = practitioner.review_item(case.number, 1, "withdraw", note="a meme")
        assert gone.state is ItemState.WITHDRAWN and gone.hash_count == 0
        assert practitioner.review_queue() == []
    actions = [
        e.action for e in service.bank.audit_log(by=Principal.operator("t"), case=case.number)
    ]
    assert actions[:2] == ["item.review", "item.withdraw"]


def test_partner_names_only_where_the_partner_agreed(
    service: Running, rng: np.random.Generator
) -> None:
    item = NewItem([random_pdq(rng)])
    case, _ = service.enroll([item])
    with service.client("admin") as admin:
        named = next(k for k in admin.list_api_keys() if k.name == "audited")
        assert admin.update_key_policy(named.id, named_in_reports=True).named_in_reports
    with service.client("partner") as one, service.client("exact") as two:
        item_id = _item_id(one, item)
        one.report(item_id, correct=True)
        two.report(item_id, correct=True, reason="other")
    with service.client("practitioner") as practitioner:
        (status,) = practitioner.get_case(case.number).items
    assert status.reported_correct == 2
    [report] = status.partner_reports  # "acme" did not agree: counted, never named
    assert (report.partner, report.correct, report.reason) == ("audited", True, ReportReason.OTHER)
    with service.client() as anyone:
        (mine,) = anyone.get_case_with_secret(case.number, case.secret).items
    assert mine.partner_reports == () and mine.reported_correct == 2


def _field_of(exc: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(exc)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def test_unknown_verdicts_and_reasons_are_refused(
    service: Running, rng: np.random.Generator
) -> None:
    item = NewItem([random_pdq(rng)])
    service.enroll([item])
    with service.client("partner") as partner:
        item_id = _item_id(partner, item)
    metadata = (("authorization", f"Bearer {service.keys['partner']}"),)
    with grpc.insecure_channel(service.target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for request, field in (
            (match_pb2.ReportMatchRequest(item_id=item_id, verdict=7), "verdict"),
            (match_pb2.ReportMatchRequest(item_id=item_id), "verdict"),
            (match_pb2.ReportMatchRequest(item_id=item_id, verdict=1, reason=99), "reason"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReportMatch(request, metadata=metadata, timeout=5)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert _field_of(caught.value) == [field]
    with service.client("partner") as partner, pytest.raises(InvalidInput):
        partner.report(item_id, correct=False, reason="boring")


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Running]:
    """A server quarantining after 3 distinct partners."""
    config = ServerConfig(address="127.0.0.1:0", metrics_address="127.0.0.1:0", quarantine_after=3)
    running, thread = start_server(tmp_path / "data", config)
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


def test_k_is_configurable(strict: Running, rng: np.random.Generator) -> None:
    item = NewItem([random_pdq(rng)])
    strict.enroll([item])
    me = Principal.operator("test")
    third = strict.bank.accounts.create_api_key("third", Role.PARTNER, by=me).key
    with strict.client("partner") as one, strict.client("exact") as two:
        item_id = _item_id(one, item)
        one.report(item_id, correct=False)
        two.report(item_id, correct=False)
        assert _matched(one, item)  # two of three
        with Client(strict.target, third) as three:
            three.report(item_id, correct=False)
        assert not _matched(one, item)


def test_the_review_commands(service: Running, rng: np.random.Generator) -> None:
    import csv
    import io
    import json

    from click.testing import CliRunner

    from matcher.cli import main

    item = NewItem([random_pdq(rng)], label="photo 1")
    case, _ = service.enroll([item])
    with service.client("partner") as one, service.client("exact") as two:
        item_id = _item_id(one, item)
        one.report(item_id, correct=False)
        two.report(item_id, correct=False)

    def run(*args: str) -> str:
        env = {"MATCHER_SERVER": service.target, "MATCHER_API_KEY": service.keys["practitioner"]}
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    name = f"cases/{case.number}/items/1"
    [row] = [json.loads(line) for line in run("review", "list").splitlines()]  # not a terminal
    assert (row["item"], row["reason"], row["partners"], row["label"]) == (
        name,
        "reports",
        2,
        "photo 1",
    )
    [csv_row] = list(csv.DictReader(io.StringIO(run("review", "list", "--format", "csv"))))
    assert csv_row["item"] == name
    table = run("review", "list", "--format", "table")
    assert table.splitlines()[0].startswith("ITEM") and name in table
    restored = json.loads(run("review", "restore", name, "--note", "checked"))
    assert restored["quarantine"] is None and restored["reviewed_at"]
    assert "nothing to review" in run("review", "list", "--format", "table")
    with service.client("partner") as one:
        assert _matched(one, item)
