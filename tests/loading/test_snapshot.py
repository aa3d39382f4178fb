"""Snapshot semantics of the loader, on every load path (SQLite, PostgreSQL via psycopg2/psycopg 3, generic)."""

from __future__ import annotations

import datetime as dt
import gc
import json
from collections.abc import Iterator

import pytest

from airflow_provider_skattekonto.domain.records import FileTrailer, Record, Transaction
from airflow_provider_skattekonto.loading import SnapshotLoadError, ensure_tables

from .builders import ORDERER, Block, at, fake_sha, header, org_principal, records, transactions_of
from .conftest import Warehouse

FEB = dt.date(2026, 2, 28)
MAR = dt.date(2026, 3, 31)
P1, P2, P3, P4 = (org_principal(n) for n in (1, 2, 3, 4))


def block(principal: str, *amounts: int, period: dt.date = FEB, balance: int = 0, text: str = "Moms") -> Block:
    b = Block(principal, period, balance)
    for i, amount in enumerate(amounts):
        b.transactions.append((period + dt.timedelta(days=1 + i), text, amount, None, None))
    return b


def load(wh: Warehouse, file_id: str, created: dt.datetime, *blocks: Block, **kw: object):  # type: ignore[no-untyped-def]
    return wh.load(records(header(file_id, created), blocks), sha256=fake_sha(file_id), name=f"{file_id}.txt", **kw)


def amounts(wh: Warehouse, principal: str, period: dt.date = FEB) -> list[tuple[str, int | None]]:
    """(file_id, amount) of a principal's stored transactions for a period, by sequence."""
    return [(f, sv) for r, f, _, _, sv, _ in wh.transactions(principal) if str(r) == period.isoformat()]


def test_first_load_stores_balances_transactions_and_file_row(warehouse: Warehouse) -> None:
    result = load(warehouse, "F1", at(2), block(P1, 100, -250, balance=-5000), block(P2, balance=77), block(P3, 1))
    assert result.noop is False
    assert (result.principal_count, result.principals_loaded, result.principals_replaced) == (3, 3, 0)
    assert (result.transaction_count, result.transactions_inserted, result.transactions_deleted) == (3, 3, 0)
    assert result.amount_sum_ore == -149
    assert result.balance_sum_ore == result.balance_sum_loaded_ore == -5000 + 77
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert amounts(warehouse, P1) == [("F1", 100), ("F1", -250)]
    assert warehouse.balances() == {
        (P1, FEB.isoformat()): ("F1", -5000),
        (P2, FEB.isoformat()): ("F1", 77),
        (P3, FEB.isoformat()): ("F1", 0),
    }
    [row] = warehouse.query(
        "SELECT file_id, file_name, sha256, orderer, principal_count, transaction_count, amount_sum_ore,"
        " principals_loaded, principals_skipped_older, transactions_inserted"
        f" FROM {warehouse.names.files}"
    )
    assert row == ("F1", "F1.txt", fake_sha("F1"), ORDERER, 3, 3, -149, 3, 0, 3)


def test_newer_file_replaces_the_snapshot_of_the_same_period(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 100, 200, 300), block(P2, 5))
    # next morning: P1's snapshot changed (a transaction was corrected away), P2 grew
    result = load(warehouse, "F2", at(3), block(P1, 100, 300, balance=1), block(P2, 5, 6, balance=2))
    assert (result.principals_loaded, result.principals_replaced, result.principals_skipped_older) == (2, 2, 0)
    assert result.transactions_inserted == 4
    assert result.transactions_deleted == 4
    assert amounts(warehouse, P1) == [("F2", 100), ("F2", 300)]
    assert amounts(warehouse, P2) == [("F2", 5), ("F2", 6)]
    assert warehouse.balances() == {(P1, FEB.isoformat()): ("F2", 1), (P2, FEB.isoformat()): ("F2", 2)}


