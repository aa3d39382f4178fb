"""OpenLineage facets of the load: the archived E-transport file in, the warehouse tables out."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sandbox.data import write_answer_file

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is a test dependency")


def answer_file(tmp_path: Path) -> tuple[Path, int, str]:
    """A small answer file of 4 principals: (path, size, sha256)."""
    morning = dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)
    path = tmp_path / "SKAHMST_5560000167_20261130_001.txt"
    size, sha256 = write_answer_file(
        path,
        orderer="5560000167",
        delivery_morning=morning,
        created_at=morning - dt.timedelta(minutes=20),
        file_id="F1",
        seed=7,
        principals=4,
        transactions_per_principal=3,
    )
    return path, size, sha256


def test_lineage_from_the_file_to_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, size, sha256 = answer_file(tmp_path)
    warehouse = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_LINEAGE_WH", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    operator = SkattekontoToSqlOperator(
        task_id="load",
        file={"path": path.as_uri(), "name": path.name, "sha256": sha256, "size": size},
        sql_conn_id="lineage_wh",
    )
    result = operator.execute(context={})  # type: ignore[arg-type]
    assert result["principals_loaded"] == 4
    with sqlite3.connect(warehouse) as conn:
        assert conn.execute("SELECT COUNT(*) FROM skattekonto_balances").fetchone() == (4,)

    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(path))]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        (f"sqlite://{warehouse}", "main.skattekonto_files"),
        (f"sqlite://{warehouse}", "main.skattekonto_balances"),
        (f"sqlite://{warehouse}", "main.skattekonto_transactions"),
    ]


def test_postgres_namespace_comes_from_the_hook_with_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The namespace other producers use for the same database (``postgres://host:5432``), port included."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from airflow_provider_skattekonto.lineage import database_namespace, table_datasets
    from airflow_provider_skattekonto.version_compat import BaseHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_LINEAGE_PG",
        json.dumps({"conn_type": "postgres", "host": "warehouse.example", "login": "u", "schema": "analytics"}),
    )
    hook = PostgresHook(postgres_conn_id="lineage_pg")
    namespace, database = database_namespace(hook, BaseHook.get_connection("lineage_pg"), "postgresql")
    assert (namespace, database) == ("postgres://warehouse.example:5432", "analytics")
    names = [d.name for d in table_datasets(namespace, database, "public", "skattekonto_")]
    assert names == [f"analytics.public.skattekonto_{t}" for t in ("files", "balances", "transactions")]


def test_warehouse_assets_follow_airflows_postgres_scheme() -> None:
    from airflow.providers.postgres.assets.postgres import sanitize_uri

    from airflow_provider_skattekonto.lineage import warehouse_assets

    assets = warehouse_assets("postgres://warehouse.example:5432/analytics", schema="reporting")
    assert [a.uri for a in assets] == [
        f"postgres://warehouse.example:5432/analytics/reporting/skattekonto_{t}"
        for t in ("files", "balances", "transactions")
    ]
    from urllib.parse import urlsplit

    for asset in assets:  # Airflow's own handler accepts them unchanged
        assert sanitize_uri(urlsplit(asset.uri)).geturl() == asset.uri


LOAD_WITH_OUTLETS = """
import datetime as dt
from airflow.sdk import DAG
from airflow_provider_skattekonto.lineage import warehouse_assets
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
    SkattekontoToSqlOperator(
        task_id="load", file={file!r}, sql_conn_id={conn_id!r}, table_schema={schema!r},
        outlets=warehouse_assets("postgres://127.0.0.1:5432/test", schema={schema!r}),
    )
"""


@pytest.mark.airflow_db
def test_outlet_events_say_what_was_loaded(run_dag_file: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from tests.loading.conftest import PG_DSN, require_postgres

    require_postgres()
    import psycopg

    path, size, sha256 = answer_file(tmp_path)
    schema, conn_id, dag_id = (f"lin_{uuid.uuid4().hex[:10]}" for _ in range(3))
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "login": "postgres", "schema": "test", "port": 5432}),
    )
    file = {"path": path.as_uri(), "name": path.name, "sha256": sha256, "size": size}
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        source = LOAD_WITH_OUTLETS.format(dag_id=dag_id, file=file, conn_id=conn_id, schema=schema)
        state, report = run_dag_file(dag_id, source)["load"]
        assert state == "success" and report["principals_loaded"] == 4
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetModel.uri, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_dag_id == dag_id)
            .all()
        )
    assert sorted(uri for uri, _ in events) == sorted(
        f"postgres://127.0.0.1:5432/test/{schema}/skattekonto_{t}" for t in ("files", "balances", "transactions")
    )
    for _, extra in events:
        assert extra["file_name"] == path.name and extra["sha256"] == sha256
        assert extra["principals_loaded"] == 4 and extra["rows_loaded"] == 4 + report["transactions_inserted"]
        assert extra["noop"] is False


def test_sensor_lineage_from_etransport_to_the_archive(sandbox: Any, use_connection: Any, tmp_path: Path) -> None:
    """The file on E-transport (https://host:port) in, its archived copy out."""
    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook
    from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor

    sandbox.clock.set(now=dt.datetime(2026, 11, 30, 12, 0, tzinfo=STOCKHOLM), speed=1.0)
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    SkattekontoHook().bestall()
    sandbox.clock.set(now=dt.datetime(2026, 12, 1, 8, 0, tzinfo=STOCKHOLM))
    sensor = ETransportFileSensor(task_id="wait", delivery_morning="2026-12-01T07:00:00+01:00")
    xcom = sensor.execute(context={})  # type: ignore[arg-type]
    lineage = sensor.get_openlineage_facets_on_complete(None)
    [source] = lineage.inputs
    assert source.namespace == sandbox.base_url.removesuffix("/")
    assert source.name.endswith(f"/files/{xcom['name']}")
    [archived] = lineage.outputs
    assert (archived.namespace, archived.name) == ("file", xcom["path"].removeprefix("file://"))
