"""The HTTP/JSON API and the web root: real servers on real sockets (the gRPC server with its
HTTP gateway, as ``matcher serve --http-address`` runs them), plain HTTP clients bound to
distinct loopback addresses (127.0.0.2, 127.0.0.3...) so per-address limits can be seen, and a
schemathesis run against the served OpenAPI description."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from matcher.http import WEB_ROOT, HttpConfig
from matcher.http.gateway import CSP, ROUTES
from matcher.http.openapi import document
from matcher.principal import Principal
from matcher.service import ServerConfig, ServiceLimits
from matcher.service.auth import CLIENT_ADDRESS, GATEWAY_TOKEN
from matcher.v1 import cases_pb2, cases_pb2_grpc
from tests.service_fixtures import Running, start_server, stop_server

ADMIN = Principal.operator("tests")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


def call(
    running: Running,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One HTTP request from ``source`` (a loopback address of its own)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", running.server.http_port, timeout=60, source_address=(source, 0)
    )
    sent = dict(headers or {})
    if body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        sent.setdefault("Content-Type", "application/json")
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=raw, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def pdq(rng: np.random.Generator) -> str:
    return rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def item(hex_value: str, label: str = "") -> dict[str, Any]:
    return {
        "kind": "image",
        "label": label,
        "hashes": [{"signal": "pdq", "hex": hex_value, "quality": 90}],
    }


def assert_problem(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    assert reply.status == status, reply.raw
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    problem = reply.body
    assert problem["status"] == status
    assert problem["type"].startswith("urn:matcher:problem:")
    assert problem["title"] and problem["detail"]
    if code is not None:
        assert problem["code"] == code
    return problem


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The server most tests share: HTTP on, victim self-service on (Helpline A's)."""
    data = tmp_path_factory.mktemp("http") / "data"
    config = ServerConfig(
        address="127.0.0.1:0",
        metrics_address=None,
        # Self-service needs the organisation's id, known once the fixture made it: 1.
        http=HttpConfig(address="127.0.0.1:0", self_service_org_id=1, self_service_cases=3),
        limits=ServiceLimits(secret_backoff_seconds=0.05),
    )
    running, thread = start_server(data, config)
    assert running.org_ids["Helpline A"] == 1
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A server with small limits: a low rate, small bodies, 3 failed victim guesses per
    address, self-service off."""
    data = tmp_path_factory.mktemp("strict") / "data"
    config = ServerConfig(
        address="127.0.0.1:0",
        metrics_address=None,
        rate=1.0,
        burst=5.0,
        http=HttpConfig(address="127.0.0.1:0", max_body_bytes=64 * 1024),
        limits=ServiceLimits(
            secret_failures=3, secret_window_seconds=3600, secret_backoff_seconds=0.05
        ),
    )
    running, thread = start_server(data, config)
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        stop_server(running, thread)


# -- every endpoint, end to end


def test_practitioner_partner_and_victim_flows_over_http(web: Running) -> None:
    rng = np.random.default_rng(13)
    practitioner, partner = web.keys["practitioner"], web.keys["partner"]

    who = call(web, "GET", "/api/v1/session", key=practitioner)
    assert who.status == 200
    assert who.body["role"] == "practitioner"
    assert who.body["organization"]["display_name"] == "Helpline A"
    assert call(web, "GET", "/api/v1/session", key=partner).body == {
        "role": "partner",
        "key_name": "acme",
    }

    opened = call(web, "POST", "/api/v1/cases", key=practitioner)
    assert opened.status == 201
    number, secret = opened.body["case_number"], opened.body["secret"]
    assert opened.body["case"]["state"] == "active" and opened.body["case"]["items"] == []

    a, b = pdq(rng), pdq(rng)
    added = call(
        web,
        "POST",
        f"/api/v1/cases/{number}/items",
        {"items": [item(a, "first"), item(b)]},
        key=practitioner,
    )
    assert added.status == 200, added.raw
    assert added.body["added"] == 2 and added.body["item_count"] == 2
    assert [i["number"] for i in added.body["items"]] == [1, 2]
    again = call(
        web, "POST", f"/api/v1/cases/{number}/items", {"items": [item(a)]}, key=practitioner
    )
    assert again.body["existing"] == 1 and again.body["added"] == 0

    case = call(web, "GET", f"/api/v1/cases/{number}", key=practitioner).body
    assert case["hash_counts"] == {"pdq": 2}
    assert [i["label"] for i in case["items"]] == ["first", ""]
    assert a not in json.dumps(case)  # never a hash value back

    found = call(
        web,
        "POST",
        "/api/v1/match",
        {"queries": [{"hashes": [{"signal": "pdq", "hex": a}], "query_id": "u1"}]},
        key=partner,
    )
    assert found.status == 200, found.raw
    [result] = found.body["results"]
    assert result["query_id"] == "u1"
    [match] = result["matches"]
    assert match["band"] == "strong" and match["hits"] == 1 and "distance" not in match
    exact = call(
        web,
        "POST",
        "/api/v1/match",
        {"queries": [{"hashes": [{"signal": "pdq", "hex": a}]}]},
        key=web.keys["exact"],
    )
    assert exact.body["results"][0]["matches"][0]["distance"] == 0

    reported = call(
        web,
        "POST",
        "/api/v1/match/report",
        {"item_id": match["item_id"], "verdict": "correct"},
        key=partner,
    )
    assert reported.status == 204 and reported.raw == b""
    assert (
        call(web, "GET", f"/api/v1/cases/{number}", key=practitioner).body["reported_correct"] == 1
    )

    gone = call(web, "POST", f"/api/v1/cases/{number}/items/2/withdraw", key=practitioner)
    assert gone.status == 200 and gone.body["state"] == "withdrawn" and gone.body["number"] == 2

    # The victim, with no key: the status, then one item, then the whole case.
    mine = {"case_number": number.lower().replace("-", ""), "secret": secret}
    status = call(web, "POST", "/api/v1/victim/status", mine, source="127.0.0.9")
    assert status.status == 200
    assert [i["state"] for i in status.body["items"]] == ["active", "withdrawn"]
    one = call(web, "POST", "/api/v1/victim/withdraw", {**mine, "item": 1}, source="127.0.0.9")
    assert one.status == 200 and one.body["item"]["state"] == "withdrawn"
    whole = call(web, "POST", "/api/v1/victim/withdraw", mine, source="127.0.0.9")
    assert whole.status == 200 and whole.body["case"]["state"] == "withdrawn"
    assert (
        call(web, "POST", "/api/v1/match", found_query(a), key=partner).body["results"][0][
            "matches"
        ]
        == []
    )

    # A second case, withdrawn by its practitioner.
    other = call(web, "POST", "/api/v1/cases", key=practitioner).body["case_number"]
    done = call(web, "POST", f"/api/v1/cases/{other}/withdraw", key=practitioner)
    assert done.status == 200 and done.body["state"] == "withdrawn"
    refused = call(
        web, "POST", f"/api/v1/cases/{other}/items", {"items": [item(b)]}, key=practitioner
    )
    assert_problem(refused, 409, "FAILED_PRECONDITION")


def found_query(hex_value: str) -> dict[str, Any]:
    return {"queries": [{"hashes": [{"signal": "pdq", "hex": hex_value}]}]}


def matched(running: Running, hex_value: str) -> list[dict[str, Any]]:
    reply = call(
        running, "POST", "/api/v1/match", found_query(hex_value), key=running.keys["partner"]
    )
    assert reply.status == 200, reply.raw
    matches: list[dict[str, Any]] = reply.body["results"][0]["matches"]
    return matches


def test_verdicts_quarantine_and_review_over_http(web: Running) -> None:
    """Issue 11 through the gateway: a reason is taken, a key counts once per item, two
    partners quarantine an item (the victim's status says so), a practitioner restores it."""
    rng = np.random.default_rng(11)
    practitioner = web.keys["practitioner"]
    # "audited" agreed to be named beside its verdicts; "acme" did not.
    web.bank.accounts.update_key_policy(
        next(k.id for k in web.bank.accounts.list_api_keys(by=ADMIN) if k.name == "audited"),
        named_in_reports=True,
        by=ADMIN,
    )
    opened = call(web, "POST", "/api/v1/cases", key=practitioner).body
    number, secret = opened["case_number"], opened["secret"]
    a, b = pdq(rng), pdq(rng)
    body = {"items": [item(a, "photo 1"), item(b, "photo 2")]}
    assert call(web, "POST", f"/api/v1/cases/{number}/items", body, key=practitioner).status == 200
    [match] = matched(web, a)

    def report(role: str, verdict: str, **extra: str) -> Reply:
        body = {"item_id": match["item_id"], "verdict": verdict, **extra}
        return call(web, "POST", "/api/v1/match/report", body, key=web.keys[role])

    def first_item(path: str = f"/api/v1/cases/{number}") -> dict[str, Any]:
        reply = call(web, "GET", path, key=practitioner)
        assert reply.status == 200, reply.raw
        first: dict[str, Any] = reply.body["items"][0]
        return first

    bad = assert_problem(report("partner", "wrong", reason="ugly"), 400, "INVALID_ARGUMENT")
    assert bad["errors"][0]["field"] == "reason"
    # One partner saying "wrong" three times is one partner: counted once, still matching.
    for _ in range(3):
        assert report("partner", "wrong", reason="not_the_image").status == 204
    one = first_item()
    assert (one["reported_correct"], one["reported_wrong"]) == (0, 1)
    assert "quarantine" not in one and one["partner_reports"] == []  # acme is never named
    assert matched(web, a)
    # A second, named partner: quarantined at once (K = 2), the other item untouched.
    assert report("exact", "wrong", reason="widely_shared").status == 204
    assert matched(web, a) == [] and matched(web, b)
    held = first_item()
    assert held["state"] == "active" and held["reported_wrong"] == 2
    assert held["quarantine"]["reason"] == "reports"
    assert held["quarantine"]["partners"] == 2
    assert held["quarantine"]["description"] == "2 partners reported its matches as wrong"
    assert held["quarantine"]["since"].endswith("Z")
    [named] = held["partner_reports"]
    assert (named["partner"], named["verdict"], named["reason"]) == (
        "audited",
        "wrong",
        "widely_shared",
    )
    # The victim sees it too, in words, and never a partner's name.
    mine = {"case_number": number, "secret": secret}
    status = call(web, "POST", "/api/v1/victim/status", mine, source="127.0.0.10")
    assert status.status == 200, status.raw
    first, second = status.body["items"]
    assert first["quarantine"]["reason"] == "reports" and "quarantine" not in second
    assert "partner_reports" not in first and "audited" not in status.raw.decode()
    # The review queue holds it; Helpline B's does not, and B cannot review it.
    queue = call(web, "GET", "/api/v1/review", key=practitioner)
    assert queue.status == 200, queue.raw
    [entry] = [e for e in queue.body["entries"] if e["case_number"] == number]
    assert (entry["item"], entry["label"], entry["reported_wrong"]) == (1, "photo 1", 2)
    assert entry["quarantine"]["reason"] == "reports" and "review_time" not in entry
    other = call(web, "GET", "/api/v1/review", key=web.keys["practitioner_b"]).body
    assert all(e["case_number"] != number for e in other["entries"])
    review = f"/api/v1/cases/{number}/items/1/review"
    stranger = call(web, "POST", review, {"decision": "restore"}, key=web.keys["practitioner_b"])
    assert stranger.status in (403, 404), stranger.raw
    assert_problem(call(web, "GET", "/api/v1/review?page_size=x", key=practitioner), 400)
    assert_problem(call(web, "GET", "/api/v1/review?nope=1", key=practitioner), 400)
    refused = call(web, "POST", review, {"decision": "keep"}, key=practitioner)
    assert assert_problem(refused, 400)["errors"][0]["field"] == "decision"
    # The practitioner restores it: matching again at once, off the queue, and a second
    # restore has nothing to do.
    restored = call(
        web, "POST", review, {"decision": "restore", "note": "checked"}, key=practitioner
    )
    assert restored.status == 200, restored.raw
    assert "quarantine" not in restored.body and restored.body["review_time"].endswith("Z")
    assert matched(web, a)
    after = call(web, "GET", "/api/v1/review", key=practitioner).body["entries"]
    assert all(e["case_number"] != number for e in after)
    again = call(web, "POST", review, {"decision": "restore"}, key=practitioner)
    assert_problem(again, 409, "FAILED_PRECONDITION")
    assert "review_time" in first_item()
    # Verdicts from before the review no longer count: the same two again quarantine it again,
    # and this time the practitioner withdraws it.
    assert report("partner", "wrong").status == 204
    assert matched(web, a)
    assert report("exact", "wrong").status == 204
    assert matched(web, a) == []
    gone = call(web, "POST", review, {"decision": "withdraw"}, key=practitioner)
    assert gone.status == 200 and gone.body["state"] == "withdrawn", gone.raw
    assert gone.body["hash_count"] == 0


def test_health_and_readiness(web: Running) -> None:
    assert call(web, "GET", "/healthz").body == {"status": "SERVING"}
    ready = call(web, "GET", "/readyz")
    assert ready.status == 200 and ready.body == {"status": "SERVING"}
    assert ready.headers["Cache-Control"] == "no-store"


def test_readiness_is_the_grpc_health_until_the_index_is_loaded(tmp_path: Path) -> None:
    import time

    config = ServerConfig(
        address="127.0.0.1:0",
        metrics_address=None,
        http=HttpConfig(address="127.0.0.1:0", self_service_org_id=1),
    )
    running, thread = start_server(tmp_path / "data", config, load=False)
    try:
        assert call(running, "GET", "/healthz").status == 200
        waiting = call(running, "GET", "/readyz")
        assert_problem(waiting, 503, "UNAVAILABLE")
        assert waiting.headers["Retry-After"] == "1"
        opened = call(running, "POST", "/api/v1/victim/cases", {"items": [item("ab" * 32)]})
        assert_problem(opened, 503)
        running.bank.load()
        deadline = time.monotonic() + 60
        while call(running, "GET", "/readyz").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop_server(running, thread)


# -- auth and roles: the gRPC ones


def test_keys_and_roles_are_the_grpc_ones(web: Running) -> None:
    assert_problem(call(web, "POST", "/api/v1/match", found_query("00" * 32)), 401)
    assert_problem(
        call(web, "POST", "/api/v1/match", found_query("00" * 32), key="mk_not_a_key"),
        401,
        "UNAUTHENTICATED",
    )
    assert_problem(call(web, "GET", "/api/v1/session", key="mk_not_a_key"), 401)
    assert_problem(call(web, "GET", "/api/v1/session", headers={"Authorization": "Basic abc"}), 401)
    # A partner opens no case; a practitioner matches nothing.
    assert_problem(
        call(web, "POST", "/api/v1/cases", key=web.keys["partner"]), 403, "PERMISSION_DENIED"
    )
    assert_problem(
        call(web, "POST", "/api/v1/match", found_query("00" * 32), key=web.keys["practitioner"]),
        403,
    )
    # Helpline B cannot see nor change Helpline A's case (not even that it exists).
    number = call(web, "POST", "/api/v1/cases", key=web.keys["practitioner"]).body["case_number"]
    for method, path in (
        ("GET", f"/api/v1/cases/{number}"),
        ("POST", f"/api/v1/cases/{number}/withdraw"),
    ):
        reply = call(web, method, path, key=web.keys["practitioner_b"])
        assert reply.status in (403, 404), reply.raw
    assert call(web, "GET", f"/api/v1/cases/{number}", key=web.keys["admin"]).status == 200


# -- errors: problem details, with the field at fault as the JSON names it


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/v1/match",
            {"queries": [{"hashes": [{"signal": "pdq", "hex": "zz"}]}]},
            "queries[0].hashes[0].hex",
        ),
        (
            "/api/v1/match",
            {"queries": [{"hashes": [{"signal": "pdq", "hex": "ab" * 31}]}]},
            "queries[0].hashes[0].hex",
        ),
        (
            "/api/v1/match",
            {
                "queries": [
                    {"hashes": [{"signal": "pdq", "hex": "ab" * 32}]},
                    {"hashes": [{"signal": "nope", "hex": "ab"}]},
                ]
            },
            "queries[1].hashes[0].signal",
        ),
        ("/api/v1/match", {"queries": [{"hashes": []}]}, "queries[0].hashes"),
        ("/api/v1/match", {"queries": []}, "queries"),
        (
            "/api/v1/match",
            {"queries": [{"hashes": [{"signal": "pdq", "hex": "ab" * 32}], "extra": 1}]},
            "queries[0].extra",
        ),
        ("/api/v1/match", {"queries": "all"}, "queries"),
        ("/api/v1/match", [], ""),
        ("/api/v1/match/report", {"item_id": "m_1", "verdict": "maybe"}, "verdict"),
        ("/api/v1/victim/status", {"case_number": "A" * 500, "secret": "x"}, "case_number"),
        ("/api/v1/victim/withdraw", {"case_number": "A", "secret": "x", "item": 0}, "item"),
        ("/api/v1/victim/withdraw", {"case_number": "A", "secret": "x", "item": True}, "item"),
    ],
)
def test_invalid_requests_are_problem_details_naming_the_field(
    web: Running, path: str, body: Any, field: str
) -> None:
    key = web.keys["admin"]
    problem = assert_problem(call(web, "POST", path, body, key=key), 400, "INVALID_ARGUMENT")
    [error] = problem["errors"]
    assert error["field"] == field
    assert error["description"]


