"""The change feed and the ready views, on every load path (SQLite, PostgreSQL via psycopg2/psycopg 3, generic)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.records import FileTrailer
from airflow_provider_skattekonto.loading import SnapshotLoadError, load_answer_stream
from airflow_provider_skattekonto.loading.change_feed import Occurrences
from airflow_provider_skattekonto.loading.names import qualified_name

from .builders import ORDERER, Block, at, fake_sha, file_bytes, header, org_principal, random_blocks, records
from .conftest import Warehouse

FEB = dt.date(2026, 2, 28)
MAR = dt.date(2026, 3, 28)
P1, P2, P3 = (org_principal(n) for n in (1, 2, 3))
Row = tuple[dt.date, str, int | None, int | None, str | None]  # date, text, sv, kf, transaction id


def day(n: int, period: dt.date = FEB) -> dt.date:
    return period + dt.timedelta(days=n)


def blk(principal: str, rows: list[Row], *, period: dt.date = FEB, opening: int = 0) -> Block:
    """A block whose balance is the opening balance plus its Skatteverket amounts (consistent)."""
    block = Block(principal, period, opening + sum(r[2] or 0 for r in rows))
    block.transactions = list(rows)
    return block


def load(wh: Warehouse, file_id: str, created: dt.datetime, *blocks: Block, morning: dt.datetime | None = None) -> Any:
    return wh.load(
        records(header(file_id, created), blocks),
        sha256=fake_sha(file_id),
        name=f"{file_id}.txt",
        delivery_morning=morning,
    )


def view(wh: Warehouse, suffix: str, where: str = "", order: str = "") -> list[tuple[Any, ...]]:
    name = qualified_name(wh.prefix, wh.schema, suffix)
    return wh.query(f"SELECT * FROM {name} {where} {order}")


def changes(wh: Warehouse, file_id: str) -> list[tuple[str, str, str | None, str, int | None]]:
    """(change, principal, transaction_id, text, sv) of one file's change-feed rows, sorted."""
    rows = wh.query(
        "SELECT change, principal, transaction_id, transaction_text, amount_skatteverket_ore"
        f" FROM {qualified_name(wh.prefix, wh.schema, 'transaction_changes')} WHERE file_id = '{file_id}'"
    )
    return sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r))


BOOKED_1: Row = (day(1), "Moms", -1000, None, "T1")
PENDING: Row = (day(1), "Inbetalning", 500, None, None)
BOOKED_2: Row = (day(2), "Avdragen skatt", -300, None, "T2")


def test_new_and_gone_across_snapshots_of_one_period(warehouse: Warehouse) -> None:
    r1 = load(warehouse, "F1", at(2), blk(P1, [BOOKED_1, PENDING]), blk(P2, [BOOKED_1]))
    assert (r1.transactions_new, r1.transactions_gone) == (3, 0)
    # next morning: P1's pending payment vanished and a new booked row came; P2 unchanged
    r2 = load(warehouse, "F2", at(3), blk(P1, [BOOKED_1, BOOKED_2]), blk(P2, [BOOKED_1]))
    assert (r2.transactions_new, r2.transactions_gone) == (1, 1)
    assert changes(warehouse, "F2") == [
        ("gone", P1, None, "Inbetalning", 500),
        ("new", P1, "T2", "Avdragen skatt", -300),
    ]
    # every stored transaction knows where it first appeared, across the replacement
    seen = warehouse.query(
        "SELECT principal, transaction_id, file_id, first_file_id FROM"
        f" {qualified_name(warehouse.prefix, warehouse.schema, 'transactions_first_seen')} ORDER BY 1, 2"
    )
    assert seen == [(P1, "T1", "F2", "F1"), (P1, "T2", "F2", "F2"), (P2, "T1", "F2", "F1")]
    # a no-op reload reports no changes
    again = load(warehouse, "F2", at(3), blk(P1, [BOOKED_1, BOOKED_2]), blk(P2, [BOOKED_1]))
    assert again.noop and (again.transactions_new, again.transactions_gone) == (0, 0)


def test_identity_of_identical_and_unbooked_rows(warehouse: Warehouse) -> None:
    twice = (day(1), "Moms", -100, None, "T9")
    pending = (day(1), "Inbetalning", 50, None, None)
    load(warehouse, "F1", at(2), blk(P1, [twice, twice, pending, pending]))
    # one of the two identical booked rows is gone; one pending row changed its amount; one was booked
    changed = (day(1), "Inbetalning", 55, None, None)
    booked = (day(1), "Inbetalning", 50, None, "T10")
    r2 = load(warehouse, "F2", at(3), blk(P1, [twice, changed, booked]))
    assert (r2.transactions_new, r2.transactions_gone) == (2, 3)
    assert changes(warehouse, "F2") == [
        ("gone", P1, None, "Inbetalning", 50),
        ("gone", P1, None, "Inbetalning", 50),
        ("gone", P1, "T9", "Moms", -100),
        ("new", P1, None, "Inbetalning", 55),
        ("new", P1, "T10", "Inbetalning", 50),
    ]
    # a row that vanished and comes back is new again (consumers that removed it add it back)
    r3 = load(warehouse, "F3", at(4), blk(P1, [twice, twice, changed, booked]))
    assert (r3.transactions_new, r3.transactions_gone) == (1, 0)
    assert changes(warehouse, "F3") == [("new", P1, "T9", "Moms", -100)]


