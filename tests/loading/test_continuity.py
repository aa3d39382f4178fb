"""Balance continuity: generated snapshot sequences (hypothesis) stay consistent; one corrupted balance is caught."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Record, Transaction
from airflow_provider_skattekonto.loading import ensure_tables, load_answer_file
from airflow_provider_skattekonto.loading.continuity import check_balance_continuity

from .builders import ORDERER, at, fake_sha, org_principal
from .conftest import Warehouse

FEB = dt.date(2026, 2, 28)
MAR = dt.date(2026, 3, 28)


@dataclass
class Account:
    """One principal's account through the mornings: booked rows stay, pending rows may change or vanish."""

    principal: str
    period: dt.date
    opening_sv: int
    opening_kf: int | None
    rows: list[tuple[str | None, dt.date, str, int | None, int | None]] = field(default_factory=list)

    def balance(self) -> tuple[int, int | None]:
        sv = self.opening_sv + sum(r[3] or 0 for r in self.rows)
        kf_amounts = [r[4] for r in self.rows if r[4] is not None]
        kf = None if self.opening_kf is None and not kf_amounts else (self.opening_kf or 0) + sum(kf_amounts)
        return sv, kf


amount = st.one_of(st.none(), st.integers(-(10**9), 10**9))
row = st.tuples(
    st.one_of(st.none(), st.sampled_from(["T1", "T2", "T3", "T4"])),  # ids repeat: identical booked rows
    st.integers(1, 25),
    st.sampled_from(["Moms", "Inbetalning", "Ränta"]),
    amount,
    amount,
)
morning_step = st.tuples(
    st.lists(row, max_size=4),  # rows appended this morning
    st.lists(st.integers(0, 50), max_size=2),  # pending rows to drop (index among pending)
    st.lists(st.tuples(st.integers(0, 50), st.integers(-500, 500)), max_size=2),  # pending rows to change
    st.booleans(),  # a new reconciliation starts this morning
)
principal_plan = st.tuples(
    st.integers(-(10**6), 10**6), st.one_of(st.none(), st.integers(-(10**6), 0)), st.lists(morning_step, max_size=5)
)


def _files(plans: list[Any]) -> list[tuple[FileHeader, list[tuple[Balance, list[Transaction]]]]]:
    """The file of every morning: per principal, its current snapshot."""
    accounts = [Account(org_principal(i), FEB, sv, kf) for i, (sv, kf, _) in enumerate(plans)]
    mornings = max((len(steps) for _, _, steps in plans), default=0) + 1
    files = []
    for m in range(mornings):
        head = FileHeader("1.0", ORDERER, at(2 + m), f"F{m}")
        blocks = []
        for account, (_, _, steps) in zip(accounts, plans, strict=True):
            if m > 0 and m - 1 < len(steps):
                added, dropped, changed, new_period = steps[m - 1]
                if new_period and account.period == FEB:
                    account.period, account.rows = MAR, []
                    account.opening_sv, account.opening_kf = account.balance()
                pending = [i for i, r in enumerate(account.rows) if r[0] is None]
                for index, delta in changed:
                    if pending:
                        i = pending[index % len(pending)]
                        tid, d, text, sv, kf = account.rows[i]
                        account.rows[i] = (tid, d, text, (sv or 0) + delta, kf)
                drop = {pending[index % len(pending)] for index in dropped} if pending else set()
                account.rows = [r for i, r in enumerate(account.rows) if i not in drop]
                for tid, d, text, sv, kf in added:
                    account.rows.append((tid, account.period + dt.timedelta(days=d), text, sv, kf))
            sv, kf = account.balance()
            balance = Balance(account.principal, account.period, sv, kf, None, head.created_at, None)
            txs = [
                Transaction(account.principal, seq, tid, d, None, text, a_sv, a_kf)
                for seq, (tid, d, text, a_sv, a_kf) in enumerate(account.rows, start=1)
            ]
            blocks.append((balance, txs))
        files.append((head, blocks))
    return files


def _records(head: FileHeader, blocks: list[tuple[Balance, list[Transaction]]]) -> list[Record]:
    out: list[Record] = [head]
    count = total = 0
    for balance, txs in blocks:
        out.append(balance)
        out.extend(txs)
        count += len(txs)
        total += sum((t.amount_skatteverket_ore or 0) + (t.amount_kronofogden_ore or 0) for t in txs)
    out.append(FileTrailer(len(blocks), count, total))
    return out


