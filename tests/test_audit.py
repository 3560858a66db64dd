"""The audit vocabulary and the no-hash guard every backend calls before writing a row."""

from __future__ import annotations

import doctest
import json
import os

import pytest

from matcher import audit
from matcher.audit import Action, check_detail, encode_detail
from matcher.credentials import new_case_number


def test_the_vocabulary() -> None:
    assert {str(a) for a in Action} == {
        "org.create",
        "key.create",
        "key.revoke",
        "case.create",
        "case.enroll",
        "case.withdraw",
        "item.withdraw",
        "match.report",
        "key.policy",
        "key.suspend",
        "key.restore",
        "match.probe",
        "victim.refused",
        "allowlist.add",
        "allowlist.remove",
        "allowlist.seed",
        "case.enroll_refused",
        "item.quarantine",
        "item.review",
    }


def test_counts_flags_and_short_names_pass() -> None:
    detail = {"items": 3, "correct": True, "role": "partner", "case": new_case_number(), "x": None}
    assert check_detail(detail) == detail
    assert json.loads(encode_detail(detail)) == detail


@pytest.mark.parametrize(
    "value",
    [
        os.urandom(8).hex(),  # a pHash
        os.urandom(32).hex().upper(),  # a PDQ hash, upper case
        "pdq:" + os.urandom(32).hex(),
        os.urandom(32),  # bytes of any kind
        bytearray(8),
        memoryview(b"12345678"),
        "x" * 101,
        1.5,
        ["a"],
    ],
)
def test_values_that_could_be_hashes_are_refused_without_repeating_them(value: object) -> None:
    with pytest.raises(ValueError) as err:
        check_detail({"value": value})
    assert "'value'" in str(err.value)
    if isinstance(value, str):
        assert value not in str(err.value)


def test_keys_must_be_names() -> None:
    with pytest.raises(ValueError):
        check_detail({os.urandom(8).hex(): 1})


def test_docstring_examples_run() -> None:
    assert doctest.testmod(audit).failed == 0
