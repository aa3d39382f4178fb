"""DAG-level fixtures: run a DAG with real Airflow (``dag.test()``, triggers inline)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.hooks.conftest import use_connection  # noqa: F401  (shared fixture)


@pytest.fixture
def run_dag(airflow_db: Any) -> Callable[..., dict[str, Any]]:
    """Run a DAG with ``dag.test()``; return ``{task_id: (state, xcom return value)}``."""

    def run(dag: Any, **kwargs: Any) -> dict[str, Any]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        dag_run = dag.test(**kwargs)
        results: dict[str, Any] = {}
        with create_session() as session:
            tis = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=dag_run.run_id).all()
            for ti in tis:
                value = (
                    session.query(XComModel.value)
                    .filter_by(dag_id=dag.dag_id, run_id=dag_run.run_id, task_id=ti.task_id, key="return_value")
                    .scalar()
                )
                results[ti.task_id] = (str(ti.state), XComModel.deserialize_value(_Row(value)) if value else None)
        return results

    return run


class _Row:
    def __init__(self, value: Any) -> None:
        self.value = value
