"""Case numbers, withdrawal secrets, API keys and opaque match ids."""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher import bank, credentials, principal
from matcher.credentials import MatchIds
from matcher.errors import InvalidInput
from matcher.store import sqlite

KEY = b"0123456789abcdef0123456789abcdef"


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_match_ids_decode_back_and_hide_the_row_id(row_id: int) -> None:
    ids = MatchIds(KEY)
    match_id = ids.encode(row_id)
    assert re.fullmatch(r"m_[0-9a-f]{16}", match_id)
    assert ids.decode(match_id) == row_id
    assert ids.decode(match_id.upper().replace("M_", "m_")) == row_id


def test_match_ids_depend_on_the_key_and_never_collide() -> None:
    a, b = MatchIds(KEY), MatchIds(KEY[::-1])
    encoded = {a.encode(i) for i in range(20_000)}
    assert len(encoded) == 20_000
    assert a.encode(1) != b.encode(1)
    # Neighbouring rows give unrelated ids: the enrollment order does not show.
    assert a.encode(1)[2:6] != a.encode(2)[2:6]


@pytest.mark.parametrize("bad", ["", "m_", "m_123", "x_0123456789abcdef", "m_0123456789abcdeg"])
def test_malformed_match_ids_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        MatchIds(KEY).decode(bad)
    assert err.value.field == "match_id"


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


@pytest.mark.parametrize("module", [credentials, principal, bank, sqlite])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0
