"""Deterministic, realistic answer-file data for the sandbox (and for tests and benchmarks).

Everything is a pure function of ``(seed, orderer, principal, dates)``: the same inputs give
byte-identical files. Randomness comes from :class:`random.Random` instances seeded with a BLAKE2b digest
of those inputs, so it does not depend on ``PYTHONHASHSEED``, the process or the call order.

Semantics the loader relies on:

* **Snapshots.** Reconciliation (avstämning) runs the first weekend of each month; we use the first
  Saturday. The file for delivery morning *M* holds, per principal, the balance reconciled on
  ``R = reconciliation_date(M)`` and every transaction dated ``R + 1 day`` .. the day before *M*'s date.
* **Consistent overlap.** Transactions are generated per ``(principal, transaction day)`` only, so the
  file of a later morning in the same period repeats the earlier file's transactions (same ids, texts,
  amounts, order and ``sequence``) and appends the new days' transactions. A new reconciliation starts a
  new period (new balance, transactions after the new ``R`` only).
* **Balances follow the transactions.** A snapshot's balance is the reconciled balance plus every
  transaction of the snapshot (per column: Skatteverket, Kronofogden), so within a period each
  morning's balance is the previous morning's plus the new days' transactions.
* **Volume.** ``transactions_per_principal`` is the *average* per principal over the delivery mornings of
  a period: a file grows from few transactions just after a reconciliation to about twice the average
  just before the next one (weekdays carry most transactions). Read the trailer for exact counts.
* **Realism.** Swedish transaction texts, negative debts and positive payments, some rows with only
  ``beloppKronofogden``, some rows without ``transaktionsidentitet`` (not yet booked; they stay so in
  every file, to keep overlap exact), occasional exactly identical rows on the same day (every field
  equal, including the identity; both are legitimate and must both be kept), whole kronor for taxes and
  öre for payments and interest, a few texts containing ``;`` or ``"``.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as dt
import hashlib
import math
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

from airflow_provider_skattekonto.domain import answer_file
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.identifiers import luhn_check_digit, normalize_organisation_number
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, Transaction

__all__ = [
    "MEAN_WEIGHTED_WINDOW_DAYS",
    "first_saturday",
    "principals_for",
    "reconciliation_date",
    "snapshot_blocks",
    "transaction_window",
    "write_answer_file",
]

# Relative volume per weekday (Mon..Sun): transactions are booked on banking days.
_WEEKDAY_WEIGHT = (1.0, 1.0, 1.0, 1.0, 1.0, 0.15, 0.15)
# Weighted days a file covers, averaged over the business mornings of 2025-2027 (14.8 calendar days on
# average; checked by tests/sandbox/test_data.py). Turns "per file" into "per day".
MEAN_WEIGHTED_WINDOW_DAYS = 11.06


# ---------------------------------------------------------------------------------------------------
# Deterministic randomness
# ---------------------------------------------------------------------------------------------------
def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


# ---------------------------------------------------------------------------------------------------
# Principals
# ---------------------------------------------------------------------------------------------------
def _orgnr(rng: random.Random, prefix: str) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(9 - len(prefix)))
    return "16" + body + luhn_check_digit(body)


def _person(rng: random.Random, *, coordination: bool) -> str:
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 50))
    day = birth.day + (60 if coordination else 0)
    serial = f"{rng.randrange(1000):03d}"
    tail = f"{birth.year % 100:02d}{birth.month:02d}{day:02d}{serial}"
    return f"{birth.year // 100:02d}{tail}{luhn_check_digit(tail)}"


def principals_for(orderer: str, *, seed: int, count: int) -> list[str]:
    """``count`` distinct 12-digit principal ids with valid check digits, deterministic and prefix-stable.

    Mostly companies (``16`` + an aktiebolag 556/559 number), some handelsbolag/kommanditbolag (969),
    ekonomiska and ideella föreningar (769/802), sole traders (century + personnummer) and, from the
    eighth principal on, a samordningsnummer (day + 60) in every fifty.
    """
    orderer10 = normalize_organisation_number(orderer)
    rng = _rng("principals", seed, orderer10)
    result: list[str] = []
    seen: set[str] = set()
    for index in range(count):
        while True:
            position = index % 50
            if position == 7:
                candidate = _person(rng, coordination=True)
            elif position % 10 == 3:
                candidate = _person(rng, coordination=False)
            elif position in (11, 36):
                candidate = _orgnr(rng, "969")
            elif position == 24:
                candidate = _orgnr(rng, "769")
            elif position == 45:
                candidate = _orgnr(rng, "802")
            else:
                candidate = _orgnr(rng, "559" if rng.random() < 0.3 else "556")
            if candidate not in seen and candidate[2:] != orderer10:
                break
        seen.add(candidate)
        result.append(candidate)
    return result


# ---------------------------------------------------------------------------------------------------
# Periods
# ---------------------------------------------------------------------------------------------------
def first_saturday(year: int, month: int) -> dt.date:
    """The first Saturday of a month: the day we model the monthly reconciliation on."""
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(5 - first.weekday()) % 7)


def _local_date(moment: dt.datetime | dt.date) -> dt.date:
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is not None and moment.utcoffset() is not None:
            moment = moment.astimezone(STOCKHOLM)
        return moment.date()
    return moment


def reconciliation_date(delivery_morning: dt.datetime) -> dt.date:
    """The reconciliation a morning's snapshot starts from: the latest first-Saturday-of-a-month strictly
    before the morning's date (Europe/Stockholm; a naive datetime is taken as Stockholm time)."""
    day = _local_date(delivery_morning)
    candidate = first_saturday(day.year, day.month)
    if candidate < day:
        return candidate
    year, month = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
    return first_saturday(year, month)


