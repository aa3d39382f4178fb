"""The example DAGs end to end with real Airflow (dag.test(), triggers inline), the sandbox and SQLite."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from tests.clock_speed import clock_speed_when

EXAMPLES = Path(__file__).resolve().parents[1] / "example_dags"
MONDAY_EVENING = dt.datetime(2026, 11, 30, 20, 0, tzinfo=STOCKHOLM)  # Tuesday's file comes at 07:00

pytestmark = pytest.mark.airflow_db


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_SKATTEKONTO_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


@contextmanager
def night_passes_after_orders(sandbox: Any, orders: int, speed: float = 20000.0) -> Iterator[None]:
    """The sandbox clock runs in real time until ``orders`` orders arrived, then the night flies by.

    So ordering (before the 03:00 cutoff) never races Airflow's start-up, and waiting costs seconds.
    """
    sandbox.clock.set(now=MONDAY_EVENING, speed=1.0)
    with clock_speed_when(sandbox, lambda: len(sandbox.orders()) >= orders, speed):
        yield


def connect(sandbox: Any, monkeypatch: pytest.MonkeyPatch, conn_id: str, identity: str, archive: Path) -> None:
    connection = sandbox.airflow_connection(identity, archive_url=archive.as_uri())
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def test_example_dags_parse_without_import_errors() -> None:
    """What a DAG processor does with the example DAGs (run on every Airflow of the CI matrix)."""
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))  # Airflow's own examples are off (AIRFLOW__CORE__LOAD_EXAMPLES)
    assert bag.import_errors == {}
    assert {"skattekonto_daily", "skattekonto_representatives"} <= set(bag.dag_ids)


def test_daily_dag_orders_waits_and_loads(
    sandbox: Any, run_dag_file: Any, warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(sandbox, monkeypatch, "skattekonto_default", "orderer", tmp_path / "archive")
    monkeypatch.setenv("AIRFLOW_VAR_SKATTEKONTO_STAGING_URL", (tmp_path / "staged").as_uri())
    source = (EXAMPLES / "skattekonto_daily.py").read_text()
    with night_passes_after_orders(sandbox, 1):
        results = run_dag_file("skattekonto_daily", source, logical_date=MONDAY_EVENING)
    assert {task: state for task, (state, _) in results.items()} == {
        "bestall": "success",
        "wait_for_file": "success",
        "load": "success",
        "check_balances": "success",
        "stage_files": "success",
    }
    assert results["bestall"][1]["delivery_morning"] == "2026-12-01T07:00:00+01:00"
    loaded = results["load"][1]
    assert loaded["transactions_new"] == loaded["transaction_count"]  # the first load: everything is new
    checked = results["check_balances"][1]
    assert checked["ok"] and checked["file_ids"] == [loaded["file_id"]]
    assert checked["chain_starts"] == loaded["principal_count"]
    staged = results["stage_files"][1]
    assert staged["file_id"] == loaded["file_id"]
    assert staged["tables"]["transactions"]["rows"] == loaded["transaction_count"]
    assert (tmp_path / "staged" / loaded["file_name"].removesuffix(".txt") / "manifest.json").exists()
    with sqlite3.connect(warehouse) as conn:
        (principals,) = conn.execute("SELECT COUNT(*) FROM skattekonto_balances").fetchone()
        (transactions,) = conn.execute("SELECT COUNT(*) FROM skattekonto_transactions").fetchone()
    assert principals == loaded["principal_count"] > 0
    assert transactions == loaded["transaction_count"] > 0

    # the extra links as the UI gets them, through the REST API
    from tests.rest_api import extra_links

    order = results["bestall"][1]
    order_link = extra_links("skattekonto_daily", "bestall")["Skatteverket order"]
    assert order_link and f"correlation_id={order['correlation_id']}" in order_link
    archived = results["wait_for_file"][1]["path"]
    for task in ("wait_for_file", "load"):
        link = extra_links("skattekonto_daily", task)["Archived answer file"]
        assert link and "/skattekonto/archived-file?" in link and quote(archived, safe="") in link


def test_representatives_dag_maps_one_chain_per_connection(
    sandbox: Any, run_dag_file: Any, warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(sandbox, monkeypatch, "skattekonto_byra_a", "orderer", tmp_path / "archive")
    connect(sandbox, monkeypatch, "skattekonto_byra_b", "orderer2", tmp_path / "archive")
    source = (EXAMPLES / "skattekonto_representatives.py").read_text()
    with night_passes_after_orders(sandbox, 2):
        results = run_dag_file("skattekonto_representatives", source, logical_date=MONDAY_EVENING)
    assert sorted(results) == [
        f"representative.{task}[{index}]" for task in ("bestall", "load", "wait_for_file") for index in (0, 1)
    ]
    assert all(state == "success" for state, _ in results.values()), results
    assert {o.orderer for o in sandbox.orders()} == {
        sandbox.pki.identity("orderer").organisation_number,
        sandbox.pki.identity("orderer2").organisation_number,
    }
    with sqlite3.connect(warehouse) as conn:
        orderers = {row[0] for row in conn.execute("SELECT DISTINCT orderer FROM skattekonto_files")}
    assert orderers == {o.orderer for o in sandbox.orders()}
