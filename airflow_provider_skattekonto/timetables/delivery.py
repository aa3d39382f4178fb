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
    from airflow.utils.types import DagRunType
    from pendulum import DateTime


def _pendulum(value: dt.datetime) -> DateTime:
    return pendulum.instance(value.astimezone(dt.timezone.utc))


class DeliveryMorningTimetable(Timetable):
    """Each run is one delivery morning: the 07:00 (Europe/Stockholm) file of a business day.

    * ``data_interval_end`` is the delivery morning; ``data_interval_start`` the previous one (the
      span the file's new data covers), or the start date for the first morning after it.
      BestallOperator orders for that morning by default, and the sensor waits for the morning
      BestallOperator hands on.
    * The run starts at ``order_at`` (local time): a time before 03:00 means that morning's night; a
      time from 05:00 means the evening of the previous business day. Default ``"22:00"``, leaving
      hours of slack before the 03:00 cutoff.
    * Weekends, Swedish public holidays, midsommarafton, julafton, nyårsafton and ``closed_dates``
      have no run. Backfills (catchup) create runs for past mornings; BestallOperator does not order
      for them and the sensor fetches the file that was delivered then (or skips if there is none).
    * Scheduled and manual run ids name the morning: ``scheduled__2026-11-19_0700__...`` is the run of
      the 19 November file, although its logical date (``data_interval_start``) is the previous
      morning. (Airflow names backfill runs itself, ``backfill__<run_after>``.)
      ``airflow backfill create --from-date 2026-11-19 --to-date 2026-11-25`` covers exactly the
      mornings dated 19-25 November.
    * With ``catchup=False`` the scheduler never creates a run for a morning whose cutoff has passed:
      after a pause the next run is the morning an order placed now lands in.
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

    def _info(self, morning: dt.datetime, earliest: dt.datetime | None = None) -> DagRunInfo:
        previous = self.calendar.previous_delivery_morning(morning)
        if earliest is not None and previous < earliest:
            # The first run after a start date (or a backfill's --from-date) starts its interval there:
            # Airflow creates no task instances for a run whose logical date is before the start date.
            previous = earliest
        # interval() fills the fields newer Airflow adds (3.2: partitions); the run starts before the morning
        info = DagRunInfo.interval(_pendulum(previous), _pendulum(morning))
        return info._replace(run_after=_pendulum(self.run_after_for(morning)))

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

    def generate_run_id(
        self, *, run_type: DagRunType, run_after: DateTime, data_interval: DataInterval | None, **extra: Any
    ) -> str:
        """``<type>__<morning date>_0700__<run_after>``: every run names the delivery morning it is for.

        A run without a data interval (a manual run without a logical date) is named after the morning
        an order placed at ``run_after`` lands in.
        """
        morning = self.morning_of(data_interval.end) if data_interval is not None else None
        if morning is None:
            morning = self.calendar.delivery_for(run_after)
        return run_type.generate_run_id(suffix=f"{morning:%Y-%m-%d}_0700__{run_after.isoformat()}")

    def morning_of(self, interval_end: dt.datetime) -> dt.datetime | None:
        """The delivery morning (local time) a data interval's end names, or None if it names none."""
        local = interval_end.astimezone(STOCKHOLM)
        return local if self.calendar.is_delivery_morning(local) else None

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        """The next morning's run, honouring ``restriction`` on every call.

        * ``earliest`` (start date, or a backfill's ``--from-date``): the first morning at or after it.
        * ``latest`` (end date, or a backfill's ``--to-date``): a bound at midnight is a *date*, and
          every morning dated on or before it is included (``--to-date 2026-11-25`` includes the
          morning of 25 November); any other time is compared as an instant.
        * ``catchup`` off: never a morning whose cutoff (03:00) has passed; the next run is the morning
          an order placed now lands in. After a pause or an outage, unpausing creates that one run.
        """
        candidates: list[dt.datetime] = []
        if last_automated_data_interval is not None:
            candidates.append(self.calendar.next_delivery_morning(last_automated_data_interval.end))
        if restriction.earliest is not None:
            candidates.append(self.calendar.next_delivery_morning(restriction.earliest - dt.timedelta(seconds=1)))
        elif last_automated_data_interval is None:
            return None
        if not restriction.catchup:
            candidates.append(self.calendar.delivery_for(dt.datetime.now(dt.timezone.utc)))
        morning = max(candidates)
        if restriction.latest is not None and not _within(morning, restriction.latest):
            return None
        return self._info(morning, restriction.earliest)


def _within(morning: dt.datetime, latest: dt.datetime) -> bool:
    """Whether ``morning`` is not after ``latest``; a bound at midnight (its own zone or Stockholm) is a date."""
    for zone in (latest.tzinfo, STOCKHOLM):
        bound = latest.astimezone(zone)
        if bound.time() == dt.time(0):
            return morning.astimezone(STOCKHOLM).date() <= bound.date()
    return morning <= latest
