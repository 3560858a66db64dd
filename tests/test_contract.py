"""The contract: generated code is fresh, and no message can carry image bytes."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from matcher.v1 import admin_pb2, cases_pb2, hashes_pb2, match_pb2


def test_generated_code_is_fresh() -> None:
    pytest.importorskip("grpc_tools")
    from matcher._codegen import stale

    assert stale() == [], "run `make proto`"


def test_the_only_bytes_field_is_a_hash_value() -> None:
    """Rule 1 of DESIGN.md: no field anywhere carries image bytes."""
    bytes_fields = []
    for module in (admin_pb2, cases_pb2, hashes_pb2, match_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                if field.type == FieldDescriptor.TYPE_BYTES:
                    bytes_fields.append(f"{message.full_name}.{field.name}")
    assert bytes_fields == ["matcher.v1.Hash.value"]


def test_signal_enum_covers_the_registry() -> None:
    from matcher.signals import SIGNALS

    names = {v.name for v in hashes_pb2.SignalType.DESCRIPTOR.values}
    for name in SIGNALS:
        assert f"SIGNAL_TYPE_{name.upper()}" in names
