"""Every RPC of a real server, fed random and mutated messages and raw bytes: the status is
always one we meant (INVALID_ARGUMENT with a field, NOT_FOUND, ...), never INTERNAL or UNKNOWN,
and the server still serves afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.bank.probing import ProbeLimits
from matcher.records import Query
from matcher.service import ServerConfig
from matcher.service.servicer import ServiceLimits
from matcher.signals import PDQ, Hash
from matcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cases_pb2,
    cases_pb2_grpc,
    match_pb2,
    match_pb2_grpc,
)
from tests.service_fixtures import Running, start_server, stop_server

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
}

METHODS = [
    (module, service.full_name, method)
    for module in (match_pb2, cases_pb2, admin_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
CALLS = {"n": 0}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # Probing and guessing bounds out of the way: this is about status codes, not alarms.
    limits = ServiceLimits(
        probing=ProbeLimits(near_suspend=10**9, edge_suspend=10**9, spread_suspend=10**9),
        secret_failures=10**6,
    )
    config = ServerConfig(address="127.0.0.1:0", metrics_address=None, limits=limits)
    running, thread = start_server(Path(tmp_path_factory.mktemp("fuzz")) / "data", config)
    assert running.bank.wait_ready(120)
    try:
        yield running
    finally:
        print(f"fuzz: {CALLS['n']} calls")
        for channel in _CHANNELS.values():
            channel.close()
        stop_server(running, thread)


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    # Resource names with odd numbers (unicode digits, 5,000 digits, beyond int64), ids,
    # huge and empty strings, and plain random text.
    FieldDescriptor.TYPE_STRING: st.one_of(
        st.builds(
            str.__add__,
            st.sampled_from(
                ["organizations/", "apiKeys/", "cases/", "cases/AAAA-BBBB-CCCC/items/", "m_", ""]
            ),
            st.one_of(
                st.text(alphabet="0123456789²³¹٣", min_size=1, max_size=25),
                st.text(alphabet="0123456789abcdef-/ ", max_size=25),
                st.sampled_from(["9" * 5000, "99999999999999999999", "0", "-1"]),
            ),
        ),
        st.sampled_from(["", " ", "x" * 100_000, "\x00", "\ud7ff"]),
        st.text(max_size=30),
    ),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=40),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_ENUM: st.integers(-3, 9),
}


@st.composite
def message(draw: Any, descriptor: Any, depth: int = 0) -> Any:
    """A random, well-formed message of ``descriptor``'s type (nested up to 3 deep)."""
    from google.protobuf import message_factory

    out = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if field.type != FieldDescriptor.TYPE_STRING and not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.full_name.startswith("google.protobuf"):
                continue
            for _ in range(draw(st.integers(1, 3)) if repeated else 1):
                sub = draw(message(field.message_type, depth + 1))
                if repeated:
                    getattr(out, field.name).add().CopyFrom(sub)
                else:
                    getattr(out, field.name).CopyFrom(sub)
            continue
        strategy = _SCALARS.get(field.type)
        if strategy is None:
            continue
        values = draw(st.lists(strategy, min_size=1, max_size=3)) if repeated else [draw(strategy)]
        try:
            if repeated:
                getattr(out, field.name).extend(values)
            else:
                setattr(out, field.name, values[0])
        except (ValueError, TypeError):  # a value the Python API refuses: not our concern
            pass
    return out


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for at, value in edits:
        if not buf:
            buf.append(value)
        elif value % 3 == 0:
            del buf[at % len(buf) :]
        else:
            buf[at % len(buf)] = value
    return bytes(buf)


_CHANNELS: dict[str, grpc.Channel] = {}


def _channel(running: Running) -> grpc.Channel:
    if running.target not in _CHANNELS:
        _CHANNELS[running.target] = grpc.insecure_channel(running.target)
    return _CHANNELS[running.target]