def _next_reconciliation(reconciled_on: dt.date) -> dt.date:
    year, month = (
        (reconciled_on.year + 1, 1)
        if reconciled_on.month == 12
        else (
            reconciled_on.year,
            reconciled_on.month + 1,
        )
    )
    return first_saturday(year, month)


def transaction_window(delivery_morning: dt.datetime) -> tuple[dt.date, dt.date]:
    """First and last transaction date of a morning's file (empty when first > last)."""
    reconciled_on = reconciliation_date(delivery_morning)
    return reconciled_on + dt.timedelta(days=1), _local_date(delivery_morning) - dt.timedelta(days=1)


# ---------------------------------------------------------------------------------------------------
# Transactions per (principal, day)
# ---------------------------------------------------------------------------------------------------
class _Profile(NamedTuple):
    activity: float  # relative transaction volume (mean about 1)
    scale: int  # typical tax amount in öre
    kronofogden: bool  # has debts at Kronofogden
    company: bool


def _profile(seed: int, orderer: str, principal: str) -> _Profile:
    rng = _rng("profile", seed, orderer, principal)
    company = principal.startswith("16")
    activity = rng.choice((0.25, 0.5, 0.75, 1.0, 1.0, 1.25, 1.5, 1.75))  # mean 1.0
    kronor = int(math.exp(rng.uniform(math.log(2_000), math.log(400_000 if company else 40_000))))
    return _Profile(activity, kronor * 100, rng.random() < 0.08, company)


def _yymm(day: dt.date, months_back: int) -> str:
    index = day.year * 12 + day.month - 1 - months_back
    return f"{index // 12 % 100:02d}{index % 12 + 1:02d}"


def _due_date(day: dt.date) -> dt.date:
    """The 12th on or after ``day``: the usual due date (förfallodag) for debited taxes."""
    if day.day <= 12:
        return day.replace(day=12)
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=12)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# Kinds of transaction and their relative frequency; interpreted in _day_rows.
_KIND_WEIGHTS = (
    ("payment", 28),
    ("prelim", 10),
    ("employer", 10),
    ("withheld", 10),
    ("vat", 8),
    ("interest_income", 5),
    ("interest_cost", 6),
    ("late_fee", 2),
    ("to_kronofogden", 2),
    ("paid_at_kronofogden", 2),
    ("kronofogden_interest", 2),
    ("payout", 3),
    ("final_tax", 2),
    ("vat_correction", 1),
    ("reassessment", 1),
)
_KIND_NAMES = tuple(name for name, _ in _KIND_WEIGHTS)
_KIND_BOUNDS = tuple(
    sum(weight for _, weight in _KIND_WEIGHTS[: index + 1]) / sum(weight for _, weight in _KIND_WEIGHTS)
    for index in range(len(_KIND_WEIGHTS) - 1)
)
_KRONOFOGDEN_KINDS = frozenset({"to_kronofogden", "paid_at_kronofogden", "kronofogden_interest"})

_Row = tuple[str | None, dt.date, dt.date | None, str, int | None, int | None]


class _Day(NamedTuple):
    """What every principal's transactions on one day share (computed once per day)."""

    date: dt.date
    weight: float
    due: dt.date
    payment: str
    employer: str
    withheld: str
    vat: str
    vat_correction: str
    reassessment: str


