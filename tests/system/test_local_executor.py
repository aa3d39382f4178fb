"""Scenarios under the real scheduler, dag-processor, triggerer and api-server (LocalExecutor).

One test per scenario; they share the session's Airflow and run one after the other (they drive the
sandbox's single clock).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.version_compat import HAS_TIMETABLE_MANUAL_RUN_IDS
from tests.system.conftest import AirflowStack
from tests.waiting import wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

CALENDAR = ServiceCalendar()


def only_new_run(stack: AirflowStack, dag_id: str, known: set[str], timeout: float = 120) -> dict[str, Any]:
    def created() -> list[dict[str, Any]]:
        return [r for r in stack.dag_runs(dag_id) if r["dag_run_id"] not in known]

    [run] = wait_until(created, timeout, f"a new run of {dag_id}")
    return run


def deliver(stack: AirflowStack, morning: dt.datetime) -> None:
    """Let the sandbox's clock reach ``morning`` 07:00:30, when that morning's file is on E-transport."""
    stack.sandbox.clock.set(now=morning.replace(hour=7, minute=0, second=30), speed=1.0)


def test_a_scheduled_morning_end_to_end(stack: AirflowStack) -> None:
    """One scheduled run: one order before the cutoff, the sensor deferred, the file archived, the load."""
    morning = stack.morning
    stack.sandbox.reset(now=morning.replace(hour=2, minute=0), speed=1.0)  # before that morning's cutoff
    stack.unpause("sys_scheduled")
    run = only_new_run(stack, "sys_scheduled", set())
    run_id = run["dag_run_id"]
    assert run["run_type"] == "scheduled"
    assert run_id.startswith(f"scheduled__{morning:%Y-%m-%d}_0700__"), run_id
    stack.wait_deferred("sys_scheduled", run_id, "wait_for_file")
    assert len(stack.sandbox.orders()) == 1
    [order] = stack.sandbox.orders()
    assert order.delivery_morning == morning
    deliver(stack, morning)
    states = stack.wait_for_run("sys_scheduled", run_id)
    assert states == {"bestall": "success", "wait_for_file": "success", "load": "success"}, stack.log_tail("scheduler")
    assert len(stack.sandbox.orders()) == 1
    file = stack.xcom("sys_scheduled", run_id, "wait_for_file")
    assert file["delivery_morning"] == morning.isoformat()
    assert stack.warehouse_rows("sys_scheduled_balances")
    # No second scheduled run: the DAG ends at that morning.
    assert [r["dag_run_id"] for r in stack.dag_runs("sys_scheduled")] == [run_id]


def test_d_manual_triggers_without_logical_date(stack: AirflowStack) -> None:
    """``airflow dags trigger`` without ``-l`` and REST without ``logical_date``: order now, no template error."""
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=STOCKHOLM)  # a Tuesday: orders land in Wednesday's file
    wednesday = dt.datetime(2026, 12, 2, 7, 0, tzinfo=STOCKHOLM)
    stack.sandbox.reset(now=now, speed=1.0)
    stack.unpause("sys_manual")
    stack.cli("dags", "trigger", "sys_manual")
    cli_run = only_new_run(stack, "sys_manual", set())
    rest_run = stack.api("POST", "/dags/sys_manual/dagRuns", json={"logical_date": None})
    runs = [cli_run["dag_run_id"], rest_run["dag_run_id"]]
    for run in (cli_run, rest_run):  # no logical date, no data interval; the id names the morning of run_after
        assert run["logical_date"] is None and run["data_interval_end"] is None
        run_after = dt.datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
        if HAS_TIMETABLE_MANUAL_RUN_IDS:
            assert morning_of(run["dag_run_id"]) == CALENDAR.delivery_for(run_after).date()
        else:  # Airflow 3.0 names manual runs itself
            assert run["dag_run_id"].startswith("manual__")
    for run_id in runs:
        stack.wait_deferred("sys_manual", run_id, "wait_for_file")
        order = stack.xcom("sys_manual", run_id, "bestall")
        assert order["ordered"] is True and order["delivery_morning"] == wednesday.isoformat()
    assert len(stack.sandbox.orders()) == 2  # one per run
    deliver(stack, wednesday)
    for run_id in runs:
        assert stack.wait_for_run("sys_manual", run_id) == {
            "bestall": "success",
            "wait_for_file": "success",
            "load": "success",
        }


def test_e_retry_and_clear_do_not_order_again(stack: AirflowStack) -> None:
    """A retry after an accepted order, and a Clear of the succeeded task: still one order."""
    stack.sandbox.reset(now=dt.datetime(2026, 12, 1, 10, 0, tzinfo=STOCKHOLM), speed=1.0)
    stack.unpause("sys_retry")
    run_id = stack.api("POST", "/dags/sys_retry/dagRuns", json={"logical_date": None})["dag_run_id"]
    assert stack.wait_for_run("sys_retry", run_id) == {"bestall": "success"}
    [ti] = stack.api("GET", f"/dags/sys_retry/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert ti["try_number"] == 2
    assert len(stack.sandbox.orders()) == 1
    stack.api(
        "POST",
        "/dags/sys_retry/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": run_id, "task_ids": ["bestall"], "only_failed": False},
    )
    wait_until(
        lambda: (
            stack.api("GET", f"/dags/sys_retry/dagRuns/{run_id}/taskInstances")["task_instances"][0]["try_number"] >= 3
        ),
        120,
        "the cleared task to run again",
    )
    assert stack.wait_for_run("sys_retry", run_id) == {"bestall": "success"}
    assert len(stack.sandbox.orders()) == 1


def test_f_triggerer_sigterm_and_scheduler_sigkill(stack: AirflowStack) -> None:
    """SIGKILL of the scheduler while bestall runs, SIGTERM of the triggerer while the sensor is deferred.

    Only the scheduler process is killed: its LocalExecutor workers live on with its database connection, which
    the metadata database's idle-transaction timeout ends (``IDLE_TRANSACTION_TIMEOUT`` in conftest.py).
    """
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=STOCKHOLM)
    wednesday = dt.datetime(2026, 12, 2, 7, 0, tzinfo=STOCKHOLM)
    stack.sandbox.reset(now=now, speed=1.0)
    stack.sandbox.faults.slow("bestall", 45)  # the order call takes 45 s: the scheduler dies meanwhile
    stack.unpause("sys_restart")
    run_id = stack.api("POST", "/dags/sys_restart/dagRuns", json={"logical_date": None})["dag_run_id"]
    stack.wait_for_task("sys_restart", run_id, "bestall", ("running",))
    stack.signal("scheduler", signal.SIGKILL)
    stack.start("scheduler")
    stack.wait_deferred("sys_restart", run_id, "wait_for_file", timeout=300)
    stack.signal("triggerer", signal.SIGTERM)
    stack.start("triggerer")
    deliver(stack, wednesday)
    assert stack.wait_for_run("sys_restart", run_id, timeout=300) == {
        "bestall": "success",
        "wait_for_file": "success",
        "load": "success",
    }
    assert len(stack.sandbox.orders()) == 1


def morning_of(run_id: str) -> dt.date:
    """The delivery morning a scheduled or manual run's id names (``<type>__2026-11-19_0700__<run_after>``)."""
    return dt.date.fromisoformat(run_id.split("__")[1].removesuffix("_0700"))