def test_older_file_never_overwrites_newer_data_principal_by_principal(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1), block(P2, 2))  # day 2
    load(warehouse, "F3", at(4), block(P1, 31, 32))  # day 4: only P1
    before = warehouse.dump()
    # backfill of day 3 arrives late: newer than F1 for P2, older than F3 for P1, first for P3
    result = load(warehouse, "F2", at(3), block(P1, 21), block(P2, 22, 23), block(P3, 24))
    assert (result.principals_loaded, result.principals_replaced, result.principals_skipped_older) == (2, 1, 1)
    assert result.transactions_inserted == 3
    assert amounts(warehouse, P1) == [("F3", 31), ("F3", 32)]  # untouched
    assert amounts(warehouse, P2) == [("F2", 22), ("F2", 23)]
    assert amounts(warehouse, P3) == [("F2", 24)]
    after = warehouse.dump()
    p1 = [r for r in after["transactions"] if r[1] == P1]
    assert p1 == [r for r in before["transactions"] if r[1] == P1]
    # an even older file changes nothing at all except its own files row
    result = load(warehouse, "F0", at(1), block(P1, 9), block(P2, 9), block(P3, 9))
    assert (result.principals_loaded, result.principals_skipped_older, result.transactions_inserted) == (0, 3, 0)
    final = warehouse.dump()
    assert final["balances"] == after["balances"] and final["transactions"] == after["transactions"]
    assert len(final["files"]) == len(after["files"]) + 1


def test_same_creation_time_is_ordered_by_file_id(warehouse: Warehouse) -> None:
    load(warehouse, "B", at(2), block(P1, 2))
    assert load(warehouse, "A", at(2), block(P1, 1)).principals_skipped_older == 1
    assert amounts(warehouse, P1) == [("B", 2)]
    assert load(warehouse, "C", at(2), block(P1, 3)).principals_replaced == 1
    assert amounts(warehouse, P1) == [("C", 3)]


def test_creation_time_compares_across_utc_offsets(warehouse: Warehouse) -> None:
    summer = dt.timezone(dt.timedelta(hours=2))
    load(warehouse, "Z-early", dt.datetime(2026, 3, 2, 7, 30, tzinfo=summer), block(P1, 1))  # 05:30 UTC
    # 06:00 +01:00 = 05:00 UTC: older although its wall-clock hour is later and its id sorts lower
    assert load(warehouse, "A-older", at(2, 6), block(P1, 2)).principals_skipped_older == 1
    assert amounts(warehouse, P1) == [("Z-early", 1)]


def test_identical_transactions_on_the_same_day_are_all_kept(warehouse: Warehouse) -> None:
    day = FEB + dt.timedelta(days=3)
    same = (day, "Debiterad preliminärskatt", -125000, None, None)
    b1 = Block(P1, FEB, -250000, [same, same])
    load(warehouse, "F1", at(2), b1)
    assert amounts(warehouse, P1) == [("F1", -125000), ("F1", -125000)]
    # next file: the same two plus a third identical one: 3 rows, neither 2 (dedup) nor 5 (append)
    b2 = Block(P1, FEB, -375000, [same, same, same])
    result = load(warehouse, "F2", at(3), b2)
    assert result.transactions_inserted == 3
    assert amounts(warehouse, P1) == [("F2", -125000)] * 3
    assert [seq for _, _, seq, *_ in warehouse.transactions(P1)] == [1, 2, 3]


def test_reloading_the_same_file_is_a_noop(warehouse: Warehouse) -> None:
    blocks = (block(P1, 1, 2), block(P2, 3))
    first = load(warehouse, "F1", at(2), *blocks)
    before = warehouse.dump()
    again = load(warehouse, "F1", at(2), *blocks)
    assert again.noop is True and again.principals_loaded == again.transactions_inserted == 0
    assert again.noop_reason is not None and "sha256" in again.noop_reason
    assert again.loaded_at == first.loaded_at
    # same file_id under another checksum (e.g. re-encoded copy): also a no-op, with its own reason
    other = warehouse.load(records(header("F1", at(2)), blocks), sha256=fake_sha("other"), name="copy.txt")
    assert other.noop is True and "file_id" in (other.noop_reason or "")
    # same checksum, records differ (should not happen; the checksum wins): nothing written
    assert warehouse.load(records(header("F9", at(9)), [block(P4, 4)]), sha256=fake_sha("F1")).noop
    assert warehouse.dump() == before


