"""``skattekonto-sandbox serve`` as a real subprocess."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from airflow_provider_skattekonto.sandbox.cli import main

READY_TIMEOUT = 120.0


def _reader(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


def test_serve_prints_a_connection_and_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_skattekonto.sandbox",
            "serve",
            "--dir",
            str(state),
            "--port",
            "0",
            "--start",
            "2026-03-10T10:00:00",
            "--speed",
            "0",
            "--principals",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    try:
        seen: list[str] = []
        while not any(line.startswith("export ") for line in seen):
            line = lines.get(timeout=READY_TIMEOUT)
            assert line is not None, f"the sandbox exited early: {seen}"
            seen.append(line)
        assert seen[0].startswith("Skattekonto sandbox listening on https://127.0.0.1:")
        base_url = seen[0].rsplit(" ", 1)[1]
        start = next(index for index, line in enumerate(seen) if line == "{")
        end = next(index for index, line in enumerate(seen) if line == "}")
        printed = json.loads("\n".join(seen[start : end + 1]))
        export = seen[-1]
        name, _, value = export[len("export ") :].partition("=")
        assert name == "AIRFLOW_CONN_SKATTEKONTO_DEFAULT"
        assert json.loads(shlex.split(value)[0]) == printed
        written = state / "connection.json"
        assert json.loads(written.read_text()) == printed
        assert oct(written.stat().st_mode & 0o777) == "0o600"
        assert printed["host"] == base_url
        assert printed["conn_type"] == "skattekonto"
        assert printed["extra"]["sandbox_clock"] is True

        ca = printed["extra"]["ca_bundle_path"]
        clock = httpx.get(base_url + "/_sandbox/clock", verify=ca).json()
        assert clock == {"now": "2026-03-10T10:00:00+01:00", "speed": 0.0}
        assert httpx.get(base_url + "/_sandbox/config", verify=ca).json()["principals_per_orderer"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    assert "Sandbox stopped." in rest


def test_cli_reports_bad_arguments(tmp_path: Path, capsys: object) -> None:
    assert main(["serve", "--dir", str(tmp_path), "--port", "0", "--start", "yesterday"]) == 1
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert "--start 'yesterday' is not an ISO 8601 time" in captured.err
