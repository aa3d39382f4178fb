"""CeleryExecutor with two workers (Redis broker, PostgreSQL result backend), the archive on S3 (moto).

Each worker has its own AIRFLOW_HOME and temp folder; the sensor runs on worker 1 and the load on
worker 2 (their own queues), so a file archived by one is loaded by the other only through S3.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from tests.system.conftest import AirflowStack

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

TUESDAY = dt.datetime(2026, 12, 1, 10, 0, tzinfo=STOCKHOLM)
WEDNESDAY = dt.datetime(2026, 12, 2, 7, 0, 30, tzinfo=STOCKHOLM)


def task_logs(stack: AirflowStack, worker: int, dag_id: str, task_id: str) -> str:
    folder = stack.home / f"worker{worker}" / "logs" / f"dag_id={dag_id}"
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*.log") if f"task_id={task_id}" in str(p))


def run_once(stack: AirflowStack, dag_id: str) -> tuple[str, dict[str, str | None]]:
    stack.sandbox.reset(now=TUESDAY, speed=1.0)
    stack.unpause(dag_id)
    run_id = stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]
    stack.wait_deferred(dag_id, run_id, "wait_for_file", timeout=300)
    stack.sandbox.clock.set(now=WEDNESDAY, speed=1.0)
    return run_id, stack.wait_for_run(dag_id, run_id, timeout=300)


def test_h_file_archived_on_one_worker_is_loaded_by_the_other(celery: AirflowStack) -> None:
    run_id, states = run_once(celery, "sys_celery")
    assert states == {"bestall": "success", "wait_for_file": "success", "load": "success"}, states
    assert len(celery.sandbox.orders()) == 1
    stored = celery.xcom("sys_celery", run_id, "wait_for_file")
    assert stored["path"].startswith(celery.archive_url or "-"), stored["path"]
    name = Path(stored["path"]).name
    for worker in (1, 2):  # nothing on either worker's local disk
        assert not list((celery.home / f"worker{worker}").rglob(name))
    for task_id, worker, other in (("wait_for_file", 1, 2), ("load", 2, 1)):
        assert task_logs(celery, worker, "sys_celery", task_id) and not task_logs(celery, other, "sys_celery", task_id)
    loaded = celery.xcom("sys_celery", run_id, "load")
    assert loaded["principals_loaded"] > 0


def test_local_archive_with_celery_warns_and_fails_clearly(celery: AirflowStack) -> None:
    """``archive_url`` on local disk: the sensor warns; the load on the other machine fails naming it.

    Both workers share this machine's disk, so the test makes worker 2 "another machine": it is
    stopped until the sensor archived the file on worker 1, and worker 1's archive is then removed.
    """
    dag_id = "sys_celery_local"
    celery.sandbox.reset(now=TUESDAY, speed=1.0)
    celery.unpause(dag_id)
    worker2 = celery.processes["worker2"].pid
    os.killpg(worker2, signal.SIGSTOP)
    # A worker waits for tasks in a blocking pop on Redis (kombu: BRPOP, 1 s), which Redis still serves after the
    # worker has stopped: a task queued within that second would go to the stopped worker. Let it time out first.
    time.sleep(3)
    try:
        run_id = celery.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]
        celery.wait_deferred(dag_id, run_id, "wait_for_file", timeout=300)
        celery.sandbox.clock.set(now=WEDNESDAY, speed=1.0)
        celery.wait_for_task(dag_id, run_id, "wait_for_file", ("success",), timeout=300)
        shutil.rmtree(celery.home / "worker1" / "skattekonto" / "archive")
    finally:
        os.killpg(worker2, signal.SIGCONT)
    states = celery.wait_for_run(dag_id, run_id, timeout=300)
    assert states == {"bestall": "success", "wait_for_file": "success", "load": "failed"}, states
    assert "a path on this worker's local disk" in task_logs(celery, 1, "sys_celery_local", "wait_for_file")
    load_log = task_logs(celery, 2, "sys_celery_local", "load")
    assert "archive_url" in load_log and "shared object storage" in load_log
    assert "FileNotFoundError" not in load_log
