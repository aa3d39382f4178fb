"""ServiceTimeTrigger: wait, in the triggerer, until a moment on the service's clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ServiceTimeTrigger(BaseTrigger):
    """Fires when the service clock reaches ``moment`` (an absolute, tz-aware ISO 8601 time).

    The clock is real time, or the sandbox's controllable clock when the connection says
    ``sandbox_clock``. It re-reads the clock at least every ``max_step_seconds`` so that clock
    changes (and a triggerer restart) are handled: the deadline is absolute, never a duration.
    """

    def __init__(
        self,
        *,
        moment: str,
        skattekonto_conn_id: str = "skattekonto_default",
        reason: str = "",
        max_step_seconds: float = 300.0,
    ) -> None:
        super().__init__()
        target = dt.datetime.fromisoformat(moment)
        if target.tzinfo is None:
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
        from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

        target = dt.datetime.fromisoformat(self.moment)
        hook = SkattekontoHook(self.skattekonto_conn_id)
        try:
            self.log.info(
                "Waiting until %s on the service clock%s",
                self.moment,
                f" ({self.reason})" if self.reason else "",
            )
            while True:
                reading = await hook.aservice_clock()
                remaining = reading.real_seconds_until(target)
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, self.max_step_seconds))
        finally:
            await hook.aclose()
        yield TriggerEvent({"status": "reached", "moment": self.moment, "now": reading.now.isoformat()})
