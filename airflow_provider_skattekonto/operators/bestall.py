"""BestallOperator: place the order (POST bestall) whose answer file comes on E-transport by 07:00."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_skattekonto._task_errors import checked_event, fail_fast_unless_retryable
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, local_iso, parse_moment
from airflow_provider_skattekonto.exceptions import ServiceClosedError
from airflow_provider_skattekonto.links import SkattekontoOrderLink, order_url
from airflow_provider_skattekonto.version_compat import AirflowFailException, default_deferrable, task_state

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_skattekonto.domain.calendar import ServiceCalendar
    from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

STATE_KEY = "skattekonto_bestall"
# How long a deferral may outlast its wait (triggerer down, say) before Airflow times the task out.
DEFER_GRACE = dt.timedelta(hours=1)


class BestallOperator(BaseOperator):
    """Order the file of balances and transactions for all principals the orderer is SKOL for.

    The POST happens once, here on the worker, never in a trigger. XCom (return value) is a dict:
    ``ordered`` (bool), ``delivery_morning`` (ISO, the 07:00 whose file holds the order),
    ``correlation_id``, ``ordered_at``, ``reason``. The extra link *Skatteverket order* shows the
    correlation ids as soon as the order is accepted.

    :param skattekonto_conn_id: the ``skattekonto`` connection.
    :param delivery_morning: the delivery morning this run is for (templated, ISO 8601). Default: the
        run's own morning, the end of its data interval when that is a delivery morning (runs of
        :class:`DeliveryMorningTimetable`: scheduled, catchup, backfill, manual with a logical date);
        a run without one (a manual run without a logical date, another timetable) orders now, for the
        morning an order placed now lands in. A template the run cannot render (e.g.
        ``"{{ data_interval_end }}"`` in a run without a data interval) falls back to that default.
        If the morning's cutoff (03:00 that morning) has passed, nothing is ordered (history cannot be
        ordered) and that morning is handed on, so the downstream wait looks for the file delivered then.

    A retry or a clear of a try whose order was accepted does not order again (the record is kept in
    Airflow's task state store on 3.3+, in a Variable per task instance before); it hands on the
    recorded order.
    :param deferrable: wait for the service window in the triggerer instead of a worker slot (needs a
        running triggerer). Default: Airflow's ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("skattekonto_conn_id", "delivery_morning")
    ui_color = "#fbe9a6"
    operator_extra_links = (SkattekontoOrderLink(),)

    def __init__(
        self,
        *,
        skattekonto_conn_id: str = "skattekonto_default",
        delivery_morning: str | dt.datetime | None = None,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skattekonto_conn_id = skattekonto_conn_id
        self.delivery_morning = delivery_morning
        self.deferrable = deferrable

    def _hook(self) -> SkattekontoHook:
        from airflow_provider_skattekonto.hooks.skattekonto import SkattekontoHook

        return SkattekontoHook(self.skattekonto_conn_id)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render as usual; a ``delivery_morning`` the run cannot render falls back to the run's morning."""
        if isinstance(self.delivery_morning, str) and "{" in self.delivery_morning:
            from jinja2 import UndefinedError

            env = jinja_env or self.get_template_env()
            try:
                self.delivery_morning = self.render_template(self.delivery_morning, context, env)
            except UndefinedError as exc:
                self.log.info(
                    "delivery_morning=%r cannot be rendered in this run (%s: a manual run without a logical "
                    "date has no data interval); using the run's own morning instead",
                    self.delivery_morning,
                    exc,
                )
                self.delivery_morning = None
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> dict[str, Any]:
        SkattekontoOrderLink.reserve(context)
        return self._order(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resumes after the service window opened (or the order window began)."""
        from airflow_provider_skattekonto.triggers.service_time import ServiceTimeTrigger

        checked = checked_event(event, ServiceTimeTrigger.EVENTS, waiting_for="the service window")
        self.log.info("Resumed at %s on the service clock", checked["now"])
        return self._order(context)

    # -----------------------------------------------------------------------------------------------
    def _target(self, hook: SkattekontoHook, context: Context) -> dt.datetime | None:
        if not self.delivery_morning:
            return run_morning(context, hook.calendar)
        try:
            target = parse_moment(self.delivery_morning).astimezone(STOCKHOLM)
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
        target = self._target(hook, context)
        now = hook.service_now()
        if target is not None:
            opens, cutoff = calendar.order_window(target)
            if now >= cutoff:
                self.log.info(
                    "Not ordering: the cutoff for the file of %s was %s and it is now %s on the service "
                    "clock; history cannot be ordered. Handing on that morning so the wait looks for the "
                    "file that was delivered then.",
                    local_iso(target),
                    local_iso(cutoff),
                    local_iso(now),
                )
                return _handed_on(target, "cutoff_passed")
            if now < opens:
                return self._wait_then_order(
                    hook,
                    context,
                    opens,
                    f"an order before {opens:%Y-%m-%d %H:%M} would land in an earlier file",
                )
        previous = recorded_order(context, target, self.log)
        if previous is not None:
            self.log.warning(
                "Not ordering again: try %s already placed an order for the file of %s (skv_client_correlation_id=%s).",
                previous.get("try_number"),
                previous.get("delivery_morning"),
                previous.get("correlation_id"),
            )
            kept = {k: v for k, v in previous.items() if k not in ("state", "try_number")}
            SkattekontoOrderLink.push(context, order_url(kept))
            return kept
        if not calendar.is_service_open(now):
            return self._wait_then_order(hook, context, calendar.next_service_opening(now), "service closed")

        self._remember(context, {"state": "sending", "delivery_morning": target.isoformat() if target else None})
        result = hook.bestall()
        xcom = result.to_xcom() | {"reason": "ordered"}
        xcom["delivery_morning"] = local_iso(result.delivery_morning)
        SkattekontoOrderLink.push(context, order_url(xcom))  # first, so it survives anything below
        if target is not None and result.delivery_morning != target:
            self.log.warning(
                "The order landed in the file of %s, not %s as this run expected.",
                local_iso(result.delivery_morning),
                local_iso(target),
            )
        self._remember(context, xcom | {"state": "accepted"})
        return xcom

    def _remember(self, context: Context, value: dict[str, Any]) -> None:
        store = task_state(context)
        if store is None:
            return
        try:
            store.set(STATE_KEY, value | {"try_number": getattr(context.get("ti"), "try_number", None)})
        except Exception as exc:  # never fail an order because the bookkeeping failed
            self.log.warning("Could not record the order in the task state store (%s)", type(exc).__name__)

    def _wait_then_order(
        self, hook: SkattekontoHook, context: Context, until: dt.datetime, reason: str
    ) -> dict[str, Any]:
        self.log.info("Waiting until %s (%s) before ordering", local_iso(until), reason)
        if self.deferrable:
            self.log.info("Deferring to Airflow's triggerer: without a running triggerer this task stays deferred")
            from airflow_provider_skattekonto.triggers.service_time import ServiceTimeTrigger

            wait = dt.timedelta(seconds=max(0.0, hook.service_clock().real_seconds_until(until)))
            self.defer(
                trigger=ServiceTimeTrigger(
                    moment=until.isoformat(), skattekonto_conn_id=self.skattekonto_conn_id, reason=reason
                ),
                method_name="execute_complete",
                timeout=wait + DEFER_GRACE,
            )
        hook.wait_until(until)
        return self._order_with(hook, context)


def _handed_on(target: dt.datetime, reason: str) -> dict[str, Any]:
    return {
        "ordered": False,
        "delivery_morning": local_iso(target),
        "correlation_id": None,
        "ordered_at": None,
        "reason": reason,
    }


def run_morning(context: Context, calendar: ServiceCalendar) -> dt.datetime | None:
    """The delivery morning the run's data interval names (its end), or None for a run without one."""
    dag_run = context.get("dag_run")
    end = context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None)
    if end is None:
        return None
    local = parse_moment(end).astimezone(STOCKHOLM)
    return local if calendar.is_delivery_morning(local) else None


def recorded_order(context: Context, target: dt.datetime | None, log: Any) -> dict[str, Any] | None:
    """The accepted order an earlier try (or a cleared run) of this task instance recorded for ``target``.

    None when there is none, and then the task orders. Mornings are compared as instants, never as
    strings (``07:00+01:00`` is ``06:00+00:00``); ``target`` None (order now) accepts any recorded order.
    The record lives in :func:`version_compat.task_state` (Airflow's task state store on 3.3+).
    """
    store = task_state(context)  # survives retries and clears
    try_number = getattr(context.get("ti"), "try_number", 1) or 1
    stored: Any = None
    if store is not None:
        try:
            stored = store.get(STATE_KEY)
        except Exception as exc:  # the store is optional bookkeeping: never block the order on it
            log.warning("Could not read the task state store (%s)", type(exc).__name__)
    if isinstance(stored, dict) and stored.get("state") == "accepted" and _same_morning(stored, target):
        return dict(stored)
    if try_number > 1:
        if isinstance(stored, dict) and stored.get("state") == "sending":
            detail = "a previous try sent an order whose answer never arrived (it may or may not be placed)"
        elif store is None:
            detail = "there is no task state here to tell whether a previous try ordered"
        else:
            detail = "no previous try recorded an accepted order for this morning"
        log.warning(
            "Try %s orders again: %s. A duplicate order at most means the morning's file is ordered "
            "twice; loading an identical file again is a no-op.",
            try_number,
            detail,
        )
    return None


def _same_morning(stored: dict[str, Any], target: dt.datetime | None) -> bool:
    if target is None:
        return True
    try:
        return parse_moment(stored.get("delivery_morning") or "") == target
    except ValueError:
        return False