def test_new_reconciliation_older_files_and_missing_principals(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), blk(P1, [BOOKED_1]), blk(P2, [BOOKED_1]))
    load(warehouse, "F3", at(4), blk(P1, [BOOKED_1, BOOKED_2]))  # P2 missing: keeps its snapshot, nothing gone
    assert changes(warehouse, "F3") == [("new", P1, "T2", "Avdragen skatt", -300)]
    # a late backfill: older than F3 for P1 (skipped, no feed), newer than F1 for P2
    late = load(warehouse, "F2", at(3), blk(P1, [BOOKED_1]), blk(P2, [BOOKED_1, BOOKED_2]))
    assert (late.principals_skipped_older, late.transactions_new, late.transactions_gone) == (1, 1, 0)
    assert changes(warehouse, "F2") == [("new", P2, "T2", "Avdragen skatt", -300)]
    # a new reconciliation: a new chain, everything in it is new; the old period's feed stays
    new_period = load(warehouse, "F4", at(30), blk(P1, [(day(1, MAR), "Moms", -7, None, "T1")], period=MAR))
    assert (new_period.transactions_new, new_period.transactions_gone) == (1, 0)
    assert len(changes(warehouse, "F3")) == 1


def test_a_failed_load_writes_no_feed(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), blk(P1, [BOOKED_1, PENDING]))
    before = warehouse.query(
        f"SELECT COUNT(*) FROM {qualified_name(warehouse.prefix, warehouse.schema, 'transaction_feed')}"
    )

    def broken() -> Any:
        for rec in records(header("F2", at(3)), [blk(P1, [BOOKED_2])]):
            yield FileTrailer(9, 9, 9) if isinstance(rec, FileTrailer) else rec

    with pytest.raises(SnapshotLoadError):
        warehouse.load(broken(), sha256=fake_sha("F2"))
    after = warehouse.query(
        f"SELECT COUNT(*) FROM {qualified_name(warehouse.prefix, warehouse.schema, 'transaction_feed')}"
    )
    assert before == after
    assert changes(warehouse, "F2") == []