def interval_morning(run: dict[str, Any]) -> dt.date:
    """The delivery morning of a run with a data interval: its end (backfill run ids name the run_after)."""
    return dt.datetime.fromisoformat(run["data_interval_end"].replace("Z", "+00:00")).astimezone(STOCKHOLM).date()


def test_b_unpause_after_a_pause(stack: AirflowStack) -> None:
    """Unpausing after mornings went by: catchup off, one run (the morning an order now lands in);
    catchup on, one run per missed morning, none of the missed ones ordering."""
    from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable

    stack.sandbox.reset(speed=1.0)  # the service clock is real time here, like the scheduler's
    timetable = DeliveryMorningTimetable(order_at="05:00")
    now = dt.datetime.now(STOCKHOLM)
    current = CALENDAR.delivery_for(now)
    current_due = timetable.run_after_for(current) <= now

    stack.unpause("sys_pause_off")
    if current_due:
        run = only_new_run(stack, "sys_pause_off", set())
        assert morning_of(run["dag_run_id"]) == current.date()
    else:  # 03:00-05:00: that run starts at 05:00; nothing for the past mornings meanwhile
        wait_until(lambda: stack.api("GET", "/dags/sys_pause_off")["next_dagrun_data_interval_end"], 60, "the next run")
    stack.unpause("sys_pause_on")
    start = stack.morning.replace(hour=0) - dt.timedelta(days=7)
    expected = [
        m.date() for m in CALENDAR.delivery_mornings(start.date(), current.date()) if timetable.run_after_for(m) <= now
    ]
    runs = wait_until(
        lambda: (r := stack.dag_runs("sys_pause_on")) and len(r) >= len(expected) and r, 180, "the catch-up runs"
    )
    assert sorted(morning_of(r["dag_run_id"]) for r in runs) == expected
    assert all(morning_of(r["dag_run_id"]) == interval_morning(r) for r in runs)
    missed = {r["dag_run_id"] for r in runs if morning_of(r["dag_run_id"]) < current.date()}
    for run_id in missed:
        stack.wait_for_task("sys_pause_on", run_id, "bestall", ("success",), timeout=300)
        assert stack.xcom("sys_pause_on", run_id, "bestall")["reason"] == "cutoff_passed"
    time.sleep(5)  # let a wrongly created run show up
    assert len(stack.dag_runs("sys_pause_off")) == (1 if current_due else 0)
    assert {order.delivery_morning for order in stack.sandbox.orders()} <= {current}
    stack.pause("sys_pause_off")
    stack.pause("sys_pause_on")


