"""How this provider's errors end an Airflow task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skattekonto.domain.remote_files import UnsafeRemoteNameError
from airflow_provider_skattekonto.exceptions import SkattekontoError


@contextmanager
def fail_fast_unless_retryable() -> Iterator[None]:
    """Errors that a retry cannot fix (4xx, certificate, configuration, hostile names) fail the task at
    once, without Airflow retries; transient ones propagate unchanged so the task's ``retries`` apply."""
    try:
        yield
    except SkattekontoError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except UnsafeRemoteNameError as exc:
        raise AirflowFailException(str(exc)) from None
