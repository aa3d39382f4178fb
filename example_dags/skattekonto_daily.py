"""Every business morning: order the Skattekonto file, wait for it on E-transport, load it, check the
balances, and stage its rows as Parquet/CSV files (Airflow Variable ``skattekonto_staging_url``).

Connections (see README): ``skattekonto_default`` (type ``skattekonto``: certificate, keys, E-transport
source, archive) and ``skattekonto_warehouse`` (any common-sql database: sqlite, postgres, ...).
Each run is one delivery morning; its run id names it (``scheduled__2026-11-19_0700__...``).

* Scheduled: orders at 22:00 the evening before, waits in the triggerer for the 07:00 file, loads it.
* Manual trigger, with or without a logical date: orders now, for the morning an order placed now
  lands in (with a logical date: that date's morning).
* Retry or clear of ``bestall`` after an accepted order: no second order (Airflow 3.3+).
* Unpaused after a pause (``catchup=False``): one run, for the next morning that can still be ordered.
* Safe to backfill (``airflow backfill create --from-date D1 --to-date D2``: the mornings dated
  D1..D2): runs for past mornings do not order (history cannot be ordered); they fetch the file
  delivered then, skip (logging why) when there is none, and the loader never lets an older file
  overwrite newer data.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset

from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.operators.check import SkattekontoBalanceCheckOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.operators.stage import SkattekontoStageFilesOperator
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
    order = BestallOperator(task_id="bestall", skattekonto_conn_id=SKATTEKONTO_CONN_ID)
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
    # previous balance + new transactions - gone ones == this morning's balance, per principal (read-only)
    check = SkattekontoBalanceCheckOperator(
        task_id="check_balances",
        sql_conn_id=WAREHOUSE_CONN_ID,
        file_id=load.output,
        on_break="fail",
    )
    # the file's rows as Parquet and CSV + manifest, for a cloud warehouse's own bulk load
    stage = SkattekontoStageFilesOperator(
        task_id="stage_files",
        file=wait.output,
        destination="{{ var.value.get('skattekonto_staging_url', 'file:///tmp/skattekonto/staged') }}",
    )
    order >> wait >> load >> check >> stage
