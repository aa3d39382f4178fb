"""Fixtures for DAG-level tests: sandbox connections, DAG sources for ``run_dag_file``."""

from __future__ import annotations

import uuid

from tests.hooks.conftest import logs, use_connection  # noqa: F401  (shared fixtures)

HEADER = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
"""


def dag_source(*task_lines: str) -> tuple[str, str]:
    """(dag_id, source) of a DAG named uniquely whose body is ``task_lines`` (one statement each)."""
    dag_id = f"t_{uuid.uuid4().hex[:10]}"
    body = "".join(f"    {line}\n" for line in task_lines)
    return dag_id, HEADER.format(dag_id=dag_id) + body


def has_deferred(dag_id: str, task_id: str) -> bool:
    """Whether ``task_id``'s latest task instance in ``dag_id`` has deferred (the metadata database).

    Its state says so only for a moment under ``dag.test()``, which sets a deferred task instance back to
    ``queued`` before it runs the trigger inline: the trigger it was given (``next_method``) stays.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_id, task_id=task_id)
            .order_by(TaskInstance.start_date.desc())
            .first()
        )
        return ti is not None and (ti.state == "deferred" or ti.next_method is not None)
