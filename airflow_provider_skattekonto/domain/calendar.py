"""The service's clock rules, in Europe/Stockholm time. Pure: no Airflow import.

* Orders are accepted 05:00-03:00 every day; the service is closed 03:00-05:00.
* Answer files are produced on business mornings only and are on E-transport by 07:00.
* A morning's file covers the orders received before 03:00 that morning (the cutoff).

Business days are weekdays minus Swedish public holidays and the eves treated as holidays
(midsommarafton, julafton, nyårsafton), taken from the ``holidays`` package; more closed dates
can be added per calendar. All datetimes taken and returned are timezone-aware.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "CUTOFF",
    "DELIVERY_TIME",
    "SERVICE_CLOSES",
    "SERVICE_OPENS",
    "STOCKHOLM",
    "ServiceCalendar",
    "local_iso",
    "parse_moment",
    "swedish_closed_days",
]

STOCKHOLM = ZoneInfo("Europe/Stockholm")
SERVICE_CLOSES = dt.time(3, 0)
SERVICE_OPENS = dt.time(5, 0)
CUTOFF = dt.time(3, 0)
DELIVERY_TIME = dt.time(7, 0)

# A guard for loops that search for the next business day: no real calendar has a year of holidays.
_MAX_SEARCH_DAYS = 366


@lru_cache(maxsize=64)
def swedish_closed_days(year: int) -> frozenset[dt.date]:
    """Swedish public holidays plus midsommarafton, julafton and nyårsafton in ``year`` (no Sundays)."""
    import holidays  # imported here: it is not needed to parse a DAG file

    calendar = holidays.country_holidays("SE", years=year, categories=("public", "de_facto"), include_sundays=False)
    return frozenset(calendar.keys())


def _require_aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _at(day: dt.date, time: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=STOCKHOLM)


@dataclass(frozen=True)
class ServiceCalendar:
    """Service window, cutoff and business mornings.

    :param extra_closed_dates: dates on which no file is expected beyond weekends and Swedish holidays.
    """

    extra_closed_dates: frozenset[dt.date] = field(default_factory=frozenset)

    @classmethod
    def with_closed_dates(cls, dates: Iterable[dt.date | str]) -> ServiceCalendar:
        """A calendar with extra closed dates, given as dates, datetimes or ISO strings (``2026-12-23``)."""
        parsed = frozenset(
            d.date() if isinstance(d, dt.datetime) else d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))
            for d in dates
        )
        return cls(extra_closed_dates=parsed)

    # -- business days --------------------------------------------------------------------------
    def is_business_day(self, day: dt.date) -> bool:
        """True when a file is produced on the morning of ``day``."""
        return day.weekday() < 5 and day not in swedish_closed_days(day.year) and day not in self.extra_closed_dates

    def next_business_day(self, day: dt.date, *, include_self: bool = False) -> dt.date:
        """The first business day after ``day`` (or ``day`` itself when ``include_self`` and it is one)."""
        candidate = day if include_self else day + dt.timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            if self.is_business_day(candidate):
                return candidate
            candidate += dt.timedelta(days=1)
        raise ValueError(f"No business day within a year after {day}: check extra_closed_dates")

    def previous_business_day(self, day: dt.date, *, include_self: bool = False) -> dt.date:
        """The last business day before ``day`` (or ``day`` itself when ``include_self`` and it is one)."""
        candidate = day if include_self else day - dt.timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            if self.is_business_day(candidate):
                return candidate
            candidate -= dt.timedelta(days=1)
        raise ValueError(f"No business day within a year before {day}: check extra_closed_dates")

    # -- service window -------------------------------------------------------------------------
    def is_service_open(self, at: dt.datetime) -> bool:
        """True when the service accepts orders at ``at`` (open 05:00-03:00, closed 03:00-05:00)."""
        local = _require_aware(at, "at").astimezone(STOCKHOLM)
        return not (SERVICE_CLOSES <= local.time() < SERVICE_OPENS)

    def next_service_opening(self, at: dt.datetime) -> dt.datetime:
        """``at`` itself if the service is open then, else 05:00 of the same Stockholm day."""
        local = _require_aware(at, "at").astimezone(STOCKHOLM)
        if self.is_service_open(local):
            return local
        return _at(local.date(), SERVICE_OPENS)

    def next_service_closing(self, at: dt.datetime) -> dt.datetime:
        """The next 03:00 Stockholm strictly after ``at``."""
        local = _require_aware(at, "at").astimezone(STOCKHOLM)
        closing = _at(local.date(), SERVICE_CLOSES)
        return closing if closing > local else _at(local.date() + dt.timedelta(days=1), SERVICE_CLOSES)

    # -- delivery mornings ----------------------------------------------------------------------
    def is_delivery_morning(self, moment: dt.datetime) -> bool:
        """True when ``moment`` is 07:00 Stockholm on a business day."""
        local = _require_aware(moment, "moment").astimezone(STOCKHOLM)
        return local.time() == DELIVERY_TIME and self.is_business_day(local.date())

    def delivery_morning(self, day: dt.date) -> dt.datetime:
        """07:00 Stockholm on ``day``, which must be a business day."""
        if not self.is_business_day(day):
            raise ValueError(f"{day.isoformat()} ({day:%A}) is not a business day: no file is produced then")
        return _at(day, DELIVERY_TIME)

    def cutoff_for(self, delivery_morning: dt.datetime) -> dt.datetime:
        """03:00 on the delivery morning's day: orders received before it are in that morning's file."""
        local = self._checked_morning(delivery_morning)
        return _at(local.date(), CUTOFF)

    def delivery_for(self, order_time: dt.datetime) -> dt.datetime:
        """The delivery morning (07:00 Stockholm) whose file includes an order received at ``order_time``.

        An order before 03:00 lands in the same day's file if that day is a business day; otherwise
        the next business morning's. (Orders in 03:00-05:00 are refused by the service; for such a
        time this returns the morning an order placed at the next opening would land in.)
        """
        local = _require_aware(order_time, "order_time").astimezone(STOCKHOLM)
        day = local.date()
        if local.time() >= CUTOFF:
            day += dt.timedelta(days=1)
        return _at(self.next_business_day(day, include_self=True), DELIVERY_TIME)

    def order_window(self, delivery_morning: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """(first moment, cutoff) during which an accepted order lands in ``delivery_morning``'s file.

        The first moment is the service's opening (05:00) on the day of the previous business
        morning; the cutoff is 03:00 on the delivery morning, exclusive.
        """
        local = self._checked_morning(delivery_morning)
        previous = self.previous_business_day(local.date())
        return _at(previous, SERVICE_OPENS), _at(local.date(), CUTOFF)

    def delivery_mornings(self, start: dt.date, end: dt.date) -> Iterator[dt.datetime]:
        """Every delivery morning on business days from ``start`` to ``end`` inclusive."""
        day = start
        while day <= end:
            if self.is_business_day(day):
                yield _at(day, DELIVERY_TIME)
            day += dt.timedelta(days=1)

    def next_delivery_morning(self, after: dt.datetime) -> dt.datetime:
        """The first delivery morning strictly after ``after``."""
        local = _require_aware(after, "after").astimezone(STOCKHOLM)
        day = local.date() if local.time() < DELIVERY_TIME else local.date() + dt.timedelta(days=1)
        return _at(self.next_business_day(day, include_self=True), DELIVERY_TIME)

    def previous_delivery_morning(self, before: dt.datetime) -> dt.datetime:
        """The last delivery morning strictly before ``before``."""
        local = _require_aware(before, "before").astimezone(STOCKHOLM)
        day = local.date() if local.time() > DELIVERY_TIME else local.date() - dt.timedelta(days=1)
        return _at(self.previous_business_day(day, include_self=True), DELIVERY_TIME)

    def file_wait_window(
        self, requested: dt.datetime, deadline: dt.time = dt.time(10, 0)
    ) -> tuple[dt.datetime, dt.datetime, str]:
        """(delivery morning, deadline, note) for waiting on the file of ``requested``.

        If ``requested`` is not a delivery morning (a weekend, a holiday, another hour), the wait moves
        to the next business morning on or after its date, and ``note`` says why. The deadline is
        ``deadline`` o'clock on the delivery morning's day; it must be after 07:00.
        """
        if deadline <= DELIVERY_TIME:
            raise ValueError(f"The deadline {deadline:%H:%M} must be after the 07:00 delivery time")
        local = _require_aware(requested, "requested").astimezone(STOCKHOLM)
        morning = _at(self.next_business_day(local.date(), include_self=True), DELIVERY_TIME)
        note = ""
        if morning.date() != local.date():
            why = "a weekend day" if local.weekday() >= 5 else "a holiday or closed date"
            note = (
                f"{local.date().isoformat()} is {why} with no file; waiting for the next business "
                f"morning, {morning.date().isoformat()} 07:00"
            )
        return morning, _at(morning.date(), deadline), note

    def _checked_morning(self, delivery_morning: dt.datetime) -> dt.datetime:
        local = _require_aware(delivery_morning, "delivery_morning").astimezone(STOCKHOLM)
        if not self.is_delivery_morning(local):
            raise ValueError(
                f"{delivery_morning.isoformat()} is not a delivery morning: files come at 07:00 "
                "Europe/Stockholm on business days"
            )
        return local


def local_iso(moment: dt.datetime) -> str:
    """``moment`` in Europe/Stockholm as ISO 8601 with its offset (``2026-12-03T07:00:00+01:00``), for logs."""
    return _require_aware(moment, "moment").astimezone(STOCKHOLM).isoformat()


def parse_moment(value: str | dt.datetime) -> dt.datetime:
    """A timezone-aware datetime from an ISO 8601 string or datetime (for XCom and template values)."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return _require_aware(moment, "moment")
