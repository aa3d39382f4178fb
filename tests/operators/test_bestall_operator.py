"""BestallOperator in real Airflow runs (dag.test(), triggers inline) against the sandbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from tests.clock_speed import clock_speed_when
from tests.operators.conftest import dag_source

pytestmark = pytest.mark.airflow_db


def bestall_dag(**kwargs: Any) -> tuple[str, str]:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return dag_source(f"BestallOperator(task_id='bestall', {args})")


def test_orders_when_open(sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag())["bestall"]
    assert state == "success"
    assert xcom["ordered"] is True and xcom["reason"] == "ordered"
    assert xcom["delivery_morning"] == "2026-12-01T07:00:00+01:00"
    [order] = sandbox.orders()
    assert order.client_correlation_id == xcom["correlation_id"]
    assert xcom["correlation_id"] in logs()


def test_closed_window_defers_until_five(sandbox: Any, use_connection: Any, run_dag_file: Any) -> None:
    # Friday 04:30 on a clock running 1800x: 05:00 comes after one real second.
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 4, 30, tzinfo=STOCKHOLM), speed=1800.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag())["bestall"]
    assert state == "success" and xcom["ordered"] is True
    ordered_at = dt.datetime.fromisoformat(xcom["ordered_at"])
    assert ordered_at >= dt.datetime(2026, 11, 27, 5, 0, tzinfo=STOCKHOLM)
    assert xcom["delivery_morning"] == "2026-11-30T07:00:00+01:00"  # Friday daytime -> Monday's file
    assert len(sandbox.orders()) == 1


def test_waits_for_the_runs_order_window(sandbox: Any, use_connection: Any, run_dag_file: Any) -> None:
    # Monday 23:50 for Wednesday's file: an order now would land in Tuesday's, so wait for Tuesday 05:00
    # (under a second real); from then on the clock runs at real speed, so the order has 22 h before
    # Wednesday's cutoff however slowly Airflow resumes the task.
    opens = dt.datetime(2026, 12, 1, 5, 0, tzinfo=STOCKHOLM)
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 23, 50, tzinfo=STOCKHOLM), speed=20_000.0)
    use_connection()
    with clock_speed_when(sandbox, lambda: sandbox.clock.now() >= opens, speed=1.0):
        state, xcom = run_dag_file(*bestall_dag(delivery_morning="2026-12-02T07:00:00+01:00"))["bestall"]
    assert state == "success" and xcom["ordered"] is True
    assert xcom["delivery_morning"] == "2026-12-02T07:00:00+01:00"
    assert dt.datetime.fromisoformat(xcom["ordered_at"]) >= opens


def test_backfill_does_not_order(sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag(delivery_morning="2026-11-27T07:00:00+01:00"))["bestall"]
    assert state == "success"
    assert xcom["ordered"] is False and xcom["reason"] == "cutoff_passed"
    assert xcom["delivery_morning"] == "2026-11-27T07:00:00+01:00"
    assert sandbox.orders() == []
    text = logs()
    assert "history cannot be ordered" in text
    assert "XCom not found" not in text  # Airflow reads the order link at the end; it is there, empty


def test_forbidden_fails_without_retry(sandbox: Any, use_connection: Any, run_dag_file: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(identity="no_skol")
    state, _ = run_dag_file(*bestall_dag(retries=2))["bestall"]
    assert state == "failed"
    assert sandbox.orders() == []


def test_not_a_delivery_morning_is_refused(sandbox: Any, use_connection: Any, run_dag_file: Any) -> None:
    use_connection()
    state, _ = run_dag_file(*bestall_dag(delivery_morning="2026-11-28T07:00:00+01:00"))["bestall"]  # a Saturday
    assert state == "failed"


def test_manual_run_without_logical_date_orders_now(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    """``airflow dags trigger`` without ``-l``: no data interval; the template falls back, no error."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 27, 10, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    dag = bestall_dag(delivery_morning="{{ data_interval_end }}")
    state, xcom = run_dag_file(*dag, logical_date=None)["bestall"]
    assert state == "success" and xcom["ordered"] is True
    assert xcom["delivery_morning"] == "2026-11-30T07:00:00+01:00"  # Friday 10:00 -> Monday's file
    assert len(sandbox.orders()) == 1
    assert "cannot be rendered in this run" in logs()


def test_run_of_the_timetable_orders_for_its_own_morning(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    """The default delivery_morning is the run's interval end; logs are in Stockholm time."""
    sandbox.clock.set(now=dt.datetime(2026, 12, 2, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    dag_id, source = dag_source("BestallOperator(task_id='bestall')")
    timetable = "from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable"
    source = source.replace("schedule=None", "schedule=DeliveryMorningTimetable()")
    source = source.replace("import datetime as dt", f"import datetime as dt\n{timetable}")
    # A logical date whose manual interval is the 3 December morning (Wednesday noon -> Thursday 07:00).
    logical = dt.datetime(2026, 12, 2, 11, 0, tzinfo=dt.timezone.utc)
    state, xcom = run_dag_file(dag_id, source, logical_date=logical)["bestall"]
    assert state == "success" and xcom["ordered"] is True
    assert xcom["delivery_morning"] == "2026-12-03T07:00:00+01:00"


def test_retry_after_an_accepted_order_does_not_order_again(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    """Try 1 orders, then fails; try 2 finds the record (stored in local time, template in UTC)."""
    pytest.importorskip("airflow.sdk.bases.resumablejobmixin", reason="the task state store arrived in Airflow 3.3")
    sandbox.clock.set(now=dt.datetime(2026, 12, 2, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    dag_id, source = dag_source(
        "class FailsAfterOrdering(BestallOperator):",
        "    def execute(self, context):",
        "        result = super().execute(context)",
        "        if context['ti'].try_number == 1:",
        "            raise RuntimeError('worker lost after the order')",
        "        return result",
        "FailsAfterOrdering(task_id='bestall', retries=1, retry_delay=dt.timedelta(0),"
        " delivery_morning='2026-12-03T06:00:00+00:00')",  # as '{{ data_interval_end }}' renders: UTC
    )
    state, xcom = run_dag_file(dag_id, source)["bestall"]
    assert state == "success"
    assert len(sandbox.orders()) == 1
    assert xcom["delivery_morning"] == "2026-12-03T07:00:00+01:00"
    assert "Not ordering again" in logs()


def test_logs_local_time_whatever_the_input_zone(
    sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any
) -> None:
    """A UTC ``delivery_morning`` (as ``{{ data_interval_end }}`` renders) is logged in Stockholm time."""
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag(delivery_morning="2026-11-27T06:00:00+00:00"))["bestall"]
    assert state == "success" and xcom["delivery_morning"] == "2026-11-27T07:00:00+01:00"
    text = logs()
    assert "the cutoff for the file of 2026-11-27T07:00:00+01:00 was 2026-11-27T03:00:00+01:00" in text
    assert "2026-11-27T06:00:00+00:00" not in text.split("Not ordering", 1)[1].split("\n", 1)[0]
