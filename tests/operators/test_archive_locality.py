"""A local archive with a non-local executor: the sensor warns at start, the load fails naming archive_url."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_skattekonto.hooks.etransport import ETransportHook, executor_is_local
from airflow_provider_skattekonto.operators.load import _require_reachable
from airflow_provider_skattekonto.version_compat import AirflowFailException


@pytest.mark.parametrize(
    ("executor", "local"),
    [
        ("LocalExecutor", True),
        ("airflow.executors.local_executor.LocalExecutor", True),
        ("CeleryExecutor", False),
        ("LocalExecutor,CeleryExecutor", False),
        ("KubernetesExecutor", False),
        ("my_alias:airflow.providers.edge3.executors.EdgeExecutor", False),
    ],
)
def test_executor_is_local(executor: str, local: bool) -> None:
    assert executor_is_local(executor) is local


def test_sensor_warns_when_the_archive_is_local_and_the_executor_is_not(
    sandbox: Any, use_connection: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_connection(archive_url=(tmp_path / "archive").as_uri())
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    warning = ETransportHook().warn_if_archive_is_worker_local()
    assert warning is not None and "archive_url" in warning and "CeleryExecutor" in warning
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert ETransportHook().warn_if_archive_is_worker_local() is None


def test_load_of_a_file_on_another_worker_names_archive_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = (tmp_path / "elsewhere" / "SKAHMST_x.txt").as_uri()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(AirflowFailException, match="archive_url") as failure:
        _require_reachable(ObjectStoragePath(url), url)
    assert "CeleryExecutor" in str(failure.value) and "shared object storage" in str(failure.value)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    with pytest.raises(AirflowFailException, match="archive_url"):
        _require_reachable(ObjectStoragePath(url), url)