def test_noop_does_not_consume_the_records(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1))
    consumed: list[Record] = []

    def stream() -> Iterator[Record]:
        for rec in records(header("F1", at(2)), [block(P1, 1)]):
            consumed.append(rec)
            yield rec

    assert warehouse.load(stream(), sha256=fake_sha("F1")).noop
    assert len(consumed) == 1  # only the header was read


def test_new_reconciliation_period_keeps_the_old_periods_rows(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1, 2, period=FEB), block(P2, 3, period=FEB))
    result = load(warehouse, "F2", at(3), block(P1, 10, period=MAR), block(P2, 30, period=MAR))
    assert (result.principals_loaded, result.principals_replaced, result.transactions_deleted) == (2, 0, 0)
    assert amounts(warehouse, P1, FEB) == [("F1", 1), ("F1", 2)]
    assert amounts(warehouse, P1, MAR) == [("F2", 10)]
    assert set(warehouse.balances()) == {(p, d.isoformat()) for p in (P1, P2) for d in (FEB, MAR)}
    # a mixed file: P1 still in the old period (late reconciliation), P2 in the new one
    result = load(warehouse, "F3", at(4), block(P1, 11, period=FEB), block(P2, 31, 32, period=MAR))
    assert result.principals_replaced == 2
    assert amounts(warehouse, P1, FEB) == [("F3", 11)]
    assert amounts(warehouse, P1, MAR) == [("F2", 10)]
    assert amounts(warehouse, P2, FEB) == [("F1", 3)]
    assert amounts(warehouse, P2, MAR) == [("F3", 31), ("F3", 32)]


def test_other_orderers_are_untouched(warehouse: Warehouse) -> None:
    other = "2120000142"  # another organisation number with a valid check digit
    load(warehouse, "F1", at(2), block(P1, 1))
    rec = records(header("G1", at(3), orderer=other), [block(P1, 5)])
    result = warehouse.load(rec, sha256=fake_sha("G1"))
    assert result.principals_replaced == 0 and result.principals_loaded == 1
    rows = warehouse.query(f"SELECT orderer, file_id FROM {warehouse.names.transactions} ORDER BY 1")
    assert sorted(rows) == sorted([(ORDERER, "F1"), (other, "G1")])


def test_expected_orderer_mismatch_fails_before_writing(warehouse: Warehouse) -> None:
    before = warehouse.dump()
    with pytest.raises(SnapshotLoadError, match=r"orderer 5560000167.*2120000142"):
        load(warehouse, "F1", at(2), block(P1, 1), expected_orderer="212000-0142")
    assert warehouse.dump() == before
    assert not load(warehouse, "F1", at(2), block(P1, 1), expected_orderer="16556000-0167").noop


def _broken(stream: Iterator[Record], after: int, exc: Exception) -> Iterator[Record]:
    for index, rec in enumerate(stream):
        if index == after:
            raise exc
        yield rec