def test_enrollment_errors_name_item_fields_and_the_path(web: Running) -> None:
    key = web.keys["practitioner"]
    number = call(web, "POST", "/api/v1/cases", key=key).body["case_number"]
    low = {
        "items": [{"kind": "image", "hashes": [{"signal": "pdq", "hex": "ab" * 32, "quality": 10}]}]
    }
    problem = assert_problem(call(web, "POST", f"/api/v1/cases/{number}/items", low, key=key), 400)
    assert problem["errors"][0]["field"] == "items[0].hashes[0].quality"
    bad_path = call(web, "GET", "/api/v1/cases/" + "9" * 300, key=key)
    assert bad_path.status in (400, 404)
    if bad_path.status == 400:
        assert assert_problem(bad_path, 400)["errors"][0]["field"] == "number"
    assert_problem(call(web, "POST", f"/api/v1/cases/{number}/items/0/withdraw", key=key), 400)


def test_bodies_must_be_json_and_not_too_large(web: Running, strict: Running) -> None:
    key = web.keys["partner"]
    assert_problem(call(web, "POST", "/api/v1/match", raw=b"{not json", key=key), 400)
    assert_problem(call(web, "POST", "/api/v1/match", raw=b"[NaN]", key=key), 400)
    assert_problem(call(web, "POST", "/api/v1/match", raw=b"", key=key), 400)
    # A form post (what a cross-site page can send without asking) is refused.
    form = call(
        web,
        "POST",
        "/api/v1/victim/withdraw",
        raw=b'{"case_number": "A", "secret": "b"}',
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(form, 415)
    big = {"queries": [{"hashes": [{"signal": "pdq", "hex": "ab" * 32}]}] * 2000}
    assert_problem(call(strict, "POST", "/api/v1/match", big, key=strict.keys["partner"]), 413)
    assert_problem(call(web, "GET", "/api/v1/match", key=key), 405)
    assert_problem(call(web, "GET", "/api/v1/nothing/here"), 404)


def test_rate_limits_answer_429_with_retry_after(strict: Running) -> None:
    key = strict.keys["exact"]
    query = found_query("00" * 32)
    replies = [call(strict, "POST", "/api/v1/match", query, key=key) for _ in range(8)]
    assert replies[0].status == 200
    limited = [r for r in replies if r.status == 429]
    assert limited, [r.status for r in replies]
    problem = assert_problem(limited[0], 429, "RESOURCE_EXHAUSTED")
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert problem["retry_after"] == int(limited[0].headers["Retry-After"])


# -- the victim's guess limit: per real client address, through the gateway


def test_victim_guesses_count_per_client_address_and_forged_headers_are_ignored(
    strict: Running,
) -> None:
    case = call(strict, "POST", "/api/v1/cases", key=strict.keys["practitioner"]).body
    wrong = {"case_number": case["case_number"], "secret": "guess"}
    for _ in range(3):
        assert_problem(
            call(strict, "POST", "/api/v1/victim/status", wrong, source="127.0.0.2"), 404
        )
    refused = call(strict, "POST", "/api/v1/victim/status", wrong, source="127.0.0.2")
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 1000
    # Claiming another address changes nothing: no header from outside is believed.
    forged = {
        "X-Forwarded-For": "127.0.0.77",
        "X-Real-IP": "127.0.0.77",
        "Forwarded": "for=127.0.0.77",
        CLIENT_ADDRESS: "ipv4:127.0.0.77",
        GATEWAY_TOKEN: "guess",
    }
    again = call(strict, "POST", "/api/v1/victim/status", wrong, source="127.0.0.2", headers=forged)
    assert_problem(again, 429)
    # Another address is not held back by those failures: the gateway passed each client's
    # own address (were it gRPC's view, 127.0.0.1 for all, this would be refused too).
    assert_problem(call(strict, "POST", "/api/v1/victim/status", wrong, source="127.0.0.3"), 404)
    right = {"case_number": case["case_number"], "secret": case["secret"]}
    assert call(strict, "POST", "/api/v1/victim/status", right, source="127.0.0.3").status == 200
    # Calling gRPC directly with the gateway's metadata but not its token: the address is
    # ignored, and every forged address's failure counts against the real peer.
    with grpc.insecure_channel(strict.target) as channel:
        stub = cases_pb2_grpc.CaseServiceStub(channel)
        request = cases_pb2.GetCaseWithSecretRequest(case_number=case["case_number"], secret="x")
        codes = []
        for i in range(4):
            metadata = ((CLIENT_ADDRESS, f"ipv4:10.0.0.{i}"), (GATEWAY_TOKEN, f"guess{i}"))
            try:
                stub.GetCaseWithSecret(request, metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                codes.append(error.code())
        assert codes == [grpc.StatusCode.NOT_FOUND] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


# -- self-service


def test_victims_open_cases_themselves_within_a_per_address_limit(web: Running) -> None:
    rng = np.random.default_rng(7)
    body = {"items": [item(pdq(rng))]}
    opened = call(web, "POST", "/api/v1/victim/cases", body, source="127.0.0.4")
    assert opened.status == 201, opened.raw
    number, secret = opened.body["case_number"], opened.body["secret"]
    assert opened.body["case"]["item_count"] == 1
    # It is Helpline A's case (the self-service organisation), and the victim's to withdraw.
    assert call(web, "GET", f"/api/v1/cases/{number}", key=web.keys["practitioner"]).status == 200
    mine = {"case_number": number, "secret": secret}
    assert call(web, "POST", "/api/v1/victim/status", mine, source="127.0.0.4").status == 200
    # Invalid items cost nothing and open nothing.
    bad = {"items": [{"kind": "image", "hashes": [{"signal": "pdq", "hex": "ab"}]}]}
    assert_problem(call(web, "POST", "/api/v1/victim/cases", bad, source="127.0.0.4"), 400)
    for _ in range(2):
        body = {"items": [item(pdq(rng))]}
        assert call(web, "POST", "/api/v1/victim/cases", body, source="127.0.0.4").status == 201
    limited = call(web, "POST", "/api/v1/victim/cases", body, source="127.0.0.4")
    assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert call(web, "POST", "/api/v1/victim/cases", body, source="127.0.0.5").status == 201


def test_self_service_is_404_when_off(strict: Running, web: Running) -> None:
    rng = np.random.default_rng(8)
    reply = call(strict, "POST", "/api/v1/victim/cases", {"items": [item(pdq(rng))]})
    assert_problem(reply, 404)
    assert call(strict, "GET", "/api/v1/features").body == {"self_service": False}
    assert call(web, "GET", "/api/v1/features").body == {"self_service": True}


def test_http_requests_are_counted_by_operation_and_status(web: Running) -> None:
    from prometheus_client import generate_latest

    call(web, "GET", "/healthz")
    call(web, "GET", "/no-such-page")
    text = generate_latest(web.server.metrics.registry).decode()
    assert 'matcher_http_requests_total{operation="liveness",status="200"}' in text
    assert 'matcher_http_requests_total{operation="web",status="404"}' in text
    assert "no-such-page" not in text


# -- the web root


def test_web_root_is_served_with_the_strict_policy(web: Running) -> None:
    for path in ("/", "/index.html"):
        page = call(web, "GET", path)
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert page.raw == (WEB_ROOT / "index.html").read_bytes()
    for path in ("/", "/no-such-page", "/api/v1/openapi.json", "/healthz"):
        reply = call(web, "GET", path)
        assert reply.headers["Content-Security-Policy"] == CSP
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["Server"] == "matcher"
    assert "no-store" in call(web, "GET", "/api/v1/openapi.json").headers["Cache-Control"]
    assert "connect-src 'self'" in CSP and "script-src 'self';" in CSP
    # Nothing outside the web root, however the path is spelled.
    for path in (
        "/../pyproject.toml",
        "/%2e%2e/%2e%2e/pyproject.toml",
        "/.hidden",
        "/..%2f..%2fpyproject.toml",
        "/__init__.py",
    ):
        assert call(web, "GET", path).status == 404, path


def test_every_file_of_the_web_root_is_served_with_its_type(web: Running) -> None:
    """With ``nosniff``, a module script or worker served under another type does not run."""
    types = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
             ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
             ".json": "application/json", ".wasm": "application/wasm"}  # fmt: skip
    files = [p for p in WEB_ROOT.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files
    for path in files:
        url = "/" + path.relative_to(WEB_ROOT).as_posix()
        reply = call(web, "GET", url)
        assert reply.status == 200, url
        assert reply.raw == path.read_bytes(), url
        if path.suffix in types:
            assert reply.headers["Content-Type"].startswith(types[path.suffix]), url
        assert reply.headers["Content-Security-Policy"] == CSP


def test_web_pages_hold_no_inline_script_or_style() -> None:
    """The CSP forbids inline code: a page that had any would break in the browser."""
    pages = list(WEB_ROOT.rglob("*.html"))
    assert pages
    for page in pages:
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html, re.I), page
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.I), page
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html, re.I), page