def _corrupt(blocks: list[tuple[Balance, list[Transaction]]], index: int, delta: int) -> str:
    balance, txs = blocks[index]
    blocks[index] = (
        Balance(
            balance.principal,
            balance.reconciled_on,
            balance.balance_skatteverket_ore + delta,
            balance.balance_kronofogden_ore,
            None,
            balance.last_updated,
            None,
        ),
        txs,
    )
    return balance.principal


def _load_all(conn: Any, dialect: str, files: list[Any], **kw: Any) -> None:
    for head, blocks in files:
        load_answer_file(
            conn, _records(head, blocks), dialect=dialect, file_name=head.file_id, sha256=fake_sha(head.file_id), **kw
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(principal_plan, min_size=1, max_size=4), corrupt=st.data())
def test_generated_sequences_are_continuous_and_one_corruption_is_caught(
    plans: list[Any], corrupt: st.DataObject, tmp_path: Path
) -> None:
    files = _files(plans)
    conn = sqlite3.connect(":memory:")
    ensure_tables(conn, dialect="sqlite")
    _load_all(conn, "sqlite", files)
    report = check_balance_continuity(conn, dialect="sqlite")
    assert report.ok, [b.describe() for b in report.breaks]
    assert report.checked + report.chain_starts == len(files) * len(plans)
    if len(files) < 2:
        return
    # the same sequence with one balance off by some öre (not the first morning: it has no predecessor)
    files = _files(plans)
    m = corrupt.draw(st.integers(1, len(files) - 1), label="morning")
    p = corrupt.draw(st.integers(0, len(plans) - 1), label="principal")
    delta = corrupt.draw(st.integers(-(10**6), 10**6).filter(bool), label="delta")
    head, blocks = files[m]
    principal = _corrupt(blocks, p, delta)
    conn = sqlite3.connect(":memory:")
    ensure_tables(conn, dialect="sqlite")
    _load_all(conn, "sqlite", files)
    report = check_balance_continuity(conn, dialect="sqlite", file_ids=[head.file_id])
    starts_chain = blocks[p][0].reconciled_on != files[m - 1][1][p][0].reconciled_on
    if starts_chain:  # a new reconciliation: nothing to compare, by design
        assert report.ok
        return
    assert report.principals == [principal]
    [brk] = report.breaks
    assert (brk.column, brk.actual_ore - brk.expected_ore, brk.file_id) == ("skatteverket", delta, head.file_id)
    assert str(delta) in brk.describe()


def test_continuity_on_every_load_path(warehouse: Warehouse) -> None:
    plans = [
        (1000, -50, [([("T1", 1, "Moms", -100, None)], [], [], False), ([(None, 2, "Inb", 5, -5)], [], [], False)]),
        (0, None, [([(None, 1, "Ränta", 3, None)], [], [], False), ([], [0], [], True)]),
    ]
    files = _files(plans)
    _corrupt(files[2][1], 0, 7)
    for head, blocks in files:
        warehouse.load(_records(head, blocks), sha256=fake_sha(head.file_id), name=head.file_id)
    conn = warehouse.connect()
    try:
        report = check_balance_continuity(
            conn, dialect=warehouse.dialect, prefix=warehouse.prefix, schema=warehouse.schema
        )
    finally:
        conn.close()
    assert (report.checked, report.chain_starts) == (3, 3)
    assert [(b.principal, b.file_id, b.actual_ore - b.expected_ore) for b in report.breaks] == [
        (org_principal(0), "F2", 7)
    ]
    assert report.to_dict()["principals"] == [org_principal(0)]


@pytest.mark.parametrize("ids", [[], ["nope"]])
def test_unknown_or_no_files_check_nothing(warehouse: Warehouse, ids: list[str]) -> None:
    conn = warehouse.connect()
    try:
        report = check_balance_continuity(
            conn, dialect=warehouse.dialect, file_ids=ids, prefix=warehouse.prefix, schema=warehouse.schema
        )
    finally:
        conn.close()
    assert report.ok and (report.checked, report.chain_starts) == (0, 0)
