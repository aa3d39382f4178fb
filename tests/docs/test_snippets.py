"""Every snippet in the docs runs: Python executes (DAGs build and serialize as the scheduler would),
JSON connections validate, shell lines parse with the real command-line parsers, SQL runs on the tables.

A ```` ```python ```` block that only shows a fragment of a larger program is marked with the HTML comment
``<!-- fragment -->`` on the line before it; it must still compile. Blocks without a language (output,
diagrams) are not code. Within a page, Python blocks share one namespace, in order.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").rglob("*.md")],
    key=lambda p: str(p),
)
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[a-z]*)\n(?P<code>.*?)\n```", re.S)
# commands a shell snippet may show, beyond `airflow`, `pip` and `skattekonto-sandbox` (checked by their parsers)
PLAIN_COMMANDS = {"git", "cd", "python3", "python", "scripts/test.sh", "scripts/demo.sh", "pytest", "base64"}


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    lang: str
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    text = "\n" + page.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("lang")) + 1
        fragment = "<!-- fragment -->" in match.group("before")
        found.append(Snippet(page, line, match.group("lang"), match.group("code"), fragment))
    return found


def _ids(page: Path) -> str:
    return str(page.relative_to(REPO))


# -- Python -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [p for p in PAGES if any(s.lang == "python" for s in snippets(p))], ids=_ids)
def test_python_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from airflow.sdk import DAG

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    ran = 0
    for snippet in snippets(page):
        if snippet.lang != "python":
            continue
        code = compile(snippet.code, snippet.where, "exec")
        if snippet.fragment:
            continue
        try:
            exec(code, namespace)
        except Exception as exc:
            pytest.fail(f"{snippet.where}: the snippet raised {exc!r}")
        ran += 1
    for value in list(namespace.values()):
        if isinstance(value, DAG):
            assert value.task_dict, f"{page.name}: DAG {value.dag_id} has no tasks"
            _serialize(value)
    assert ran or all(s.fragment for s in snippets(page) if s.lang == "python")


def _serialize(dag: Any) -> None:
    """Serialize the DAG as the DAG processor does (fails on anything the scheduler could not store)."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization as serializer
    except ImportError:  # Airflow < 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as serializer  # type: ignore[no-redef]
    assert serializer.to_dict(dag)["dag"]["dag_id"] == dag.dag_id


