"""The record model of an answer file: what the parser yields and the loader stores. Pure.

Skatteverket's file description ("Bilaga filbeskrivning ... v1.0") is not public; this model follows
the field names of the Skattekonto v2 REST API, the best public model of what the file holds.
Amounts are exact integers in öre (1/100 krona); negative amounts are debts.
The on-disk layout (how these records are written as lines) lives in ``answer_file.py`` only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["Balance", "FileHeader", "FileTrailer", "Record", "Transaction"]


@dataclass(frozen=True, slots=True)
class FileHeader:
    """First record of a file."""

    layout_version: str
    orderer: str  # bestallareId: the orderer's 10-digit organisation number
    created_at: dt.datetime  # when Skatteverket produced the file (tz-aware)
    file_id: str  # Skatteverket's identity of the file (unique per file)


@dataclass(frozen=True, slots=True)
class Balance:
    """A principal's latest reconciled balance (one per principal per file)."""

    principal: str  # 12 digits: 16 + organisation number, or century + personnummer
    reconciled_on: dt.date  # avstämningsdatum: the reconciliation this snapshot starts from
    balance_skatteverket_ore: int  # saldoSkatteverket
    balance_kronofogden_ore: int | None  # saldoKronofogden
    interest_skatteverket_ore: int | None  # rantaSkatteverket
    last_updated: dt.datetime  # senastUppdaterad (tz-aware)
    next_reconciliation_on: dt.date | None  # nastaAvstamningsdatum


@dataclass(frozen=True, slots=True)
class Transaction:
    """One transaction dated after the principal's reconciliation.

    Identical transactions on the same day are legitimate; ``sequence`` (1-based position within the
    principal's block in the file) keeps them apart.
    """

    principal: str
    sequence: int
    transaction_id: str | None  # transaktionsidentitet, present on booked rows
    transaction_date: dt.date  # transaktionsdatum
    interest_date: dt.date | None  # ranteberakningsdatum
    text: str  # transaktionstext
    amount_skatteverket_ore: int | None  # beloppSkatteverket
    amount_kronofogden_ore: int | None  # beloppKronofogden


@dataclass(frozen=True, slots=True)
class FileTrailer:
    """Last record: counts and control sum the parser checks the body against."""

    principal_count: int
    transaction_count: int
    amount_sum_ore: int  # sum of amount_skatteverket_ore + amount_kronofogden_ore over all transactions


Record = FileHeader | Balance | Transaction | FileTrailer
