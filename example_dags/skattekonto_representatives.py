"""Several representatives (one ``skattekonto`` connection each), one mapped task per representative.

Each representative orders with its own organisation certificate; each file is waited for, archived
and loaded independently, so one late file does not hold up the others.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, task_group

from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor
from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable

REPRESENTATIVE_CONN_IDS = ["skattekonto_byra_a", "skattekonto_byra_b"]
WAREHOUSE_CONN_ID = "skattekonto_warehouse"

with DAG(
    dag_id="skattekonto_representatives",
    schedule=DeliveryMorningTimetable(order_at="22:00"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["skatteverket", "skattekonto"],
    doc_md=__doc__,
) as dag:

    @task_group
    def representative(skattekonto_conn_id: str) -> None:
        order = BestallOperator(task_id="bestall", skattekonto_conn_id=skattekonto_conn_id)
        wait = ETransportFileSensor(task_id="wait_for_file", skattekonto_conn_id=skattekonto_conn_id)
        load = SkattekontoToSqlOperator(
            task_id="load",
            file=wait.output,
            sql_conn_id=WAREHOUSE_CONN_ID,
            outlets=[Asset(name="skattekonto_representatives_loaded", uri="skattekonto://representatives/warehouse")],
        )
        order >> wait >> load

    representative.expand(skattekonto_conn_id=REPRESENTATIVE_CONN_IDS)
