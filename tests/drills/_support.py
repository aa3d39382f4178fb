"""Helpers of the fault drills: facts of answer files and warehouse tables, secret scanning, DAG sources,
and a watcher that changes the world (clock, faults) when the sandbox has seen a given request."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_skattekonto.domain.answer_file import parse_answer_file
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer
from airflow_provider_skattekonto.loading import LoadResult, ensure_tables, load_answer_stream, table_names
from tests.waiting import wait_until

ORDERER = "5560000167"
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def stockholm(day: dt.date, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second), tzinfo=STOCKHOLM)


MONDAY = dt.date(2026, 11, 30)  # a business day; Tuesday and Wednesday too
TUESDAY = dt.date(2026, 12, 1)
WEDNESDAY = dt.date(2026, 12, 2)


# ------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileFacts:
    """What an answer file declares and holds: the expected content of the tables after loading it."""

    name: str
    file_id: str
    created_at: dt.datetime
    principals: int
    transactions: int
    amount_sum: int  # the trailer's control sum (both amount columns)
    balance_sum: int  # sum of balance_skatteverket over the S records
    sha256: str
    size: int

    def describe(self) -> str:
        return (
            f"{self.principals} principals, {self.transactions} transactions, amount sum {self.amount_sum}, "
            f"balance sum {self.balance_sum} öre"
        )


def file_facts(path: Path) -> FileFacts:
    """Parse ``path`` completely (it must be valid) and return its facts; the trailer is the reference."""
    raw = path.read_bytes()
    header: FileHeader | None = None
    trailer: FileTrailer | None = None
    balance_sum = 0
    for record in parse_answer_file(io.BytesIO(raw), source_name=path.name):
        if isinstance(record, FileHeader):
            header = record
        elif isinstance(record, Balance):
            balance_sum += record.balance_skatteverket_ore
        elif isinstance(record, FileTrailer):
            trailer = record
    assert header is not None and trailer is not None
    return FileFacts(
        name=path.name,
        file_id=header.file_id,
        created_at=header.created_at,
        principals=trailer.principal_count,
        transactions=trailer.transaction_count,
        amount_sum=trailer.amount_sum_ore,
        balance_sum=balance_sum,
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
    )


def flip_text_byte(path: Path) -> int:
    """Change one letter inside a transaction text (the file still parses and its trailer still adds up:
    only the checksum can tell). Returns the byte offset changed."""
    raw = bytearray(path.read_bytes())
    lines = raw.split(b"\r\n")
    offset = 0
    for line in lines:
        if line.startswith(b"T;"):
            row = next(csv.reader([line.decode("utf-8")], delimiter=";"))
            text = row[5].encode("utf-8")
            at = line.find(text)
            for index, byte in enumerate(text):
                if chr(byte).isalpha() and byte < 0x80:
                    position = offset + at + index
                    raw[position] = ord("x") if byte != ord("x") else ord("y")
                    path.write_bytes(bytes(raw))
                    return position
        offset += len(line) + 2
    raise AssertionError(f"{path} has no transaction text to change")


def break_amount(path: Path, value: str | Callable[[str], str] = "12,3") -> tuple[int, str, str]:
    """Replace beloppSkatteverket of a transaction in the middle of the file by ``value`` (or ``value(old)``).

    Returns ``(line number, old value, new value)``; the line is re-quoted as the writer quotes it.
    """
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    candidates = [i for i, line in enumerate(lines) if line.startswith("T;")]
    for index in candidates[len(candidates) // 2 :]:
        row = next(csv.reader([lines[index]], delimiter=";"))
        if row[6]:
            old = row[6]
            row[6] = value(old) if callable(value) else value
            out = io.StringIO()
            csv.writer(out, delimiter=";", quotechar='"', lineterminator="").writerow(row)
            lines[index] = out.getvalue()
            path.write_bytes("\r\n".join(lines).encode("utf-8"))
            return index + 1, old, row[6]
    raise AssertionError(f"{path} has no transaction with beloppSkatteverket")


def other_digit(amount: str) -> str:
    """The same amount with its last whole-krona digit changed (still a valid amount)."""
    position = amount.index(",") - 1
    digit = int(amount[position])
    return amount[:position] + str((digit + 1) % 10) + amount[position + 1 :]


# --------------------------------------------------------------------------------------- warehouses


@dataclass(frozen=True)
class TableFacts:
    """What the three tables hold (for the data checks)."""

    files: int
    balances: int
    transactions: int
    amount_sum: int
    balance_sum: int
    balance_file_ids: frozenset[str]

    def matches(self, *facts: FileFacts) -> bool:
        """True when the tables hold exactly the given (disjoint) files' snapshots, nothing more."""
        return (
            self.balances == sum(f.principals for f in facts)
            and self.transactions == sum(f.transactions for f in facts)
            and self.amount_sum == sum(f.amount_sum for f in facts)
            and self.balance_sum == sum(f.balance_sum for f in facts)
        )


