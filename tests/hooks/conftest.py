"""Fixtures for hook, operator and sensor tests: Airflow connections pointing at the sandbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def use_connection(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """Register a ``skattekonto`` connection for the sandbox as ``AIRFLOW_CONN_<ID>``; returns its JSON."""

    def register(conn_id: str = "skattekonto_default", identity: str = "orderer", **kwargs: Any) -> dict[str, Any]:
        grant_type = kwargs.pop("grant_type", "client_credentials")
        connection = sandbox.airflow_connection(identity, grant_type=grant_type, **kwargs)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return connection

    return register


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Everything logged so far in this test: stdlib logging and Airflow's structlog output (stdout/stderr)."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def read() -> str:
        out, err = capfd.readouterr()
        seen.extend((out, err))
        return caplog.text + "".join(seen)

    return read
