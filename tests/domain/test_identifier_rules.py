"""Identity numbers: Luhn, organisation numbers, principals (examples and hypothesis properties)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.identifiers import (
    InvalidIdentifierError,
    is_organisation_number,
    luhn_check_digit,
    luhn_valid,
    normalize_organisation_number,
    normalize_principal_id,
)

nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


@given(nine_digits)
def test_every_prefix_with_its_check_digit_is_valid(prefix: str) -> None:
    assert luhn_valid(prefix + luhn_check_digit(prefix))


@given(nine_digits, st.integers(0, 9), st.integers(1, 9))
def test_changing_one_digit_breaks_the_check(prefix: str, position: int, delta: int) -> None:
    number = prefix + luhn_check_digit(prefix)
    changed = number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
    assert not luhn_valid(changed)


@given(st.text(alphabet="0123456789", min_size=6, max_size=6).map(lambda s: "556" + s))  # 3rd-4th digits >= 20
def test_organisation_numbers_in_every_form(stem: str) -> None:
    number = stem + luhn_check_digit(stem)
    assert is_organisation_number(number)
    for form in (number, f"{number[:6]}-{number[6:]}", "16" + number, f"16{number[:6]}-{number[6:]}"):
        assert normalize_organisation_number(form) == number
        assert normalize_principal_id(form) == "16" + number


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5560000168", "check digit"),
        ("55600001", "has 8 digits"),
        ("195560000167", "does not start with '16'"),
        ("8112189876", "not an organisation number"),
        ("556000 O167", "characters other than digits"),
    ],
)
def test_bad_organisation_numbers_are_named(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=message) as caught:
        normalize_organisation_number(value)
    assert repr(value) in str(caught.value)


def test_principals_persons_and_samordningsnummer() -> None:
    assert normalize_principal_id("19121212-1212") == "191212121212"
    assert normalize_principal_id("197010632391") == "197010632391"  # samordningsnummer: day 63 = 3 + 60
    with pytest.raises(InvalidIdentifierError, match="with the century"):
        normalize_principal_id("121212-1212")
    with pytest.raises(InvalidIdentifierError, match="valid date"):
        normalize_principal_id("191213321212")
