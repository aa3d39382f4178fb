"""OpenLineage facets of the load: the archived E-transport file in, the warehouse tables out."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sandbox.data import write_answer_file

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is a test dependency")


def test_lineage_from_the_file_to_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