@dataclass
class Warehouse:
    """A warehouse (the loader's three tables) on SQLite or PostgreSQL (psycopg 3), unique per test."""

    dialect: str  # "sqlite" or "postgresql"
    prefix: str
    schema: str | None
    database: Path | None = None  # SQLite file
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def connect(self) -> Any:
        if self.dialect == "sqlite":
            assert self.database is not None
            return sqlite3.connect(self.database)
        import psycopg

        return psycopg.connect(PG_DSN)

    @property
    def names(self) -> Any:
        return table_names(self.prefix, self.schema)

    def ensure(self) -> None:
        conn = self.connect()
        try:
            ensure_tables(conn, dialect=self.dialect, prefix=self.prefix, schema=self.schema)
        finally:
            conn.close()

    def load(self, path: Path, *, sha256: str | None = None, size: int | None = None) -> LoadResult:
        """Load ``path`` with ``load_answer_stream`` on a fresh connection (its real checksum by default)."""
        raw_sha = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
        conn = self.connect()
        try:
            with path.open("rb") as stream:
                return load_answer_stream(
                    conn,
                    stream,
                    dialect=self.dialect,
                    file_name=path.name,
                    sha256=raw_sha,
                    size=size,
                    prefix=self.prefix,
                    schema=self.schema,
                )
        finally:
            conn.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read on a fresh connection (committed data only)."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql if self.dialect == "sqlite" else sql.replace("?", "%s"), params)
            rows = [tuple(row) for row in cur.fetchall()]
            conn.rollback()
            return rows
        finally:
            conn.close()

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """The full, ordered content of the three tables (for exact before/after comparisons)."""
        n = self.names
        return {
            "files": self.query(f"SELECT * FROM {n.files} ORDER BY file_id"),
            "balances": self.query(f"SELECT * FROM {n.balances} ORDER BY 1, 2, 3"),
            "transactions": self.query(f"SELECT * FROM {n.transactions} ORDER BY 1, 2, 3, 4, 5"),
        }

    def facts(self, file_id: str | None = None) -> TableFacts:
        """Counts and sums of the tables (optionally of one file's rows only)."""
        n = self.names
        where, params = ("WHERE file_id = ?", (file_id,)) if file_id else ("", ())
        [(files,)] = self.query(f"SELECT COUNT(*) FROM {n.files} {where}", params)
        [(balances, balance_sum)] = self.query(
            f"SELECT COUNT(*), COALESCE(SUM(balance_skatteverket_ore), 0) FROM {n.balances} {where}", params
        )
        [(transactions, amount_sum)] = self.query(
            "SELECT COUNT(*), COALESCE(SUM(COALESCE(amount_skatteverket_ore, 0) + COALESCE(amount_kronofogden_ore, 0)),"
            f" 0) FROM {n.transactions} {where}",
            params,
        )
        ids = self.query(f"SELECT DISTINCT file_id FROM {n.balances} {where}", params)
        return TableFacts(
            files=int(files),
            balances=int(balances),
            transactions=int(transactions),
            amount_sum=int(amount_sum),
            balance_sum=int(balance_sum),
            balance_file_ids=frozenset(str(row[0]) for row in ids),
        )

    def check(self, *expected: FileFacts) -> str:
        """Assert the tables hold exactly ``expected``'s snapshots (counts and sums equal the trailers)."""
        facts = self.facts()
        assert facts.matches(*expected), (facts, expected)
        assert facts.balance_file_ids == frozenset(f.file_id for f in expected), facts.balance_file_ids
        return (
            f"{self.dialect}: {facts.balances} balances / {facts.transactions} transactions / amount sum "
            f"{facts.amount_sum} / balance sum {facts.balance_sum} = trailer"
            + (f"s of {len(expected)} files" if len(expected) > 1 else "")
        )


def sqlite_warehouse(folder: Path) -> Warehouse:
    wh = Warehouse("sqlite", "skattekonto_", None, database=folder / "warehouse.db")
    wh.ensure()
    return wh


def postgres_warehouse() -> Warehouse:
    """A warehouse in a new PostgreSQL schema (dropped by ``cleanup``)."""
    import psycopg

    schema = f"drill_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    wh = Warehouse("postgresql", "skattekonto_", schema, cleanup=[drop])
    wh.ensure()
    return wh


