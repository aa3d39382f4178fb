"""ETransportFileSensor and its trigger: real Airflow runs against the sandbox's clock and E-transport."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
from airflow_provider_skattekonto.sandbox.protocol import ROUTE_ETRANSPORT_LIST
from airflow_provider_skattekonto.triggers.etransport import ETransportFileTrigger
from tests.clock_speed import clock_speed_when
from tests.operators.conftest import dag_source, has_deferred

pytestmark = pytest.mark.airflow_db


def chain_dag(**sensor_kwargs: Any) -> tuple[str, str]:
    args = ", ".join(f"{k}={v!r}" for k, v in sensor_kwargs.items())
    return dag_source(
        "order = BestallOperator(task_id='bestall')",
        f"wait = ETransportFileSensor(task_id='wait_for_file', poll_interval=600, {args})",
        "order >> wait",
    )


def sensor_dag(**sensor_kwargs: Any) -> tuple[str, str]:
    args = ", ".join(f"{k}={v!r}" for k, v in sensor_kwargs.items())
    return dag_source(f"ETransportFileSensor(task_id='wait_for_file', {args})")


def test_order_then_wait_across_the_weekend(
    sandbox: Any, use_connection: Any, run_dag_file: Any, tmp_path: Path, logs: Any
) -> None:
    # Friday 10:00 -> the order lands in Monday's file. The clock stands still until the sensor has deferred
    # (however slow the machine), then 69 h of sandbox time pass in about a real second. At this speed a real
    # second is 2.3 sandbox days: tokens and the file's retention last a year, so neither runs out meanwhile.
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 10, 0, tzinfo=STOCKHOLM), speed=0.0)
    sandbox.configure(token_lifetime_seconds=365 * 24 * 3600, retention_days=365)
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    dag_id, source = chain_dag()
    with clock_speed_when(sandbox, lambda: has_deferred(dag_id, "wait_for_file"), speed=200_000.0):
        results = run_dag_file(dag_id, source)
    assert results["bestall"][0] == "success"
    state, xcom = results["wait_for_file"]
    assert state == "success", results
    assert xcom["delivery_morning"] == "2026-11-30T07:00:00+01:00"
    path = Path(xcom["path"].removeprefix("file://"))
    assert path.is_file() and path.stat().st_size == xcom["size"]
    assert sandbox.clock.now() >= dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)
    # Airflow reads the extra links when a task defers or ends: each is there from the start of the try
    assert "XCom not found" not in logs()


def test_weekend_morning_moves_to_monday(sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 10, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 8, 0, tzinfo=STOCKHOLM))
    state, xcom = run_dag_file(*sensor_dag(delivery_morning="2026-11-28T07:00:00+01:00", download=False))[
        "wait_for_file"
    ]
    assert state == "success"
    assert xcom["delivery_morning"] == "2026-11-30T07:00:00+01:00" and xcom["path"] is None
    assert "2026-11-28 is a weekend day" in logs()


def test_deadline_fails_with_an_actionable_message(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    # 06:30 -> 07:00 in 1.2 s, and midnight (a run that starts after it counts as historical and skips) more
    # than half a minute away, however slowly Airflow starts the task. Once the trigger lists (the sensor has
    # deferred: whether the run is historical is settled), the 10:00 deadline comes in a fraction of a second.
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 6, 30, tzinfo=STOCKHOLM), speed=1500.0)
    use_connection()
    dag = sensor_dag(delivery_morning="2026-11-30T07:00:00+01:00", poll_interval=900)
    listed = lambda: bool(sandbox.stats()["requests"].get(ROUTE_ETRANSPORT_LIST))  # noqa: E731
    with clock_speed_when(sandbox, listed, speed=30_000.0):
        state, _ = run_dag_file(*dag)["wait_for_file"]
    assert state == "failed"
    assert "No answer file for the delivery morning 2026-11-30 07:00" in logs()
    assert "before the cutoff 2026-11-30 03:00" in logs()


def test_backfill_without_file_can_skip(sandbox: Any, use_connection: Any, run_dag_file: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    dag = sensor_dag(delivery_morning="2026-10-01T07:00:00+02:00", when_missing="skip")
    state, _ = run_dag_file(*dag)["wait_for_file"]
    assert state == "skipped"


def test_historical_morning_without_file_skips_by_default(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    """A run whose morning was a past day when it started (catchup after an outage): skipped, reason logged."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    state, _ = run_dag_file(*sensor_dag(delivery_morning="2026-11-26T06:00:00+00:00"))["wait_for_file"]
    assert state == "skipped"
    text = logs()
    assert "No answer file for the delivery morning 2026-11-26 07:00" in text
    assert "the wait started on 2026-11-30, after the morning of 2026-11-26" in text


