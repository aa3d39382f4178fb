"""SkattekontoToSqlOperator in real Airflow runs (dag.test()) against real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.loading import SnapshotLoadError
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator, dialect_of
from airflow_provider_skattekonto.sandbox import data

from .conftest import PG_DSN

pytestmark = pytest.mark.airflow_db

ORDERER = "5560000167"
RunDagFile = Callable[[str, str], dict[str, tuple[str, Any]]]


def sandbox_file(tmp_path: Path, day: int) -> dict[str, Any]:
    """An answer file on disk and the E-transport sensor's XCom describing it."""
    morning = dt.datetime(2026, 3, day, 7, 0, tzinfo=STOCKHOLM)
    path = tmp_path / f"SKAHMST_{ORDERER}_202603{day:02d}.txt"
    size, sha = data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=morning,
        created_at=morning.replace(hour=5),
        file_id=f"SKV-202603{day:02d}",
        seed=11,
        principals=25,
        transactions_per_principal=20,
    )
    return {
        "path": path.as_uri(),
        "name": path.name,
        "sha256": sha,
        "size": size,
        "delivery_morning": morning.isoformat(),
        "orderer": "16" + ORDERER,
        "kind": "skahmst",
    }


DAG_SOURCE = """
import datetime as dt
import json

from airflow.sdk import DAG, task

from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator

CONFIG = json.loads({config!r})

with DAG(CONFIG["dag_id"], schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
    if CONFIG["via_xcom"]:

        @task(task_id="wait")
        def wait():
            return CONFIG["file"]  # what ETransportFileSensor pushes

        source = wait()
    else:
        source = CONFIG["file"]
    SkattekontoToSqlOperator(task_id="load", file=source, sql_conn_id=CONFIG["conn_id"], **CONFIG["kwargs"])
"""


def load_dag(run_dag_file: RunDagFile, file: Any, conn_id: str, *, via_xcom: bool = False, **kwargs: Any) -> Any:
    """Run a DAG (written to the dags folder) whose ``load`` task loads ``file``; its (state, XCom)."""
    dag_id = f"load_{uuid.uuid4().hex[:10]}"
    config = {"dag_id": dag_id, "file": file, "conn_id": conn_id, "via_xcom": via_xcom, "kwargs": kwargs}
    return run_dag_file(dag_id, DAG_SOURCE.format(config=json.dumps(config)))["load"]


def sqlite_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_loads_the_sensors_file_into_sqlite_and_reload_is_a_noop(
    run_dag_file: RunDagFile, sqlite_conn: tuple[str, Path], tmp_path: Path
) -> None:
    conn_id, db = sqlite_conn
    file = sandbox_file(tmp_path, 10)
    state, result = load_dag(run_dag_file, file, conn_id, via_xcom=True)
    assert state == "success"
    assert result["noop"] is False and result["principals_loaded"] == 25
    assert result["dialect"] == "sqlite" and result["sha256"] == file["sha256"]
    [(count,)] = sqlite_rows(db, 'SELECT COUNT(*) FROM "skattekonto_transactions"')
    assert count == result["transactions_inserted"] == result["transaction_count"]
    [(name, delivered)] = sqlite_rows(db, 'SELECT file_name, delivery_morning FROM "skattekonto_files"')
    assert name == file["name"] and dt.datetime.fromisoformat(delivered) == dt.datetime.fromisoformat(
        file["delivery_morning"]
    )

    state, again = load_dag(run_dag_file, file, conn_id)
    assert state == "success" and again["noop"] is True
    newer = sandbox_file(tmp_path, 11)
    state, next_day = load_dag(run_dag_file, newer, conn_id)
    assert state == "success" and next_day["principals_replaced"] == 25
    [(count,)] = sqlite_rows(db, 'SELECT COUNT(*) FROM "skattekonto_transactions"')
    assert count == next_day["transaction_count"]


def test_loads_into_postgres_with_schema_and_prefix(
    run_dag_file: RunDagFile, pg_conn: tuple[str, str], tmp_path: Path
) -> None:
    conn_id, schema = pg_conn
    file = sandbox_file(tmp_path, 12)
    # the XCom as rendered text (a template without render_template_as_native_obj gives a string)
    state, result = load_dag(run_dag_file, json.dumps(file), conn_id, table_schema=schema, table_prefix="skk_")
    assert state == "success" and result["dialect"] == "postgresql" and result["principals_loaded"] == 25
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        [(count,)] = conn.execute(f'SELECT COUNT(*) FROM "{schema}"."skk_transactions"').fetchall()
        [(sha,)] = conn.execute(f'SELECT sha256 FROM "{schema}"."skk_files"').fetchall()
    assert count == result["transaction_count"] and sha == file["sha256"]


def test_checksum_mismatch_fails_and_writes_nothing(
    run_dag_file: RunDagFile, sqlite_conn: tuple[str, Path], tmp_path: Path
) -> None:
    conn_id, db = sqlite_conn
    file = sandbox_file(tmp_path, 10) | {"sha256": "0" * 64}
    state, result = load_dag(run_dag_file, file, conn_id)
    assert state == "failed" and result is None
    assert sqlite_rows(db, 'SELECT COUNT(*) FROM "skattekonto_files"') == [(0,)]
    assert sqlite_rows(db, 'SELECT COUNT(*) FROM "skattekonto_transactions"') == [(0,)]


def test_plain_path_without_checksum(run_dag_file: RunDagFile, sqlite_conn: tuple[str, Path], tmp_path: Path) -> None:
    conn_id, _ = sqlite_conn
    file = sandbox_file(tmp_path, 10)
    state, result = load_dag(run_dag_file, file["path"].removeprefix("file://"), conn_id)
    assert state == "success" and result["sha256"] == file["sha256"]
    assert result["file_name"] == file["name"] and result["principals_loaded"] == 25


def test_bad_prefix_fails_at_dag_parse_time() -> None:
    with pytest.raises(SnapshotLoadError, match="Invalid table prefix"):
        SkattekontoToSqlOperator(task_id="x", file={}, sql_conn_id="c", table_prefix="bad; drop")


def test_dialect_detection_from_real_hooks(sqlite_conn: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_skattekonto.version_compat import BaseHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_DIALECT",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "login": "postgres", "schema": "test"}),
    )
    assert dialect_of(BaseHook.get_hook(sqlite_conn[0])) == "sqlite"
    assert dialect_of(BaseHook.get_hook("pg_dialect")) == "postgresql"

    class OtherHook:
        conn_type = "mssql"
        dialect_name = "mssql"

    assert dialect_of(OtherHook()) == "generic"