def test_error_from_the_record_stream_rolls_back_everything(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1, 2), block(P2, 3))
    before = warehouse.dump()
    blocks = [block(P1, *range(1, 3001)), block(P2, *range(3001, 6001)), block(P3, 1)]
    stream = _broken(records(header("F2", at(3)), blocks), 5500, ValueError("bad line 5501"))
    with pytest.raises(ValueError, match="bad line 5501"):
        warehouse.load(stream, sha256=fake_sha("F2"), batch_rows=500)  # several batches were sent
    assert warehouse.dump() == before
    # the same connection is usable afterwards, and the file loads when it is whole
    assert load(warehouse, "F2", at(3), *blocks).transactions_inserted == 6001


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda recs: recs[:-1], "without a trailer"),
        (lambda recs: [*recs[:-1], FileTrailer(2, 99, 0)], "trailer declares"),
        (lambda recs: recs[1:], "first record must be the file header"),
        (lambda recs: [*recs, recs[-1]], "follows the trailer"),
        (lambda recs: [*recs[:2], *recs[1:]], "appears twice"),
        (lambda recs: [recs[0], recs[2], *recs[1:2], *recs[3:]], "outside its block"),
        (lambda recs: [*recs[:2], recs[0], *recs[2:]], "unexpected FileHeader"),
    ],
    ids=["no-trailer", "bad-counts", "no-header", "after-trailer", "duplicate", "orphan", "two-headers"],
)
def test_structural_errors_roll_back(warehouse: Warehouse, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    load(warehouse, "F0", at(1), block(P3, 7))
    before = warehouse.dump()
    recs = list(records(header("F1", at(2)), [block(P1, 1, 2), block(P2, 3)]))
    with pytest.raises(SnapshotLoadError, match=message):
        warehouse.load(mutate(recs), sha256=fake_sha("F1"))
    assert warehouse.dump() == before


def _reject_boom_rows(warehouse: Warehouse) -> None:
    """Make the database itself reject a transaction whose text is 'BOOM' (a trigger or a check constraint)."""
    n = warehouse.names
    conn = warehouse.open()
    cur = conn.cursor()
    if warehouse.on_sqlite:
        cur.execute(
            f"CREATE TRIGGER boom BEFORE INSERT ON {n.transactions} WHEN NEW.transaction_text = 'BOOM'"
            " BEGIN SELECT RAISE(ABORT, 'BOOM row rejected'); END"
        )
    else:
        cur.execute(f"ALTER TABLE {n.transactions} ADD CONSTRAINT no_boom CHECK (transaction_text <> 'BOOM')")
    conn.commit()


def test_database_error_mid_load_rolls_back(warehouse: Warehouse) -> None:
    """A constraint violation provoked by a row in the middle (after earlier batches were sent)."""
    load(warehouse, "F1", at(2), block(P1, 1), block(P2, 2))
    _reject_boom_rows(warehouse)
    before = warehouse.dump()
    blocks = [block(P1, *range(2000)), block(P3, 5, text="BOOM"), block(P4, *range(10))]
    with pytest.raises(Exception, match=r"(?i)boom"):
        load(warehouse, "F2", at(3), *blocks, batch_rows=300)
    assert warehouse.dump() == before


def test_database_error_early_in_a_long_load_fails_at_once(warehouse: Warehouse) -> None:
    """The database rejects a row of the first batch while many batches are still to come: the load raises the
    database's error (it does not wait, or hang, for the rows after it), and nothing is written."""
    _reject_boom_rows(warehouse)
    before = warehouse.dump()
    blocks = [block(P3, 5, text="BOOM"), block(P1, *range(6000)), block(P4, *range(10))]
    with pytest.raises(Exception, match=r"(?i)boom"):
        load(warehouse, "F2", at(3), *blocks, batch_rows=50)  # 120 batches after the rejected one
    assert warehouse.dump() == before
    assert load(warehouse, "F3", at(3), block(P1, 1)).transactions_inserted == 1  # the connection works on


@pytest.mark.parametrize("rows", [100, 5000], ids=["queue-full-at-the-end", "long"])
def test_load_that_waits_for_a_lock_completes_when_it_goes(warehouse: Warehouse, rows: int) -> None:
    """Another session holds a lock the load needs while the rows stream (PostgreSQL: the transactions table,
    so the COPY cannot start and the rows queue up, also when they end; SQLite: the write lock): the load
    waits and then completes, every row stored. On PostgreSQL the lock goes once the load is seen waiting
    for it (``pg_locks``), and a little later, when the rows have ended; SQLite cannot show a waiter, so
    there the lock is held for half a second."""
    import threading
    import time

    from tests.waiting import wait_until

    locked, errors = threading.Event(), []
    sqlite = warehouse.on_sqlite

    def hold_lock() -> None:  # its own connection, in its own thread
        try:
            locker = warehouse.connect()
            cur = locker.cursor()
            if sqlite:
                locker.isolation_level = None
                cur.execute("BEGIN IMMEDIATE")
            else:
                cur.execute(f"LOCK TABLE {warehouse.names.transactions} IN ACCESS EXCLUSIVE MODE")
            locked.set()
            if sqlite:
                time.sleep(0.5)
            else:

                def load_waits() -> bool:
                    cur.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                        (warehouse.names.transactions,),
                    )
                    return bool(cur.fetchone()[0])

                wait_until(load_waits, 30, "the load to wait for the lock", interval=0.01)
                time.sleep(0.2)  # the rows end (and fill the queue) while the load still waits
            locker.commit()
            locker.close()
        except BaseException as exc:
            errors.append(exc)
            locked.set()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    try:
        result = load(warehouse, "F1", at(2), block(P1, *range(rows)), batch_rows=50)
    finally:
        holder.join()
    assert errors == []
    assert result.transactions_inserted == rows
    [(stored,)] = warehouse.query(f"SELECT COUNT(*) FROM {warehouse.names.transactions}")
    assert stored == rows


