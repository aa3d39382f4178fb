"""Fault drills (issue 5): each fault the service, the network, the disk or the worker can throw at the chain,
against real parts (the sandbox over mutual TLS, Airflow's ``dag.test()``, SQLite files, PostgreSQL).

Every drill states its outcome, proves that nothing was lost or counted twice (row counts and sums equal
the file's trailer), and proves that no secret reached any log (the ``drill`` fixture, at teardown).
``benchmarks/fault_drills.py`` runs this module and prints the table; ``docs/fault-drills.md`` holds it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.answer_file import AnswerFileError
from airflow_provider_skattekonto.domain.remote_files import UnsafeRemoteNameError, check_remote_name
from airflow_provider_skattekonto.exceptions import (
    CertificateError,
    ServiceClosedError,
    SkattekontoApiError,
    TokenError,
)
from airflow_provider_skattekonto.hooks.etransport import (
    DEFAULT_FILE_PATTERN,
    DownloadError,
    ETransportHook,
    _remote_from_listing,
)
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
from airflow_provider_skattekonto.loading import FileChecksumError
from airflow_provider_skattekonto.sandbox import data
from tests.drills._support import (
    MONDAY,
    ORDERER,
    PG_DSN,
    TUESDAY,
    WEDNESDAY,
    FileFacts,
    Warehouse,
    break_amount,
    dag,
    file_facts,
    flip_text_byte,
    other_digit,
    quiet,
    requests_on,
    sqlite_connection,
    sqlite_warehouse,
    stockholm,
    try_numbers,
    when,
)
from tests.inbox_files import write_inbox_answer_file
from tests.loading.builders import at, file_bytes, header, random_blocks
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def bestall_dag(**kwargs: Any) -> tuple[str, str]:
    args = "".join(f", {k}={v}" for k, v in kwargs.items())
    return dag(f"BestallOperator(task_id='bestall'{args})")


def place_order(sandbox: Any, moment: dt.datetime) -> None:
    """An accepted order at ``moment`` through the hook (no fault active)."""
    sandbox.clock.set(now=moment, speed=1.0)
    hook = SkattekontoHook()
    try:
        hook.bestall()
    finally:
        hook.close()


def archived(stored: Any) -> Path:
    return Path(str(stored.path).removeprefix("file://"))


# =================================================================================================
# 1. 429 storms
# =================================================================================================


def test_429_storm_from_the_rate_limiter(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("429 storm", "the sandbox's real rate limiter (3 calls/s, burst 2); 6 concurrent orders")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    sandbox.configure(rate_limit_per_second=3.0, rate_limit_burst=2)
    connect(retry_max_seconds=60)
    hooks = [SkattekontoHook() for _ in range(6)]
    try:
        with ThreadPoolExecutor(len(hooks)) as pool:
            results = list(pool.map(lambda hook: hook.bestall(), hooks))
    finally:
        for hook in hooks:
            hook.close()

    refused = requests_on(sandbox, "bestall", 429)
    orders = sandbox.orders()
    assert refused >= 1
    assert requests_on(sandbox, "bestall", 202) == 6
    assert len(orders) == 6
    assert sorted(o.client_correlation_id for o in orders) == sorted(r.correlation_id for r in results)
    assert sandbox.stats()["reused_client_correlation_ids"] == 0
    drill.result(
        f"all 6 accepted after {refused} x 429 (Retry-After honoured)",
        "6 orders for 6 calls, 6 distinct correlation ids, none reused",
    )
    drill.check_secrets(*(hook.tokens._token for hook in hooks))


def test_429_storm_then_success(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("429 storm", "4 x 429 in a row (2 without, 2 with Retry-After: 1), then 202")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_max_seconds=30)
    sandbox.faults.status("bestall", 429, times=2)
    sandbox.faults.status("bestall", 429, times=2, retry_after=1)
    hook = SkattekontoHook()
    try:
        result = hook.bestall()
    finally:
        hook.close()
    assert result.status == 202
    assert requests_on(sandbox, "bestall", 429) == 4 and requests_on(sandbox, "bestall", 202) == 1
    assert [o.client_correlation_id for o in sandbox.orders()] == [result.correlation_id]
    assert hook.tokens.fetched == 1
    drill.result("accepted on the 5th attempt; one token reused throughout", "exactly 1 order")
    drill.check_secrets(hook.tokens._token)


def test_429_storm_longer_than_the_retry_budget(sandbox: Any, connect: Any, drill: Any, run_dag_file: Any) -> None:
    drill.describe("429 storm", "429 until cleared, Retry-After 5 s > retry budget 2 s; then a DAG with retries=2")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_max_seconds=2)
    storm = sandbox.faults.status("bestall", 429, times=None, retry_after=5)
    hook = SkattekontoHook()
    with pytest.raises(SkattekontoApiError) as caught:
        hook.bestall()
    hook.close()
    error = caught.value
    drill.scan(error)
    assert error.status == 429 and error.retryable
    assert "Gave up after 1 attempt(s) within the retry budget of 2 s" in str(error)
    assert "To many requests" in str(error)
    assert sandbox.orders() == []

    # The storm outlasts two task tries; Airflow's third try gets through: exactly one order in total.
    sandbox.faults.clear(storm.id)
    sandbox.faults.status("bestall", 429, times=2, retry_after=5)
    results = run_dag_file(*bestall_dag(retries=2, retry_delay="dt.timedelta(0)"))
    state, xcom = results["bestall"]
    assert state == "success", results
    assert requests_on(sandbox, "bestall", 429) == 3  # the hook: 1 (then it gave up); the DAG: 1 per failed try
    orders = sandbox.orders()
    assert [o.client_correlation_id for o in orders] == [xcom["correlation_id"]]
    drill.result(
        "hook: clear retryable failure 'Gave up after 1 attempt(s) within the retry budget'; DAG: tries 1-2 "
        "fail the same way, try 3 orders",
        "0 orders after the failed run; exactly 1 after the DAG (3 tries)",
    )


# =================================================================================================
# 2. 500 / 503 (plain text) / 504 on bestall
# =================================================================================================


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_on_bestall_is_retried_into_one_order(sandbox: Any, connect: Any, drill: Any, status: int) -> None:
    body = "plain text 'Service not available for request uri: ...'" if status == 503 else "JSON"
    drill.describe("500/503/504 on bestall", f"HTTP {status} ({body}) twice, then 202")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_delay_seconds=0.2)
    sandbox.faults.status("bestall", status, times=2)
    hook = SkattekontoHook()
    try:
        result = hook.bestall()
    finally:
        hook.close()
    assert result.status == 202
    assert requests_on(sandbox, "bestall", status) == 2 and requests_on(sandbox, "bestall", 202) == 1
    assert [o.client_correlation_id for o in sandbox.orders()] == [result.correlation_id]
    drill.result("retried after the configured delay; accepted on the 3rd attempt", "exactly 1 order")
    drill.check_secrets(hook.tokens._token)


def test_503_plain_text_in_a_dag_run(sandbox: Any, connect: Any, drill: Any, run_dag_file: Any) -> None:
    drill.describe("500/503/504 on bestall", "BestallOperator in dag.test(): 503 (plain text), 500, 504, then 202")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_delay_seconds=0.2)
    for status in (503, 500, 504):
        sandbox.faults.status("bestall", status)
    state, xcom = run_dag_file(*bestall_dag())["bestall"]
    assert state == "success"
    orders = sandbox.orders()
    assert [o.client_correlation_id for o in orders] == [xcom["correlation_id"]]
    assert xcom["delivery_morning"] == stockholm(TUESDAY, 7).isoformat()
    drill.result("task succeeded on the 4th attempt within one try", "exactly 1 order, for Tuesday's file")


# =================================================================================================
# 3. Slow answers beyond the timeout, and lost answers
# =================================================================================================


def test_slow_answer_beyond_the_timeout(sandbox: Any, connect: Any, drill: Any, tmp_path: Path) -> None:
    drill.describe(
        "slow answer beyond the timeout",
        "bestall answers after 2.5 s, client timeout 1 s; then the loader faces the extra file",
    )
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(timeout=1, retry_delay_seconds=0.2, archive_url=(tmp_path / "archive").as_uri())
    sandbox.faults.slow("bestall", 2.5)
    hook = SkattekontoHook()
    try:
        result = hook.bestall()
    finally:
        hook.close()
    quiet(sandbox)  # the timed-out request is still being handled: let the sandbox finish it
    orders = sandbox.orders()
    assert result.status == 202
    # The service processed the timed-out call after all: one logical order became two accepted ones.
    assert len(orders) == 2
    assert result.correlation_id in {o.client_correlation_id for o in orders}
    assert {o.delivery_morning for o in orders} == {stockholm(TUESDAY, 7)}
    data_check = _duplicate_orders_are_harmless(sandbox, tmp_path)
    drill.result(
        "retried after the timeout and accepted; the timed-out call was ALSO processed: 2 orders for 1 "
        "logical order (same morning)",
        data_check,
    )


def test_lost_answer_order_recorded_then_504(sandbox: Any, connect: Any, drill: Any, tmp_path: Path) -> None:
    drill.describe("slow answer beyond the timeout", "lost answer: order recorded, client sees 504 (after=True)")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_delay_seconds=0.2, archive_url=(tmp_path / "archive").as_uri())
    sandbox.faults.status("bestall", 504, after=True)
    hook = SkattekontoHook()
    try:
        result = hook.bestall()
    finally:
        hook.close()
    orders = sandbox.orders()
    assert len(orders) == 2  # the first (answered 504) was recorded too
    assert orders[1].client_correlation_id == result.correlation_id
    assert orders[0].client_correlation_id != result.correlation_id
    assert {o.delivery_morning for o in orders} == {stockholm(TUESDAY, 7)}
    data_check = _duplicate_orders_are_harmless(sandbox, tmp_path)
    drill.result("retried and accepted: 2 orders for 1 logical order (same morning)", data_check)


def test_lost_answer_across_task_retries(sandbox: Any, connect: Any, drill: Any, run_dag_file: Any) -> None:
    drill.describe(
        "slow answer beyond the timeout",
        "lost answer in dag.test(): order recorded, 504 (after=True), retry budget 0, task retries=1",
    )
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_max_seconds=0)
    sandbox.faults.status("bestall", 504, after=True)
    results = run_dag_file(*bestall_dag(retries=1, retry_delay="dt.timedelta(0)"))
    state, xcom = results["bestall"]
    assert state == "success", results
    orders = sandbox.orders()
    assert len(orders) == 2
    assert orders[1].client_correlation_id == xcom["correlation_id"]
    assert {o.delivery_morning for o in orders} == {stockholm(TUESDAY, 7)}
    text = drill._read_logs()
    assert "Try 2 orders again" in text
    remembered = "a previous try sent an order whose answer never arrived" in text
    drill.result(
        "try 1 fails (504), try 2 orders again with a warning"
        + (" naming the unanswered order (task_state_store)" if remembered else "")
        + ": 2 orders, same morning (the file covers both)",
        "2 accepted orders -> 1 file for the morning",
    )


def _duplicate_orders_are_harmless(sandbox: Any, tmp_path: Path) -> str:
    """Two orders for Tuesday: one file is produced; a second file (as if one per order) is harmless."""
    sandbox.clock.set(now=stockholm(TUESDAY, 7, 5), speed=1.0)
    hook = ETransportHook()
    try:
        assert len(hook.list_files(delivery_date=TUESDAY)) == 1  # two orders, one morning: one file
        sandbox.produce_file(TUESDAY)  # suppose Skatteverket answered each order with its own file
        files = hook.list_files(delivery_date=TUESDAY)
        assert len(files) == 2
        paths = [archived(hook.download(remote)) for remote in files]
    finally:
        hook.close()
    facts = [file_facts(path) for path in paths]
    wh = sqlite_warehouse(tmp_path)
    loaded = [wh.load(path) for path in paths]
    again = [wh.load(path) for path in paths]
    assert not any(r.noop for r in loaded) and all(r.noop for r in again)
    newest = max(facts, key=lambda f: (f.created_at, f.file_id))
    check = wh.check(newest)
    return f"1 file per morning; a 2nd file for it: newest wins, reloads are no-ops; {check}"


# =================================================================================================
# 4. Connection dropped mid-response (bestall) and mid-download (E-transport)
# =================================================================================================


@pytest.mark.parametrize(
    "kind, orders",
    [
        ("drop", 1),  # closed before the request was processed
        ("drop_mid_response", 2),  # processed, then the answer was cut: a lost answer
    ],
)
def test_connection_dropped_on_bestall(sandbox: Any, connect: Any, drill: Any, kind: str, orders: int) -> None:
    drill.describe(
        "connection dropped (bestall)",
        "closed without an answer" if kind == "drop" else "order recorded, then the answer cut mid-body",
    )
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(retry_delay_seconds=0.2)
    sandbox.faults.add(kind, "bestall")
    hook = SkattekontoHook()
    try:
        result = hook.bestall()
    finally:
        hook.close()
    accepted = sandbox.orders()
    assert len(accepted) == orders
    assert accepted[-1].client_correlation_id == result.correlation_id
    assert {o.delivery_morning for o in accepted} == {stockholm(TUESDAY, 7)}
    drill.result(
        "retried and accepted" + ("" if orders == 1 else "; the cut answer's order was recorded too"),
        f"{orders} order{'s' if orders > 1 else ''}"
        + (" (lost answer: same morning, one file; see the duplicate-file drill)" if orders > 1 else ""),
    )


@pytest.fixture
def monday_file(sandbox: Any, connect: Any, tmp_path: Path) -> Any:
    """An order placed Monday 01:00, the clock at 07:05: Monday's file (about 2 MB, so a broken stream
    leaves whole 1 MiB chunks to resume from) is on E-transport (listed)."""
    connect(retry_delay_seconds=0.2, archive_url=(tmp_path / "archive").as_uri())
    sandbox.configure(principals_per_orderer=200, transactions_per_principal=90)
    place_order(sandbox, stockholm(MONDAY, 1))
    sandbox.clock.set(now=stockholm(MONDAY, 7, 5), speed=1.0)
    hook = ETransportHook()
    try:
        [remote] = hook.list_files(delivery_date=MONDAY)
    finally:
        hook.close()
    return remote


@pytest.mark.parametrize("kind", ["drop_mid_response", "truncate", "corrupt"])
def test_broken_download_is_resumed_and_intact(
    sandbox: Any, monday_file: Any, drill: Any, tmp_path: Path, kind: str
) -> None:
    group = "connection dropped mid-download" if kind == "drop_mid_response" else "truncated / corrupted file"
    what = {
        "drop_mid_response": "connection closed after half the body",
        "truncate": "fewer bytes than Content-Length, then closed",
        "corrupt": "one byte flipped in the middle (same length)",
    }[kind]
    drill.describe(group, f"E-transport download: {what}, once")
    sandbox.faults.add(kind, "etransport_download")
    hook = ETransportHook()
    try:
        stored = hook.download(monday_file)
    finally:
        hook.close()
    path = archived(stored)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == monday_file.sha256 == stored.sha256
    assert path.stat().st_size == monday_file.size
    assert sorted(p.name for p in path.parent.iterdir()) == [monday_file.name]  # no .part file left
    if kind == "corrupt":
        assert requests_on(sandbox, "etransport_download", 200) == 2  # checksum mismatch: start over
        how = "checksum mismatch detected, downloaded again"
    else:
        assert requests_on(sandbox, "etransport_download", 206) >= 1  # resumed with Range
        how = "resumed with Range after the last whole chunk received"
    wh = sqlite_warehouse(tmp_path)
    wh.load(path, sha256=stored.sha256, size=stored.size)
    drill.result(f"{how}; archived file's SHA-256 = the listed one", wh.check(file_facts(path)))


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_persistently_broken_download_archives_nothing(
    sandbox: Any, monday_file: Any, drill: Any, tmp_path: Path, kind: str
) -> None:
    drill.describe("truncated / corrupted file", f"E-transport download: {kind} on every attempt")
    sandbox.faults.add(kind, "etransport_download", times=None)
    hook = ETransportHook(download_attempts=2)
    try:
        with pytest.raises(DownloadError) as caught:
            hook.download(monday_file)
    finally:
        hook.close()
    drill.scan(caught.value)
    message = str(caught.value)
    assert "Nothing was archived" in message and monday_file.name in message
    assert ("truncated" if kind == "truncate" else "corrupt") in message or "kept breaking" in message
    folder = tmp_path / "archive" / ORDERER / MONDAY.isoformat()
    assert list(folder.iterdir()) == []  # neither the file nor a partial one
    assert caught.value.retryable
    drill.result(f"DownloadError (retryable): {message[:90]}...", "archive empty (no file, no .part)")


# =================================================================================================
# 5. The service window closes mid-run
# =================================================================================================


def test_window_closes_during_retries_hook(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe(
        "service window closes mid-run",
        "02:59:59 (clock frozen): bestall 500; during the retry delay the clock moves to 03:00",
    )
    sandbox.clock.set(now=stockholm(TUESDAY, 2, 59, 59), speed=0.0)
    connect(retry_delay_seconds=0.5)
    sandbox.faults.status("bestall", 500, times=None)
    hook = SkattekontoHook()
    closing = lambda: sandbox.clock.set(now=stockholm(TUESDAY, 3, 0, 0), speed=60.0)  # noqa: E731
    try:
        with (
            when(lambda: requests_on(sandbox, "bestall") >= 1, closing) as fired,
            pytest.raises(ServiceClosedError) as caught,
        ):
            hook.bestall()
        assert fired.is_set()
    finally:
        hook.close()
    drill.scan(caught.value)
    assert caught.value.opens_at == stockholm(TUESDAY, 5)
    assert caught.value.retryable
    assert requests_on(sandbox, "bestall") == 1  # no call into the closed window
    assert sandbox.orders() == []
    drill.result(f"ServiceClosedError: {str(caught.value)[:60]}...", "0 orders; no call made while closed")


def test_window_closes_during_retries_operator_defers(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any
) -> None:
    drill.describe(
        "service window closes mid-run",
        "dag.test(): bestall 500 at 02:59:59; the clock moves to 03:00 (x2400) during the retry delay",
    )
    sandbox.clock.set(now=stockholm(TUESDAY, 2, 59, 59), speed=0.0)
    connect(retry_delay_seconds=0.3)
    sandbox.faults.status("bestall", 500)
    # 0.3 s later the hook finds ~03:12 (closed); 05:00 comes ~3 s later, in the ServiceTimeTrigger's wait
    closing = lambda: sandbox.clock.set(now=stockholm(TUESDAY, 3, 0, 0), speed=2400.0)  # noqa: E731
    with when(lambda: requests_on(sandbox, "bestall") >= 1, closing) as fired:
        state, xcom = run_dag_file(*bestall_dag())["bestall"]
    assert fired.is_set()
    assert state == "success"
    [order] = sandbox.orders()
    assert order.client_correlation_id == xcom["correlation_id"]
    assert dt.datetime.fromisoformat(xcom["ordered_at"]) >= stockholm(TUESDAY, 5)
    # The attempt before 03:00 would have made Tuesday's file; the order placed after 05:00 makes Wednesday's.
    assert xcom["delivery_morning"] == stockholm(WEDNESDAY, 7).isoformat()
    text = drill._read_logs()
    assert "Waiting until 2026-12-01T05:00:00+01:00 (service closed) before ordering" in text
    drill.result(
        "ServiceClosedError -> deferred (ServiceTimeTrigger) until 05:00, then ordered; lands in "
        "Wednesday's file (the 02:59 attempt would have made Tuesday's)",
        "exactly 1 order, placed after 05:00",
    )


# =================================================================================================
# 6. An access token expires mid-run
# =================================================================================================


def test_token_expires_mid_run(sandbox: Any, connect: Any, drill: Any, run_dag_file: Any) -> None:
    drill.describe(
        "expired token mid-run",
        "dag.test(), refresh-token grant: every token expires while bestall is in flight (expire_tokens)",
    )
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(grant_type="refresh_token")
    sandbox.faults.slow("bestall", 0.5)  # the token is checked after this pause
    issued = lambda: sum(sandbox.stats()["tokens_issued"].values()) >= 1  # noqa: E731
    with when(issued, sandbox.faults.expire_tokens) as fired:
        state, xcom = run_dag_file(*bestall_dag())["bestall"]
    assert fired.is_set()
    assert state == "success"
    assert requests_on(sandbox, "bestall", 401) == 1 and requests_on(sandbox, "bestall", 202) == 1
    assert requests_on(sandbox, "token_org") == 2  # refreshed exactly once
    assert [o.client_correlation_id for o in sandbox.orders()] == [xcom["correlation_id"]]
    assert "fetching a new token and trying once more" in drill._read_logs()
    drill.result("401 -> new token (once) -> 202", "exactly 1 order; 2 tokens issued")


# =================================================================================================
# 7. A file late past its deadline
# =================================================================================================


def sensor_line(*, deadline: str = "10:00", poll: int = 60, morning: dt.date = MONDAY) -> str:
    return (
        f"wait = ETransportFileSensor(task_id='wait_for_file', delivery_morning={stockholm(morning, 7).isoformat()!r}, "
        f"deadline_time={deadline!r}, poll_interval={poll})"
    )


def test_file_late_past_its_deadline(sandbox: Any, connect: Any, drill: Any, run_dag_file: Any, tmp_path: Path) -> None:
    drill.describe(
        "file late past its deadline",
        "Monday's file delivered 10:20 (late 200 min); sensor deadline 10:00, then a run with deadline 11:00",
    )
    connect(archive_url=(tmp_path / "archive").as_uri())
    place_order(sandbox, stockholm(MONDAY, 1))
    sandbox.faults.add("late", minutes=200, morning=MONDAY)
    sandbox.clock.set(now=stockholm(MONDAY, 10, 5), speed=0.0)  # past the deadline, before the late file
    state, _ = run_dag_file(*dag(sensor_line()))["wait_for_file"]
    assert state == "failed"
    text = drill._read_logs()
    message = "No answer file for the delivery morning 2026-11-30 07:00 on E-transport at"
    assert message in text and "by the deadline 10:00 (now 2026-11-30 10:05)" in text
    assert "Was the order placed before the cutoff 2026-11-30 03:00" in text and "closed_dates" in text
    assert requests_on(sandbox, "etransport_download") == 0

    sandbox.clock.set(now=stockholm(MONDAY, 10, 15), speed=600.0)  # the file comes 5 sandbox minutes later
    state, xcom = run_dag_file(*dag(sensor_line(deadline="11:00")))["wait_for_file"]
    assert state == "success"
    assert dt.datetime.fromisoformat(xcom["delivered_at"]) == stockholm(MONDAY, 10, 20)
    path = Path(xcom["path"].removeprefix("file://"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == xcom["sha256"]
    wh = sqlite_warehouse(tmp_path)
    wh.load(path, sha256=xcom["sha256"], size=xcom["size"])
    drill.result(
        "deadline 10:00: task failed with the actionable message (deadline, cutoff, correlation id, "
        "closed_dates); deadline 11:00: waited, found the 10:20 file, archived it",
        wh.check(file_facts(path)),
    )


# =================================================================================================
# 8. Truncated / corrupted files on disk (the archive) before the load
# =================================================================================================


def earlier_file(folder: Path) -> Path:
    """A small, valid answer file of the same orderer (other principals): the tables are not empty."""
    path = folder / f"SKAHMST_{ORDERER}_20261127_001.txt"
    path.write_bytes(
        file_bytes(header("EARLIER-1", at(27)), random_blocks(3, 4, seed=5, reconciled_on=dt.date(2026, 11, 7)))
    )
    return path


def test_archive_file_corrupted_before_the_load_dag(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    drill.describe(
        "truncated / corrupted file",
        "dag.test(): sensor downloads; one letter of the archived file changes on disk; then the load",
    )
    connect(archive_url=(tmp_path / "archive").as_uri())
    place_order(sandbox, stockholm(MONDAY, 1))
    sandbox.clock.set(now=stockholm(MONDAY, 7, 5), speed=1.0)
    wh = sqlite_warehouse(tmp_path)
    earlier = earlier_file(tmp_path)
    wh.load(earlier)
    before = wh.dump()
    conn_id = sqlite_connection(monkeypatch, wh.database)  # type: ignore[arg-type]
    results = run_dag_file(
        *dag(
            sensor_line(),
            "@task(task_id='bit_rot')",
            "def bit_rot(file):",
            "    from tests.drills._support import flip_text_byte",
            "    flip_text_byte(Path(file['path'].removeprefix('file://')))",
            "    return file",
            f"SkattekontoToSqlOperator(task_id='load', file=bit_rot(wait.output), sql_conn_id={conn_id!r})",
        )
    )
    assert results["wait_for_file"][0] == "success" and results["bit_rot"][0] == "success"
    assert results["load"][0] == "failed"
    assert "sha256 of the bytes read is" in drill._read_logs()
    assert wh.dump() == before

    # Recovery: a rerun finds the archived copy's checksum wrong, downloads the file again and loads it.
    rerun = run_dag_file(
        *dag(sensor_line(), f"SkattekontoToSqlOperator(task_id='load', file=wait.output, sql_conn_id={conn_id!r})")
    )
    assert rerun["wait_for_file"][0] == "success" and rerun["load"][0] == "success", rerun
    assert rerun["wait_for_file"][1]["already_archived"] is False
    assert requests_on(sandbox, "etransport_download") == 2
    path = Path(rerun["wait_for_file"][1]["path"].removeprefix("file://"))
    check = wh.check(file_facts(earlier), file_facts(path))
    drill.result(
        "load task failed at once: FileChecksumError 'sha256 of the bytes read is ..., expected ...'; a rerun "
        "re-downloaded the damaged archive copy and loaded it",
        "tables unchanged by the failed load (exact dump); after the rerun: " + check,
    )


@pytest.mark.parametrize("damage", ["text", "amount", "truncated"])
def test_corrupted_file_is_refused_by_the_loader(warehouse: Warehouse, drill: Any, tmp_path: Path, damage: str) -> None:
    what = {
        "text": "one letter of a transaction text changed (parses; only the checksum tells)",
        "amount": "one digit of an amount changed (each line parses; the trailer's control sum tells)",
        "truncated": "the file cut in the middle of a line",
    }[damage]
    drill.describe("truncated / corrupted file", f"archived file on disk, {warehouse.dialect}: {what}")
    source = tmp_path / f"SKAHMST_{ORDERER}_20261130_001.txt"
    size, sha = data.write_answer_file(
        source,
        orderer=ORDERER,
        delivery_morning=stockholm(MONDAY, 7),
        created_at=stockholm(MONDAY, 6, 40),
        file_id="MONDAY-1",
        seed=7,
        principals=20,
        transactions_per_principal=8,
    )
    warehouse.load(earlier_file(tmp_path))
    before = warehouse.dump()
    if damage == "text":
        flip_text_byte(source)
    elif damage == "amount":
        break_amount(source, other_digit)
    else:
        source.write_bytes(source.read_bytes()[: size // 2])
    expected: type[Exception] = {
        "text": FileChecksumError,
        "amount": AnswerFileError,
        "truncated": FileChecksumError,  # the size check fires when the stream ends, before the cut line
    }[damage]
    with pytest.raises(expected) as caught:
        warehouse.load(source, sha256=sha, size=size)  # the checksum and size the sensor recorded
    drill.scan(caught.value)
    assert source.name in str(caught.value)
    assert warehouse.dump() == before
    refusal = f"{type(caught.value).__name__}: {str(caught.value)[:80]}..."
    drill.result(f"refused: {refusal}", "tables unchanged (exact dump)")


# =================================================================================================
# 9. Duplicate deliveries
# =================================================================================================


def test_duplicate_listing_then_the_same_file_again(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    drill.describe(
        "duplicate delivery",
        "dag.test() sensor >> load: E-transport lists the file twice; then the whole DAG runs again",
    )
    connect(archive_url=(tmp_path / "archive").as_uri())
    place_order(sandbox, stockholm(MONDAY, 1))
    sandbox.clock.set(now=stockholm(MONDAY, 7, 5), speed=1.0)
    sandbox.faults.add("duplicate_listing", times=None)
    wh = sqlite_warehouse(tmp_path)
    conn_id = sqlite_connection(monkeypatch, wh.database)  # type: ignore[arg-type]
    lines = (sensor_line(), f"SkattekontoToSqlOperator(task_id='load', file=wait.output, sql_conn_id={conn_id!r})")
    first = run_dag_file(*dag(*lines))
    assert first["wait_for_file"][0] == "success" and first["load"][0] == "success", first
    assert sandbox.stats()["faults_applied"].get("duplicate_listing", 0) >= 1
    assert requests_on(sandbox, "etransport_download") == 1  # listed twice, downloaded once
    path = Path(first["wait_for_file"][1]["path"].removeprefix("file://"))
    facts = file_facts(path)
    check = wh.check(facts)
    assert first["load"][1]["noop"] is False
    before = wh.dump()

    second = run_dag_file(*dag(*lines))
    assert second["wait_for_file"][1]["already_archived"] is True
    assert second["load"][0] == "success" and second["load"][1]["noop"] is True
    assert requests_on(sandbox, "etransport_download") == 1
    assert wh.dump() == before
    drill.result(
        "listed twice -> downloaded and loaded once; the rerun found it archived and the load was a no-op",
        check + "; rerun: dump unchanged",
    )


def test_two_files_for_the_same_morning_in_a_dag(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    drill.describe(
        "duplicate delivery",
        "two files for Monday (07:00 and 07:30); dag.test() sensor >> load, then the other file loaded too",
    )
    connect(archive_url=(tmp_path / "archive").as_uri())
    sandbox.clock.set(now=stockholm(MONDAY, 7, 45), speed=1.0)
    sandbox.produce_file(MONDAY)
    sandbox.produce_file(MONDAY, delivered_at=stockholm(MONDAY, 7, 30))
    wh = sqlite_warehouse(tmp_path)
    conn_id = sqlite_connection(monkeypatch, wh.database)  # type: ignore[arg-type]
    results = run_dag_file(
        *dag(sensor_line(), f"SkattekontoToSqlOperator(task_id='load', file=wait.output, sql_conn_id={conn_id!r})")
    )
    assert results["load"][0] == "success", results
    picked = results["wait_for_file"][1]
    assert picked["name"].endswith("_002.txt")  # the newest delivery
    assert "2 files for 2026-11-30" in drill._read_logs()
    hook = ETransportHook()
    try:
        other = next(f for f in hook.list_files(delivery_date=MONDAY) if f.name != picked["name"])
        other_path = archived(hook.download(other))
    finally:
        hook.close()
    result = wh.load(other_path)
    facts = [file_facts(Path(picked["path"].removeprefix("file://"))), file_facts(other_path)]
    newest = max(facts, key=lambda f: (f.created_at, f.file_id))
    check = wh.check(newest)
    assert result.principals_loaded + result.principals_skipped_older == newest.principals
    drill.result(
        "sensor took the newest delivery (002) and warned; loading the other file too kept, per principal, "
        "the snapshot of the file created last",
        check + " (one file's worth, not two)",
    )


def two_snapshots(folder: Path) -> tuple[Path, Path]:
    """Two different files for one morning: B (created 06:40) is A (06:10) with new balances and one more
    transaction per principal."""
    period = dt.date(2026, 11, 7)
    older = random_blocks(4, 5, seed=11, reconciled_on=period)
    newer = random_blocks(4, 6, seed=12, reconciled_on=period)
    a = folder / f"SKAHMST_{ORDERER}_20261130_001.txt"
    b = folder / f"SKAHMST_{ORDERER}_20261130_002.txt"
    a.write_bytes(file_bytes(header("MON-A", stockholm(MONDAY, 6, 10)), older))
    b.write_bytes(file_bytes(header("MON-B", stockholm(MONDAY, 6, 40)), newer))
    return a, b


@pytest.mark.parametrize("order", ["older-first", "newer-first"])
def test_two_different_files_newest_wins(warehouse: Warehouse, drill: Any, tmp_path: Path, order: str) -> None:
    drill.describe(
        "duplicate delivery",
        f"{warehouse.dialect}: two different files for one morning loaded {order}, each twice",
    )
    a, b = two_snapshots(tmp_path)
    sequence = [a, b, a, b] if order == "older-first" else [b, a, b, a]
    results = [warehouse.load(path) for path in sequence]
    assert [r.noop for r in results] == [False, False, True, True]
    newest = file_facts(b)
    if order == "newer-first":
        assert results[1].principals_skipped_older == newest.principals and results[1].transactions_inserted == 0
    else:
        assert results[1].principals_replaced == newest.principals
    check = warehouse.check(newest)
    drill.result("the newer file's snapshot replaces the older one; an older file never overwrites", check)


# =================================================================================================
# 10. The worker is killed during a load
# =================================================================================================

KILLED_LOAD = r"""
import json, sys
from airflow_provider_skattekonto.loading import load_answer_stream
args = json.loads(sys.argv[1])
if args["dialect"] == "sqlite":
    import sqlite3
    conn = sqlite3.connect(args["database"])
