"""DAGs the system tests run under a real scheduler (parsed by a real dag-processor).

``SKATTEKONTO_SYSTEM_MORNING`` (set by the fixture) is the last delivery morning before the session
started, in ISO 8601; every date here derives from it, so parses agree with each other.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task_group

from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor
from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable

MORNING = dt.datetime.fromisoformat(os.environ.get("SKATTEKONTO_SYSTEM_MORNING", "2026-11-26T07:00:00+01:00"))
MIDNIGHT = MORNING.replace(hour=0)


class FailsOnceAfterOrdering(BestallOperator):
    """Orders, then its first try dies (a worker lost after the service accepted the order)."""

    def execute(self, context):  # type: ignore[no-untyped-def]
        result = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost after the order was accepted")
        return result


def chain(dag_id: str, **dag_kwargs: object) -> DAG:
    """bestall >> wait_for_file >> load, on delivery mornings ordering at 05:00."""
    dag_kwargs.setdefault("schedule", DeliveryMorningTimetable(order_at="05:00"))
    dag_kwargs.setdefault("catchup", False)
    dag_kwargs.setdefault("start_date", MIDNIGHT - dt.timedelta(days=30))
    with DAG(dag_id, max_active_runs=16, tags=["skattekonto-system"], **dag_kwargs) as dag:  # type: ignore[arg-type]
        order = BestallOperator(task_id="bestall", delivery_morning="{{ data_interval_end }}")
        wait = ETransportFileSensor(task_id="wait_for_file", poll_interval=2)
        load = SkattekontoToSqlOperator(
            task_id="load", file=wait.output, sql_conn_id="skattekonto_warehouse", table_prefix=f"{dag_id}_"
        )
        order >> wait >> load
    return dag


# (a) exactly one scheduled run: the morning MORNING.
sys_scheduled = chain("sys_scheduled", start_date=MIDNIGHT, end_date=MORNING, catchup=True)
# (b) created paused, unpaused after 30 days of mornings.
sys_pause_off = chain("sys_pause_off", catchup=False)
sys_pause_on = chain("sys_pause_on", start_date=MIDNIGHT - dt.timedelta(days=7), catchup=True)
# (c) backfills only (paused: no scheduled runs).
sys_backfill = chain("sys_backfill")
sys_backfill_back = chain("sys_backfill_back")
# (d), (f) manual runs only: the schedule ended long ago.
sys_manual = chain("sys_manual", end_date=MIDNIGHT - dt.timedelta(days=20))
sys_restart = chain("sys_restart", end_date=MIDNIGHT - dt.timedelta(days=20))

# (e) retry and clear of bestall.
with DAG("sys_retry", schedule=None, start_date=MIDNIGHT - dt.timedelta(days=30), tags=["skattekonto-system"]) as dag:
    FailsOnceAfterOrdering(task_id="bestall", retries=1, retry_delay=dt.timedelta(seconds=1))
sys_retry = dag

# (g) several representatives' first run into an empty PostgreSQL warehouse: concurrent first loads.
with DAG(
    "sys_representatives",
    schedule=None,
    start_date=MIDNIGHT - dt.timedelta(days=30),
    max_active_tasks=8,
    tags=["skattekonto-system"],
) as dag:

    @task_group
    def representative(skattekonto_conn_id: str) -> None:
        order = BestallOperator(task_id="bestall", skattekonto_conn_id=skattekonto_conn_id)
        wait = ETransportFileSensor(task_id="wait_for_file", skattekonto_conn_id=skattekonto_conn_id, poll_interval=2)
        load = SkattekontoToSqlOperator(task_id="load", file=wait.output, sql_conn_id="skattekonto_warehouse_pg")
        order >> wait >> load

    representative.expand(skattekonto_conn_id=[f"skattekonto_rep_{n}" for n in range(4)])
sys_representatives = dag

# (h) CeleryExecutor: the sensor on worker 1 (queue A), the load on worker 2 (queue B).
QUEUE_A = os.environ.get("SKATTEKONTO_SYSTEM_QUEUE_A", "default")
QUEUE_B = os.environ.get("SKATTEKONTO_SYSTEM_QUEUE_B", "default")


def celery_chain(dag_id: str, conn_id: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=MIDNIGHT - dt.timedelta(days=30), tags=["skattekonto-system"]) as dag:
        order = BestallOperator(task_id="bestall", skattekonto_conn_id=conn_id)
        wait = ETransportFileSensor(
            task_id="wait_for_file", skattekonto_conn_id=conn_id, poll_interval=2, queue=QUEUE_A
        )
        load = SkattekontoToSqlOperator(
            task_id="load",
            file=wait.output,
            sql_conn_id="skattekonto_warehouse_pg",
            table_prefix=f"{dag_id}_",
            queue=QUEUE_B,
        )
        order >> wait >> load
    return dag


sys_celery = celery_chain("sys_celery", "skattekonto_default")  # archive on S3
sys_celery_local = celery_chain("sys_celery_local", "skattekonto_local")  # archive on the worker's disk
