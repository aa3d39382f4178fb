"""The service calendar: examples from the spec and property-based invariants (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar

CALENDAR = ServiceCalendar()


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=STOCKHOLM)


# Any instant in 2024-2035, including both DST transitions each year (generated in UTC, so every
# Stockholm wall-clock time that exists is reachable, and the repeated October hour twice).
instants = st.datetimes(
    min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2035, 12, 31), timezones=st.just(dt.timezone.utc)
)


@pytest.mark.parametrize(
    ("order_time", "morning"),
    [
        (at(2026, 11, 27, 10, 0), at(2026, 11, 30, 7, 0)),  # Friday 10:00 -> Monday's file
        (at(2026, 11, 30, 2, 59), at(2026, 11, 30, 7, 0)),  # Monday 02:59 -> Monday's file
        (at(2026, 11, 30, 5, 0), at(2026, 12, 1, 7, 0)),  # after the cutoff -> the next morning
        (at(2026, 12, 23, 10, 0), at(2026, 12, 28, 7, 0)),  # julafton, juldagen, annandag, Sunday
        (at(2026, 12, 30, 12, 0), at(2027, 1, 4, 7, 0)),  # nyårsafton, nyårsdagen, weekend
        (at(2026, 6, 18, 12, 0), at(2026, 6, 22, 7, 0)),  # midsommarafton (Fri 19 June)
    ],
)
def test_delivery_examples(order_time: dt.datetime, morning: dt.datetime) -> None:
    assert CALENDAR.delivery_for(order_time) == morning


@pytest.mark.parametrize(
    "day",
    [
        dt.date(2026, 12, 24),  # julafton
        dt.date(2026, 12, 31),  # nyårsafton
        dt.date(2026, 6, 19),  # midsommarafton
        dt.date(2026, 4, 3),  # långfredagen
        dt.date(2026, 4, 6),  # annandag påsk
        dt.date(2026, 5, 14),  # Kristi himmelsfärds dag
        dt.date(2026, 11, 28),  # Saturday
        dt.date(2026, 11, 29),  # Sunday
    ],
)
def test_no_file_on_holidays_eves_and_weekends(day: dt.date) -> None:
    assert not CALENDAR.is_business_day(day)


def test_service_window() -> None:
    assert not CALENDAR.is_service_open(at(2026, 11, 27, 4, 0))  # Friday 04:00 is refused
    assert CALENDAR.is_service_open(at(2026, 11, 27, 2, 59))
    assert CALENDAR.is_service_open(at(2026, 11, 27, 5, 0))
    assert CALENDAR.next_service_opening(at(2026, 11, 27, 3, 30)) == at(2026, 11, 27, 5, 0)


def test_extra_closed_dates_and_naive_times() -> None:
    calendar = ServiceCalendar.with_closed_dates(["2026-11-30"])
    assert calendar.delivery_for(at(2026, 11, 27, 10, 0)) == at(2026, 12, 1, 7, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        CALENDAR.delivery_for(dt.datetime(2026, 11, 27, 10, 0))
    with pytest.raises(ValueError, match="not a business day"):
        CALENDAR.delivery_morning(dt.date(2026, 11, 28))


def test_file_wait_window_moves_weekends_to_monday() -> None:
    morning, deadline, note = CALENDAR.file_wait_window(at(2026, 11, 28, 7, 0), dt.time(10, 0))
    assert (morning, deadline) == (at(2026, 11, 30, 7, 0), at(2026, 11, 30, 10, 0))
    assert "weekend" in note
    with pytest.raises(ValueError, match="after the 07:00"):
        CALENDAR.file_wait_window(at(2026, 11, 30, 7, 0), dt.time(6, 0))


@settings(max_examples=400, deadline=None)
@given(instants)
def test_an_order_lands_in_the_first_file_whose_cutoff_is_after_it(order_time: dt.datetime) -> None:
    morning = CALENDAR.delivery_for(order_time)
    assert CALENDAR.is_delivery_morning(morning)
    assert morning.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))
    assert order_time < CALENDAR.cutoff_for(morning) < morning
    # no earlier delivery morning could have taken it
    previous = CALENDAR.previous_delivery_morning(morning)
    assert order_time >= CALENDAR.cutoff_for(previous)


@settings(max_examples=400, deadline=None)
@given(instants)
def test_open_orders_fall_inside_their_order_window(order_time: dt.datetime) -> None:
    if not CALENDAR.is_service_open(order_time):
        local = order_time.astimezone(STOCKHOLM)
        assert dt.time(3, 0) <= local.time() < dt.time(5, 0)
        return
    opens, cutoff = CALENDAR.order_window(CALENDAR.delivery_for(order_time))
    assert opens <= order_time < cutoff


@settings(max_examples=200, deadline=None)
@given(instants)
def test_order_windows_tile_the_open_hours(moment: dt.datetime) -> None:
    morning = CALENDAR.next_delivery_morning(moment)
    following = CALENDAR.next_delivery_morning(morning)
    _, cutoff = CALENDAR.order_window(morning)
    opens, _ = CALENDAR.order_window(following)
    # the next window opens at 05:00 on this morning's day: right after the closed 03:00-05:00
    assert opens == at(morning.year, morning.month, morning.day, 5, 0)
    assert opens - cutoff == dt.timedelta(hours=2)


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2035, 12, 31)))
def test_business_days_are_weekdays_without_swedish_holidays(day: dt.date) -> None:
    if CALENDAR.is_business_day(day):
        assert day.weekday() < 5
        assert (day.month, day.day) not in {(1, 1), (1, 6), (5, 1), (6, 6), (12, 24), (12, 25), (12, 26), (12, 31)}
    nxt = CALENDAR.next_business_day(day)
    assert day < nxt <= day + dt.timedelta(days=6)
    assert all(not CALENDAR.is_business_day(day + dt.timedelta(days=n)) for n in range(1, (nxt - day).days))
