"""Case numbers, withdrawal secrets, API keys, opaque item ids and item fingerprints."""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher import credentials, principal
from matcher.bank import accounts, follower, matching
from matcher.credentials import MatchIds, item_fingerprint
from matcher.errors import NotFound
from matcher.signals import MD5, PDQ, Hash
from matcher.store import sqlite

KEY = b"0123456789abcdef0123456789abcdef"


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_item_ids_decode_back_and_hide_the_store_id(item_id: int) -> None:
    ids = MatchIds(KEY)
    match_id = ids.encode(item_id)
    assert re.fullmatch(r"m_[0-9a-f]{16}", match_id)
    assert ids.decode(match_id) == item_id
    assert ids.decode(match_id.upper().replace("M_", "m_")) == item_id


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_well_formed_id_decodes_inside_int64_or_is_not_found(value: int) -> None:
    # A partner can send any 16 hex digits: what they decode to must fit the store's int64.
    try:
        item_id = MatchIds(KEY).decode(f"m_{value:016x}")
    except NotFound:
        return
    assert 0 < item_id < 2**63


def test_match_ids_depend_on_the_key_and_never_collide() -> None:
    a, b = MatchIds(KEY), MatchIds(KEY[::-1])
    encoded = {a.encode(i) for i in range(20_000)}
    assert len(encoded) == 20_000
    assert a.encode(1) != b.encode(1)
    # Neighbouring rows give unrelated ids: the enrollment order does not show.
    assert a.encode(1)[2:6] != a.encode(2)[2:6]


@pytest.mark.parametrize(
    "bad",
    ["", "m_", "m_123", "x_0123456789abcdef", "m_0123456789abcdeg", "m_0x23456789abcdef"],
)
def test_malformed_item_ids_are_not_found(bad: str) -> None:
    with pytest.raises(NotFound):
        MatchIds(KEY).decode(bad)


def test_fingerprints_are_keyed_and_ignore_order_repeats_and_quality() -> None:
    a, b = Hash(PDQ, b"a" * 32, 90), Hash(MD5, b"b" * 16)
    same = item_fingerprint(KEY, [a, b])
    assert item_fingerprint(KEY, [b, Hash(PDQ, b"a" * 32, 60), a]) == same
    assert item_fingerprint(KEY[::-1], [a, b]) != same
    assert item_fingerprint(KEY, [a]) != same
    assert a.value not in same and len(same) == 32


def test_a_match_id_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError):
        MatchIds(b"short")


def test_case_numbers_and_secrets_are_readable_and_forgiving() -> None:
    number, secret = credentials.new_case_number(), credentials.new_secret()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){2}", number)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}", secret)
    assert credentials.normalise_case_number(number.lower().replace("-", "")) == number
    assert credentials.normalise("il-o0") == "1100"


def test_secrets_are_stored_as_salted_scrypt_and_verified() -> None:
    secret = credentials.new_secret()
    stored = credentials.hash_secret(secret)
    assert stored.startswith("scrypt$") and secret not in stored
    assert stored != credentials.hash_secret(secret)  # salted
    assert credentials.verify_secret(secret, stored)
    assert credentials.verify_secret(secret.lower().replace("-", " "), stored)
    assert not credentials.verify_secret(credentials.new_secret(), stored)
    assert not credentials.verify_secret(secret, "garbage")
    assert not credentials.verify_secret_absent(secret)


def test_api_keys_are_random_and_hashed() -> None:
    key = credentials.new_api_key()
    assert re.fullmatch(r"mk_[0-9A-HJKMNP-TV-Z]{32}", key)
    assert credentials.hash_api_key(key) == credentials.hash_api_key(f" {key} ")
    assert credentials.hash_api_key(key) != credentials.hash_api_key(credentials.new_api_key())


@pytest.mark.parametrize("module", [credentials, principal, accounts, follower, matching, sqlite])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0
