"""Swedish identity numbers: Luhn, organisationsnummer and principals (examples and hypothesis properties)."""

from __future__ import annotations

import datetime as dt

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

digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


@st.composite
def organisation_numbers(draw: st.DrawFn) -> str:
    """A valid 10-digit organisation number: group digits 3-4 >= 20 and a correct check digit."""
    head = draw(st.text(alphabet="0123456789", min_size=2, max_size=2))
    group = draw(st.integers(20, 99))
    tail = draw(st.text(alphabet="0123456789", min_size=5, max_size=5))
    prefix = f"{head}{group:02d}{tail}"
    return prefix + luhn_check_digit(prefix)


def _change(number: str, position: int, delta: int) -> str:
    return number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]


# -- Luhn ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["5560000167", "5567000004", "2021005448", "8112189876", "191212121212", "198112189876"]
)
def test_known_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["5560000168", "556000016", "556000016x", "", "191212121213", "2021005449"])
def test_known_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


def test_organisation_number_rules() -> None:
    assert is_organisation_number("5560000167") and is_organisation_number("2021005448")
    assert not is_organisation_number("8112189876")  # group digits 12 < 20: a personnummer
    assert not is_organisation_number("165560000167")  # only the 10-digit form
    assert luhn_check_digit("556000016") == "7"


@given(digits)
def test_every_nine_digit_prefix_with_its_check_digit_is_valid(prefix: str) -> None:
    check = luhn_check_digit(prefix)
    assert len(check) == 1 and check.isdigit()
    assert luhn_valid(prefix + check)
    assert luhn_valid("19" + prefix + check)  # the check covers the last 10 digits only


@given(digits, st.integers(0, 9), st.integers(1, 9))
def test_changing_any_single_digit_breaks_the_check(prefix: str, position: int, delta: int) -> None:
    assert not luhn_valid(_change(prefix + luhn_check_digit(prefix), position, delta))


@given(digits)
def test_exactly_one_check_digit_is_valid(prefix: str) -> None:
    assert [str(d) for d in range(10) if luhn_valid(prefix + str(d))] == [luhn_check_digit(prefix)]


# -- organisation numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["5560000167", "556000-0167", "165560000167", "16556000-0167", " 556000 0167 ", "16-5560000167", "556000+0167"],
)
def test_organisation_number_forms(value: str) -> None:
    assert normalize_organisation_number(value) == "5560000167"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("5560000168", "check digit"),
        ("556000016", "has 9 digits"),
        ("55600001670", "has 11 digits"),
        ("195560000167", "does not start with '16'"),
        ("8112189876", "3rd-4th digits are 12"),  # a personnummer
        ("556000-016A", "characters other than digits"),
        ("", "is empty"),
    ],
)
def test_bad_organisation_numbers_are_named(value: str, match: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=match) as caught:
        normalize_organisation_number(value)
    assert repr(value) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidIdentifierError, match="must be a string"):
        normalize_organisation_number(5560000167)  # type: ignore[arg-type]


@given(organisation_numbers())
def test_every_accepted_form_normalises_to_the_ten_digits(number: str) -> None:
    assert is_organisation_number(number)
    hyphenated = f"{number[:6]}-{number[6:]}"
    for form in (number, "16" + number, hyphenated, "16" + hyphenated, f" {hyphenated} "):
        assert normalize_organisation_number(form) == number
    assert normalize_principal_id(number) == "16" + number
    assert normalize_principal_id(hyphenated) == "16" + number
    assert normalize_principal_id("16" + number) == "16" + number


@given(organisation_numbers(), st.integers(0, 9), st.integers(1, 9))
def test_a_typo_in_any_digit_is_refused_naming_the_input(number: str, position: int, delta: int) -> None:
    typo = _change(number, position, delta)
    hyphenated = f"{typo[:6]}-{typo[6:]}"
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_organisation_number(hyphenated)
    assert repr(hyphenated) in str(caught.value)
    assert not is_organisation_number(typo)


@given(organisation_numbers(), st.sampled_from(["", "1", "12", "161", "1616"]))
def test_wrong_lengths_or_prefixes_are_refused(number: str, prefix: str) -> None:
    value = prefix + number
    if prefix == "":
        value = number[:-1]
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_organisation_number(value)
    assert repr(value) in str(caught.value)


@given(st.text(max_size=14).filter(lambda text: any(not (ch.isdigit() or ch.isspace() or ch in "+-") for ch in text)))
def test_text_with_other_characters_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize_organisation_number(value)
    assert repr(value) in str(caught.value)


def test_non_ascii_digits_are_refused_with_a_clear_error() -> None:
    with pytest.raises(InvalidIdentifierError, match="characters other than digits"):
        normalize_organisation_number("55600001²7")


# -- principals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("19121212-1212", "191212121212"),
        ("191212121212", "191212121212"),
        ("198112189876", "198112189876"),
        ("19121272-1219", "191212721219"),  # samordningsnummer (day + 60)
        ("556000-0167", "165560000167"),
    ],
)
def test_principal_forms(value: str, expected: str) -> None:
    assert normalize_principal_id(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("121212-1212", "with the century"),
        ("191213121212", "valid date"),
        ("191212121213", "check digit"),
        ("1912121212", "with the century"),
        ("12345", "has 5 digits"),
    ],
)
def test_bad_principals(value: str, match: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=match) as caught:
        normalize_principal_id(value)
    assert repr(value) in str(caught.value)


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2025, 12, 31)), st.integers(0, 999))
def test_personnummer_with_century_roundtrip(birth: dt.date, serial: int) -> None:
    prefix = f"{birth:%y%m%d}{serial:03d}"
    number = f"{birth:%Y%m%d}{serial:03d}{luhn_check_digit(prefix)}"
    assert normalize_principal_id(number) == number
    assert normalize_principal_id(f"{number[:8]}-{number[8:]}") == number
