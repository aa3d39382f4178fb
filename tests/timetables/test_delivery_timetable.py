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
    # The first interval starts at the start date: a logical date before it would get no task instances.
    assert friday.data_interval == DataInterval(local(2026, 11, 27, 0, 0), local(2026, 11, 27, 7))
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
    assert info.data_interval.end > pendulum.now("UTC").add(hours=4)  # its 03:00 cutoff is still ahead


@pytest.mark.parametrize(
    ("now", "expected_morning"),
    [
        ((2026, 11, 26, 12, 0), (2026, 11, 27, 7)),  # Thursday noon: Friday's file
        ((2026, 11, 26, 23, 0), (2026, 11, 27, 7)),  # after order_at, before the cutoff: still Friday's
        ((2026, 11, 27, 3, 30), (2026, 11, 30, 7)),  # Friday in the closed window: Monday's
        ((2026, 11, 28, 10, 0), (2026, 11, 30, 7)),  # Saturday: Monday's
    ],
)
def test_no_catchup_after_a_pause_is_the_morning_an_order_now_lands_in(
    now: tuple[int, ...], expected_morning: tuple[int, ...]
) -> None:
    """Unpausing after an outage (a last run weeks ago) with catchup off: one run, never a passed cutoff."""
    import time_machine

    timetable = DeliveryMorningTimetable()
    last = DataInterval(local(2026, 10, 30, 7), local(2026, 11, 2, 7))
    with time_machine.travel(local(*now), tick=False):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=TimeRestriction(local(2026, 1, 1, 0, 0), None, False)
        )
        assert info.data_interval.end == local(*expected_morning)
        caught_up = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=TimeRestriction(local(2026, 1, 1, 0, 0), None, True)
        )
        assert caught_up.data_interval.end == local(2026, 11, 3, 7)  # catchup on: the next missed morning


def backfill_mornings(timetable: DeliveryMorningTimetable, earliest: dt.datetime, latest: dt.datetime) -> list:
    """The mornings Airflow's ``backfill create`` iterates (SerializedDAG.iter_dagrun_infos_between)."""
    restriction = TimeRestriction(pendulum.instance(earliest), pendulum.instance(latest), True)
    mornings, info = [], None
    while True:
        info = timetable.next_dagrun_info(
            last_automated_data_interval=info.data_interval if info else None, restriction=restriction
        )
        if info is None:
            return mornings
        mornings.append(info.data_interval.end.in_timezone("Europe/Stockholm").date())


@pytest.mark.parametrize("zone", [dt.timezone.utc, STOCKHOLM, dt.timezone(dt.timedelta(hours=-5))])
def test_backfill_dates_are_the_mornings_dates(zone: dt.tzinfo) -> None:
    """``--from-date 2026-11-19 --to-date 2026-11-25`` (midnight in any zone): the mornings of the 19th..25th."""
    mornings = backfill_mornings(
        DeliveryMorningTimetable(), dt.datetime(2026, 11, 19, tzinfo=zone), dt.datetime(2026, 11, 25, tzinfo=zone)
    )
    assert mornings == [dt.date(2026, 11, d) for d in (19, 20, 23, 24, 25)]


def test_backfill_through_serialized_dag_and_run_ids_name_the_morning() -> None:
    """Airflow's own backfill iteration over the real serialized DAG; every run id names its morning."""
    from airflow.sdk import DAG
    from airflow.utils.types import DagRunType

    try:
        from airflow.serialization.serialized_objects import DagSerialization as Serializer
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serialized_objects import SerializedDAG as Serializer

    with DAG("t_backfill_dates", schedule=DeliveryMorningTimetable(), start_date=dt.datetime(2026, 1, 1)) as dag:
        pass
    serialized = Serializer.deserialize_dag(Serializer.serialize_dag(dag))
    utc = dt.timezone.utc
    from_date, to_date = dt.datetime(2026, 11, 19, tzinfo=utc), dt.datetime(2026, 11, 25, tzinfo=utc)
    infos = list(serialized.iter_dagrun_infos_between(from_date, to_date))
    assert [i.data_interval.end for i in infos] == [local(2026, 11, d, 7) for d in (19, 20, 23, 24, 25)]
    run_ids = [
        serialized.timetable.generate_run_id(
            run_type=DagRunType.BACKFILL_JOB, run_after=i.run_after, data_interval=i.data_interval
        )
        for i in infos
    ]
    assert [r.split("__")[1] for r in run_ids] == [f"2026-11-{d}_0700" for d in (19, 20, 23, 24, 25)]
    manual = serialized.timetable.generate_run_id(
        run_type=DagRunType.MANUAL, run_after=local(2026, 11, 27, 10, 0), data_interval=None
    )
    assert manual.startswith("manual__2026-11-30_0700__")  # Friday 10:00 orders land in Monday's file


def test_a_precise_latest_is_an_instant() -> None:
    mornings = backfill_mornings(DeliveryMorningTimetable(), local(2026, 11, 19, 0, 0), local(2026, 11, 25, 6, 59))
    assert mornings[-1] == dt.date(2026, 11, 24)


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
