"""System-test fixtures: real Airflow processes against a fresh PostgreSQL metadata database.

Per test session, :func:`airflow_stack` creates a uniquely named PostgreSQL database on
127.0.0.1:5432, runs ``airflow db migrate``, and starts ``api-server`` (free port), ``scheduler``,
``dag-processor`` and ``triggerer`` as separate processes, each in its own process group with its log
in the session's temp folder. The DAGs come from ``tests/system/dags``; the Skattekonto sandbox runs in
this process on a controllable clock. At the end every process group is stopped (SIGTERM, then
SIGKILL) and the database dropped, also when a test failed.

Skips (with the reason) only when PostgreSQL is unreachable and ``CI`` is unset; under CI it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.sandbox.server import Sandbox
from tests.waiting import wait_until

DAGS = Path(__file__).resolve().parent / "dags"
PG_HOST, PG_PORT = "127.0.0.1", 5432
AIRFLOW = Path(sys.executable).with_name("airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 2).close()
        return True
    except OSError:
        return False


def require_service(host: str, port: int, what: str) -> None:
    """Skip when ``what`` is unreachable, unless under CI (then fail: CI must run these tests)."""
    if reachable(host, port):
        return
    message = f"{what} is not answering on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: the system tests must run")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def last_morning(now: dt.datetime, calendar: ServiceCalendar | None = None) -> dt.datetime:
    """The last delivery morning at or before ``now`` whose 10:00 deadline has passed."""
    calendar = calendar or ServiceCalendar()
    return calendar.previous_delivery_morning(now - dt.timedelta(hours=3))


# How long the metadata database lets a transaction sit idle before it ends the session. A scheduler killed alone
# (SIGKILL, as the OOM killer does) leaves its LocalExecutor workers behind: forked from it, they hold its database
# socket open, so PostgreSQL keeps the dead scheduler's open transaction and its row locks (such as the pool rows
# its critical section locks), and a new scheduler that needs them never queues a task again. A production
# database can bound this the same way; no live Airflow process of these tests keeps a transaction idle for more
# than seconds.
IDLE_TRANSACTION_TIMEOUT = "60s"


class PostgresDatabase:
    """A database of its own on the local PostgreSQL server, dropped at the end.

    ``idle_transaction_timeout``: the database's ``idle_in_transaction_session_timeout`` (the server default, none,
    when not given).
    """

    def __init__(self, prefix: str, *, idle_transaction_timeout: str | None = None) -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin("CREATE DATABASE {}")
        if idle_transaction_timeout is not None:
            self._admin("ALTER DATABASE {} SET idle_in_transaction_session_timeout = %s", idle_transaction_timeout)

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{self.name}"

    def _admin(self, statement: str, *params: str) -> None:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL(statement).format(sql.Identifier(self.name)), params or None)
        finally:
            conn.close()

    def drop(self) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


@dataclass
class AirflowStack:
    """Running Airflow components (one process group each) and how to drive them."""

    home: Path
    env: dict[str, str]
    api_url: str
    sandbox: Sandbox
    morning: dt.datetime
    warehouse: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    groups: list[int] = field(default_factory=list)
    archive_url: str | None = None
    _token: str | None = None

    # -- processes -----------------------------------------------------------------------------
    def start(
        self, component: str, *args: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``airflow <component> <args>`` (or ``name`` = the command for non-Airflow programs)."""
        name = name or component
        log = (self.home / "logs" / f"{name}.log").open("ab")
        command = [str(AIRFLOW), component, *args] if component in (*COMPONENTS, "celery") else [component, *args]
        process = subprocess.Popen(
            command,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its workers are stopped with it
        )
        log.close()
        self.processes[name] = process
        self.groups.append(process.pid)
        return process

    def signal(self, component: str, sig: signal.Signals, *, group: bool = False) -> None:
        process = self.processes[component]
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        process.wait(timeout=60)

    def stop_all(self) -> None:
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, component: str, lines: int = 40) -> str:
        path = self.home / "logs" / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- CLI and REST --------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            reply = httpx.get(f"{self.api_url}/auth/token", timeout=30)
            reply.raise_for_status()
            self._token = reply.json()["access_token"]
        reply = httpx.request(
            method,
            f"{self.api_url}/api/v2{path}",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=60,
            **kwargs,
        )
        if reply.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {reply.status_code} {reply.text[:2000]}")
        return reply.json() if reply.content else None

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        items = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in items}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        entry = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"deserialize": True, "stringify": False},
        )
        return entry["value"]

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> dict[str, str | None]:
        """Wait until the run is finished; returns its task states."""

        def finished() -> dict[str, str | None] | None:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return self.task_states(dag_id, run_id) if run["state"] in ("success", "failed") else None

        return wait_until(finished, timeout, f"{dag_id} {run_id} to finish", interval=2)  # type: ignore[no-any-return]

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 240
    ) -> str:
        def reached() -> str | None:
            state = self.task_states(dag_id, run_id).get(task_id)
            return state if state in states else None

        return wait_until(reached, timeout, f"{dag_id} {run_id} {task_id} in {states}", interval=1)  # type: ignore[no-any-return]

    def wait_deferred(self, dag_id: str, run_id: str, task_id: str, timeout: float = 240) -> None:
        """Wait until the task is deferred and the scheduler has taken in its worker's exit.

        A trigger firing before the scheduler processed the executor's event for the deferring try makes
        Airflow fail the resumed task ("finished with state success, but ... queued"); a real file
        never comes seconds after the deferral, but the tests move the clock at once.
        """
        self.wait_for_task(dag_id, run_id, task_id, ("deferred",), timeout)
        needle = (
            "Received executor event with state success for task instance "
            f"TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}'"
        )
        log = self.home / "logs" / "scheduler.log"
        wait_until(lambda: needle in log.read_text(errors="replace"), 120, f"the scheduler to see {task_id} deferred")

    def warehouse_rows(self, table: str) -> list[tuple[Any, ...]]:
        import sqlite3

        if not self.warehouse.exists():
            return []
        with sqlite3.connect(self.warehouse) as conn:
            return list(conn.execute(f"SELECT * FROM {table}"))


