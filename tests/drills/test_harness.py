"""Guards the guard: the drills' secret scan really finds a leaked secret, token or private key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.drills._support import leaked
from tests.drills.conftest import Drill


def test_the_scan_finds_each_kind_of_secret(sandbox: Any) -> None:
    identity = sandbox.pki.identity("orderer")
    registration = sandbox.registration("orderer")
    key_pem = identity.key_pem_path.read_text()
    secrets = {"api_client_secret": registration.api_client_secret, "refresh_token": registration.refresh_token}
    assert leaked("INFO hook: nothing to see", secrets) == []
    assert leaked(f"DEBUG x: headers={{'client_secret': '{registration.api_client_secret}'}}", secrets) == [
        "api_client_secret"
    ]
    assert leaked(f"2026-11-30 [info] form refresh_token={registration.refresh_token}&x=1", secrets) == [
        "refresh_token"
    ]
    assert leaked(f"ERROR boom\n{key_pem}", secrets) == ["PEM private key"]


def test_a_drill_fails_when_its_logs_hold_a_watched_secret(sandbox: Any) -> None:
    connection = sandbox.airflow_connection("orderer")
    row = Drill(_read_logs=lambda: f"INFO hook: token endpoint said {connection['password']}")
    row.watch_connection(connection, sandbox.registration("orderer"), sandbox)
    with pytest.raises(AssertionError, match="secrets in the logs"):
        row.check_secrets()
    assert row.secrets.startswith("FOUND: password")


def test_a_drill_fails_when_the_rest_api_shows_a_secret(sandbox: Any) -> None:
    """An extra whose name Airflow does not deem sensitive is shown in clear by the REST API: the check finds it."""
    connection = sandbox.airflow_connection("orderer")
    connection["extra"]["certificate_p12_base64"] = "UNMASKED-p12-bytes-in-base64"
    row = Drill()
    row.watch("certificate_p12_base64", "UNMASKED-p12-bytes-in-base64")
    row.connection("skattekonto_default", connection)
    with pytest.raises(AssertionError, match="REST API"):
        row.check_secrets()
    assert row.secrets == "FOUND: certificate_p12_base64 (REST API)"


def test_a_drill_fails_when_a_temp_file_holds_a_secret(sandbox: Any, tmp_path: Path) -> None:
    connection = sandbox.airflow_connection("orderer")
    (tmp_path / "left-behind.log").write_text(f"debug dump: {connection['extra']['api_client_secret']}")
    row = Drill(_temp_folders=[tmp_path], _started=time.time() - 60)
    row.watch_connection(connection, sandbox.registration("orderer"), sandbox)
    with pytest.raises(AssertionError, match="temp files"):
        row.check_secrets()
    assert row.secrets == "FOUND: api_client_secret (temp files)"
