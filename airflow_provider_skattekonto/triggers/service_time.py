"""ServiceTimeTrigger: wait, in the triggerer, until a moment on the service's clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


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
            reading = await hook.await_until(
                dt.datetime.fromisoformat(self.moment), max_step_seconds=self.max_step_seconds
            )
        finally:
            await hook.aclose()
        yield TriggerEvent({"status": "reached", "moment": self.moment, "now": reading.now.isoformat()})