def _call(running: Running, service: str, method: Any, payload: bytes) -> grpc.StatusCode:
    CALLS["n"] += 1
    metadata = (("authorization", f"Bearer {running.keys['admin']}"),)
    path = f"/{service}/{method.name}"
    channel = _channel(running)
    try:
        if method.client_streaming:
            call = channel.stream_stream(path)
            for _ in call(iter([payload, payload]), timeout=10, metadata=metadata):
                pass
        else:
            channel.unary_unary(path)(payload, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _check(code: grpc.StatusCode, method: Any) -> None:
    assert code in ALLOWED, (method.full_name, code)


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.mark.parametrize(
    ("module", "service", "method"), METHODS, ids=[m.name for _, _, m in METHODS]
)
def test_every_rpc_answers_every_input_with_a_meant_status(
    fuzzed: Running, module: Any, service: str, method: Any
) -> None:
    @FUZZ
    @given(
        raw=st.binary(max_size=64),
        random=message(method.input_type),
        edits=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), max_size=4),
    )
    def run(raw: bytes, random: Any, edits: list[tuple[int, int]]) -> None:
        wire = random.SerializeToString()
        for payload in (raw, wire, _mutate(wire, edits)):
            _check(_call(fuzzed, service, method, payload), method)

    run()
    # Still serving, and still right.
    with fuzzed.client("partner") as partner:
        h = Hash(PDQ, np.arange(32, dtype=np.uint8).tobytes(), 90)
        assert partner.match([Query([h])])[0].matches == []
    assert fuzzed.client().healthy()


def test_bytes_that_are_not_a_message_are_invalid_argument_and_counted(fuzzed: Running) -> None:
    metrics = fuzzed.server.metrics.registry
    before = metrics.get_sample_value("matcher_invalid_requests_total", {"method": "Match"}) or 0
    [service] = [s for _, s, m in METHODS if m.name == "Match"]
    # A length-delimited field whose length runs past the end, and a string that is not UTF-8.
    for payload in (b"\x0a\xff\x01", b"\x0a\x05\x1a\x03\xff\xfe\xfd"):
        metadata = (("authorization", f"Bearer {fuzzed.keys['partner']}"),)
        with grpc.insecure_channel(fuzzed.target) as channel, pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(f"/{service}/Match")(payload, timeout=5, metadata=metadata)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "DecodeError" not in (err.value.details() or "")
    # The server counts a call as it finishes, just after the caller has its status: wait.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = metrics.get_sample_value("matcher_invalid_requests_total", {"method": "Match"})
        if after == before + 2:
            break
        time.sleep(0.01)
    assert after == before + 2


def test_the_malformed_inputs_of_issue_10_are_invalid_argument_with_their_field(
    fuzzed: Running,
) -> None:
    from matcher.errors import InvalidInput, NotFound

    rng = np.random.default_rng(3)
    with fuzzed.client("admin") as admin, fuzzed.client("partner") as partner:
        for name in ("", " ", "x" * 1_000_000):
            with pytest.raises(InvalidInput) as err:
                admin.create_organization(name)
            assert err.value.field == "display_name"
        with pytest.raises(InvalidInput) as err:
            admin.create_api_key("", "partner", organization=None)
        assert err.value.field == "display_name"
        for ids in rng.integers(0, 2**63, 20, dtype=np.uint64).tolist():
            with pytest.raises(NotFound):
                partner.report(f"m_{ids:016x}", correct=True)
        for request, stub, method, field in (
            (cases_pb2.CreateCaseRequest(organization="organizations/²"), "cases", "CreateCase",
             "organization"),
            (admin_pb2.RevokeApiKeyRequest(name="apiKeys/99999999999999999999"), "admin",
             "RevokeApiKey", "name"),
            (admin_pb2.ListApiKeysRequest(page_token="9" * 5000), "admin", "ListApiKeys",
             "page_token"),
            (match_pb2.ReportMatchRequest(item_id="m_0123456789abcdef", verdict=7), "match",
             "ReportMatch", "verdict"),
        ):  # fmt: skip
            assert _field_violation(fuzzed, stub, method, request) == field, method


def _field_violation(running: Running, stub: str, method: str, request: Any) -> str:
    """Call through the generated stub; the field of the INVALID_ARGUMENT it must give."""
    stubs = {
        "cases": cases_pb2_grpc.CaseServiceStub,
        "admin": admin_pb2_grpc.AdminServiceStub,
        "match": match_pb2_grpc.MatchServiceStub,
    }
    metadata = (("authorization", f"Bearer {running.keys['admin']}"),)
    call = getattr(stubs[stub](_channel(running)), method)
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=5, metadata=metadata)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return bad.field_violations[0].field
    return ""
