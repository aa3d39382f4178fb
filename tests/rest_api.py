"""Airflow's own REST API (the API server app, in process) for tests that check what the UI shows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any


@contextmanager
def api_client() -> Iterator[Any]:
    """A client of Airflow's API server app (REST API, UI API and plugin apps), signed in as an admin."""
    from fastapi.testclient import TestClient

    with TestClient(_core_app()) as client:
        yield client


@cache
def _core_app() -> Any:
    """The API server app, built once per process: building it takes seconds, and it keeps no state of its own."""
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user

    app = create_app("core")
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="test", role="ADMIN")
    return app


def extra_links(dag_id: str, task_id: str, *, map_index: int = -1) -> dict[str, str | None]:
    """``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links`` of the DAG's latest run."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id).order_by(DagRun.id.desc()).first()
        assert run is not None, f"no run of {dag_id}"
        run_id = run.run_id
    with api_client() as client:
        response = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links", params={"map_index": map_index}
        )
    assert response.status_code == 200, response.text
    return dict(response.json()["extra_links"])
