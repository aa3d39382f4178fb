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


class _Pause:
    """Pauses a record stream inside its load, after the header (the loader holds the orderer's lock then)."""

    def __init__(self) -> None:
        self.inside, self.release = threading.Event(), threading.Event()

    def stream(self, stream: Iterator[Record]) -> Iterator[Record]:
        yield next(stream)  # the header: the loader takes the lock and writes the files row after it
        self.inside.set()
        assert self.release.wait(60)
        yield from stream


def _second_waits_for_first(wh: Warehouse, pause: _Pause, first: threading.Thread, second: threading.Thread) -> None:
    """Run ``first`` (whose stream ``pause`` holds inside its load), start ``second`` and let ``first`` go on
    once ``second`` waits for the lock; both have ended when this returns."""
    first.start()
    try:
        assert pause.inside.wait(60)
        second.start()
        wait_until(lambda: _waiting_advisory_locks(wh), 60, "the second load to wait for the first", interval=0.05)
    finally:
        pause.release.set()
        first.join(60)
        if second.ident is not None:
            second.join(60)


def test_an_older_file_loaded_concurrently_waits_and_then_skips(pg_warehouse: Warehouse) -> None:
    pg_warehouse.load(records(header("F1", at(1)), [block(P1, 1), block(P2, 2)]), sha256=fake_sha("F1"))
    pause = _Pause()
    results: dict[str, LoadResult] = {}
    errors: list[BaseException] = []

    def run(name: str, stream: Iterator[Record]) -> None:
        conn = pg_warehouse.connect()
        try:
            results[name] = pg_warehouse.load(stream, sha256=fake_sha(name), conn=conn)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    newer = pause.stream(records(header("F3", at(3)), [block(P1, 31, 32)]))
    older = records(header("F2", at(2)), [block(P1, 21), block(P2, 22)])
    a = threading.Thread(target=run, args=("F3", newer))
    b = threading.Thread(target=run, args=("F2", older))
    _second_waits_for_first(pg_warehouse, pause, a, b)
    assert not errors, errors
    assert results["F3"].principals_replaced == 1
    # B ran after A committed: P1's snapshot is from a newer file now, P2's is older than B's
    assert (results["F2"].principals_skipped_older, results["F2"].principals_replaced) == (1, 1)
    assert amounts(pg_warehouse, P1) == [("F3", 31), ("F3", 32)]
    assert amounts(pg_warehouse, P2) == [("F2", 22)]


def test_the_same_file_loaded_twice_concurrently_loads_once(pg_warehouse: Warehouse) -> None:
    pause = _Pause()
    results: list[Any] = []

    def run(stream: Iterator[Record]) -> None:
        conn = pg_warehouse.connect()
        try:
            results.append(pg_warehouse.load(stream, sha256=fake_sha("F1"), conn=conn))
        except BaseException as exc:
            results.append(exc)
        finally:
            conn.close()

    blocks = [block(P1, 1, 1, 1)]
    a = threading.Thread(target=run, args=(pause.stream(records(header("F1", at(1)), blocks)),))
    b = threading.Thread(target=run, args=(records(header("F1", at(1)), blocks),))
    _second_waits_for_first(pg_warehouse, pause, a, b)
    assert sorted(r.noop for r in results) == [False, True], results
    assert amounts(pg_warehouse, P1) == [("F1", 1)] * 3


def test_loads_run_read_committed_even_when_the_database_default_is_repeatable_read(
    pg_warehouse: Warehouse,
) -> None:
    """A second load that waited for the first sees its rows (no UniqueViolation from an old snapshot)."""
    pause = _Pause()
    results: dict[str, Any] = {}

    def connect() -> Any:
        conn = pg_warehouse.connect()
        cur = conn.cursor()
        cur.execute("SET default_transaction_isolation = 'repeatable read'")
        cur.close()
        conn.commit()
        return conn

    def run(name: str, stream: Iterator[Record]) -> None:
        conn = connect()
        try:
            results[name] = pg_warehouse.load(stream, sha256=fake_sha(name), conn=conn)
        except BaseException as exc:  # reported below
            results[name] = exc
        finally:
            conn.close()

    a = threading.Thread(target=run, args=("F3", pause.stream(records(header("F3", at(3)), [block(P1, 31)]))))
    b = threading.Thread(target=run, args=("F2", records(header("F2", at(2)), [block(P1, 21), block(P2, 22)])))
    _second_waits_for_first(pg_warehouse, pause, a, b)
    assert all(isinstance(r, LoadResult) for r in results.values()), results
    assert (results["F2"].principals_skipped_older, results["F2"].principals_loaded) == (1, 1)
    assert amounts(pg_warehouse, P1) == [("F3", 31)]
