"""The record model of an answer file: what the parser yields and the loader stores. Pure.

Skatteverket's file description ("Bilaga filbeskrivning ... v1.0") is not public; this model follows
the field names of the Skattekonto v2 REST API, the best public model of what the file holds.
Amounts are exact integers in öre (1/100 krona); negative amounts are debts.
The on-disk layout (how these records are written as lines) lives in ``answer_file.py`` only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["Balance", "FileHeader", "FileTrailer", "Record", "Transaction", "TransactionBatch"]


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


@dataclass(frozen=True, slots=True)
class TransactionBatch:
    """Consecutive transactions of one principal, column by column, as validated text.

    What the answer-file parser's fast path hands to the loader instead of one :class:`Transaction`
    per row. Row ``i`` has ``sequence = first_sequence + i``; an empty string is an absent value; dates are
    ``YYYY-MM-DD``; amounts are öre as decimal integer text (``"-1234500"``, possibly with leading zeros).
    :meth:`transactions` gives the same rows as :class:`Transaction` records.
    """

    principal: str
    first_sequence: int
    transaction_id: list[str]
    transaction_date: list[str]
    interest_date: list[str]
    text: list[str]
    amount_skatteverket_ore: list[str]
    amount_kronofogden_ore: list[str]
    amount_sum_ore: int  # sum of both amount columns

    def __len__(self) -> int:
        return len(self.text)

    def transactions(self) -> list[Transaction]:
        """The rows as :class:`Transaction` records."""
        dates: dict[str, dt.date] = {}

        def date(text: str) -> dt.date:
            value = dates.get(text)
            if value is None:
                value = dates[text] = dt.date.fromisoformat(text)
            return value

        return [
            Transaction(
                self.principal,
                sequence,
                tid or None,
                date(day),
                date(interest) if interest else None,
                text,
                int(s) if s else None,
                int(k) if k else None,
            )
            for sequence, tid, day, interest, text, s, k in zip(
                range(self.first_sequence, self.first_sequence + len(self.text)),
                self.transaction_id,
                self.transaction_date,
                self.interest_date,
                self.text,
                self.amount_skatteverket_ore,
                self.amount_kronofogden_ore,
                strict=True,
            )
        ]


Record = FileHeader | Balance | Transaction | FileTrailer