def test_backfill_run_type_is_historical() -> None:
    """DagRunType.BACKFILL_JOB skips even for a morning of the same day; other runs of today fail."""
    from types import SimpleNamespace

    from airflow.utils.types import DagRunType

    from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor

    sensor = ETransportFileSensor(task_id="wait_for_file")
    morning = dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)
    same_day = dt.datetime(2026, 11, 30, 6, 0, tzinfo=STOCKHOLM)
    backfill = {"dag_run": SimpleNamespace(run_type=DagRunType.BACKFILL_JOB)}
    scheduled = {"dag_run": SimpleNamespace(run_type=DagRunType.SCHEDULED)}
    assert sensor._historical(backfill, morning, same_day) == "this is a backfill run"  # type: ignore[arg-type]
    assert sensor._historical(scheduled, morning, same_day) is None  # type: ignore[arg-type]
    assert sensor._historical(scheduled, morning, same_day + dt.timedelta(days=1))  # type: ignore[arg-type]
    forced = ETransportFileSensor(task_id="wait_for_file", when_missing="fail")
    assert forced._historical(backfill, morning, same_day) is None  # type: ignore[arg-type]


def test_poke_mode(sandbox: Any, use_connection: Any, run_dag_file: Any, tmp_path: Path) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 2, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 1, tzinfo=STOCKHOLM))
    dag = sensor_dag(delivery_morning="2026-11-30T07:00:00+01:00", deferrable=False, mode="poke", poke_interval=1)
    state, xcom = run_dag_file(*dag)["wait_for_file"]
    assert state == "success" and Path(xcom["path"].removeprefix("file://")).is_file()


def test_trigger_serializes_and_resumes_after_a_restart(sandbox: Any, use_connection: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 2, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    SkattekontoHook().bestall()
    trigger = ETransportFileTrigger(delivery_morning="2026-11-30T07:00:00+01:00", poll_interval=60)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name) is ETransportFileTrigger
    assert all(isinstance(v, (str, int, float, bool)) for v in kwargs.values())

    async def first_life() -> None:  # sleeps towards 07:00, then the triggerer "dies"
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(first_life())
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 3, tzinfo=STOCKHOLM))

    async def second_life() -> Any:
        return await ETransportFileTrigger(**kwargs).run().__anext__()

    event = asyncio.run(second_life())
    assert event.payload["status"] == "found"
    assert event.payload["files"][0]["name"].startswith("SKAHMST_")


def test_concurrent_triggers_on_one_connection_read_the_sandbox_clock_once(sandbox: Any, use_connection: Any) -> None:
    """A triggerer starting many waits on one connection reads the sandbox clock once (single-flight), not
    once per wait; every wait still lists and ends 'found'."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 2, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 3, tzinfo=STOCKHOLM), speed=0)  # the file is there
    before = sandbox.stats()
    waits = 30

    async def triggerer() -> list[Any]:
        triggers = [ETransportFileTrigger(delivery_morning="2026-11-30T07:00:00+01:00") for _ in range(waits)]
        return await asyncio.gather(*(trigger.run().__anext__() for trigger in triggers))

    events = asyncio.run(triggerer())
    assert [event.payload["status"] for event in events] == ["found"] * waits
    after = sandbox.stats()
    assert after["clock_reads"] - before["clock_reads"] == 1
    assert sum(after["requests"]["etransport_list"].values()) == waits


def test_start_from_trigger_needs_no_worker_until_the_file_is_there(
    sandbox: Any, use_connection: Any, run_dag_file: Any, tmp_path: Path
) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 2, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 6, 59, 58, tzinfo=STOCKHOLM), speed=1.0)
    dag = sensor_dag(delivery_morning="{{ '2026-11-30T07:00:00+01:00' }}", start_from_trigger=True, poll_interval=1)
    state, xcom = run_dag_file(*dag)["wait_for_file"]
    assert state == "success"
    assert xcom["delivery_morning"] == "2026-11-30T07:00:00+01:00"
    assert Path(xcom["path"].removeprefix("file://")).is_file()


def _first_event(trigger: ETransportFileTrigger) -> dict[str, Any]:
    async def run() -> Any:
        return await trigger.run().__anext__()

    return dict(asyncio.run(run()).payload)


@pytest.mark.parametrize(("failures", "status"), [(2, "found"), (None, "error")])
def test_trigger_listing_failures_go_through_the_retry_budget(
    sandbox: Any, use_connection: Any, failures: int | None, status: str
) -> None:
    """A listing outage shorter than retry_max_seconds is ridden out; a longer one ends the wait with a
    retryable error (the task's retries apply) instead of being polled past into a false 'missing'."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 2, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(retry_max_seconds=1, retry_delay_seconds=0.2)
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 7, 59, 57, tzinfo=STOCKHOLM))
    sandbox.faults.status("etransport_list", 503, times=failures)
    event = _first_event(
        ETransportFileTrigger(delivery_morning="2026-11-30T07:00:00+01:00", deadline_time="08:00", poll_interval=1)
    )
    assert event["status"] == status, event
    if status == "error":
        assert event["retryable"] is True
        assert "Gave up after" in event["message"] and "retry_max_seconds" in event["message"]


def test_trigger_configuration_error_is_an_error_event_not_retryable(sandbox: Any, use_connection: Any) -> None:
    use_connection()
    event = _first_event(ETransportFileTrigger(delivery_morning="not a time"))
    assert event["status"] == "error" and event["retryable"] is False
    assert "not a time" in event["message"]