def _day(date: dt.date) -> _Day:
    vat = f"Moms {_yymm(date, 2)}"
    return _Day(
        date=date,
        weight=_WEEKDAY_WEIGHT[date.weekday()],
        due=_due_date(date),
        payment=f"Inbetalning bokförd {date.year % 100:02d}{date.month:02d}{date.day:02d}",
        employer=f"Arbetsgivaravgift {_yymm(date, 1)}",
        withheld=f"Avdragen skatt {_yymm(date, 1)}",
        vat=vat,
        vat_correction=f"Rättelse moms {_yymm(date, 3)}; beslut {date.isoformat()}",
        reassessment=f'Beslut omprövning "{vat}"',
    )


def _day_rows(rng: random.Random, profile: _Profile, day: _Day, per_day: float) -> list[_Row]:
    """One principal's transactions on one day, drawn from the principal's stream for the period.

    The stream is seeded per (principal, reconciliation) and consumed day by day from the first day of
    the period, so a day's rows do not depend on how many later days a file covers.
    """
    count = _poisson(rng, per_day * profile.activity * day.weight)
    if not count:
        return []
    rand = rng.random
    scale = profile.scale
    date = day.date
    due = day.due
    rows: list[_Row] = []
    while len(rows) < count:
        kind = _KIND_NAMES[bisect.bisect_left(_KIND_BOUNDS, rand())]
        if kind in _KRONOFOGDEN_KINDS and not profile.kronofogden:
            kind = "payment"
        tax = -int(scale * (0.2 + 1.6 * rand()) / 100) * 100  # whole kronor, negative (a debt)
        s_ore: int | None
        k_ore: int | None = None
        interest: dt.date | None = due
        if kind == "payment":
            text, s_ore, interest = day.payment, int(scale * (0.2 + 2.0 * rand())), date
        elif kind == "prelim":
            text, s_ore = "Debiterad preliminärskatt", tax
        elif kind == "employer":
            text, s_ore = day.employer, tax
        elif kind == "withheld":
            text, s_ore = day.withheld, tax
        elif kind == "vat":
            text, s_ore = day.vat, tax if rand() < 0.8 else -tax
        elif kind == "interest_income":
            text, s_ore, interest = "Intäktsränta", 1 + int(scale * 0.002 * rand()), None
        elif kind == "interest_cost":
            text, s_ore, interest = "Kostnadsränta", -1 - int(scale * 0.004 * rand()), None
        elif kind == "late_fee":
            text, s_ore = "Förseningsavgift", -62_500 if rand() < 0.7 else -125_000
        elif kind == "to_kronofogden":
            text, s_ore, k_ore = "Överföring till Kronofogden", -2 * tax, 2 * tax
        elif kind == "paid_at_kronofogden":
            text, s_ore, k_ore, interest = "Inbetalning hos Kronofogden", None, int(scale * rand()) + 1, None
        elif kind == "kronofogden_interest":
            text, s_ore, k_ore, interest = "Ränta hos Kronofogden", None, -1 - int(scale * 0.003 * rand()), None
        elif kind == "payout":
            text, s_ore, interest = "Utbetalning", -int(scale * (0.1 + rand())), date
        elif kind == "final_tax":
            text, s_ore = "Debiterad slutlig skatt", tax * 3
        elif kind == "vat_correction":
            text, s_ore = day.vat_correction, tax // 4 if rand() < 0.5 else -tax // 4
        else:
            text, s_ore = day.reassessment, tax // 2
        booked = rand() >= 0.04  # the rest is not yet booked: no transaktionsidentitet
        transaction_id = str(100_000_000_000 + int(rand() * 899_999_999_999)) if booked else None
        row: _Row = (transaction_id, date, interest, text, s_ore, k_ore)
        rows.append(row)
        if rand() < 0.01 and len(rows) < count:
            rows.append(row)  # an exactly identical transaction on the same day: legitimate
    return rows


def _reconciled_balance(
    seed: int, orderer: str, principal: str, profile: _Profile, reconciled_on: dt.date
) -> tuple[int, int | None, int | None]:
    rng = _rng("balance", seed, orderer, principal, reconciled_on.toordinal())
    roll = rng.random()
    if roll < 0.3:
        skatteverket = 0
    elif roll < 0.75:
        skatteverket = -int(profile.scale * rng.random() * 3)
    else:
        skatteverket = int(profile.scale * rng.random())
    kronofogden = -int(profile.scale * (0.5 + 4 * rng.random())) if profile.kronofogden else None
    interest = int(skatteverket * 0.004) if skatteverket else (None if rng.random() < 0.5 else 0)
    return skatteverket, kronofogden, interest