# -- the OpenAPI description: generated from the routes, and the server keeps to it


def test_openapi_describes_exactly_the_routes_served(web: Running) -> None:
    served = call(web, "GET", "/api/v1/openapi.json").body
    assert served == json.loads(json.dumps(document(ROUTES)))
    assert served["openapi"].startswith("3.")
    paths = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert paths == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        assert (
            call(web, "PUT", route.path.replace("{number}", "X").replace("{item}", "1")).status
            == 405
        )


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    web: Running,
) -> None:
    """Generated requests for every operation (bounded: a few dozen each), sent with an admin
    key (which may call every operation): no 5xx, every response as the description says."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
    )

    base = f"http://127.0.0.1:{web.server.http_port}"
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {web.keys['admin']}"}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route but the description itself (schemathesis leaves that one out).
    assert {o.label for o in operations} == {
        f"{r.method} {r.path}" for r in ROUTES if r.operation_id != "getOpenApi"
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base, headers=headers, checks=checks, timeout=30)

        run()


def test_the_web_root_is_package_data() -> None:
    """pyproject.toml ships matcher/web/static (what the wheel installs is what is served)."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"matcher.web" = ["static/**/*"]' in text
    assert (WEB_ROOT / "index.html").is_file()


# -- the command line: `matcher serve --http-address`


