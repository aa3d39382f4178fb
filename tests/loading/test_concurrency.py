"""Concurrent loads for one orderer serialize (PostgreSQL advisory lock): no double snapshot, no lost update."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from airflow_provider_skattekonto.domain.records import Record
from airflow_provider_skattekonto.loading import LoadResult
from tests.waiting import wait_until

from .builders import at, fake_sha, header, org_principal, records
from .conftest import Warehouse
from .test_snapshot import amounts, block

P1, P2 = org_principal(1), org_principal(2)


def _waiting_advisory_locks(wh: Warehouse) -> int:
    [(n,)] = wh.query("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    return int(n)


def test_an_older_file_loaded_concurrently_waits_and_then_skips(pg_warehouse: Warehouse) -> None:
    pg_warehouse.load(records(header("F1", at(1)), [block(P1, 1), block(P2, 2)]), sha256=fake_sha("F1"))
    inside, release = threading.Event(), threading.Event()
    results: dict[str, LoadResult] = {}
    errors: list[BaseException] = []

    def paused(stream: Iterator[Record]) -> Iterator[Record]:
        yield next(stream)  # the header: the loader takes the lock and writes the files row after it
        inside.set()
        assert release.wait(60)
        yield from stream

    def run(name: str, stream: Iterator[Record]) -> None:
        conn = pg_warehouse.connect()
        try:
            results[name] = pg_warehouse.load(stream, sha256=fake_sha(name), conn=conn)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    newer = paused(records(header("F3", at(3)), [block(P1, 31, 32)]))
    older = records(header("F2", at(2)), [block(P1, 21), block(P2, 22)])
    a = threading.Thread(target=run, args=("F3", newer))
    b = threading.Thread(target=run, args=("F2", older))
    a.start()
    try:
        assert inside.wait(60)
        b.start()
        wait_until(
            lambda: _waiting_advisory_locks(pg_warehouse), 60, "the second load to wait for the first", interval=0.05
        )
    finally:
        release.set()
        a.join(60)
        if b.is_alive() or b.ident is not None:
            b.join(60)
    assert not errors, errors
    assert results["F3"].principals_replaced == 1
    # B ran after A committed: P1's snapshot is from a newer file now, P2's is older than B's
    assert (results["F2"].principals_skipped_older, results["F2"].principals_replaced) == (1, 1)
    assert amounts(pg_warehouse, P1) == [("F3", 31), ("F3", 32)]
    assert amounts(pg_warehouse, P2) == [("F2", 22)]


def test_the_same_file_loaded_twice_concurrently_loads_once(pg_warehouse: Warehouse) -> None:
    inside, release = threading.Event(), threading.Event()
    results: list[Any] = []

    def paused(stream: Iterator[Record]) -> Iterator[Record]:
        yield next(stream)
        inside.set()
        assert release.wait(60)
        yield from stream

    def run(stream: Iterator[Record]) -> None:
        conn = pg_warehouse.connect()
        try:
            results.append(pg_warehouse.load(stream, sha256=fake_sha("F1"), conn=conn))
        except BaseException as exc:
            results.append(exc)
        finally:
            conn.close()

    blocks = [block(P1, 1, 1, 1)]
    a = threading.Thread(target=run, args=(paused(records(header("F1", at(1)), blocks)),))
    b = threading.Thread(target=run, args=(records(header("F1", at(1)), blocks),))
    a.start()
    try:
        assert inside.wait(60)
        b.start()
        wait_until(
            lambda: _waiting_advisory_locks(pg_warehouse), 60, "the second load to wait for the first", interval=0.05
        )
    finally:
        release.set()
        a.join(60)
        if b.ident is not None:
            b.join(60)
    assert sorted(r.noop for r in results) == [False, True], results
    assert amounts(pg_warehouse, P1) == [("F1", 1)] * 3


def test_loads_run_read_committed_even_when_the_database_default_is_repeatable_read(
    pg_warehouse: Warehouse,
) -> None:
    """A second load that waited for the first sees its rows (no UniqueViolation from an old snapshot)."""
    inside, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def connect() -> Any:
        conn = pg_warehouse.connect()
        cur = conn.cursor()
        cur.execute("SET default_transaction_isolation = 'repeatable read'")
        cur.close()
        conn.commit()
        return conn

    def paused(stream: Iterator[Record]) -> Iterator[Record]:
        yield next(stream)
        inside.set()
        assert release.wait(60)
        yield from stream

    def run(name: str, stream: Iterator[Record]) -> None:
        conn = connect()
        try:
            results[name] = pg_warehouse.load(stream, sha256=fake_sha(name), conn=conn)
        except BaseException as exc:  # reported below
            results[name] = exc
        finally:
            conn.close()

    a = threading.Thread(target=run, args=("F3", paused(records(header("F3", at(3)), [block(P1, 31)]))))
    b = threading.Thread(target=run, args=("F2", records(header("F2", at(2)), [block(P1, 21), block(P2, 22)])))
    a.start()
    try:
        assert inside.wait(60)
        b.start()
        wait_until(
            lambda: _waiting_advisory_locks(pg_warehouse), 60, "the second load to wait for the first", interval=0.05
        )
    finally:
        release.set()
        a.join(60)
        if b.ident is not None:
            b.join(60)
    assert all(isinstance(r, LoadResult) for r in results.values()), results
    assert (results["F2"].principals_skipped_older, results["F2"].principals_loaded) == (1, 1)
    assert amounts(pg_warehouse, P1) == [("F3", 31)]
