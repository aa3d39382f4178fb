"""ETransportFileTrigger: sleep until the delivery morning's 07:00, then poll for the answer file."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_skattekonto.domain.remote_files import DEFAULT_FILE_PATTERN

if TYPE_CHECKING:
    from airflow_provider_skattekonto.hooks._connection import SkattekontoConnectionConfig

MIN_POLL = 0.05  # seconds of service time between listings, at least
MAX_FIRST_POLL_JITTER = 30.0


def first_poll_jitter(poll_interval: float) -> float:
    """Seconds (service time) to delay the first listing after 07:00: random in
    ``[0, min(poll_interval / 4, 30)]``."""
    return random.uniform(0.0, max(0.0, min(poll_interval / 4, MAX_FIRST_POLL_JITTER)))


class ETransportFileTrigger(BaseTrigger):
    """Waits for the answer file of ``delivery_morning`` without holding a worker slot.

    Nothing is polled before 07:00 of the delivery morning (a weekend or holiday moves the wait to the
    next business morning). Then it lists the source every ``poll_interval`` seconds of service time
    until a file is there (event ``found``) or the deadline passes (event ``missing``). Transient
    failures are retried by the hook's one retry mechanism (``Retrying``, within the connection's
    ``retry_max_seconds``); an error that remains (certificate, 403, bad listing, an outage longer than
    the retry budget) ends the wait at once (event ``error``, saying whether it is ``retryable``, so that
    the task's own retries apply to an outage). All times are derived from absolute values, so a
    triggerer restart resumes the same wait.

    A wait that sleeps until 07:00 makes its first listing a random 0 to
    ``min(poll_interval / 4, 30 s)`` later (:func:`first_poll_jitter`), so that a triggerer holding many
    waits does not list them all in the same instant; a wait started after 07:00 lists at once. All
    waits of a process on one connection share one HTTP client (pooled TLS connections) and, on the
    sandbox's clock, its readings (one request in flight, see ``SANDBOX_CLOCK_SHARE``).

    ``delivery_morning`` may be a template string (``start_from_trigger``): it is parsed in :meth:`run`.
    """

    #: status -> keys of the one event it yields
    EVENTS: dict[str, tuple[str, ...]] = {
        "found": ("delivery_morning", "deadline", "files"),
        "missing": ("delivery_morning", "deadline", "now"),
        "error": ("message",),
    }

    def __init__(
        self,
        *,
        delivery_morning: str,
        skattekonto_conn_id: str = "skattekonto_default",
        deadline_time: str = "10:00",
        poll_interval: float = 120.0,
        kind: str = "skahmst",
        file_pattern: str = DEFAULT_FILE_PATTERN,
        max_step_seconds: float = 300.0,
    ) -> None:
        super().__init__()
        self.delivery_morning = delivery_morning
        self.skattekonto_conn_id = skattekonto_conn_id
        self.deadline_time = deadline_time
        self.poll_interval = poll_interval
        self.kind = kind
        self.file_pattern = file_pattern
        self.max_step_seconds = max_step_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "delivery_morning": self.delivery_morning,
                "skattekonto_conn_id": self.skattekonto_conn_id,
                "deadline_time": self.deadline_time,
                "poll_interval": self.poll_interval,
                "kind": self.kind,
                "file_pattern": self.file_pattern,
                "max_step_seconds": self.max_step_seconds,
            },
        )

    def _window(self, config: SkattekontoConnectionConfig) -> tuple[dt.datetime, dt.datetime]:
        """The wait's delivery morning and deadline on the service calendar, logged."""
        from airflow_provider_skattekonto.domain.calendar import parse_moment
        from airflow_provider_skattekonto.hooks.skattekonto import endpoints_for_log

        morning, deadline, note = config.calendar.file_wait_window(
            parse_moment(self.delivery_morning), dt.time.fromisoformat(self.deadline_time)
        )
        if note:
            self.log.info("%s", note)
        self.log.info(
            "Waiting for the answer file of %s: no polling before then; deadline %s (%s)",
            morning.isoformat(),
            deadline.isoformat(),
            endpoints_for_log(config),
        )
        return morning, deadline

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_skattekonto.exceptions import SkattekontoError
        from airflow_provider_skattekonto.hooks.etransport import ETransportHook

        hook = ETransportHook(self.skattekonto_conn_id, file_pattern=self.file_pattern)
        try:
            config = await hook.aconfig()
            # In a worker thread: the first wait of a process loads the holiday calendar (~0.4 s), and many waits
            # starting at once would each format and write their log line in the same turn of the loop.
            morning, deadline = await asyncio.to_thread(self._window, config)
            base = {"delivery_morning": morning.isoformat(), "deadline": deadline.isoformat()}
            await hook.await_until(
                morning, max_step_seconds=self.max_step_seconds, jitter_seconds=first_poll_jitter(self.poll_interval)
            )
            while True:
                files = await hook.alist_files(delivery_date=morning.date(), kind=self.kind)
                if files:
                    yield TriggerEvent(base | {"status": "found", "files": [f.to_json() for f in files]})
                    return
                reading = await hook.aservice_clock()
                if reading.real_seconds_until(deadline) <= 0:
                    yield TriggerEvent(base | {"status": "missing", "now": reading.now.isoformat()})
                    return
                # The next listing comes poll_interval of service time later (or at the deadline); only
                # the clock is re-read in between (every second on the sandbox's clock).
                next_poll = min(reading.now + dt.timedelta(seconds=max(self.poll_interval, MIN_POLL)), deadline)
                await hook.await_until(next_poll, max_step_seconds=self.max_step_seconds, reading=reading)
        except (SkattekontoError, ValueError) as exc:
            # Transient failures were already retried by the hook (Retrying, within retry_max_seconds); a
            # retryable error that still arrives here ends the wait so that the task's retries apply.
            retryable = bool(getattr(exc, "retryable", False))
            yield TriggerEvent({"status": "error", "message": str(exc), "retryable": retryable})
        finally:
            await hook.aclose()