# ---------------------------------------------------------------------------------------------------
# Snapshots and files
# ---------------------------------------------------------------------------------------------------
def snapshot_blocks(
    orderer: str,
    delivery_morning: dt.datetime,
    *,
    seed: int,
    principals: int,
    transactions_per_principal: int,
) -> Iterator[tuple[Balance, list[Transaction]]]:
    """Per principal (sorted by id), its balance and the transactions since the reconciliation.

    The balance is the account's balance after those transactions (``saldoSkatteverket`` as of
    ``senastUppdaterad``): the reconciled balance plus the snapshot's Skatteverket amounts, and likewise
    for Kronofogden. So consecutive mornings of one period are consistent: the previous morning's
    balance plus the new transactions is this morning's balance.

    Streams one block at a time. See the module docstring for the overlap and volume semantics.
    """
    orderer10 = normalize_organisation_number(orderer)
    reconciled_on = reconciliation_date(delivery_morning)
    next_reconciliation = _next_reconciliation(reconciled_on)
    first_day, last_day = transaction_window(delivery_morning)
    days = [_day(first_day + dt.timedelta(days=n)) for n in range((last_day - first_day).days + 1)]
    per_day = transactions_per_principal / MEAN_WEIGHTED_WINDOW_DAYS
    morning_date = _local_date(delivery_morning)
    for principal in sorted(principals_for(orderer10, seed=seed, count=principals)):
        profile = _profile(seed, orderer10, principal)
        saldo, kronofogden, interest = _reconciled_balance(seed, orderer10, principal, profile, reconciled_on)
        minutes = _rng("updated", seed, orderer10, principal, morning_date.toordinal()).randrange(240)
        last_updated = dt.datetime.combine(
            morning_date - dt.timedelta(days=1), dt.time(20, 0), tzinfo=STOCKHOLM
        ) + dt.timedelta(minutes=minutes)
        transactions: list[Transaction] = []
        sequence = 0
        stream = _rng("transactions", seed, orderer10, principal, reconciled_on.toordinal())
        for day in days:
            for transaction_id, date, interest_date, text, s_ore, k_ore in _day_rows(stream, profile, day, per_day):
                sequence += 1
                transactions.append(
                    Transaction(principal, sequence, transaction_id, date, interest_date, text, s_ore, k_ore)
                )
                saldo += s_ore or 0
                if k_ore is not None:
                    kronofogden = (kronofogden or 0) + k_ore
        balance = Balance(
            principal=principal,
            reconciled_on=reconciled_on,
            balance_skatteverket_ore=saldo,
            balance_kronofogden_ore=kronofogden,
            interest_skatteverket_ore=interest,
            last_updated=last_updated,
            next_reconciliation_on=next_reconciliation,
        )
        yield balance, transactions


def _offset_first_balance(
    blocks: Iterator[tuple[Balance, list[Transaction]]], ore: int
) -> Iterator[tuple[Balance, list[Transaction]]]:
    for index, (balance, transactions) in enumerate(blocks):
        if index == 0:
            balance = dataclasses.replace(balance, balance_skatteverket_ore=balance.balance_skatteverket_ore + ore)
        yield balance, transactions


class _HashingWriter:
    """Binary sink that hashes and counts what it forwards to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._target.write(data)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._target.flush()


def write_answer_file(
    path: Path,
    *,
    orderer: str,
    delivery_morning: dt.datetime,
    created_at: dt.datetime,
    file_id: str,
    seed: int,
    principals: int,
    transactions_per_principal: int,
    balance_offset_ore: int = 0,
) -> tuple[int, str]:
    """Write a morning's answer file to ``path`` atomically; return ``(size in bytes, sha256 hex)``.

    ``balance_offset_ore`` (a sandbox fault) states the first principal's Skatteverket balance that many
    öre off, which leaves the file valid but its balances inconsistent.

    The file appears complete or not at all (written under a temporary name in the same directory,
    then ``os.replace``). Identical arguments give byte-identical files.
    """
    path = Path(path)
    orderer10 = normalize_organisation_number(orderer)
    header = FileHeader(
        layout_version=answer_file.LAYOUT_VERSION, orderer=orderer10, created_at=created_at, file_id=file_id
    )
    blocks = snapshot_blocks(
        orderer10,
        delivery_morning,
        seed=seed,
        principals=principals,
        transactions_per_principal=transactions_per_principal,
    )
    if balance_offset_ore:
        blocks = _offset_first_balance(blocks, balance_offset_ore)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as raw:
            sink = _HashingWriter(raw)
            answer_file.write_answer_file(sink, header, blocks)  # type: ignore[arg-type]
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return sink.size, sink.sha256.hexdigest()
