"""The signal registry and the Hash value object."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.errors import InvalidDistance, InvalidHash, LowQuality
from matcher.signals import MD5, PDQ, PHASH, SHA256, SIGNALS, Hash, signal_type


def test_registry_lists_each_signal_once_with_its_properties() -> None:
    assert list(SIGNALS) == ["pdq", "phash", "md5", "sha256"]
    assert (PDQ.bits, PDQ.default_distance, PDQ.max_distance, PDQ.quality_floor) == (
        256,
        31,
        31,
        50,
    )
    assert PHASH.bits == 64 and not PHASH.exact
    assert MD5.exact and SHA256.exact and MD5.bits == 128
    assert signal_type("PDQ") is PDQ


def test_unknown_signal_is_named_in_the_error() -> None:
    with pytest.raises(InvalidHash, match="unknown signal type 'dhash'") as err:
        signal_type("dhash", field="queries[0].signal")
    assert err.value.field == "queries[0].signal"


@given(st.binary(min_size=32, max_size=32))
def test_text_form_round_trips(raw: bytes) -> None:
    h = Hash(PDQ, raw)
    assert Hash.parse(str(h)) == h
    assert Hash.from_hex("pdq", h.hex) == h
    assert h - h == 0


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8))
def test_subtraction_is_the_hamming_distance(a: bytes, b: bytes) -> None:
    expected = sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))
    assert Hash(PHASH, a) - Hash(PHASH, b) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pdq:abc", "must have 64 hex digits, got 3"),
        ("pdq:" + "g" * 64, "non-hex"),
        ("nope:" + "0" * 64, "unknown signal type"),
        ("0" * 64, "'<signal>:<hex>'"),
    ],
)
def test_bad_text_gives_a_clear_error_without_the_value(text: str, message: str) -> None:
    with pytest.raises(InvalidHash, match=message) as err:
        Hash.parse(text)
    value = text.partition(":")[2] or text
    if len(value) >= 8:  # long enough that an echo would be a leak, not a coincidence
        assert value not in str(err.value)


def test_repr_hides_the_value_but_str_carries_it() -> None:
    h = Hash(PDQ, bytes(range(32)))
    assert h.hex not in repr(h)
    assert str(h) == "pdq:" + h.hex


def test_hashes_of_different_signals_do_not_compare() -> None:
    with pytest.raises(TypeError):
        _ = Hash(PDQ, bytes(32)) - Hash(SHA256, bytes(32))


def test_quality_is_not_part_of_identity() -> None:
    assert Hash(PDQ, bytes(32), 90) == Hash(PDQ, bytes(32), 60)


def test_quality_floor_and_distance_limits() -> None:
    PDQ.check_quality(50)
    PDQ.check_quality(None)
    with pytest.raises(LowQuality, match="below the floor of 50"):
        PDQ.check_quality(49)
    assert PDQ.check_distance(None) == 31
    assert PDQ.check_distance(10) == 10
    with pytest.raises(InvalidDistance, match="between 0 and 31"):
        PDQ.check_distance(32)
    with pytest.raises(InvalidDistance):
        MD5.check_distance(1)


def test_wrong_byte_length_is_refused() -> None:
    with pytest.raises(InvalidHash, match="32 bytes"):
        Hash(PDQ, bytes(8))
