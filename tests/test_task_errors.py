"""One rule for how this provider's errors end a task (``fail_fast_unless_retryable``), for every operator."""

from __future__ import annotations

import pytest

from airflow_provider_skattekonto._task_errors import fail_fast_unless_retryable
from airflow_provider_skattekonto.domain.answer_file import AnswerFileError
from airflow_provider_skattekonto.domain.remote_files import UnsafeRemoteNameError
from airflow_provider_skattekonto.exceptions import ConfigurationError, SkattekontoApiError
from airflow_provider_skattekonto.loading.names import SnapshotLoadError
from airflow_provider_skattekonto.loading.source import FileChecksumError
from airflow_provider_skattekonto.loading.staging import StagingError
from airflow_provider_skattekonto.version_compat import AirflowFailException

FAIL_FAST = [
    SkattekontoApiError("HTTP 403", status=403),
    ConfigurationError("no certificate_p12_path"),
    UnsafeRemoteNameError("'../x' is not a plain name"),
    AnswerFileError("bad amount", source_name="SKAHMST_5560000167_20261130_001.txt", line_number=4),
    FileChecksumError("sha256 differs"),
    SnapshotLoadError("table_prefix 'x-y' is not a name"),
    StagingError("destination is not writable"),
]
PROPAGATE = [
    SkattekontoApiError("HTTP 503", status=503, retryable=True),
    OSError("database connection reset"),
    ValueError("a plain bug"),
    RuntimeError("anything else"),
]


@pytest.mark.parametrize("error", FAIL_FAST, ids=lambda e: type(e).__name__)
def test_errors_a_retry_cannot_fix_fail_the_task_at_once(error: Exception) -> None:
    @fail_fast_unless_retryable()
    def execute() -> None:
        raise error

    with pytest.raises(AirflowFailException) as caught:
        execute()
    assert str(caught.value) == str(error)


@pytest.mark.parametrize("error", PROPAGATE, ids=lambda e: type(e).__name__)
def test_transient_and_foreign_errors_propagate_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as caught, fail_fast_unless_retryable():
        raise error
    assert caught.value is error
