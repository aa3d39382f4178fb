"""The main job: the example DAG end to end against the local sandbox, into an embedded SQLite warehouse.

Starts the sandbox (real HTTPS with client certificates) with its clock at Monday 20:00, in real time
until the order is in (so a slow start can never miss the 03:00 cutoff), then running 900x. Runs
``example_dags/skattekonto_daily.py`` for Tuesday's delivery morning with real Airflow (``dag.test()``,
triggers included): order -> wait for 07:00 -> download -> parse -> load -> balance check, then loads the
same morning again to show it is a no-op, then the next morning (the clock jumps to it once that order is
in), and prints a line of the change feed, the balance check's result and what the warehouse holds.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("SKATTEKONTO_DEMO_DIR", ROOT / ".demo"))
STOCKHOLM_START = "2026-11-30T20:00:00+01:00"  # a Monday evening; the file comes Tuesday 07:00
SPEED = 900.0  # sandbox seconds per real second: the night passes in under a minute


def prepare_airflow() -> None:
    home = WORK / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            # as a deployment with a triggerer (the README's recommendation): the waits defer, and dag.test()
            # runs their triggers inline, which follow the sandbox's fast clock
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        }
    )
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


def load_example_dag():
    spec = importlib.util.spec_from_file_location("skattekonto_daily", ROOT / "example_dags" / "skattekonto_daily.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def summary(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'skattekonto_files'").fetchone():
            return f"Warehouse {db}: nothing was loaded (see the task errors above)"
        files = conn.execute(
            "SELECT file_name, principal_count, transaction_count FROM skattekonto_files ORDER BY created_at"
        ).fetchall()
        principals, balance = conn.execute(
            "SELECT COUNT(DISTINCT principal), COALESCE(SUM(balance_skatteverket_ore), 0) FROM skattekonto_balances"
        ).fetchone()
        transactions, amounts = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(COALESCE(amount_skatteverket_ore, 0)"
            " + COALESCE(amount_kronofogden_ore, 0)), 0) FROM skattekonto_transactions"
        ).fetchone()
        debtors = conn.execute(
            "SELECT COUNT(*) FROM skattekonto_balances WHERE balance_skatteverket_ore < 0"
        ).fetchone()[0]
    lines = [f"Warehouse {db}:"]
    lines += [f"  file {name}: {p} principals, {t} transactions" for name, p, t in files]
    lines += [
        f"  principals:   {principals} ({debtors} with a debt at Skatteverket)",
        f"  transactions: {transactions} (sum {amounts / 100:,.2f} kr)".replace(",", " "),
        f"  reconciled balances in total: {balance / 100:,.2f} kr".replace(",", " "),
    ]
    return "\n".join(lines)


def speed_up_after_order(sandbox, stop: threading.Event, orders: int = 1, jump_to: dt.datetime | None = None) -> None:
    """Let the night fly by (SPEED x) once the sandbox has ``orders`` orders: waiting for 07:00 costs seconds.
    With ``jump_to``, the clock first jumps there (shortly before the next morning's 07:00)."""
    while not stop.wait(0.1):
        if len(sandbox.orders()) >= orders:
            sandbox.clock.set(now=jump_to, speed=SPEED)
            return


def task_results(dag_run) -> dict:
    """``{task_id: (state, return value)}`` of a finished ``dag.test()`` run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    class Row:
        def __init__(self, value) -> None:
            self.value = value

    results = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            value = (
                session.query(XComModel.value)
                .filter_by(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, key="return_value")
                .scalar()
            )
            results[ti.task_id] = (str(ti.state), None if value is None else XComModel.deserialize_value(Row(value)))
    return results


def feed_line(db: Path, load: dict) -> str:
    """One line of the change feed: what the file brought, and one new transaction from it."""
    with sqlite3.connect(db) as conn:
        example = conn.execute(
            "SELECT principal, transaction_date, transaction_text, amount_skatteverket_ore"
            " FROM skattekonto_transaction_changes WHERE file_id = ? AND change = 'new'"
            " AND amount_skatteverket_ore IS NOT NULL ORDER BY principal, sequence_no LIMIT 1",
            (load["file_id"],),
        ).fetchone()
    line = (
        f"Change feed of {load['file_name']}: {load['transactions_new']} transactions new,"
        f" {load['transactions_gone']} gone"
    )
    if example:
        principal, date, text, amount = example
        line += f"; e.g. new: {principal} {date} {text!r} {amount / 100:,.2f} kr".replace(",", " ")
    return line


def check_line(load: dict, check: dict | None) -> str:
    if not check:
        return f"Balance check of {load['file_name']}: no result"
    verdict = "all consistent" if check["ok"] else f"{check['break_count']} breaks in {check['principals']}"
    return (
        f"Balance check of {load['file_name']}: {check['checked']} balances checked against the previous morning"
        f" ({check['chain_starts']} start a reconciliation period), {verdict}"
    )


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.monotonic()
    prepare_airflow()

    from airflow_provider_skattekonto.sandbox.clock import SandboxClock
    from airflow_provider_skattekonto.sandbox.server import Sandbox

    start = dt.datetime.fromisoformat(STOCKHOLM_START)
    warehouse = WORK / "warehouse.db"
    clock = SandboxClock(start, speed=1.0)
    with Sandbox.start(
        WORK / "sandbox", clock=clock, principals_per_orderer=250, transactions_per_principal=12
    ) as sandbox:
        connection = sandbox.airflow_connection("orderer", archive_url=(WORK / "archive").as_uri())
        os.environ["AIRFLOW_CONN_SKATTEKONTO_DEFAULT"] = json.dumps(connection)
        os.environ["AIRFLOW_CONN_SKATTEKONTO_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(warehouse)})
        os.environ["AIRFLOW_VAR_SKATTEKONTO_STAGING_URL"] = (WORK / "staged").as_uri()
        print(
            f"Sandbox at {sandbox.base_url}; its clock starts {start:%A %Y-%m-%d %H:%M} and runs {SPEED:.0f}x "
            "once the order is in"
        )

        dag = load_example_dag()
        runs = {}
        ordered = threading.Event()
        watcher = threading.Thread(target=speed_up_after_order, args=(sandbox, ordered), daemon=True)
        watcher.start()
        results = {}
        try:
            for attempt in ("first run", "same morning again"):
                dag_run = dag.test(logical_date=start)
                results = task_results(dag_run)
                runs[attempt] = {task: state for task, (state, _) in results.items()}
                print(f"{attempt}: {runs[attempt]}")
                watcher.join(5)
                # Tuesday morning in real time again, however long the run took
                sandbox.clock.set(now=(start + dt.timedelta(days=1)).replace(hour=8, minute=0), speed=1.0)
            # the next morning: real time until its order is in, then a jump to just before its 07:00
            next_morning = (start + dt.timedelta(days=2)).replace(hour=6, minute=58)
            watcher = threading.Thread(
                target=speed_up_after_order, args=(sandbox, ordered, 2, next_morning), daemon=True
            )
            watcher.start()
            dag_run = dag.test(logical_date=start + dt.timedelta(days=1))
            results = task_results(dag_run)
            runs["next morning"] = {task: state for task, (state, _) in results.items()}
            print(f"next morning: {runs['next morning']}")
        finally:
            ordered.set()
            watcher.join(5)
        load = results.get("load", (None, None))[1]
        if load:
            print(feed_line(warehouse, load))
            print(check_line(load, results.get("check_balances", (None, None))[1]))
            staged = results.get("stage_files", (None, None))[1]
            if staged:
                tables = staged["tables"]
                print(
                    f"Staged {tables['transactions']['rows']} transactions and {tables['balances']['rows']} balances"
                    f" as {' and '.join(staged['formats'])}: {staged['manifest_url']}"
                )
        orders = sandbox.orders()
        print(f"Orders the sandbox accepted: {len(orders)} ({', '.join(o.client_correlation_id for o in orders)})")
        print(f"Sandbox clock now: {sandbox.clock.now():%A %Y-%m-%d %H:%M}")

    print(summary(warehouse))
    print(f"Done in {time.monotonic() - started:.0f} s. Files archived under {WORK / 'archive'}.")
    ok = all(state == "success" for states in runs.values() for state in states.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