# ---------------------------------------------------------------------------------------------- secrets


def leaked(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets (and PEM private-key markers) found in ``text``."""
    found = [name for name, value in secrets.items() if value and value in text]
    if PEM_PRIVATE_KEY.search(text):
        found.append("PEM private key")
    return found


def api_view(conn_id: str, connection: dict[str, Any]) -> str:
    """What Airflow's REST API (``GET /api/v2/connections/{id}``) returns for ``connection``: its
    ``ConnectionResponse``, which redacts the password and the extras Airflow deems sensitive."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionResponse

    fields = {name: connection.get(name) for name in ("host", "login", "password", "schema", "port")}
    extra = connection.get("extra")
    response = ConnectionResponse.model_validate(
        {
            "conn_id": conn_id,
            "conn_type": connection["conn_type"],
            "description": None,
            **fields,
            "extra": json.dumps(extra) if isinstance(extra, dict) else extra,
            "team_name": None,
        }
    )
    return str(response.model_dump_json())


def temp_files(folders: list[Path], since: float, *, max_bytes: int = 64 << 20) -> list[Path]:
    """The files under ``folders`` written since ``since`` (epoch seconds), each at most ``max_bytes``, plus
    the provider's own temporary files (``skattekonto-*`` in the system temp folder) that are still there."""
    import tempfile

    found: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink() and info.st_mtime >= since and info.st_size <= max_bytes:
                found.add(path)
    # this process's client key files (another test process may be loading a key at this very moment)
    for path in Path(tempfile.gettempdir()).glob(f"skattekonto-client-{os.getpid()}-*"):
        found.add(path)  # a client key file must never outlive the call that loaded it
    return sorted(found)


def read_text_of(paths: list[Path]) -> str:
    """The files' bytes as text (latin-1: every byte maps to one character, so any secret is found)."""
    parts = []
    for path in paths:
        try:
            parts.append(path.read_bytes().decode("latin-1"))
        except OSError:
            continue
    return "\n".join(parts)


def issued_tokens(sandbox: Any) -> list[str]:
    """Every access token the sandbox issued since its last reset (read from its registry)."""
    registry = sandbox.registry
    with registry._lock:  # test-only read of the sandbox's own bookkeeping
        return list(registry._tokens)


# ------------------------------------------------------------------------------------------ sandbox


def requests_on(sandbox: Any, route: str, status: int | str | None = None) -> int:
    """How many requests the sandbox answered on ``route`` (with ``status``, or any)."""
    counts = sandbox.stats()["requests"].get(route, {})
    if status is None:
        return sum(counts.values())
    return int(counts.get(str(status), 0))


def quiet(sandbox: Any) -> None:
    """Wait until the sandbox has no connection open (every request it accepted is fully handled)."""
    wait_until(
        lambda: sandbox.stats()["connections_open"] == 0, 30, "the sandbox's connections to close", interval=0.01
    )


@contextlib.contextmanager
def when(
    condition: Callable[[], bool], action: Callable[[], None], *, poll: float = 0.005
) -> Iterator[threading.Event]:
    """Run ``action`` once, in a watcher thread, as soon as ``condition()`` holds; yields 'fired'."""
    fired = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            while not stop.is_set():
                if condition():
                    action()
                    fired.set()
                    return
                stop.wait(poll)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=watch, name="drill-watcher", daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        stop.set()
        thread.join(10)
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------------------------- DAGs

DAG_HEADER = """
import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, task
from airflow_provider_skattekonto.operators.bestall import BestallOperator
from airflow_provider_skattekonto.operators.load import SkattekontoToSqlOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
"""


def dag(*task_lines: str) -> tuple[str, str]:
    """(dag_id, source) of a uniquely named DAG whose body is ``task_lines`` (one statement each)."""
    dag_id = f"drill_{uuid.uuid4().hex[:10]}"
    body = "".join(f"    {line}\n" for line in task_lines)
    return dag_id, DAG_HEADER.format(dag_id=dag_id) + body


def sqlite_connection(monkeypatch: Any, database: Path) -> str:
    """Register an Airflow ``sqlite`` connection to ``database``; returns its id."""
    import json

    conn_id = f"wh_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "sqlite", "host": str(database)}))
    return conn_id


def try_numbers(dag_id: str) -> dict[str, int]:
    """``{task_id: try_number}`` of a DAG's (only) run in the Airflow metadata database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.try_number).filter_by(dag_id=dag_id).all()
    return {task_id: int(number) for task_id, number in rows}
