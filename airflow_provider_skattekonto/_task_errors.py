"""How this provider's errors end an Airflow task."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from airflow_provider_skattekonto.domain.remote_files import UnsafeRemoteNameError
from airflow_provider_skattekonto.exceptions import SkattekontoError
from airflow_provider_skattekonto.version_compat import AirflowFailException


@contextmanager
def fail_fast_unless_retryable() -> Iterator[None]:
    """Errors that a retry cannot fix fail the task at once, with their message and without Airflow retries:
    4xx, certificate, configuration, hostile names, and a wrong answer file, checksum, table name or
    staging target (retrying the same bytes cannot help). Transient errors, and errors of the database or
    the storage, propagate unchanged so the task's ``retries`` apply.

    A context manager, and a decorator for an operator's ``execute``.
    """
    try:
        yield
    except SkattekontoError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except UnsafeRemoteNameError as exc:
        raise AirflowFailException(str(exc)) from None
    except ValueError as exc:
        from airflow_provider_skattekonto.domain.answer_file import AnswerFileError

        if isinstance(exc, AnswerFileError):
            raise AirflowFailException(str(exc)) from None
        raise


def checked_event(event: Any, expected: Mapping[str, tuple[str, ...]], *, waiting_for: str) -> dict[str, Any]:
    """The event a trigger resumed the task with, checked against the trigger's ``expected`` events.

    ``expected`` maps each status to the keys its event must carry. A missing event, an unknown status
    or a missing key fails the task at once, naming what was wrong, instead of acting on half an event.
    """
    if not isinstance(event, dict):
        raise AirflowFailException(
            f"The wait for {waiting_for} resumed without an event (got {type(event).__name__}). The triggerer "
            "lost it or the trigger is broken; clear the task to wait again."
        )
    status = event.get("status")
    if not isinstance(status, str) or status not in expected:
        raise AirflowFailException(
            f"The wait for {waiting_for} ended with an unknown status {status!r} (expected one of "
            f"{', '.join(sorted(expected))}); clear the task to wait again, and report this if it repeats."
        )
    missing = [key for key in expected[status] if event.get(key) in (None, "", [])]
    if missing:
        raise AirflowFailException(
            f"The wait for {waiting_for} ended with status {status!r} but without {', '.join(missing)}; "
            "clear the task to wait again, and report this if it repeats."
        )
    return event
