"""BestallOperator: place the order (POST bestall) whose answer file comes on E-transport by 07:00."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skattekonto._task_errors import fail_fast_unless_retryable
from airflow_provider_skattekonto.domain.calendar import parse_moment
from airflow_provider_skattekonto.exceptions import ServiceClosedError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

STATE_KEY = "skattekonto_bestall"


class BestallOperator(BaseOperator):
    """Order the file of balances and transactions for all principals the orderer is SKOL for.

    The POST happens once, here on the worker, never in a trigger. XCom (return value) is a dict:
    ``ordered`` (bool), ``delivery_morning`` (ISO, the 07:00 whose file holds the order),
    ``correlation_id``, ``ordered_at``, ``reason``.

    :param skattekonto_conn_id: the ``skattekonto`` connection.
    :param delivery_morning: the delivery morning this run is for (templated), e.g.
        ``"{{ data_interval_end }}"`` with :class:`DeliveryMorningTimetable`. If its cutoff (03:00 that
        morning) has passed, nothing is ordered (history cannot be ordered) and that morning is handed
        on, so the downstream wait looks for the file delivered then. If empty, order now.
    :param deferrable: wait for the service window in the triggerer instead of a worker slot.
    """

    template_fields: Sequence[str] = ("skattekonto_conn_id", "delivery_morning")
    ui_color = "#fbe9a6"

    def __init__(
        self,
        *,
        skattekonto_conn_id: str = "skattekonto_default",
        delivery_morning: str | dt.datetime | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skattekonto_conn_id = skattekonto_conn_id
        self.delivery_morning = delivery_morning
        self.deferrable = deferrable

    def _hook(self) -> SkattekontoHook:
        from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

        return SkattekontoHook(self.skattekonto_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        return self._order(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resumes after the service window opened (or the order window began)."""
        self.log.info("Resumed at %s on the service clock", (event or {}).get("now"))
        return self._order(context)

    # -----------------------------------------------------------------------------------------------
    def _target(self, hook: SkattekontoHook) -> dt.datetime | None:
        if not self.delivery_morning:
            return None
        try:
            target = parse_moment(self.delivery_morning)
        except ValueError as exc:
            raise AirflowFailException(
                f"delivery_morning={self.delivery_morning!r} is not a timezone-aware ISO 8601 time: {exc}"
            ) from None
        if not hook.calendar.is_delivery_morning(target):
            raise AirflowFailException(
                f"delivery_morning={target.isoformat()} is not a delivery morning (07:00 Europe/Stockholm on "
                "a business day). Use DeliveryMorningTimetable with '{{ data_interval_end }}', or leave "
                "delivery_morning empty to order now."
            )
        return target

    def _order(self, context: Context) -> dict[str, Any]:
        hook = self._hook()
        try:
            with fail_fast_unless_retryable():
                try:
                    return self._order_with(hook, context)
                except ServiceClosedError as closed:  # closed between our check and the call
                    return self._wait_then_order(hook, context, closed.opens_at, "service closed")
        finally:
            hook.close()

    def _order_with(self, hook: SkattekontoHook, context: Context) -> dict[str, Any]:
        calendar = hook.calendar
        target = self._target(hook)
        now = hook.service_now()
        if target is not None:
            opens, cutoff = calendar.order_window(target)
            if now >= cutoff:
                self.log.info(
                    "Not ordering: the cutoff for the file of %s was %s and it is now %s on the service "
                    "clock; history cannot be ordered. Handing on that morning so the wait looks for the "
                    "file that was delivered then.",
                    target.isoformat(),
                    cutoff.isoformat(),
                    now.isoformat(),
                )
                return _handed_on(target, "cutoff_passed")
            if now < opens:
                return self._wait_then_order(
                    hook,
                    context,
                    opens,
                    f"an order before {opens:%Y-%m-%d %H:%M} would land in an earlier file",
                )
        previous = self._previous_order(context, target)
        if previous is not None:
            self.log.warning(
                "Not ordering again: try %s already placed an order for the file of %s (skv_client_correlation_id=%s).",
                previous.get("try_number"),
                previous.get("delivery_morning"),
                previous.get("correlation_id"),
            )
            return {k: v for k, v in previous.items() if k not in ("state", "try_number")}
        if not calendar.is_service_open(now):
            return self._wait_then_order(hook, context, calendar.next_service_opening(now), "service closed")

        self._remember(context, {"state": "sending", "delivery_morning": target.isoformat() if target else None})
        result = hook.bestall()
        xcom = result.to_xcom() | {"reason": "ordered"}
        if target is not None and result.delivery_morning != target:
            self.log.warning(
                "The order landed in the file of %s, not %s as this run expected.",
                result.delivery_morning.isoformat(),
                target.isoformat(),
            )
        self._remember(context, xcom | {"state": "accepted"})
        return xcom

    def _previous_order(self, context: Context, target: dt.datetime | None) -> dict[str, Any] | None:
        """An order a previous try of this task instance placed for the same file, if any."""
        store = context.get("task_state_store")  # Airflow 3.3+: survives task retries
        try_number = getattr(context.get("ti"), "try_number", 1) or 1
        stored: Any = None
        if store is not None:
            try:
                stored = store.get(STATE_KEY)
            except Exception as exc:  # the store is optional bookkeeping: never block the order on it
                self.log.warning("Could not read the task state store (%s)", type(exc).__name__)
        accepted = isinstance(stored, dict) and stored.get("state") == "accepted"
        if accepted and (target is None or stored.get("delivery_morning") == target.isoformat()):
            return dict(stored)
        if try_number > 1:
            if isinstance(stored, dict) and stored.get("state") == "sending":
                detail = "a previous try sent an order whose answer never arrived (it may or may not be placed)"
            elif store is None:
                detail = "this Airflow has no task state store (3.3+) to tell whether a previous try ordered"
            else:
                detail = "no previous try recorded an accepted order"
            self.log.warning(
                "Try %s orders again: %s. A duplicate order at most means the morning's file is ordered "
                "twice; loading an identical file again is a no-op.",
                try_number,
                detail,
            )
        return None

    def _remember(self, context: Context, value: dict[str, Any]) -> None:
        store = context.get("task_state_store")
        if store is None:
            return
        try:
            store.set(STATE_KEY, value | {"try_number": getattr(context.get("ti"), "try_number", None)})
        except Exception as exc:  # never fail an order because the bookkeeping failed
            self.log.warning("Could not record the order in the task state store (%s)", type(exc).__name__)

    def _wait_then_order(
        self, hook: SkattekontoHook, context: Context, until: dt.datetime, reason: str
    ) -> dict[str, Any]:
        self.log.info("Waiting until %s (%s) before ordering", until.isoformat(), reason)
        if self.deferrable:
            from airflow_provider_skattekonto.triggers.service_time import ServiceTimeTrigger

            self.defer(
                trigger=ServiceTimeTrigger(
                    moment=until.isoformat(), skattekonto_conn_id=self.skattekonto_conn_id, reason=reason
                ),
                method_name="execute_complete",
            )
        hook.wait_until(until)
        return self._order_with(hook, context)


def _handed_on(target: dt.datetime, reason: str) -> dict[str, Any]:
    return {
        "ordered": False,
        "delivery_morning": target.isoformat(),
        "correlation_id": None,
        "ordered_at": None,
        "reason": reason,
    }