else:
    import psycopg
    conn = psycopg.connect(args["dsn"], application_name=args["application_name"])
print("loading", args["name"], flush=True)
with open(args["path"], "rb") as stream:
    result = load_answer_stream(
        conn, stream, dialect=args["dialect"], file_name=args["name"], sha256=args["sha256"],
        size=args["size"], prefix=args["prefix"], schema=args["schema"],
    )
print("LOADED", json.dumps(result.to_dict()), flush=True)
"""


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FileFacts]:
    """A large answer file (about 17 MB, ~208 000 transactions): a load of it takes seconds, and a few MB of its
    rows are in the database two seconds or more before the load could end."""
    path = tmp_path_factory.mktemp("big") / f"SKAHMST_{ORDERER}_20261130_001.txt"
    data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=stockholm(MONDAY, 7),
        created_at=stockholm(MONDAY, 6, 40),
        file_id="BIG-MONDAY",
        seed=3,
        principals=150,
        transactions_per_principal=1000,
    )
    return path, file_facts(path)


def _pg_transactions_bytes(wh: Warehouse) -> int:
    [(size,)] = wh.query("SELECT pg_relation_size(CAST(? AS regclass))", (wh.names.transactions,))
    return int(size)


def _pg_backends(wh: Warehouse, application_name: str) -> int:
    [(count,)] = wh.query("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = ?", (application_name,))
    return int(count)


def test_worker_killed_during_a_load(
    warehouse: Warehouse, big_file: tuple[Path, FileFacts], drill: Any, tmp_path: Path
) -> None:
    path, big = big_file
    drill.describe(
        "worker killed during a load",
        f"{warehouse.dialect}: SIGKILL to a process loading a {big.size / 1e6:.0f} MB file "
        f"({big.transactions:,} transactions) once its rows reach the database",
    )
    small = earlier_file(tmp_path)
    warehouse.load(small)
    before = warehouse.dump()
    application_name = f"drill-kill-{os.getpid()}-{tmp_path.name}"[:60]
    args = {
        "dialect": warehouse.dialect,
        "database": str(warehouse.database) if warehouse.database else None,
        "dsn": PG_DSN,
        "application_name": application_name,
        "path": str(path),
        "name": big.name,
        "sha256": big.sha256,
        "size": big.size,
        "prefix": warehouse.prefix,
        "schema": warehouse.schema,
    }
    if warehouse.dialect == "sqlite":
        assert warehouse.database is not None
        journal = warehouse.database.with_name(warehouse.database.name + "-journal")
        start_size = warehouse.database.stat().st_size

        def writing() -> bool:  # rows spilled into the database file under an open transaction
            return journal.exists() and warehouse.database.stat().st_size > start_size + (4 << 20)  # type: ignore[union-attr]

    else:
        start_size = _pg_transactions_bytes(warehouse)

        def writing() -> bool:  # uncommitted COPY rows already occupy table pages
            return _pg_transactions_bytes(warehouse) > start_size + (4 << 20)

    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        text=True,
    )
    try:
        wait_until(lambda: writing() or child.poll() is not None, 120, "the load to start writing", interval=0.01)
        assert child.poll() is None, f"the load ended before it could be killed: {child.communicate()[0][-2000:]}"
        os.kill(child.pid, signal.SIGKILL)
        output = child.communicate(timeout=30)[0]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    drill.scan(output)
    assert child.returncode == -signal.SIGKILL
    assert "LOADED" not in output

    if warehouse.dialect == "sqlite":
        assert journal.exists()  # a hot journal: the next connection rolls the file back
        assert warehouse.dump() == before
        assert warehouse.query("PRAGMA integrity_check") == [("ok",)]
        assert not journal.exists() or journal.stat().st_size == 0
        recovery = "hot journal rolled back on the next open; integrity_check ok"
    else:
        assert warehouse.dump() == before  # nothing committed
        wait_until(
            lambda: _pg_backends(warehouse, application_name) == 0, 30, "the killed backend to end", interval=0.01
        )
        recovery = "the server aborted the killed session's transaction"
    assert warehouse.dump() == before

    result = warehouse.load(path)
    assert not result.noop and result.transaction_count == big.transactions
    check = warehouse.check(file_facts(small), big)
    drill.result(f"killed mid-load (exit -9): tables exactly as before; {recovery}; reload succeeded", check)


# =================================================================================================
# 11. Bad input: malformed files, hostile file names, wrong certificates
# =================================================================================================


def malformed_file(folder: Path) -> tuple[Path, int]:
    """A valid file with beloppSkatteverket '12,3' (one decimal) on line N; returns (path, N)."""
    path = folder / f"SKAHMST_{ORDERER}_20261130_001.txt"
    data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=stockholm(MONDAY, 7),
        created_at=stockholm(MONDAY, 6, 40),
        file_id="MONDAY-BAD",
        seed=9,
        principals=20,
        transactions_per_principal=8,
    )
    line, _, _ = break_amount(path, "12,3")
    return path, line


def test_malformed_amount_is_refused_with_its_place(warehouse: Warehouse, drill: Any, tmp_path: Path) -> None:
    drill.describe("bad input: malformed file", f"{warehouse.dialect}: beloppSkatteverket '12,3' on line N")
    path, line = malformed_file(tmp_path)
    warehouse.load(earlier_file(tmp_path))
    before = warehouse.dump()
    with pytest.raises(AnswerFileError) as caught:
        warehouse.load(path)
    error = caught.value
    drill.scan(error)
    assert (error.source_name, error.line_number, error.field, error.value) == (
        path.name,
        line,
        "beloppSkatteverket",
        "12,3",
    )
    assert f"{path.name} line {line}, field beloppSkatteverket='12,3'" in str(error)
    assert "The file was not loaded" in str(error)
    assert warehouse.dump() == before
    drill.result(f"AnswerFileError: {str(error)[:110]}...", "nothing written (exact dump equal to before)")


def test_malformed_file_fails_the_load_task(drill: Any, run_dag_file: Any, tmp_path: Path, monkeypatch: Any) -> None:
    drill.describe("bad input: malformed file", "dag.test(): SkattekontoToSqlOperator on a file with '12,3' on line N")
    path, line = malformed_file(tmp_path)
    wh = sqlite_warehouse(tmp_path)
    wh.load(earlier_file(tmp_path))
    before = wh.dump()
    conn_id = sqlite_connection(monkeypatch, wh.database)  # type: ignore[arg-type]
    dag_id, source = dag(
        f"SkattekontoToSqlOperator(task_id='load', file={str(path)!r}, sql_conn_id={conn_id!r}, retries=2,"
        " retry_delay=dt.timedelta(0))"
    )
    state, _ = run_dag_file(dag_id, source)["load"]
    assert state == "failed"
    assert try_numbers(dag_id) == {"load": 1}  # a bad file fails at once: retrying the same bytes cannot help
    assert f"{path.name} line {line}, field beloppSkatteverket='12,3'" in drill._read_logs()
    assert wh.dump() == before
    drill.result("task failed on its 1st try (no retries); the log names file, line, field, value", "nothing written")


HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "archive/../../x.txt",
    "..",
    "x\\..\\y.txt",
    "file\x00.txt",
    "-rf.txt",
    " SKAHMST_5560000167_20261130_001.txt",
    "SKAHMST_5560000167_20261130_001.txt\r",
    "SKAHMST\t5560000167.txt",
    "SKAHMST_ünïcode.txt",
    "",
    "A" * 201,
]


def test_hostile_names_in_a_listing_are_refused(drill: Any) -> None:
    drill.describe("bad input: hostile remote file names", f"{len(HOSTILE_NAMES)} names in an E-transport listing")
    refused = 0
    for name in HOSTILE_NAMES:
        with pytest.raises(UnsafeRemoteNameError) as caught:
            _remote_from_listing({"name": name, "size": 10, "sha256": None}, "skahmst", DEFAULT_FILE_PATTERN)
        assert "Refusing remote file name" in str(caught.value) and "not downloaded" in str(caught.value)
        refused += 1
    drill.hostile(
        "remote file names: separators, `..`, absolute, control characters, non-ASCII, too long",
        tried=len(HOSTILE_NAMES),
        accepted=len(HOSTILE_NAMES) - refused,
        outside=0,
    )
    drill.result(
        f"all {refused} refused (UnsafeRemoteNameError: separators, '..', absolute, control characters, "
        "non-ASCII, too long); the task fails fast",
        "nothing downloaded",
    )


def test_name_with_a_trailing_newline_is_refused(drill: Any) -> None:
    drill.describe("bad input: hostile remote file names", "listing name 'SKAHMST_5560000167_20261130_001.txt\\n'")
    with pytest.raises(UnsafeRemoteNameError):
        check_remote_name("SKAHMST_5560000167_20261130_001.txt\n")
    drill.result("refused (UnsafeRemoteNameError: the whole name must match, a final newline included)", "-")


def inbox_with_odd_names(folder: Path) -> tuple[Path, Path]:
    """An inbox with one real answer file and odd neighbours; returns (inbox, the real file)."""
    inbox = folder / "inbox"
    inbox.mkdir()
    real = write_inbox_answer_file(
        inbox, ORDERER, file_id="INBOX-1", seed=4, principals=15, transactions_per_principal=8
    )
    for odd in (
        f"SKAHMST_{ORDERER}_20261130_002.txt.part",  # still being written
        f".SKAHMST_{ORDERER}_20261130_003.txt",  # hidden
        f"SKAHMST_{ORDERER}_20261130_004.txt ",  # trailing space
        f"SKAHMST_{ORDERER}_20261130_005.txt;rm -rf ~",
        f"SKAHMST_{ORDERER}_20261130_006 .txt",
        "SKAHMST_5567000012_20261130_001.txt",  # another orderer's file
        "..SKAHMST.txt",
        "-SKAHMST.txt",
    ):
        (inbox / odd).write_bytes(b"not an answer file\r\n")
    (inbox / f"SKAHMST_{ORDERER}_20261130_007.txt").mkdir()  # a folder with a matching name
    return inbox, real


def test_inbox_with_odd_names(sandbox: Any, connect: Any, drill: Any, tmp_path: Path) -> None:
    drill.describe(
        "bad input: hostile remote file names",
        "inbox folder: the answer file among .part, hidden, spaced, ';'-named, foreign, folder neighbours",
    )
    inbox, real = inbox_with_odd_names(tmp_path)
    connect(etransport_url=None, etransport_inbox=inbox.as_uri(), archive_url=(tmp_path / "archive").as_uri())
    hook = ETransportHook()
    try:
        files = hook.list_files(delivery_date=MONDAY)
        assert [f.name for f in files] == [real.name]
        stored = hook.download(files[0])
    finally:
        hook.close()
    path = archived(stored)
    assert path.read_bytes() == real.read_bytes() and stored.sha256 == files[0].sha256
    archive_names = sorted(p.name for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert archive_names == [real.name]
    wh = sqlite_warehouse(tmp_path)
    wh.load(path, sha256=stored.sha256, size=stored.size)
    drill.result("only the answer file was listed and archived (checksum from its .sha256)", wh.check(file_facts(path)))


def test_inbox_name_with_a_trailing_newline_is_ignored(sandbox: Any, connect: Any, drill: Any, tmp_path: Path) -> None:
    drill.describe("bad input: hostile remote file names", "inbox file named 'SKAHMST_5560000167_20261130_008.txt\\n'")
    inbox, real = inbox_with_odd_names(tmp_path)
    (inbox / f"SKAHMST_{ORDERER}_20261130_008.txt\n").write_bytes(real.read_bytes())
    connect(etransport_url=None, etransport_inbox=inbox.as_uri(), archive_url=(tmp_path / "archive").as_uri())
    hook = ETransportHook()
    try:
        names = [f.name for f in hook.list_files(delivery_date=MONDAY)]
    finally:
        hook.close()
    assert names == [real.name]
    drill.result("not listed: only the real answer file of that morning is", "-")


def connections_to(sandbox: Any) -> int:
    return int(sandbox.stats()["connections_total"])


def test_untrusted_ca_certificate_gets_no_token(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("bad input: wrong certificate", "organisation certificate from an untrusted CA")
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    connect(identity="untrusted")
    hook = SkattekontoHook()
    try:
        with pytest.raises(TokenError) as caught:
            hook.bestall()
    finally:
        hook.close()
    drill.scan(caught.value, repr(hook.config))
    assert caught.value.status == 401 and not caught.value.retryable
    assert "not issued by a trusted CA" in str(caught.value)
    assert requests_on(sandbox, "token_sysorg") == 1  # refused once, not retried
    assert requests_on(sandbox, "bestall") == 0 and sandbox.orders() == []
    assert sum(sandbox.stats()["tokens_issued"].values()) == 0
    drill.result(f"TokenError 401, not retried: {str(caught.value)[:70]}...", "0 tokens, 0 orders")


def test_wrong_pin_is_a_clear_error_without_the_pin(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("bad input: wrong certificate", "wrong certificate PIN (certificate_password)")
    real_pin = sandbox.pki.identity("orderer").p12_password
    wrong_pin = "wrong-PIN-7c1f9a44"
    connect(certificate_password=wrong_pin)
    drill.watch("the real PIN", real_pin)
    before = connections_to(sandbox)
    hook = SkattekontoHook()
    with pytest.raises(CertificateError) as caught:
        hook.bestall()
    drill.scan(caught.value, repr(hook.config))
    message = str(caught.value)
    assert "Wrong certificate password (PIN)" in message and "certificate_p12_path=" in message
    assert wrong_pin not in message and real_pin not in message
    assert connections_to(sandbox) == before  # refused before any call
    drill.result(f"CertificateError: {message[:75]}...", "no connection made; neither PIN in message or logs")


def test_certificate_of_another_organisation_is_refused_before_any_call(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any
) -> None:
    drill.describe(
        "bad input: wrong certificate",
        "certificate of 5560000167, orderer_organisation_number 5567000012 (hook, then dag.test() retries=2)",
    )
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    other = sandbox.pki.identity("orderer2").organisation_number
    connect(orderer_organisation_number=other)
    before = connections_to(sandbox)
    hook = SkattekontoHook()
    with pytest.raises(CertificateError) as caught:
        hook.bestall()
    drill.scan(caught.value)
    assert other in str(caught.value) and ORDERER in str(caught.value)
    assert connections_to(sandbox) == before
    dag_id, source = dag("BestallOperator(task_id='bestall', retries=2, retry_delay=dt.timedelta(0))")
    state, _ = run_dag_file(dag_id, source)["bestall"]
    assert state == "failed" and try_numbers(dag_id) == {"bestall": 1}
    assert connections_to(sandbox) == before and sandbox.orders() == []
    drill.result(
        "CertificateError naming both organisations; the task failed on its 1st try (no retries)",
        "no connection made, 0 orders",
    )


def test_expired_certificate_is_refused_before_any_call(sandbox: Any, connect: Any, drill: Any) -> None:
    drill.describe("bad input: wrong certificate", "expired organisation certificate")
    connect(identity="expired")
    before = connections_to(sandbox)
    hook = SkattekontoHook()
    with pytest.raises(CertificateError) as caught:
        hook.bestall()
    drill.scan(caught.value)
    assert "expired on" in str(caught.value) and "renew it at Expisoft" in str(caught.value)
    assert connections_to(sandbox) == before
    drill.result(f"CertificateError: {str(caught.value)[:70]}...", "no connection made, 0 orders")


# =================================================================================================
# 12. The whole chain with a fault at every step
# =================================================================================================


def test_whole_chain_with_a_fault_at_every_step(
    sandbox: Any, connect: Any, drill: Any, run_dag_file: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    drill.describe(
        "whole chain, faults at every step",
        "token 503; bestall 429 + 500; listing 503 + duplicate; download cut mid-body; then a rerun",
    )
    connect(retry_delay_seconds=0.2, archive_url=(tmp_path / "archive").as_uri())
    sandbox.configure(principals_per_orderer=200, transactions_per_principal=90)
    sandbox.clock.set(now=stockholm(MONDAY, 12), speed=1.0)
    sandbox.faults.status("token", 503)
    sandbox.faults.status("bestall", 429, retry_after=1)
    sandbox.faults.status("bestall", 500)
    state, order = run_dag_file(*dag("BestallOperator(task_id='bestall')"))["bestall"]
    assert state == "success" and order["delivery_morning"] == stockholm(TUESDAY, 7).isoformat()
    assert len(sandbox.orders()) == 1

    sandbox.clock.set(now=stockholm(TUESDAY, 7, 5), speed=1.0)
    sandbox.faults.status("etransport_list", 503)
    sandbox.faults.add("duplicate_listing")
    sandbox.faults.add("drop_mid_response", "etransport_download")
    wh = sqlite_warehouse(tmp_path)
    conn_id = sqlite_connection(monkeypatch, wh.database)  # type: ignore[arg-type]
    lines = (
        sensor_line(morning=TUESDAY),
        f"SkattekontoToSqlOperator(task_id='load', file=wait.output, sql_conn_id={conn_id!r})",
    )
    results = run_dag_file(*dag(*lines))
    assert results["wait_for_file"][0] == "success" and results["load"][0] == "success", results
    applied = sandbox.stats()["faults_applied"]
    assert applied.get("duplicate_listing") == 1 and applied.get("drop_mid_response") == 1
    assert requests_on(sandbox, "etransport_download", 206) == 1
    path = Path(results["wait_for_file"][1]["path"].removeprefix("file://"))
    facts = file_facts(path)
    check = wh.check(facts)
    before = wh.dump()
    rerun = run_dag_file(*dag(*lines))
    assert rerun["load"][1]["noop"] is True and wh.dump() == before
    assert len(sandbox.orders()) == 1
    drill.result("every step recovered inside its task; the rerun archived nothing new and loaded nothing", check)
