"""load -> SkattekontoBalanceCheckOperator in real Airflow runs (dag.test()), on SQLite and PostgreSQL; the
sandbox's ``wrong_balance`` data (one principal's balance off) is caught and named."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.operators.check import SkattekontoBalanceCheckOperator, _file_ids
from airflow_provider_skattekonto.sandbox import data

from .test_operator import ORDERER, RunDagFile

pytestmark = pytest.mark.airflow_db

DAG_SOURCE = """
import datetime as dt
import json

from airflow.sdk import DAG, Asset, task

from airflow_provider_skattekonto.operators.check import SkattekontoBalanceCheckOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator

CONFIG = json.loads({config!r})

with DAG(CONFIG["dag_id"], schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:

    @task(task_id="wait")
    def wait():
        return CONFIG["file"]

    load = SkattekontoToSqlOperator(
        task_id="load",
        file=wait(),
        sql_conn_id=CONFIG["conn_id"],
        outlets=[Asset(name=CONFIG["dag_id"], uri="skattekonto://test/" + CONFIG["dag_id"])],
        **CONFIG["kwargs"],
    )
    check = SkattekontoBalanceCheckOperator(
        task_id="check", file_id=load.output, sql_conn_id=CONFIG["conn_id"], on_break=CONFIG["on_break"],
        **CONFIG["kwargs"],
    )
    load >> check
"""


def answer_file(tmp_path: Path, day: int, *, offset: int = 0) -> dict[str, Any]:
    morning = dt.datetime(2026, 3, day, 7, 0, tzinfo=STOCKHOLM)
    path = tmp_path / f"SKAHMST_{ORDERER}_202603{day:02d}_{offset}.txt"
    size, sha = data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=morning,
        created_at=morning.replace(hour=5),
        file_id=f"SKV-202603{day:02d}",
        seed=11,
        principals=25,
        transactions_per_principal=20,
        balance_offset_ore=offset,
    )
    return {"path": path.as_uri(), "name": path.name, "sha256": sha, "size": size, "orderer": ORDERER}


def run(run_dag_file: RunDagFile, file: dict[str, Any], conn_id: str, on_break: str = "fail", **kwargs: Any) -> Any:
    dag_id = f"check_{uuid.uuid4().hex[:10]}"
    config = {"dag_id": dag_id, "file": file, "conn_id": conn_id, "on_break": on_break, "kwargs": kwargs}
    return dag_id, run_dag_file(dag_id, DAG_SOURCE.format(config=json.dumps(config)))


def asset_event_extra(dag_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id).all()
        return [dict(event.extra) for event in events]


def _first_principal() -> str:
    return sorted(data.principals_for(ORDERER, seed=11, count=25))[0]


@pytest.mark.parametrize("warehouse_kind", ["sqlite", "postgres"])
def test_load_then_check_catches_one_wrong_balance(
    run_dag_file: RunDagFile, warehouse_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if warehouse_kind == "sqlite":
        conn_id, _ = request.getfixturevalue("sqlite_conn")
        kwargs: dict[str, Any] = {}
    else:
        conn_id, schema = request.getfixturevalue("pg_conn")
        kwargs = {"table_schema": schema}
    dag_id, results = run(run_dag_file, answer_file(tmp_path, 10), conn_id, **kwargs)
    assert results["check"][0] == "success"
    first = results["check"][1]
    assert first["ok"] and first["chain_starts"] == 25 and first["checked"] == 0
    load = results["load"][1]
    assert load["transactions_new"] == load["transaction_count"] and load["transactions_gone"] == 0
    [extra] = asset_event_extra(dag_id)
    assert extra["file_id"] == "SKV-20260310" and extra["transactions_new"] == load["transactions_new"]

    # the next morning: consistent (the sandbox's balances follow the transactions)
    _, results = run(run_dag_file, answer_file(tmp_path, 11), conn_id, **kwargs)
    assert results["check"][0] == "success"
    assert results["check"][1]["checked"] == 25 and results["check"][1]["ok"]
    assert results["load"][1]["transactions_new"] > 0

    # the morning after, one balance 1234 öre off: the check fails naming the principal and the amounts
    _, results = run(run_dag_file, answer_file(tmp_path, 12, offset=1234), conn_id, **kwargs)
    assert results["load"][0] == "success"
    assert results["check"][0] == "failed"

    # as a warning, the same finding is the task's XCom
    _, results = run(run_dag_file, answer_file(tmp_path, 12, offset=1234), conn_id, on_break="warn", **kwargs)
    state, report = results["check"]
    assert state == "success" and not report["ok"]
    assert report["principals"] == [_first_principal()]
    [brk] = report["breaks"]
    assert brk["actual_ore"] - brk["expected_ore"] == 1234 and brk["column"] == "skatteverket"


def test_check_failure_message_names_principal_and_amounts(
    sqlite_conn: tuple[str, Path], tmp_path: Path, run_dag_file: RunDagFile
) -> None:
    conn_id, _ = sqlite_conn
    run(run_dag_file, answer_file(tmp_path, 10), conn_id)
    run(run_dag_file, answer_file(tmp_path, 11, offset=-99), conn_id, on_break="warn")
    from airflow_provider_skattekonto.version_compat import AirflowFailException

    operator = SkattekontoBalanceCheckOperator(task_id="c", sql_conn_id=conn_id, file_id="SKV-20260311")
    with pytest.raises(AirflowFailException) as failure:
        operator.execute({})  # type: ignore[arg-type]
    message = str(failure.value)
    assert _first_principal() in message and "-99 öre" in message and "SKV-20260311" in message
    # every stored snapshot (file_id=None) and several ids work too
    all_files = SkattekontoBalanceCheckOperator(task_id="d", sql_conn_id=conn_id, on_break="warn").execute({})  # type: ignore[arg-type]
    assert all_files["break_count"] == 1 and all_files["chain_starts"] == 25


def test_file_id_forms() -> None:
    assert _file_ids(None) is None and _file_ids("") is None
    assert _file_ids("F1") == ["F1"]
    assert _file_ids({"file_id": "F1", "noop": True}) == ["F1"]
    assert _file_ids(json.dumps({"file_id": "F2"})) == ["F2"]
    assert _file_ids(str({"file_id": "F3"})) == ["F3"]
    assert _file_ids(["F1", {"file_id": "F2"}]) == ["F1", "F2"]
    with pytest.raises(ValueError, match="on_break"):
        SkattekontoBalanceCheckOperator(task_id="x", sql_conn_id="c", on_break="ignore")
