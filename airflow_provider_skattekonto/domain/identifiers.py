"""Swedish identity numbers: organisationsnummer, personnummer, samordningsnummer.

Pure functions, no Airflow import. Skatteverket forbids separators in its fields, so every
``normalize_*`` function returns digits only; it accepts the forms people type (``556000-0167``,
``16556000-0167``, ``19121212-1212``) and raises :class:`InvalidIdentifierError` naming the problem.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "InvalidIdentifierError",
    "is_organisation_number",
    "luhn_check_digit",
    "luhn_valid",
    "normalize_organisation_number",
    "normalize_principal_id",
]

_SEPARATORS = re.compile(r"[\s+-]")


class InvalidIdentifierError(ValueError):
    """An organisation or personal identity number that is malformed or fails its check digit."""


_VALUE = {digit: value for value, digit in enumerate("0123456789")}
_DOUBLED = {digit: value * 2 - 9 if value > 4 else value * 2 for digit, value in _VALUE.items()}


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit for ``digits`` (the 9 digits before the check digit)."""
    if digits.isascii() and digits.isdigit():
        total = sum(map(_DOUBLED.__getitem__, digits[0::2])) + sum(map(_VALUE.__getitem__, digits[1::2]))
    else:  # other Unicode digits, or not digits: what int() makes of them
        total = 0
        for index, char in enumerate(digits):
            value = int(char) * (2 if index % 2 == 0 else 1)
            total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the last 10 digits of ``number`` carry a valid Luhn check digit."""
    tail = number[-10:]
    return len(tail) == 10 and tail.isdigit() and luhn_check_digit(tail[:9]) == tail[9]


def is_organisation_number(ten_digits: str) -> bool:
    """True for a 10-digit organisationsnummer: 3rd-4th digits >= 20 and a valid check digit."""
    return len(ten_digits) == 10 and ten_digits.isdigit() and int(ten_digits[2:4]) >= 20 and luhn_valid(ten_digits)


def _strip(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string of digits, got {type(value).__name__}")
    if value.isdigit() and value.isascii():  # the usual form: nothing to strip
        return value
    digits = _SEPARATORS.sub("", value)
    if not digits:
        raise InvalidIdentifierError(f"{what} {value!r} is empty")
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidIdentifierError(f"{what} {value!r} contains characters other than digits 0-9 and '-'")
    return digits


def normalize_organisation_number(value: str) -> str:
    """Return the 10-digit organisationsnummer in ``value`` (10 digits, or 12 with the ``16`` prefix).

    Raises :class:`InvalidIdentifierError` if the length, the group digits or the check digit are wrong.
    """
    digits = _strip(value, "Organisation number")
    if len(digits) == 12:
        if not digits.startswith("16"):
            raise InvalidIdentifierError(
                f"Organisation number {value!r} has 12 digits but does not start with '16'; "
                "give the 10-digit number (e.g. 5560000167) or 16 + those 10 digits"
            )
        digits = digits[2:]
    if len(digits) != 10:
        raise InvalidIdentifierError(
            f"Organisation number {value!r} has {len(digits)} digits; expected 10 (or 12 with the 16 prefix)"
        )
    if int(digits[2:4]) < 20:
        raise InvalidIdentifierError(
            f"{value!r} is not an organisation number: its 3rd-4th digits are {digits[2:4]} (must be >= 20); "
            "is it a personal identity number?"
        )
    if not luhn_valid(digits):
        raise InvalidIdentifierError(
            f"Organisation number {value!r} fails its check digit (expected last digit "
            f"{luhn_check_digit(digits[:9])}); check for a typo"
        )
    return digits


def _is_valid_person_date(twelve: str) -> bool:
    year, month, day = int(twelve[:4]), int(twelve[4:6]), int(twelve[6:8])
    if day > 60:  # samordningsnummer: birth day + 60
        day -= 60
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def normalize_principal_id(value: str) -> str:
    """Return the 12-digit form of a principal's identity number.

    Organisations become ``16`` + their 10 digits; persons (personnummer or samordningsnummer) must
    be given with the century (``YYYYMMDDNNNN``) because a 10-digit personnummer is ambiguous.
    The Luhn check is computed on the last 10 digits.
    """
    digits = _strip(value, "Identity number")
    if len(digits) == 10:
        if int(digits[2:4]) >= 20:
            return "16" + normalize_organisation_number(digits)
        raise InvalidIdentifierError(
            f"Identity number {value!r} looks like a 10-digit personnummer; give it with the century "
            "(YYYYMMDDNNNN) so it is unambiguous"
        )
    if len(digits) != 12:
        raise InvalidIdentifierError(
            f"Identity number {value!r} has {len(digits)} digits; expected 12 (16 + organisation number, "
            "or century + personnummer)"
        )
    if digits.startswith("16") and int(digits[4:6]) >= 20:
        return "16" + normalize_organisation_number(digits[2:])
    if not _is_valid_person_date(digits):
        raise InvalidIdentifierError(
            f"Identity number {value!r} is neither 16 + an organisation number nor a personnummer "
            "or samordningsnummer with a valid date"
        )
    if not luhn_valid(digits):
        raise InvalidIdentifierError(
            f"Identity number {value!r} fails its check digit (expected last digit "
            f"{luhn_check_digit(digits[2:11])}); check for a typo"
        )
    return digits
