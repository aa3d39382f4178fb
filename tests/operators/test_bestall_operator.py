"""BestallOperator in real Airflow runs (dag.test(), triggers inline) against the sandbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
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
    # Monday 23:50 for Wednesday's file: an order now would land in Tuesday's, so wait for Tuesday 05:00.
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 23, 50, tzinfo=STOCKHOLM), speed=18000.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag(delivery_morning="2026-12-02T07:00:00+01:00"))["bestall"]
    assert state == "success" and xcom["ordered"] is True
    assert xcom["delivery_morning"] == "2026-12-02T07:00:00+01:00"
    assert dt.datetime.fromisoformat(xcom["ordered_at"]) >= dt.datetime(2026, 12, 1, 5, 0, tzinfo=STOCKHOLM)


def test_backfill_does_not_order(sandbox: Any, use_connection: Any, run_dag_file: Any, logs: Any) -> None:
    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection()
    state, xcom = run_dag_file(*bestall_dag(delivery_morning="2026-11-27T07:00:00+01:00"))["bestall"]
    assert state == "success"
    assert xcom["ordered"] is False and xcom["reason"] == "cutoff_passed"
    assert xcom["delivery_morning"] == "2026-11-27T07:00:00+01:00"
    assert sandbox.orders() == []
    assert "history cannot be ordered" in logs()


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