def test_ready_views(warehouse: Warehouse) -> None:
    morning1 = dt.datetime(2026, 3, 2, 7, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    morning2 = morning1 + dt.timedelta(days=1)
    kf_debt = Block(P3, FEB, 0)
    kf_debt.transactions = [(day(1), "Överföring till Kronofogden", 900, -900, "K1")]
    b3 = kf_debt.balance_ore
    load(
        warehouse,
        "F1",
        at(2),
        blk(P1, [BOOKED_1], opening=2000),  # 1000
        blk(P2, [BOOKED_1], opening=500),  # -500
        kf_debt,
        morning=morning1,
    )
    # next morning P1 turns negative, P2 stays negative
    load(
        warehouse,
        "F2",
        at(3),
        blk(P1, [BOOKED_1, BOOKED_2], opening=900),
        blk(P2, [BOOKED_1], opening=500),
        morning=morning2,
    )
    negative = view(warehouse, "turned_negative")
    assert [(r[1], r[5], r[6], r[2 + 5]) for r in negative] == [(P1, -400, 1000, "F1")]
    current = {r[1]: (r[3], r[8]) for r in view(warehouse, "current_balances")}
    assert current == {P1: (-400, "F2"), P2: (-500, "F2"), P3: (b3, "F1")}
    assert view(warehouse, "kronofogden_debts") == []  # the builders store no Kronofogden balance
    # a new reconciliation: the current balance comes from the newest period; turned negative across it
    load(warehouse, "F3", at(30), blk(P2, [(day(1, MAR), "Inbetalning", 800, None, "I1")], period=MAR, opening=-500))
    load(warehouse, "F4", at(31), blk(P2, [], period=MAR, opening=-1))
    current = {r[1]: (str(r[2]), r[3]) for r in view(warehouse, "current_balances")}
    assert current[P2] == (MAR.isoformat(), -1)
    assert [(r[1], r[5], r[6]) for r in view(warehouse, "turned_negative")] == [(P2, -1, 300)]


def test_kronofogden_debts_view(warehouse: Warehouse) -> None:
    from airflow_provider_skattekonto.domain.records import Balance

    head = header("F1", at(2))

    def stream() -> Any:
        yield head
        for principal, kf in ((P1, -12345), (P2, None), (P3, 0)):
            yield Balance(principal, FEB, 10, kf, None, head.created_at, None)
        yield FileTrailer(3, 0, 0)

    warehouse.load(stream(), sha256=fake_sha("F1"))
    debts = view(warehouse, "kronofogden_debts")
    assert [(r[0], r[1], r[3]) for r in debts] == [(ORDERER, P1, -12345)]


def _load_via(wh: Warehouse, through: str, file_id: str, created: dt.datetime, blocks: list[Block]) -> Any:
    if through == "records":
        return load(wh, file_id, created, *blocks)
    content = file_bytes(header(file_id, created), blocks)
    return load_answer_stream(
        wh.open(),
        io.BytesIO(content),
        dialect=wh.dialect,
        file_name=f"{file_id}.txt",
        sha256=hashlib.sha256(content).hexdigest(),
        prefix=wh.prefix,
        schema=wh.schema,
    )


@pytest.mark.parametrize("through", ["records", "file"])
def test_streamed_identities_are_those_of_identity_sql(warehouse: Warehouse, through: str) -> None:
    """The identities the loader computes while the rows stream (into the feed for new principals, into the
    scratch for replaced snapshots) are the ones ``identity_sql`` computes from the stored rows: every stored
    transaction finds its present feed row, on the parser's batch path and the records path alike."""
    first = random_blocks(10, 30, seed=11, reconciled_on=FEB)
    for block in first[:4]:  # exact repeats, booked and unbooked, across the block
        block.transactions += block.transactions[:6]
    many = random_blocks(1, 1, seed=13, reconciled_on=FEB, start=20)[0]  # more repeats than one statement takes
    many.transactions *= 200
    first.append(many)
    second = random_blocks(3, 20, seed=12, reconciled_on=FEB, start=10)  # principals new in the second file
    for block in first[:6]:  # replaced snapshots: some rows vanish, some come, repeats shift
        changed = Block(block.principal, block.reconciled_on, block.balance_ore)
        changed.transactions = block.transactions[3:] + block.transactions[:2] + [(day(9), "Ny rad", 7, None, None)]
        second.append(changed)
    feed = qualified_name(warehouse.prefix, warehouse.schema, "transaction_feed")
    first_seen = qualified_name(warehouse.prefix, warehouse.schema, "transactions_first_seen")
    for file_id, created, blocks, stored in (("F1", at(2), first, first), ("F2", at(3), second, first[6:] + second)):
        result = _load_via(warehouse, through, file_id, created, blocks)
        rows = warehouse.query(f"SELECT identity, first_file_id FROM {first_seen}")
        assert len(rows) == sum(len(b.transactions) for b in stored)
        assert [identity for identity, first_file in rows if first_file is None] == []
        [(present,)] = warehouse.query(f"SELECT COUNT(*) FROM {feed} WHERE gone_file_id IS NULL")
        assert present == len(rows)
        assert result.transactions_new > 0
        # the counts the load reports (from the statements' row counts) are what the feed holds
        [(new, gone)] = warehouse.query(
            f"SELECT SUM(CASE WHEN first_file_id = '{file_id}' THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN gone_file_id = '{file_id}' THEN 1 ELSE 0 END) FROM {feed}"
        )
        assert (result.transactions_new, result.transactions_gone) == (new, gone)
    assert result.transactions_gone > 0


def test_occurrences_compare_rows_as_the_identity_key_does() -> None:
    """A row's occurrence is the count of earlier rows of its snapshot with an equal identity key, whichever way
    the parser handed them: öre text may carry leading zeros, and a snapshot may come partly as batches,
    partly as records. Only occurrences other than 1 are kept."""
    from airflow_provider_skattekonto.domain.records import Transaction, TransactionBatch

    def batch(ids: list[str], sv: list[str], first: int = 1) -> TransactionBatch:
        n = len(ids)
        return TransactionBatch(P1, first, ids, ["2026-03-01"] * n, [""] * n, ["Moms"] * n, sv, [""] * n, 0)

    found = Occurrences()
    found.start(P1, FEB)
    found.add_batch(batch(["", "7"], ["-000120", "5"]))
    found.add_batch(batch(["", "8"], ["-121", "5"], first=3))  # another amount, another id: no repeat
    assert found.repeats == []
    found.add(Transaction(P1, 5, None, dt.date(2026, 3, 1), None, "Moms", -120, None))  # row 1 again
    found.add_batch(batch(["", "7"], ["-120", "1"], first=6))  # row 1 a third time, id 7 again
    found.start(P2, FEB)
    found.add_batch(batch(["9", "9"], ["1", "2"]))  # a booked id twice
    found.start(P3, FEB)
    found.add(Transaction(P3, 1, "9", dt.date(2026, 3, 1), None, "Moms", 1, None))  # another snapshot
    assert found.repeats == [(P1, FEB, 5, 2), (P1, FEB, 6, 3), (P1, FEB, 7, 2), (P2, FEB, 2, 2)]