# -- JSON and connections -----------------------------------------------------------------------------
def _check_connection(value: Any, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A skattekonto connection as the hook reads it: every field known and valid."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        from airflow.models.connection import Connection  # parses URIs on every Airflow 3 (the SDK's from 3.1)

        Connection(conn_id="docs", uri=value)  # a URI connection (postgres://...)
        return
    data = json.loads(value) if isinstance(value, str) else value
    if data.get("conn_type") != "skattekonto":
        return
    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

    monkeypatch.setenv("AIRFLOW_CONN_DOCS_SNIPPET", json.dumps(data))
    try:
        SkattekontoHook("docs_snippet").config  # noqa: B018 (validates)
    except Exception as exc:
        pytest.fail(f"{where}: the connection is invalid: {exc}")


@pytest.mark.parametrize("page", [p for p in PAGES if any(s.lang == "json" for s in snippets(p))], ids=_ids)
def test_json_snippets_parse_and_connections_validate(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for snippet in snippets(page):
        if snippet.lang == "json":
            _check_connection(json.loads(snippet.code), snippet.where, monkeypatch)


# -- shell --------------------------------------------------------------------------------------------
EXPORT = re.compile(r"^export (?P<name>[A-Z_][A-Z0-9_]*)='(?P<value>[^']*)'", re.M)


def _commands(code: str) -> Iterator[list[str]]:
    rest = EXPORT.sub("", code).replace("\\\n", " ")
    for line in rest.splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens:
            yield tokens


def _extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _check_command(tokens: list[str], where: str) -> None:
    from packaging.requirements import Requirement

    program = tokens[0].removeprefix(".venv/bin/")
    args = tokens[1:]
    if program in ("python", "python3") and args[:2] == ["-m", "pip"]:
        program, args = "pip", args[2:]
    if program == "pip":
        assert args[:1] in (["install"], ["wheel"]), f"{where}: pip {args[:1]}"
        for arg in args[1:]:
            extras = re.search(r"\[([^\]]+)\]", arg)
            if extras:
                wanted = {e.strip() for e in extras.group(1).split(",")}
                assert wanted <= _extras(), f"{where}: unknown extra in {arg}"
            if arg.startswith("airflow-provider-skattekonto"):
                Requirement(arg)  # a valid requirement, URL form included
        return
    if program in ("airflow", "skattekonto-sandbox"):
        from airflow.cli.cli_parser import get_parser

        from airflow_provider_skattekonto.sandbox.cli import build_parser

        parser = get_parser() if program == "airflow" else build_parser()
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `{program} {' '.join(args)}` does not parse with {program}'s own parser")
        return
    assert program in PLAIN_COMMANDS or program.startswith("benchmarks/"), (
        f"{where}: `{program}` is not a command these checks know; add a check for it"
    )
    if program.startswith(("scripts/", "benchmarks/")):
        assert (REPO / program).exists(), f"{where}: {program} does not exist"
    for arg in args:
        if arg.startswith(("benchmarks/", "tests/", "scripts/")):
            assert (REPO / arg.split("::")[0]).exists(), f"{where}: {arg} does not exist"


@pytest.mark.parametrize("page", [p for p in PAGES if any(s.lang == "bash" for s in snippets(p))], ids=_ids)
def test_shell_snippets_parse(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for snippet in snippets(page):
        if snippet.lang != "bash":
            continue
        syntax = subprocess.run(["bash", "-n"], input=snippet.code, text=True, capture_output=True)
        assert syntax.returncode == 0, f"{snippet.where}: {syntax.stderr}"
        for match in EXPORT.finditer(snippet.code):
            if match.group("name").startswith("AIRFLOW_CONN_"):
                _check_connection(match.group("value"), snippet.where, monkeypatch)
        for tokens in _commands(snippet.code):
            _check_command(tokens, snippet.where)


# -- SQL ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [p for p in PAGES if any(s.lang == "sql" for s in snippets(p))], ids=_ids)
def test_sql_snippets_run_on_the_tables(page: Path, tmp_path: Path) -> None:
    from airflow_provider_skattekonto.loading import ensure_tables

    for number, snippet in enumerate(s for s in snippets(page) if s.lang == "sql"):
        conn = sqlite3.connect(tmp_path / f"{number}.db")
        try:
            if "CREATE TABLE" not in snippet.code:
                ensure_tables(conn, dialect="sqlite")
            conn.executescript(snippet.code)
        except sqlite3.Error as exc:
            pytest.fail(f"{snippet.where}: {exc}")
        finally:
            conn.close()


# -- the connection page covers every field -----------------------------------------------------------
def test_connection_page_documents_every_field() -> None:
    from airflow_provider_skattekonto.get_provider_info import get_provider_info

    page = (REPO / "docs" / "connection.md").read_text(encoding="utf-8")
    (connection_type,) = get_provider_info()["connection-types"]
    fields = ["host", "login", "password", *connection_type["conn-fields"]]
    rows = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    assert not [f for f in fields if f not in rows], "fields missing from docs/connection.md's table"
    assert not rows - set(fields), "docs/connection.md documents fields the connection does not have"
    for words in ("api.test.skatteverket.se", "api.skatteverket.se", "Expisoft", "API-gateway", "OAuth2"):
        assert words in page


def test_pages_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in PAGES}
    assert {"docs/connection.md", "docs/howto/backfill.md", "docs/howto/etransport-inbox.md"} <= names
    assert os.path.isdir(REPO / "docs" / "howto")
