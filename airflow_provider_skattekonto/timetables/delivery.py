"""DeliveryMorningTimetable: one DAG run per delivery morning (business days, Europe/Stockholm)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable

from airflow_provider_skattekonto.domain.calendar import (
    CUTOFF,
    SERVICE_OPENS,
    STOCKHOLM,
    ServiceCalendar,
)

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction
    from pendulum import DateTime


def _pendulum(value: dt.datetime) -> DateTime:
    return pendulum.instance(value.astimezone(dt.timezone.utc))


class DeliveryMorningTimetable(Timetable):
    """Each run is one delivery morning: the 07:00 (Europe/Stockholm) file of a business day.

    * ``data_interval_end`` is the delivery morning; ``data_interval_start`` the previous one (the
      span the file's new data covers). Pass ``"{{ data_interval_end }}"`` to BestallOperator and
      ETransportFileSensor as ``delivery_morning``.
    * The run starts at ``order_at`` (local time): a time before 03:00 means that morning's night; a
      time from 05:00 means the evening of the previous business day. Default ``"22:00"``, leaving
      hours of slack before the 03:00 cutoff.
    * Weekends, Swedish public holidays, midsommarafton, julafton, nyårsafton and ``closed_dates``
      have no run. Backfills (catchup) create runs for past mornings; BestallOperator does not order
      for them and the sensor fetches the file that was delivered then.
    """

    periodic = True

    def __init__(self, *, order_at: str = "22:00", closed_dates: Sequence[str] = ()) -> None:
        self.order_at = dt.time.fromisoformat(order_at)
        if CUTOFF <= self.order_at < SERVICE_OPENS:
            raise ValueError(f"order_at {order_at} falls in the service's closed window 03:00-05:00")
        self.closed_dates = tuple(sorted(str(d) for d in closed_dates))
        self.calendar = ServiceCalendar.with_closed_dates(self.closed_dates)
        self.description = f"Business-day delivery mornings 07:00 Europe/Stockholm, ordering at {order_at}"

    # -- the rules ----------------------------------------------------------------------------------
    def run_after_for(self, morning: dt.datetime) -> dt.datetime:
        """When the run for ``morning`` starts (before the cutoff, inside the order window)."""
        day = morning.date() if self.order_at < CUTOFF else self.calendar.previous_business_day(morning.date())
        return dt.datetime.combine(day, self.order_at, tzinfo=STOCKHOLM)

    def _info(self, morning: dt.datetime) -> DagRunInfo:
        previous = self.calendar.previous_delivery_morning(morning)
        return DagRunInfo(
            run_after=_pendulum(self.run_after_for(morning)),
            data_interval=DataInterval(_pendulum(previous), _pendulum(morning)),
        )

    # -- Timetable API ------------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        return f"delivery mornings, order {self.order_at:%H:%M}"

    def serialize(self) -> dict[str, Any]:
        return {"order_at": self.order_at.strftime("%H:%M"), "closed_dates": list(self.closed_dates)}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> DeliveryMorningTimetable:
        return cls(order_at=data.get("order_at", "22:00"), closed_dates=data.get("closed_dates", ()))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """A manual run is for the file that an order placed now lands in."""
        morning = self.calendar.delivery_for(run_after)
        return DataInterval(_pendulum(self.calendar.previous_delivery_morning(morning)), _pendulum(morning))

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            morning = self.calendar.next_delivery_morning(last_automated_data_interval.end)
        else:
            if restriction.earliest is None:
                return None
            start: dt.datetime = restriction.earliest
            if not restriction.catchup:
                start = max(start, dt.datetime.now(dt.timezone.utc))
            # The first morning whose run can still start at or after ``start``.
            morning = self.calendar.next_delivery_morning(start - dt.timedelta(seconds=1))
            while self.run_after_for(morning) < start and not restriction.catchup:
                morning = self.calendar.next_delivery_morning(morning)
        if restriction.latest is not None and morning > restriction.latest:
            return None
        return self._info(morning)