def _env(
    home: Path,
    database_url: str,
    api_port: int,
    sandbox: Sandbox,
    morning: dt.datetime,
    warehouse: Path,
    warehouse_pg: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME"))}
    archive = home / "archive"
    # timeout 60 s: scenario (f) slows the order call to 45 s, which must not time out and be retried
    connection = sandbox.airflow_connection("orderer", archive_url=archive.as_uri(), timeout=60)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # as a deployment with a triggerer sets it: the sensors and the closed-window wait defer
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            # Airflow 3.0 answers 400 to ?deserialize=true without it
            "AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs" / "tasks"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # A busy 2-core machine answers slowly: workers wait longer for the execution API.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "SKATTEKONTO_SYSTEM_MORNING": morning.isoformat(),
            "AIRFLOW_CONN_SKATTEKONTO_DEFAULT": json.dumps(connection),
            "AIRFLOW_CONN_SKATTEKONTO_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
            "AIRFLOW_CONN_SKATTEKONTO_WAREHOUSE_PG": json.dumps(
                {"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT, "login": "postgres", "schema": warehouse_pg}
            ),
        }
    )
    for n in range(4):  # the representatives DAG: two organisations, each on two connections
        identity = sandbox.airflow_connection(("orderer", "orderer2")[n % 2], archive_url=archive.as_uri())
        env[f"AIRFLOW_CONN_SKATTEKONTO_REP_{n}"] = json.dumps(identity)
    return env


@contextmanager
def running_stack(tmp_path_factory: pytest.TempPathFactory, celery: bool = False) -> Iterator[AirflowStack]:
    """Airflow with its four components as processes, the sandbox, a SQLite and a PostgreSQL warehouse.

    ``celery``: CeleryExecutor (Redis broker, PostgreSQL result backend) with two workers, each with
    its own AIRFLOW_HOME and temp folder and its own queue, and the archive on S3 (moto server).
    """
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    if celery:
        require_service(REDIS_HOST, REDIS_PORT, "Redis")
    home = tmp_path_factory.mktemp("airflow-celery" if celery else "airflow-local")
    (home / "logs").mkdir()
    database = PostgresDatabase("skattekonto_system", idle_transaction_timeout=IDLE_TRANSACTION_TIMEOUT)
    warehouse_pg = PostgresDatabase("skattekonto_warehouse")
    sandbox = Sandbox.start(home / "sandbox")
    morning = last_morning(dt.datetime.now(STOCKHOLM))
    api_port = free_port()
    warehouse = home / "warehouse.db"
    stack = AirflowStack(
        home=home,
        env=_env(home, database.sqlalchemy_url, api_port, sandbox, morning, warehouse, warehouse_pg.name),
        api_url=f"http://127.0.0.1:{api_port}",
        sandbox=sandbox,
        morning=morning,
        warehouse=warehouse,
    )
    try:
        if celery:
            _celery_setup(stack, database)
        stack.cli("db", "migrate", timeout=600)
        for component in COMPONENTS:
            stack.start(component)
        if celery:
            _start_workers(stack)
        wait_until(lambda: reachable("127.0.0.1", api_port), 180, "the api-server to listen")
        wait_until(lambda: _dags_parsed(stack), 240, "the dag-processor to parse tests/system/dags", interval=2)
        yield stack
    finally:
        stack.stop_all()
        sandbox.stop()
        database.drop()
        warehouse_pg.drop()
        for name in stack.processes:
            print(f"--- {name} (last lines) ---\n{stack.log_tail(name, 15)}")


REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _celery_setup(stack: AirflowStack, database: PostgresDatabase) -> None:
    """CeleryExecutor settings, unique queues, and an S3 archive on a moto server of our own."""
    tag = uuid.uuid4().hex[:8]
    moto_port = free_port()
    stack.start(
        str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(moto_port), name="moto"
    )
    wait_until(lambda: reachable("127.0.0.1", moto_port), 60, "the moto server to listen")
    endpoint = f"http://127.0.0.1:{moto_port}"
    import boto3

    bucket = f"skattekonto-archive-{tag}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    archive_url = f"s3://aws_moto@{bucket}/archive"
    stack.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database.sqlalchemy_url.replace("+psycopg2", ""),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"skattekonto-{tag}",
            "SKATTEKONTO_SYSTEM_QUEUE_A": f"skattekonto-{tag}-a",
            "SKATTEKONTO_SYSTEM_QUEUE_B": f"skattekonto-{tag}-b",
            "AIRFLOW_CONN_AWS_MOTO": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
            "AIRFLOW_CONN_SKATTEKONTO_DEFAULT": json.dumps(
                stack.sandbox.airflow_connection("orderer", archive_url=archive_url)
            ),
            # The archive left at its default, $AIRFLOW_HOME/skattekonto/archive: each worker's own disk.
            "AIRFLOW_CONN_SKATTEKONTO_LOCAL": json.dumps(stack.sandbox.airflow_connection("orderer", archive_url=None)),
        }
    )
    stack.archive_url = archive_url


def _start_workers(stack: AirflowStack) -> None:
    """Two Celery workers, each with its own AIRFLOW_HOME and temp folder; worker 1 also serves queue A,
    worker 2 queue B, so a DAG can make its sensor and its load run on different workers."""
    default = stack.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    for n, queue in ((1, stack.env["SKATTEKONTO_SYSTEM_QUEUE_A"]), (2, stack.env["SKATTEKONTO_SYSTEM_QUEUE_B"])):
        worker_home = stack.home / f"worker{n}"
        (worker_home / "tmp").mkdir(parents=True)
        env = {
            "AIRFLOW_HOME": str(worker_home),
            "TMPDIR": str(worker_home / "tmp"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(worker_home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        args = [
            "worker",
            "--queues",
            f"{default},{queue}",
            "--concurrency",
            "2",
            "--celery-hostname",
            f"w{n}-{queue}@%h",
        ]
        stack.start("celery", *args, name=f"worker{n}", env=env)


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """LocalExecutor."""
    with running_stack(tmp_path_factory) as stack:
        yield stack


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """CeleryExecutor with two workers and the archive on S3."""
    with running_stack(tmp_path_factory, celery=True) as stack:
        yield stack


def _dags_parsed(stack: AirflowStack) -> bool:
    try:
        dags = stack.api("GET", "/dags", params={"tags": "skattekonto-system", "limit": 100})["dags"]
    except (httpx.HTTPError, AssertionError):
        return False
    return len(dags) >= 11


@pytest.fixture
def celery(celery_stack: AirflowStack) -> AirflowStack:
    """The module's Celery stack with the sandbox's faults cleared."""
    celery_stack.sandbox.faults.reset()
    return celery_stack


@pytest.fixture
def stack(airflow_stack: AirflowStack) -> AirflowStack:
    """The session's stack with the sandbox's faults cleared."""
    airflow_stack.sandbox.faults.reset()
    return airflow_stack
