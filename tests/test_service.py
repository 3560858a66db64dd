"""The gRPC service, through real sockets: every RPC, every role, every bad input."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from matcher.client import AsyncClient, Client, Query
from matcher.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from matcher.service import ServerConfig, ServiceLimits
from matcher.signals import PDQ, Hash
from matcher.v1 import hashes_pb2, match_pb2, match_pb2_grpc
from tests.service_fixtures import (
    Running,
    flip_bits,
    random_pdq,
    random_phash,
    start_server,
    stop_server,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _enroll(service: Running, hashes: list[Hash]) -> str:
    with service.client("practitioner") as c:
        case = c.create_case()
        c.add_hashes(case.case.number, hashes)
    return case.case.number


def _raw_match(service: Running, request: match_pb2.MatchRequest, **kwargs):
    """Call Match with the raw stub, to send what the SDK would never send."""
    with grpc.insecure_channel(service.target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        metadata = (("authorization", f"Bearer {service.keys['partner']}"),)
        return stub.Match(request, metadata=metadata, **kwargs)


def _violation(exc: grpc.RpcError) -> error_details_pb2.BadRequest.FieldViolation:
    status = rpc_status.from_call(exc)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return bad.field_violations[0]


# -- happy paths


def test_enroll_match_report_status_withdraw(service: Running, rng: np.random.Generator) -> None:
    original = random_pdq(rng)
    other = random_phash(rng)
    number = _enroll(service, [original, other])
    with service.client("partner") as partner:
        near = flip_bits(original, 30, rng)
        far = flip_bits(original, 32, rng)
        results = partner.match([Query([near], query_id="upload-1"), Query([far]), [other]])
        assert results[0].query_id == "upload-1"
        assert [(m.signal, m.distance) for m in results[0].matches] == [("pdq", 30)]
        assert results[1].matches == []
        assert results[2].matches[0].distance == 0
        partner.report(results[0].matches[0].match_id, correct=True)
        partner.report(results[2].matches[0].match_id, correct=False)
    with service.client("practitioner") as practitioner:
        info = practitioner.get_case(number)
        assert (info.state, info.hash_count, info.match_count) == ("active", 2, 2)
        assert info.hash_counts == {"pdq": 1, "phash": 1}
        assert (info.reported_correct, info.reported_wrong) == (1, 1)
        withdrawn = practitioner.withdraw(number)
        assert withdrawn.state == "withdrawn" and withdrawn.hash_count == 0
    with service.client("partner") as partner:
        # Effective on the very next call.
        assert partner.match([[original], [other]])[0].matches == []


def test_stricter_distance_and_dihedral_style_queries(
    service: Running, rng: np.random.Generator
) -> None:
    original = random_pdq(rng)
    _enroll(service, [original])
    variants = [random_pdq(rng) for _ in range(7)] + [flip_bits(original, 20, rng)]
    with service.client("partner") as partner:
        [result] = partner.match([Query(variants)])
        assert [m.distance for m in result.matches] == [20]
        [strict] = partner.match([Query(variants, max_distance=10)])
        assert strict.matches == []


def test_stream_match_answers_each_batch_in_order(
    service: Running, rng: np.random.Generator
) -> None:
    enrolled = [random_pdq(rng) for _ in range(5)]
    _enroll(service, enrolled)
    batches = [
        [Query([flip_bits(h, 3, rng)], query_id=f"{b}-{i}") for i, h in enumerate(enrolled)]
        + [Query([random_pdq(rng)], query_id=f"{b}-miss")]
        for b in range(20)
    ]
    with service.client("partner") as partner:
        answers = list(partner.stream_match(batches))
    assert len(answers) == 20
    for b, answer in enumerate(answers):
        assert [r.query_id for r in answer] == [q.query_id for q in batches[b]]
        assert [len(r.matches) for r in answer] == [1, 1, 1, 1, 1, 0]


def test_victim_withdraws_with_number_and_secret(
    service: Running, rng: np.random.Generator
) -> None:
    h = random_pdq(rng)
    with service.client("practitioner") as practitioner:
        new = practitioner.create_case()
        practitioner.add_hashes(new.case.number, [h])
    with service.client() as anonymous:  # no API key at all
        with pytest.raises(NotFound):
            anonymous.withdraw_with_secret(new.case.number, "WRONG-SECRET")
        assert anonymous.withdraw_with_secret(new.case.number, new.secret) == "withdrawn"
    with service.client("partner") as partner:
        assert partner.match([[h]])[0].matches == []


def test_admin_keys_organisations_and_stats(service: Running, rng: np.random.Generator) -> None:
    _enroll(service, [random_pdq(rng), random_pdq(rng)])
    with service.client("admin") as admin:
        org = admin.create_organization("Platform C")
        new = admin.create_api_key("c-moderation", "partner", organization=org)
        assert new.key and new.info.role == "partner" and new.info.organization == org
        keys = admin.list_api_keys()
        assert new.info.id in [k.id for k in keys]
        assert all(not hasattr(k, "key") for k in keys)
        with Client(service.target, new.key) as fresh:
            assert fresh.match([[random_pdq(rng)]])[0].matches == []
        revoked = admin.revoke_api_key(new.info.id)
        assert revoked.revoked_at is not None
        stats = admin.stats()
        assert stats["ready"] and stats["indexed"]["pdq"] == 2 and stats["active_cases"] == 1
    time.sleep(2.1)  # the server caches keys for 2 s
    with Client(service.target, new.key) as fresh, pytest.raises(Unauthenticated):
        fresh.match([[random_pdq(rng)]])


def test_async_client(service: Running, rng: np.random.Generator) -> None:
    h = random_pdq(rng)
    _enroll(service, [h])

    async def main() -> tuple[int, int]:
        async with AsyncClient(service.target, service.keys["partner"]) as client:
            assert await client.healthy()
            results = await asyncio.gather(*(client.match([[h]]) for _ in range(20)))

            async def batches():
                for _ in range(3):
                    yield [[h], [random_pdq(rng)]]

            streamed = [r async for r in client.stream_match(batches())]
            return sum(len(r[0].matches) for r in results), len(streamed)

    assert asyncio.run(main()) == (20, 3)


# -- roles


def test_each_role_is_refused_where_it_must_be(service: Running, rng: np.random.Generator) -> None:
    number = _enroll(service, [random_pdq(rng)])
    with service.client("partner") as partner:
        with pytest.raises(PermissionDenied):
            partner.create_case()
        with pytest.raises(PermissionDenied):
            partner.get_case(number)
        with pytest.raises(PermissionDenied):
            partner.create_api_key("x", "admin")
    with service.client("practitioner") as practitioner:
        with pytest.raises(PermissionDenied):
            practitioner.match([[random_pdq(rng)]])
        with pytest.raises(PermissionDenied):
            practitioner.stats()
        with pytest.raises(PermissionDenied):
            list(practitioner.stream_match([[[random_pdq(rng)]]]))
    with service.client("practitioner_b") as other_org:
        # Another organisation's case looks exactly like a missing one.
        with pytest.raises(NotFound):
            other_org.get_case(number)
        with pytest.raises(NotFound):
            other_org.withdraw(number)
    with service.client() as nobody, pytest.raises(Unauthenticated):
        nobody.match([[random_pdq(rng)]])
    with Client(service.target, "mk_not-a-real-key") as wrong, pytest.raises(Unauthenticated):
        wrong.match([[random_pdq(rng)]])


# -- bad input


def test_bad_hashes_get_invalid_argument_with_field_violations(service: Running) -> None:
    good = hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=bytes(32))
    cases = {
        "wrong length": (
            hashes_pb2.Hash(signal_type=hashes_pb2.SIGNAL_TYPE_PDQ, value=bytes(31)),
            "queries[1].hashes[0].value",
        ),
        "unknown signal": (
            hashes_pb2.Hash(signal_type=99, value=bytes(32)),
            "queries[1].hashes[0].signal_type",
        ),
        "unspecified signal": (
            hashes_pb2.Hash(value=bytes(32)),
            "queries[1].hashes[0].signal_type",
        ),
    }
    for name, (bad, field) in cases.items():
        request = match_pb2.MatchRequest(
            queries=[match_pb2.Query(hashes=[good]), match_pb2.Query(hashes=[bad])]
        )
        with pytest.raises(grpc.RpcError) as err:
            _raw_match(service, request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _violation(err.value).field == field, name


def test_batch_limits_distance_and_deadline(service: Running) -> None:
    one = match_pb2.Query(hashes=[hashes_pb2.Hash(signal_type=1, value=bytes(32))])
    problems = {
        "empty batch": (match_pb2.MatchRequest(), "queries"),
        "batch too big": (match_pb2.MatchRequest(queries=[one] * 1001), "queries"),
        "empty query": (match_pb2.MatchRequest(queries=[match_pb2.Query()]), "queries[0].hashes"),
        "distance too big": (
            match_pb2.MatchRequest(queries=[match_pb2.Query(hashes=one.hashes, max_distance=32)]),
            "queries[0].max_distance",
        ),
    }
    for name, (request, field) in problems.items():
        with pytest.raises(grpc.RpcError) as err:
            _raw_match(service, request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _violation(err.value).field == field, name
    with pytest.raises(grpc.RpcError) as err:
        _raw_match(service, match_pb2.MatchRequest(queries=[one]))  # no deadline
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violation(err.value).field == "grpc-timeout"


def test_low_quality_enrollment_is_refused_whole(
    service: Running, rng: np.random.Generator
) -> None:
    with service.client("practitioner") as practitioner:
        number = practitioner.create_case().case.number
        good = random_pdq(rng, quality=90)
        flat = random_pdq(rng, quality=30)
        with pytest.raises(InvalidInput) as err:
            practitioner.add_hashes(number, [good, flat])
        assert err.value.field == "hashes[1]" and "below the floor" in str(err.value)
        missing = Hash(PDQ, good.value)  # no quality at all
        with pytest.raises(InvalidInput):
            practitioner.add_hashes(number, [missing])
        assert practitioner.get_case(number).hash_count == 0  # all or none
    with service.client("partner") as partner:
        assert partner.match([[good]])[0].matches == []


def test_error_messages_never_carry_hash_values(service: Running, rng: np.random.Generator) -> None:
    h = random_pdq(rng, quality=10)
    with service.client("practitioner") as practitioner:
        number = practitioner.create_case().case.number
        with pytest.raises(InvalidInput) as err:
            practitioner.add_hashes(number, [h])
    assert h.hex not in str(err.value)


# -- limits


def test_rate_limit_gives_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, rate=5, burst=5)
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(30)
        with running.client("partner") as partner:
            for _ in range(5):
                partner.match([[Hash(PDQ, bytes(32))]])
            with pytest.raises(RateLimited) as err:
                partner.match([[Hash(PDQ, bytes(32))]])
            assert 0 < err.value.retry_after <= 1.0
            with pytest.raises(RateLimited):  # 100 queries cost 100 tokens
                partner.match([[Hash(PDQ, bytes(32))]] * 100)
    finally:
        stop_server(running, thread)


def test_failed_victim_withdrawals_are_limited(tmp_path: Path, rng: np.random.Generator) -> None:
    limits = ServiceLimits(secret_failures=3, secret_window_seconds=3600)
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, limits=limits)
    running, thread = start_server(tmp_path / "data", config)
    try:
        assert running.bank.wait_ready(30)
        with running.client("practitioner") as practitioner:
            new = practitioner.create_case()
        with running.client() as anonymous:
            for _ in range(3):
                with pytest.raises(NotFound):
                    anonymous.withdraw_with_secret(new.case.number, "guess")
            # Even the right secret waits now: the limit is per case, not per guess.
            with pytest.raises(RateLimited):
                anonymous.withdraw_with_secret(new.case.number, new.secret)
            # And this peer is paused on other cases too.
            with pytest.raises(RateLimited):
                anonymous.withdraw_with_secret("AAAA-BBBB-CCCC", "guess")
    finally:
        stop_server(running, thread)


# -- health, reflection, metrics, shutdown


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return reply.status


def test_health_flips_at_start_up_and_shutdown(tmp_path: Path, rng: np.random.Generator) -> None:
    config = ServerConfig(
        address="127.0.0.1:0", metrics_address=None, drain_seconds=1.5, grace_seconds=5
    )
    running, thread = start_server(tmp_path / "data", config, load=False)
    try:
        assert _health(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with running.client("partner") as partner, pytest.raises(Exception) as err:
            partner.match([[random_pdq(rng)]])
        assert "loading" in str(err.value)
        running.bank.load()
        deadline = time.monotonic() + 10
        while _health(running.target) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        # Shutdown: an open stream keeps working through the drain; health says NOT_SERVING.
        with running.client("partner") as partner:
            sent = threading.Event()
            go_on = threading.Event()

            def batches():
                yield [[random_pdq(rng)]]
                sent.set()
                go_on.wait(10)
                yield [[random_pdq(rng)]]

            answers: list = []
            reader = threading.Thread(
                target=lambda: answers.extend(partner.stream_match(batches()))
            )
            reader.start()
            assert sent.wait(10)
            stopping = asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop)
            time.sleep(0.3)
            assert _health(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING
            go_on.set()
            reader.join(10)
            assert len(answers) == 2  # the in-flight stream finished
            stopping.result(20)
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)
        running.bank.close()


def test_reflection_lists_the_services(service: Running) -> None:
    with grpc.insecure_channel(service.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [reply] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "matcher.v1.MatchService",
        "matcher.v1.CaseService",
        "matcher.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names


def test_metrics_and_logs_carry_no_hash_values(
    service: Running, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="matcher")
    h = random_pdq(rng)
    number = _enroll(service, [h])
    with service.client("partner") as partner:
        partner.match([[h]])
        with pytest.raises(InvalidInput):
            partner.match([])
    with service.client("practitioner") as practitioner:
        practitioner.withdraw(number)
    url = f"http://127.0.0.1:{service.server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'matcher_requests_total{code="OK",method="Match"} 1.0' in text
    assert 'matcher_requests_total{code="INVALID_ARGUMENT",method="Match"} 1.0' in text
    assert 'matcher_hashes_total{op="match",signal="pdq"} 1.0' in text
    assert "matcher_request_seconds_bucket" in text and "matcher_index_hashes" in text
    assert h.hex not in text and h.hex not in caplog.text
    assert h.hex[:16] not in text and h.hex[:16] not in caplog.text


def test_server_modules_never_import_hashing() -> None:
    code = (
        "import sys, matcher.service, matcher.bank, matcher.store;"
        "bad = [m for m in sys.modules if m.startswith('matcher.hashing') or m == 'PIL'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_matcher_serve_exits_0_on_sigterm(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [
            sys.executable, "-m", "matcher.cli", "serve", "--data", str(tmp_path / "d"),
            "--address", "127.0.0.1:0", "--metrics-address", "off", "--grace", "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "serving:" in line:
                break
        assert any("matcher keys create --role admin" in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