def test_connection_lost_mid_load_rolls_back(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1), block(P2, 2))
    before = warehouse.dump()
    held = {"conn": warehouse.connect()}
    pg = warehouse.kind not in ("sqlite", "generic-sqlite")
    pid = None
    if pg:
        cur = held["conn"].cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        held["conn"].rollback()

    def drop_connection() -> None:
        if pg:
            killer = warehouse.connect()
            cur = killer.cursor()
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            killer.commit()
            killer.close()
        else:
            held["conn"].close()

    def stream() -> Iterator[Record]:
        for index, rec in enumerate(records(header("F2", at(3)), [block(P1, *range(3000)), block(P3, 1)])):
            if index == 200:  # early: many batches come after it
                drop_connection()
            yield rec

    failed = False
    try:
        warehouse.load(stream(), sha256=fake_sha("F2"), conn=held["conn"], batch_rows=50)
    except Exception:  # the driver's own error type for a lost connection
        failed = True
    assert failed
    # sqlite3 closes lazily (sqlite3_close_v2) until the last statement of the dead connection is freed
    held.clear()
    gc.collect()
    assert warehouse.dump() == before
    assert not load(warehouse, "F2", at(3), block(P1, 1)).noop  # a fresh connection loads it


def test_autocommit_connection_is_still_all_or_nothing(warehouse: Warehouse) -> None:
    conn = warehouse.connect()
    if warehouse.on_sqlite:
        conn.isolation_level = None
    else:
        conn.autocommit = True
    load(warehouse, "F1", at(2), block(P1, 1), conn=conn)
    before = warehouse.dump()
    stream = _broken(records(header("F2", at(3)), [block(P1, *range(100)), block(P2, 1)]), 80, ValueError("x"))
    with pytest.raises(ValueError):
        warehouse.load(stream, sha256=fake_sha("F2"), conn=conn, batch_rows=10)
    assert warehouse.dump() == before
    assert getattr(conn, "autocommit", True) is True  # restored
    conn.close()


def test_texts_with_control_characters_round_trip(warehouse: Warehouse) -> None:
    texts = ["tab\there", "back\\slash", 'semi;colon "quoted"', "\\N", "åäö ÅÄÖ €", "x" * 300]
    b = Block(P1, FEB, 0, [(FEB + dt.timedelta(days=1), t, 1, None, f"id\t{i}\\") for i, t in enumerate(texts)])
    load(warehouse, "F1", at(2), b)
    assert [text for _, _, _, text, _, _ in warehouse.transactions(P1)] == texts
    ids = warehouse.query(f"SELECT transaction_id FROM {warehouse.names.transactions} ORDER BY sequence_no")
    assert [i for (i,) in ids] == [f"id\t{i}\\" for i in range(len(texts))]


