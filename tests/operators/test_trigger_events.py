"""Resuming from a trigger: events are checked before use, and every deferral has a timeout."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.exceptions import SkattekontoApiError
from airflow_provider_skattekonto.operators.bestall import DEFER_GRACE, BestallOperator
from airflow_provider_skattekonto.sensors.etransport import ETransportFileSensor
from airflow_provider_skattekonto.triggers.service_time import ServiceTimeTrigger
from airflow_provider_skattekonto.version_compat import AirflowFailException, TaskDeferred

BAD_EVENTS = [
    (None, "without an event"),
    ("found", "without an event"),
    ({}, "unknown status None"),
    ({"status": "exploded"}, "unknown status 'exploded'"),
    ({"status": "found", "delivery_morning": "2026-12-01T07:00:00+01:00", "deadline": "x"}, "without files"),
    ({"status": "missing", "delivery_morning": "2026-12-01T07:00:00+01:00"}, "without deadline, now"),
    (
        {"status": "found", "delivery_morning": "2026-12-01T07:00:00+01:00", "deadline": "x", "files": [{}]},
        "malformed 'found' event",
    ),
]


@pytest.mark.parametrize(("event", "complaint"), BAD_EVENTS)
def test_sensor_refuses_a_bad_event(event: Any, complaint: str) -> None:
    sensor = ETransportFileSensor(task_id="wait", delivery_morning="2026-12-01T07:00:00+01:00")
    with pytest.raises(AirflowFailException, match=complaint):
        sensor.execute_complete(context={}, event=event)  # type: ignore[arg-type]


def test_sensor_error_event_fails_with_its_message() -> None:
    sensor = ETransportFileSensor(task_id="wait", delivery_morning="2026-12-01T07:00:00+01:00")
    with pytest.raises(AirflowFailException, match="HTTP 403: no SKOL role"):
        sensor.execute_complete(context={}, event={"status": "error", "message": "HTTP 403: no SKOL role"})  # type: ignore[arg-type]


def test_sensor_retryable_error_event_leaves_it_to_the_task_retries() -> None:
    """An outage longer than the retry budget: not a fast failure, so the task's ``retries`` apply."""
    sensor = ETransportFileSensor(task_id="wait", delivery_morning="2026-12-01T07:00:00+01:00")
    event = {"status": "error", "message": "Gave up after 3 attempt(s): HTTP 503", "retryable": True}
    with pytest.raises(SkattekontoApiError, match="Gave up after 3 attempt") as caught:
        sensor.execute_complete(context={}, event=event)  # type: ignore[arg-type]
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("event", "complaint"),
    [(None, "without an event"), ({"status": "found"}, "unknown status 'found'"), ({"status": "reached"}, "without")],
)
def test_bestall_refuses_a_bad_event(event: Any, complaint: str) -> None:
    operator = BestallOperator(task_id="bestall")
    with pytest.raises(AirflowFailException, match=complaint):
        operator.execute_complete(context={}, event=event)  # type: ignore[arg-type]


def test_trigger_events_match_what_the_operators_check() -> None:
    assert ServiceTimeTrigger.EVENTS == {"reached": ("moment", "now")}


@pytest.mark.sandbox_clock("2026-12-01T03:30:00+01:00", speed=1.0)
def test_closed_window_deferral_has_a_timeout(sandbox: Any, use_connection: Any) -> None:
    """Closed 03:00-05:00: the deferral lasts until 05:00 plus a grace, never forever."""
    use_connection()
    operator = BestallOperator(task_id="bestall")
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, ServiceTimeTrigger)
    assert dt.datetime.fromisoformat(trigger.moment) == dt.datetime(2026, 12, 1, 5, 0, tzinfo=STOCKHOLM)
    timeout = deferred.value.timeout
    assert timeout is not None
    assert DEFER_GRACE + dt.timedelta(minutes=85) <= timeout <= DEFER_GRACE + dt.timedelta(minutes=90)
    assert sandbox.orders() == []


def test_endpoint_log_line_stays_readable_under_masking(sandbox: Any, use_connection: Any) -> None:
    """Airflow masks token_url (its key says "token"); the hosts the waiters log are not masked."""
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import mask_secret, redact
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import mask_secret, redact  # type: ignore[no-redef]

    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook, endpoints_for_log

    use_connection()
    config = SkattekontoHook().config
    mask_secret(config.token_url, "token_url")
    assert "***" in str(redact(f"POST {config.token_url}"))
    line = endpoints_for_log(config)
    assert redact(line) == line
    host = config.token_url.split("://", 1)[1].split("/", 1)[0]
    assert f"token endpoint {host}" in line and "E-transport" in line