def test_matcher_serve_with_http_address_and_self_service(tmp_path: Path) -> None:
    """The real command: the port from its log line, the self-service organisation created."""
    import subprocess
    import sys
    import time

    from matcher.store import SQLiteStore

    data = tmp_path / "data"
    SQLiteStore(data).close()
    server = subprocess.Popen(
        [sys.executable, "-m", "matcher.cli", "serve", "--data", str(data),
         "--address", "127.0.0.1:0", "--metrics-address", "off",
         "--http-address", "127.0.0.1:0", "--self-service-org", "Self-service"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        port = None
        deadline = time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            assert line or server.poll() is None, "matcher serve died"
            found = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
        assert port is not None
        for _ in range(600):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/readyz")
            ready = conn.getresponse().status == 200
            conn.close()
            if ready:
                break
            time.sleep(0.1)
        body = json.dumps({"items": [item("ab" * 32)]})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/victim/cases", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 201, reply.read()
        conn.close()
    finally:
        server.terminate()
        assert server.wait(60) == 0
    with SQLiteStore(data) as store:
        names = [o.name for o in store.list_organisations()]
    assert names == ["Self-service"]


def test_self_service_needs_the_http_address(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from matcher.cli import main

    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--data",
            str(tmp_path / "d"),
            "--address",
            "127.0.0.1:0",
            "--self-service-org",
            "X",
        ],
    )
    assert result.exit_code == 2
    assert "--self-service-org needs --http-address" in result.output