def test_c_backfill_across_an_outage(stack: AirflowStack) -> None:
    """``backfill create`` over three mornings, the middle one without a file (an outage): green or
    skipped, never failed; the warehouse ends with the newest snapshot, also with ``--run-backwards``."""
    stack.sandbox.reset(speed=1.0)
    mornings = [CALENDAR.previous_delivery_morning(stack.morning)]
    for _ in range(2):
        mornings.insert(0, CALENDAR.previous_delivery_morning(mornings[0]))
    for morning in (mornings[0], mornings[2]):
        stack.sandbox.produce_file(morning.date())
    for dag_id, backwards in (("sys_backfill", False), ("sys_backfill_back", True)):
        stack.unpause(dag_id)  # backfill runs wait while a DAG is paused; its own schedule goes on meanwhile
        args = ["backfill", "create", "--dag-id", dag_id]
        args += ["--from-date", mornings[0].date().isoformat(), "--to-date", mornings[2].date().isoformat()]
        stack.cli(*args, *(["--run-backwards"] if backwards else []))
    for dag_id in ("sys_backfill", "sys_backfill_back"):

        def backfill_runs(d: str = dag_id) -> list[dict[str, Any]]:
            return [r for r in stack.dag_runs(d) if r["run_type"] == "backfill"]

        runs = wait_until(lambda b=backfill_runs: len(r := b()) >= 3 and r, 120, f"{dag_id}'s backfill runs")
        assert sorted(interval_morning(r) for r in runs) == [m.date() for m in mornings]
        for run in runs:
            assert run["run_type"] == "backfill"
            states = stack.wait_for_run(dag_id, run["dag_run_id"], timeout=300)
            if interval_morning(run) == mornings[1].date():
                assert states == {"bestall": "success", "wait_for_file": "skipped", "load": "skipped"}
            else:
                assert states == {"bestall": "success", "wait_for_file": "success", "load": "success"}
        newest = stack.warehouse_rows(
            f"""(SELECT DISTINCT f.delivery_morning FROM {dag_id}_balances b
            JOIN {dag_id}_files f ON b.file_id = f.file_id
            WHERE (b.principal, b.reconciled_on) IN
              (SELECT principal, MAX(reconciled_on) FROM {dag_id}_balances GROUP BY principal))"""
        )
        assert [str(row[0])[:10] for row in newest] == [mornings[2].date().isoformat()], newest
    backfilled = set(mornings)  # history is never ordered (the DAGs' own schedule may order today)
    assert not [o for o in stack.sandbox.orders() if o.delivery_morning in backfilled]
    for dag_id in ("sys_backfill", "sys_backfill_back"):
        stack.pause(dag_id)


def test_g_representatives_first_run_into_an_empty_postgres_warehouse(stack: AirflowStack) -> None:
    """Four mapped loads create the warehouse tables at the same moment: all succeed."""
    stack.sandbox.reset(now=dt.datetime(2026, 12, 1, 10, 0, tzinfo=STOCKHOLM), speed=1.0)
    stack.unpause("sys_representatives")
    run_id = stack.api("POST", "/dags/sys_representatives/dagRuns", json={"logical_date": None})["dag_run_id"]

    def all_deferred() -> bool:
        items = stack.api("GET", f"/dags/sys_representatives/dagRuns/{run_id}/taskInstances")["task_instances"]
        sensors = [ti for ti in items if ti["task_id"].endswith("wait_for_file")]
        return len(sensors) == 4 and all(ti["state"] == "deferred" for ti in sensors)

    wait_until(all_deferred, 300, "the four sensors to defer", interval=2)
    time.sleep(10)  # let the scheduler take in the deferring tries (see AirflowStack.wait_deferred)
    deliver(stack, dt.datetime(2026, 12, 2, 7, 0, tzinfo=STOCKHOLM))
    stack.wait_for_run("sys_representatives", run_id, timeout=300)
    items = stack.api("GET", f"/dags/sys_representatives/dagRuns/{run_id}/taskInstances")["task_instances"]
    loads = {ti["map_index"]: ti["state"] for ti in items if ti["task_id"].endswith("load")}
    assert loads == {0: "success", 1: "success", 2: "success", 3: "success"}, loads
