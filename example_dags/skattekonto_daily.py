"""Every business morning: order the Skattekonto file, wait for it on E-transport, load it.

Connections (see README): ``skattekonto_default`` (type ``skattekonto``: certificate, keys, E-transport
source, archive) and ``skattekonto_warehouse`` (any common-sql database: sqlite, postgres, ...).
Safe to backfill: runs for past mornings do not order (history cannot be ordered); they fetch the
file delivered then, and the loader never lets an older file overwrite newer data.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset

from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor
from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable

SKATTEKONTO_CONN_ID = "skattekonto_default"
WAREHOUSE_CONN_ID = "skattekonto_warehouse"
# Downstream DAGs can schedule on the data instead of the clock: schedule=[SKATTEKONTO_LOADED].
SKATTEKONTO_LOADED = Asset(name="skattekonto_loaded", uri=f"skattekonto://{SKATTEKONTO_CONN_ID}/warehouse")

with DAG(
    dag_id="skattekonto_daily",
    schedule=DeliveryMorningTimetable(order_at="22:00"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=3,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["skatteverket", "skattekonto"],
    doc_md=__doc__,
) as dag:
    order = BestallOperator(
        task_id="bestall",
        skattekonto_conn_id=SKATTEKONTO_CONN_ID,
        delivery_morning="{{ data_interval_end }}",
    )
    wait = ETransportFileSensor(
        task_id="wait_for_file",
        skattekonto_conn_id=SKATTEKONTO_CONN_ID,
        deadline_time="10:00",
        poll_interval=120,
    )
    load = SkattekontoToSqlOperator(
        task_id="load",
        file=wait.output,
        sql_conn_id=WAREHOUSE_CONN_ID,
        outlets=[SKATTEKONTO_LOADED],
    )
    order >> wait >> load
