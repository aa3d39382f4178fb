"""ServiceTimeTrigger: wait, in the triggerer, until a moment on the service's clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_skattekonto.hooks.skattekonto import ClockReading, SkattekontoHook


async def wait_for_service_time(
    hook: SkattekontoHook,
    moment: dt.datetime,
    *,
    max_step_seconds: float = 300.0,
    jitter_seconds: float = 0.0,
    reading: ClockReading | None = None,
) -> ClockReading:
    """Sleep until ``moment`` on the hook's service clock; re-read the clock at least every step.

    The clock is real time, or the sandbox's controllable clock when the connection says
    ``sandbox_clock`` (then real sleeps are scaled by its speed, and the clock is re-read every second
    so that a jump is noticed). ``jitter_seconds`` (service time) is added to ``moment`` only when the
    first reading is before ``moment``: waiters that sleep towards the same moment do not all wake at it.
    ``reading``: a fresh reading to start from (saves one clock read).
    """
    if reading is None:
        reading = await hook.aservice_clock()
    if jitter_seconds > 0 and reading.now < moment:
        moment += dt.timedelta(seconds=jitter_seconds)
    while True:
        remaining = reading.real_seconds_until(moment)
        if remaining <= 0:
            return reading
        await asyncio.sleep(min(remaining, reading.longest_sleep(max_step_seconds)))
        reading = await hook.aservice_clock()


class ServiceTimeTrigger(BaseTrigger):
    """Fires when the service clock reaches ``moment`` (an absolute, tz-aware ISO 8601 time).

    The deadline is absolute, never a duration, so a triggerer restart resumes correctly.
    """

    #: status -> keys of the one event it yields
    EVENTS: dict[str, tuple[str, ...]] = {"reached": ("moment", "now")}

    def __init__(
        self,
        *,
        moment: str,
        skattekonto_conn_id: str = "skattekonto_default",
        reason: str = "",
        max_step_seconds: float = 300.0,
    ) -> None:
        super().__init__()
        if dt.datetime.fromisoformat(moment).tzinfo is None:
            raise ValueError(f"ServiceTimeTrigger needs a timezone-aware moment, got {moment!r}")
        self.moment = moment
        self.skattekonto_conn_id = skattekonto_conn_id
        self.reason = reason
        self.max_step_seconds = max_step_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "moment": self.moment,
                "skattekonto_conn_id": self.skattekonto_conn_id,
                "reason": self.reason,
                "max_step_seconds": self.max_step_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook, endpoints_for_log

        hook = SkattekontoHook(self.skattekonto_conn_id)
        why = f" ({self.reason})" if self.reason else ""
        try:
            config = await hook.aconfig()
            self.log.info("Waiting until %s on the service clock%s; %s", self.moment, why, endpoints_for_log(config))
            reading = await wait_for_service_time(
                hook, dt.datetime.fromisoformat(self.moment), max_step_seconds=self.max_step_seconds
            )
        finally:
            await hook.aclose()
        yield TriggerEvent({"status": "reached", "moment": self.moment, "now": reading.now.isoformat()})
