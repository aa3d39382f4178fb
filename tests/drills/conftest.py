"""Fixtures of the fault drills (issue 5), and the JSON report that ``benchmarks/fault_drills.py`` reads.

* ``drill``: this drill's row of the summary table (name, fault, outcome, data check), its row of the
  hostile-input table (:meth:`Drill.hostile`), and its secret check: at the end of every drill, everything
  logged (stdlib logging at DEBUG, and Airflow's structlog output on stdout/stderr) plus every exception
  message and subprocess output handed to :meth:`Drill.scan`, what Airflow's REST API returns for the
  drill's connections (and any Variable handed to :meth:`Drill.api_text`), and the files the drill left in
  its temp folders (its ``tmp_path``, the Airflow home with its logs and metadata database, the provider's
  own temporary key files) are searched for the connection's secrets, the refresh token, every access
  token the sandbox issued, and PEM private-key markers (in logs and files). A find fails the drill.
* ``connect``: registers a sandbox ``skattekonto`` connection (``AIRFLOW_CONN_<ID>``) and puts its
  secrets on the drill's watch list.
* ``warehouse``: an empty warehouse on SQLite and on PostgreSQL (psycopg 3, own schema), in turn.

Set ``SKATTEKONTO_DRILL_REPORT=<folder>`` to have every test process (each xdist worker) write its
rows to ``<folder>/drills-<worker>.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.drills._support import (
    Warehouse,
    api_view,
    issued_tokens,
    leaked,
    postgres_warehouse,
    read_text_of,
    sqlite_warehouse,
    temp_files,
)
from tests.loading.conftest import require_postgres

REPORT_ENV = "SKATTEKONTO_DRILL_REPORT"
_FORMAT = logging.Formatter("%(levelname)s %(name)s: %(message)s")


@dataclass
class Drill:
    """One drill's row of the summary, and the secrets its logs must not contain."""

    name: str = ""
    fault: str = ""
    outcome: str = ""
    data: str = "-"
    secrets: str = "not checked"
    _watch: dict[str, str] = field(default_factory=dict, repr=False)
    _sandboxes: list[Any] = field(default_factory=list, repr=False)
    _texts: list[str] = field(default_factory=list, repr=False)
    _read_logs: Callable[[], str] = field(default=lambda: "", repr=False)
    _connections: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _api_texts: list[Callable[[], str]] = field(default_factory=list, repr=False)
    _temp_folders: list[Path] = field(default_factory=list, repr=False)
    _started: float = 0.0
    hostile_input: dict[str, Any] = field(default_factory=dict)

    def describe(self, name: str, fault: str) -> None:
        """Which drill this is (the table's first two columns)."""
        self.name, self.fault = name, fault

    def result(self, outcome: str, data: str | None = None) -> None:
        """What happened, and the data check's summary."""
        self.outcome = outcome
        if data is not None:
            self.data = data

    def watch(self, label: str, value: str | None) -> None:
        """A secret that must not appear in any log."""
        if value:
            self._watch[label] = value

    def watch_connection(self, connection: dict[str, Any], registration: Any, sandbox: Any) -> None:
        extra = connection["extra"]
        self.watch("password (OAuth2 client secret)", connection.get("password"))
        self.watch("api_client_secret", extra.get("api_client_secret"))
        self.watch("certificate_password", extra.get("certificate_password"))
        self.watch("refresh_token", registration.refresh_token)
        if sandbox not in self._sandboxes:
            self._sandboxes.append(sandbox)

    def hostile(self, what: str, *, tried: int, accepted: int, outside: int) -> None:
        """This drill's row of the hostile-input table: how many hostile inputs it tried, how many were accepted
        and how many files were written outside the archive (secrets visible through the API are counted by
        the secret check)."""
        self.hostile_input = {"input": what, "tried": tried, "accepted": accepted, "outside": outside}

    def connection(self, conn_id: str, connection: dict[str, Any]) -> None:
        """A connection whose REST API view (``GET /api/v2/connections/{id}``) the secret check also searches."""
        self._connections[conn_id] = connection

    def api_text(self, read: Callable[[], str]) -> None:
        """More of what Airflow's REST API shows (a Variable, say): searched for the secrets too."""
        self._api_texts.append(read)

    def scan(self, *texts: object) -> None:
        """Text that reached a user some other way (exception messages, a child's output): checked too."""
        self._texts.extend(str(text) for text in texts)

    def check_secrets(self, *tokens: str | None) -> str:
        """Assert no watched secret, access token or private key is in the logs; returns the summary."""
        watched = dict(self._watch)
        for sandbox in self._sandboxes:
            for index, token in enumerate(issued_tokens(sandbox), start=1):
                watched[f"access token #{index}"] = token
        for index, hook_token in enumerate(tokens, start=1):
            if hook_token:
                watched[f"hook token #{index}"] = hook_token
        text = self._read_logs() + "\n".join(self._texts)
        found = leaked(text, watched)
        api = "\n".join([api_view(conn_id, conn) for conn_id, conn in self._connections.items()])
        api += "\n".join(read() for read in self._api_texts)
        in_api = [name for name in leaked(api, watched) if name != "PEM private key"] if api else []
        files = temp_files(self._temp_folders, self._started)
        in_files = leaked(read_text_of(files), watched) if files else []
        count = len(set(watched.values()))
        if self.hostile_input:
            self.hostile_input["api_visible"] = len(in_api)
        problems = found + [f"{name} (REST API)" for name in in_api] + [f"{name} (temp files)" for name in in_files]
        self.secrets = (
            f"none ({count} secrets + PEM key markers; {len(text):,} chars of logs, "
            f"{len(self._connections) + len(self._api_texts)} REST API views, {len(files)} temp files)"
            if not problems
            else "FOUND: " + ", ".join(problems)
        )
        assert not problems, f"secrets in the logs, the REST API or temp files: {problems}"
        return self.secrets