def test_nulls_and_big_amounts_are_exact(warehouse: Warehouse) -> None:
    big = 9_000_000_000_000_000  # beyond 2**53: must stay exact (BIGINT öre)
    b = Block(P1, FEB, -big, [(FEB + dt.timedelta(days=1), "a", big, None, None), (FEB, "b", None, -big, "t")])
    result = load(warehouse, "F1", at(2), b)
    assert result.amount_sum_ore == 0 and result.balance_sum_ore == -big
    rows = warehouse.query(
        "SELECT transaction_id, interest_date, amount_skatteverket_ore, amount_kronofogden_ore"
        f" FROM {warehouse.names.transactions} ORDER BY sequence_no"
    )
    assert [(r[0], r[2], r[3]) for r in rows] == [(None, big, None), ("t", None, -big)]
    [(balance, kronofogden)] = warehouse.query(
        f"SELECT balance_skatteverket_ore, balance_kronofogden_ore FROM {warehouse.names.balances}"
    )
    assert (balance, kronofogden) == (-big, None)


def test_delivery_morning_and_times_are_stored(warehouse: Warehouse) -> None:
    morning = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    result = load(warehouse, "F1", at(2), block(P1, 1), delivery_morning=morning)
    [(created, delivered, loaded)] = warehouse.query(
        f"SELECT created_at, delivery_morning, loaded_at FROM {warehouse.names.files}"
    )

    def utc(value: object) -> dt.datetime:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(parsed, dt.datetime)
        return parsed

    assert utc(created) == at(2)
    assert utc(delivered) == morning
    assert result.loaded_at is not None and utc(loaded) == dt.datetime.fromisoformat(result.loaded_at)
    assert result.created_at == "2026-03-02T05:00:00.000000+00:00"


def test_ensure_tables_is_idempotent(warehouse: Warehouse) -> None:
    load(warehouse, "F1", at(2), block(P1, 1))
    before = warehouse.dump()
    warehouse.ensure()
    warehouse.ensure()
    assert warehouse.dump() == before


@pytest.mark.parametrize(
    "prefix", ["", "1abc_", "x; DROP TABLE y; --", 'a"b', "a-b", "a b", "ä_", "a" * 41, "skattekonto.x"]
)
def test_invalid_prefix_is_rejected_before_any_sql(prefix: str) -> None:
    class NoConnection:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the connection was used ({name})")

    with pytest.raises(SnapshotLoadError, match="Invalid table prefix"):
        ensure_tables(NoConnection(), dialect="sqlite", prefix=prefix)
    with pytest.raises(SnapshotLoadError, match="Invalid table prefix"):
        from airflow_provider_skattekonto.loading import load_answer_file

        load_answer_file(
            NoConnection(), [], dialect="sqlite", file_name="f", sha256="0" * 64, delivery_morning=None, prefix=prefix
        )


def test_invalid_schema_dialect_and_sha_are_rejected() -> None:
    from airflow_provider_skattekonto.loading import load_answer_file, table_names

    with pytest.raises(SnapshotLoadError, match="Invalid schema name"):
        table_names("ok_", 'public"; --')
    with pytest.raises(SnapshotLoadError, match="Unknown dialect"):
        ensure_tables(object(), dialect="oracle")
    with pytest.raises(SnapshotLoadError, match="Invalid sha256"):
        load_answer_file(object(), [], dialect="sqlite", file_name="f", sha256="xyz", delivery_morning=None)
    assert table_names("Ok_1", "s").files == '"s"."Ok_1files"'


def test_transaction_of_a_skipped_principal_is_still_counted(warehouse: Warehouse) -> None:
    """Trailer checks cover the whole file, also the blocks that are skipped as older."""
    load(warehouse, "F2", at(3), block(P1, 1))
    recs = list(records(header("F1", at(2)), [block(P1, 5, 6), block(P2, 7)]))
    bad = [r for r in recs if not (isinstance(r, Transaction) and r.amount_skatteverket_ore == 6)]
    with pytest.raises(SnapshotLoadError, match="trailer declares"):
        warehouse.load(bad, sha256=fake_sha("F1"))
    assert len(transactions_of(block(P1, 5, 6))) == 2
