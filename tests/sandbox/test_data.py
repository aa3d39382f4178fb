"""The sandbox's deterministic answer-file data: principals, periods, overlap, realism, files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_skattekonto.domain.answer_file import parse_answer_file
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.domain.identifiers import normalize_principal_id
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Transaction
from airflow_provider_skattekonto.sandbox import data
from airflow_provider_skattekonto.sandbox.data import (
    principals_for,
    reconciliation_date,
    snapshot_blocks,
    transaction_window,
    write_answer_file,
)

ORDERER = "5560000167"


def morning(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, 7, 0, tzinfo=STOCKHOLM)


def snapshot(
    at: dt.datetime, *, principals: int = 20, per: int = 15, seed: int = 7
) -> dict[str, tuple[Balance, list[Transaction]]]:
    return {
        b.principal: (b, ts)
        for b, ts in snapshot_blocks(ORDERER, at, seed=seed, principals=principals, transactions_per_principal=per)
    }


def write(path: Path, at: dt.datetime, file_id: str = "F-1", **kw: int) -> tuple[int, str]:
    return write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=at,
        created_at=at - dt.timedelta(minutes=30),
        file_id=file_id,
        seed=kw.get("seed", 7),
        principals=kw.get("principals", 30),
        transactions_per_principal=kw.get("per", 15),
    )


# -- principals --------------------------------------------------------------------------------------------
def test_principals_are_deterministic_distinct_valid_and_prefix_stable() -> None:
    ids = principals_for(ORDERER, seed=1, count=200)
    assert ids == principals_for("16556000-0167", seed=1, count=200)  # the orderer in any accepted form
    assert len(set(ids)) == 200
    assert all(len(p) == 12 and normalize_principal_id(p) == p for p in ids)
    assert principals_for(ORDERER, seed=1, count=20) == ids[:20]
    assert principals_for(ORDERER, seed=2, count=20) != ids[:20]
    assert principals_for("5560160680", seed=1, count=20) != ids[:20]
    assert "16" + ORDERER not in ids


def test_principals_are_mostly_companies_with_some_sole_traders() -> None:
    ids = principals_for(ORDERER, seed=1, count=200)
    companies = [p for p in ids if p.startswith("16")]
    persons = [p for p in ids if not p.startswith("16")]
    assert 0.75 <= len(companies) / len(ids) < 0.95
    assert {p[2:4] for p in companies} >= {"55", "96"}  # aktiebolag and handelsbolag/kommanditbolag
    assert all(p[:2] in ("19", "20") for p in persons)
    assert any(int(p[6:8]) > 60 for p in persons)  # a samordningsnummer (day + 60)
    assert any(int(p[6:8]) <= 31 for p in persons)


# -- periods ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (morning(2026, 11, 30), dt.date(2026, 11, 7)),
        (morning(2026, 11, 9), dt.date(2026, 11, 7)),
        (morning(2026, 11, 8), dt.date(2026, 11, 7)),
        (morning(2026, 11, 7), dt.date(2026, 10, 3)),  # strictly before the morning's date
        (morning(2026, 11, 6), dt.date(2026, 10, 3)),
        (morning(2027, 1, 4), dt.date(2027, 1, 2)),
        (morning(2027, 1, 1), dt.date(2026, 12, 5)),  # across the year
        (dt.datetime(2026, 11, 7, 23, 30, tzinfo=dt.timezone.utc), dt.date(2026, 11, 7)),  # Nov 8 in Stockholm
        (dt.datetime(2026, 11, 8, 0, 30), dt.date(2026, 11, 7)),  # naive: Stockholm time
    ],
)
def test_reconciliation_date(at: dt.datetime, expected: dt.date) -> None:
    assert reconciliation_date(at) == expected


def test_reconciliation_is_the_latest_first_saturday_before_every_day() -> None:
    day = dt.date(2025, 1, 1)
    while day < dt.date(2028, 1, 1):
        reconciled = reconciliation_date(dt.datetime.combine(day, dt.time(7), tzinfo=STOCKHOLM))
        assert reconciled.weekday() == 5 and reconciled.day <= 7 and reconciled < day
        between = [reconciled + dt.timedelta(days=n) for n in range(1, (day - reconciled).days)]
        assert not any(d.weekday() == 5 and d.day <= 7 for d in between)
        day += dt.timedelta(days=1)


def test_window_covers_the_days_after_reconciliation_up_to_the_day_before_the_morning() -> None:
    assert transaction_window(morning(2026, 11, 30)) == (dt.date(2026, 11, 8), dt.date(2026, 11, 29))
    first, last = transaction_window(morning(2026, 11, 8))
    assert first > last  # nothing yet: a new period just started
    for _, transactions in snapshot(morning(2026, 11, 30)).values():
        assert all(dt.date(2026, 11, 8) <= t.transaction_date <= dt.date(2026, 11, 29) for t in transactions)


def test_the_mean_window_constant_matches_the_calendar() -> None:
    mornings = list(ServiceCalendar().delivery_mornings(dt.date(2025, 1, 1), dt.date(2027, 12, 31)))
    weighted = 0.0
    for at in mornings:
        first, last = transaction_window(at)
        weighted += sum(
            data._WEEKDAY_WEIGHT[(first + dt.timedelta(days=n)).weekday()] for n in range((last - first).days + 1)
        )
    assert weighted / len(mornings) == pytest.approx(data.MEAN_WEIGHTED_WINDOW_DAYS, rel=0.01)


# -- snapshots: determinism and overlap --------------------------------------------------------------------
def test_snapshots_are_deterministic_and_depend_on_the_seed() -> None:
    at = morning(2026, 11, 24)
    assert snapshot(at) == snapshot(at)
    assert snapshot(at) != snapshot(at, seed=8)


def test_a_principal_block_does_not_depend_on_the_number_of_principals() -> None:
    at = morning(2026, 11, 24)
    small, big = snapshot(at, principals=5), snapshot(at, principals=40)
    assert set(small) < set(big)
    assert all(big[p] == small[p] for p in small)
    assert list(big) == sorted(big)  # blocks come sorted by principal id


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (morning(2026, 11, 23), morning(2026, 11, 24)),  # Monday -> Tuesday
        (morning(2026, 11, 9), morning(2026, 12, 4)),  # first and last morning of a period
        (morning(2026, 11, 20), morning(2026, 11, 23)),  # over a weekend
    ],
)
def test_consecutive_files_in_a_period_overlap_exactly(earlier: dt.datetime, later: dt.datetime) -> None:
    before, after = snapshot(earlier), snapshot(later)
    assert before.keys() == after.keys()
    _, last_before = transaction_window(earlier)
    grew = 0
    for principal, (balance, transactions) in before.items():
        balance_after, transactions_after = after[principal]
        # the balance moves on by exactly the new transactions (both columns); the period stays
        new = transactions_after[len(transactions) :]
        assert balance_after.balance_skatteverket_ore == balance.balance_skatteverket_ore + sum(
            t.amount_skatteverket_ore or 0 for t in new
        )
        kronofogden_new = [t.amount_kronofogden_ore for t in new if t.amount_kronofogden_ore is not None]
        if balance.balance_kronofogden_ore is None and not kronofogden_new:
            assert balance_after.balance_kronofogden_ore is None
        else:
            assert balance_after.balance_kronofogden_ore == (balance.balance_kronofogden_ore or 0) + sum(
                kronofogden_new
            )
        same = dict(last_updated=balance.last_updated, balance_skatteverket_ore=balance.balance_skatteverket_ore)
        same["balance_kronofogden_ore"] = balance.balance_kronofogden_ore
        assert dataclasses.replace(balance_after, **same) == balance  # type: ignore[arg-type]
        assert balance_after.last_updated > balance.last_updated
        # Tuesday's file = Monday's transactions (same ids, texts, amounts, order, sequence) + new ones
        assert transactions_after[: len(transactions)] == transactions
        assert all(t.transaction_date > last_before for t in transactions_after[len(transactions) :])
        grew += len(transactions_after) - len(transactions)
    assert grew > 0


def test_a_new_reconciliation_starts_a_new_period() -> None:
    before, after = snapshot(morning(2026, 12, 4)), snapshot(morning(2026, 12, 8))
    for principal, (balance, _) in before.items():
        new_balance, transactions = after[principal]
        assert (balance.reconciled_on, new_balance.reconciled_on) == (dt.date(2026, 11, 7), dt.date(2026, 12, 5))
        assert balance.next_reconciliation_on == dt.date(2026, 12, 5)
        assert new_balance.next_reconciliation_on == dt.date(2027, 1, 2)
        assert all(t.transaction_date > dt.date(2026, 12, 5) for t in transactions)


def test_volume_is_about_the_requested_average_over_a_period() -> None:
    calendar = ServiceCalendar()
    mornings = list(calendar.delivery_mornings(dt.date(2026, 11, 9), dt.date(2026, 12, 4)))
    principals, per = 60, 20
    counts = [sum(len(ts) for _, ts in snapshot(at, principals=principals, per=per).values()) for at in mornings]
    assert counts == sorted(counts)  # a period's files only grow
    assert sum(counts) / len(counts) / principals == pytest.approx(per, rel=0.25)
    assert counts[-1] > 1.5 * per * principals > counts[0]


# -- realism -------------------------------------------------------------------------------------------------
def test_the_data_looks_like_a_tax_account() -> None:
    blocks = snapshot(morning(2026, 11, 30), principals=150, per=30)
    transactions = [t for _, ts in blocks.values() for t in ts]
    texts = {t.text for t in transactions}
    for expected in (
        "Debiterad preliminärskatt",
        "Inbetalning bokförd 261112",
        "Arbetsgivaravgift 2610",
        "Avdragen skatt 2610",
        "Moms 2609",
        "Intäktsränta",
        "Kostnadsränta",
        "Förseningsavgift",
        "Överföring till Kronofogden",
    ):
        assert expected in texts, expected
    assert any(";" in text for text in texts) and any('"' in text for text in texts)
    amounts = [t.amount_skatteverket_ore for t in transactions if t.amount_skatteverket_ore is not None]
    assert any(a < 0 for a in amounts) and any(a > 0 for a in amounts)
    assert any(t.amount_skatteverket_ore is None and t.amount_kronofogden_ore is not None for t in transactions)
    assert any(t.amount_skatteverket_ore is not None and t.amount_kronofogden_ore is not None for t in transactions)
    assert all(t.amount_skatteverket_ore is not None or t.amount_kronofogden_ore is not None for t in transactions)
    assert 0 < sum(t.transaction_id is None for t in transactions) < len(transactions) / 10
    assert any(t.interest_date is None for t in transactions) and any(t.interest_date for t in transactions)
    # taxes are debited in whole kronor
    assert all(
        (t.amount_skatteverket_ore or 0) % 100 == 0 for t in transactions if t.text == "Debiterad preliminärskatt"
    )
    # occasional exactly identical transactions on the same day: equal in every field but sequence
    identical = [
        (a, b)
        for _, ts in blocks.values()
        for a, b in itertools.pairwise(ts)
        if dataclasses.replace(a, sequence=b.sequence) == b
    ]
    assert identical
    for _, ts in blocks.values():
        assert [t.sequence for t in ts] == list(range(1, len(ts) + 1))
        assert [t.transaction_date for t in ts] == sorted(t.transaction_date for t in ts)
    balances = [b for b, _ in blocks.values()]
    assert any(b.balance_kronofogden_ore for b in balances) and any(b.balance_kronofogden_ore is None for b in balances)
    assert any(b.balance_skatteverket_ore < 0 for b in balances)
    assert all(b.last_updated.tzinfo is not None for b in balances)


# -- files ------------------------------------------------------------------------------------------------
def test_files_are_byte_identical_for_the_same_inputs_and_report_size_and_hash(tmp_path: Path) -> None:
    at = morning(2026, 11, 24)
    first = write(tmp_path / "a.txt", at)
    second = write(tmp_path / "b.txt", at)
    raw = (tmp_path / "a.txt").read_bytes()
    assert first == second == (len(raw), hashlib.sha256(raw).hexdigest())
    assert (tmp_path / "b.txt").read_bytes() == raw
    assert write(tmp_path / "c.txt", at, seed=8)[1] != first[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]  # no temporary files left


def test_the_file_parses_to_the_snapshot(tmp_path: Path) -> None:
    at = morning(2026, 11, 24)
    path = tmp_path / "SKAHMST_5560000167_20261124_001.txt"
    write(path, at, path.stem, principals=12)
    with path.open("rb") as stream:
        records = list(parse_answer_file(stream, source_name=path.name))
    header, trailer = records[0], records[-1]
    assert header == FileHeader("1.0", ORDERER, at - dt.timedelta(minutes=30), path.stem)
    blocks = snapshot(at, principals=12)
    assert records[1:-1] == [r for b, ts in blocks.values() for r in (b, *ts)]
    assert isinstance(trailer, FileTrailer) and trailer.principal_count == 12
    assert trailer.transaction_count == sum(len(ts) for _, ts in blocks.values())


def test_a_file_is_replaced_atomically_and_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"old")
    size, _ = write(path, morning(2026, 11, 24))
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="timezone-aware"):
        write_answer_file(
            path,
            orderer=ORDERER,
            delivery_morning=morning(2026, 11, 25),
            created_at=dt.datetime(2026, 11, 25, 6),  # naive: refused by the writer
            file_id="x",
            seed=1,
            principals=2,
            transactions_per_principal=2,
        )
    assert path.stat().st_size == size  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_files_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    path = tmp_path / "here.txt"
    _, here = write(path, morning(2026, 11, 24), principals=5)
    code = (
        "import datetime as dt, sys; from pathlib import Path;"
        "from airflow_provider_skattekonto.domain.calendar import STOCKHOLM;"
        "from airflow_provider_skattekonto.sandbox.data import write_answer_file as w;"
        "m = dt.datetime(2026, 11, 24, 7, tzinfo=STOCKHOLM);"
        "print(w(Path(sys.argv[1]), orderer='5560000167', delivery_morning=m, created_at=m - dt.timedelta(minutes=30),"
        " file_id='F-1', seed=7, principals=5, transactions_per_principal=15)[1])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "here.txt")], env=env, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == here