_IN_PROCESS_COMMS = re.compile(r"\bSending request\b.*\bmsg=(ConnectionResult|MaskSecret)\(")


@pytest.fixture
def drill(
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Iterator[Drill]:
    """This drill's row; its secret check runs again at teardown, over everything logged."""
    caplog.set_level(logging.DEBUG)
    captured: list[str] = []

    def read_logs() -> str:
        out, err = capfd.readouterr()
        captured.extend((out, err))
        records = [record for phase in ("setup", "call") for record in caplog.get_records(phase)]  # type: ignore[arg-type]
        logged = []
        for record in records:
            try:
                logged.append(_FORMAT.format(record))
            except Exception:  # a record whose arguments do not format: keep its raw parts
                logged.append(f"{record.msg!r} {record.args!r}")
        text = "\n".join(logged) + "".join(captured)
        # dag.test()'s in-process stand-in for the task supervisor (Airflow 3.0) logs at DEBUG every message it
        # hands the task, the connection it fetched included; no deployed Airflow process has this path.
        return "\n".join(line for line in text.splitlines() if not _IN_PROCESS_COMMS.search(line))

    home = Path(os.environ.get("AIRFLOW_HOME", tmp_path))
    started = time.time() - 1.0  # mtimes may be coarser than the clock
    row = Drill(name=request.node.name, _read_logs=read_logs, _temp_folders=[tmp_path, home], _started=started)
    yield row
    try:
        row.check_secrets()
    finally:
        fields = ("name", "fault", "outcome", "data", "secrets", "hostile_input")
        public = {name: getattr(row, name) for name in fields}
        request.node.user_properties.append(("drill", json.dumps(public, ensure_ascii=False)))


@pytest.fixture
def connect(sandbox: Any, monkeypatch: pytest.MonkeyPatch, drill: Drill) -> Callable[..., dict[str, Any]]:
    """``connect(conn_id="skattekonto_default", identity="orderer", **extras)``: a sandbox connection."""

    def register(conn_id: str = "skattekonto_default", identity: str = "orderer", **extras: Any) -> dict[str, Any]:
        grant_type = extras.pop("grant_type", "client_credentials")
        connection = sandbox.airflow_connection(identity, grant_type=grant_type, **extras)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        drill.watch_connection(connection, sandbox.registration(identity), sandbox)
        drill.connection(conn_id, connection)
        return connection

    return register


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse (tables created): a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        require_postgres()
        wh = postgres_warehouse()
    else:
        wh = sqlite_warehouse(tmp_path)
    try:
        yield wh
    finally:
        for cleanup in wh.cleanup:
            cleanup()


# ------------------------------------------------------------------------------------ JSON report

_rows: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not os.environ.get(REPORT_ENV) or hasattr(report, "node"):  # xdist controller: the worker writes it
        return
    entry = _rows.setdefault(report.nodeid, {"nodeid": report.nodeid, "result": "passed"})
    for key, value in report.user_properties:
        if key == "drill":
            entry["drill"] = json.loads(str(value))
    if report.when == "call" and hasattr(report, "wasxfail"):
        entry["result"] = "xfailed" if report.skipped else "xpassed"
        entry["xfail_reason"] = report.wasxfail
    elif report.failed:
        entry["result"] = "failed" if report.when == "call" else f"error ({report.when})"
        entry["error"] = str(report.longrepr)[-1500:]
    elif report.skipped and entry["result"] == "passed":
        entry["result"] = "skipped"
        entry["error"] = str(report.longrepr)[-300:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = os.environ.get(REPORT_ENV)
    if not folder or not _rows:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(folder) / f"drills-{worker}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(_rows.values()), ensure_ascii=False, indent=1))
