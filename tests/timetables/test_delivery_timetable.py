"""DeliveryMorningTimetable: runs on business mornings, starting inside the order window."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar
from airflow_provider_skattekonto.timetables.delivery import DeliveryMorningTimetable


def local(*args: int) -> pendulum.DateTime:
    return pendulum.instance(dt.datetime(*args, tzinfo=STOCKHOLM))


def first_run(timetable: DeliveryMorningTimetable, earliest: pendulum.DateTime, catchup: bool = True):
    return timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest, None, catchup)
    )


def test_first_and_next_runs_skip_the_weekend() -> None:
    timetable = DeliveryMorningTimetable()
    friday = first_run(timetable, local(2026, 11, 27, 0, 0))
    assert friday.data_interval == DataInterval(local(2026, 11, 26, 7), local(2026, 11, 27, 7))
    assert friday.run_after == local(2026, 11, 26, 22, 0)
    monday = timetable.next_dagrun_info(
        last_automated_data_interval=friday.data_interval, restriction=TimeRestriction(None, None, True)
    )
    assert monday.data_interval == DataInterval(local(2026, 11, 27, 7), local(2026, 11, 30, 7))
    assert monday.run_after == local(2026, 11, 27, 22, 0)  # Friday evening orders land in Monday's file


def test_christmas_and_order_at_before_cutoff() -> None:
    timetable = DeliveryMorningTimetable(order_at="01:30")
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(local(2026, 12, 22, 7), local(2026, 12, 23, 7)),
        restriction=TimeRestriction(None, None, True),
    )
    assert info.data_interval.end == local(2026, 12, 28, 7)
    assert info.run_after == local(2026, 12, 28, 1, 30)


def test_closed_dates_and_serialization() -> None:
    timetable = DeliveryMorningTimetable(closed_dates=["2026-11-30"])
    again = DeliveryMorningTimetable.deserialize(timetable.serialize())
    assert again.serialize() == timetable.serialize() == {"order_at": "22:00", "closed_dates": ["2026-11-30"]}
    info = first_run(again, local(2026, 11, 28, 0, 0))
    assert info.data_interval.end == local(2026, 12, 1, 7)


def test_no_catchup_starts_with_a_run_that_can_still_order() -> None:
    info = first_run(DeliveryMorningTimetable(), local(2020, 1, 1, 0, 0), catchup=False)
    assert info.run_after >= pendulum.now("UTC").subtract(seconds=5)


def test_manual_run_is_for_the_file_an_order_now_lands_in() -> None:
    interval = DeliveryMorningTimetable().infer_manual_data_interval(run_after=local(2026, 11, 27, 10, 0))
    assert interval == DataInterval(local(2026, 11, 27, 7), local(2026, 11, 30, 7))


def test_order_at_in_the_closed_window_is_refused() -> None:
    with pytest.raises(ValueError, match="closed window"):
        DeliveryMorningTimetable(order_at="04:00")


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2032, 12, 31)),
    order_at=st.sampled_from(["00:15", "02:59", "05:00", "18:00", "23:59"]),
)
def test_every_run_starts_inside_its_order_window(day: dt.date, order_at: str) -> None:
    calendar = ServiceCalendar()
    timetable = DeliveryMorningTimetable(order_at=order_at)
    morning = calendar.next_delivery_morning(dt.datetime.combine(day, dt.time(0), tzinfo=STOCKHOLM))
    run_after = timetable.run_after_for(morning)
    opens, cutoff = calendar.order_window(morning)
    assert opens <= run_after < cutoff
    assert calendar.is_service_open(run_after)
    assert calendar.delivery_for(run_after) == morning
