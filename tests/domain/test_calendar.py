"""ServiceCalendar: the spec's examples and hypothesis invariants across many years, DST changes included.

Business days are checked against an independent oracle (Easter by the anonymous Gregorian algorithm,
Swedish holiday rules written out), not against the ``holidays`` package the calendar itself uses.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.calendar import STOCKHOLM, ServiceCalendar, parse_moment

CALENDAR = ServiceCalendar()
UTC = dt.timezone.utc
FIRST_YEAR, LAST_YEAR = 2010, 2040
ONE_HOUR, TWO_HOURS = dt.timedelta(hours=1), dt.timedelta(hours=2)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=STOCKHOLM)


# -- an independent oracle of Swedish closed days ----------------------------------------------------


def easter_sunday(year: int) -> dt.date:
    """Anonymous Gregorian algorithm (Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    weekday_shift = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday_shift) // 451
    month, day = divmod(h + weekday_shift - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _weekday_between(year: int, month: int, first_day: int, weekday: int) -> dt.date:
    day = dt.date(year, month, first_day)
    return day + dt.timedelta(days=(weekday - day.weekday()) % 7)


@cache
def oracle_closed_days(year: int) -> frozenset[dt.date]:
    """Swedish public holidays (2005 rules) plus midsommarafton, julafton and nyårsafton."""
    easter = easter_sunday(year)
    midsummer_eve = _weekday_between(year, 6, 19, 4)  # the Friday 19-25 June
    return frozenset(
        {
            dt.date(year, 1, 1),  # nyårsdagen
            dt.date(year, 1, 6),  # trettondedag jul
            easter - dt.timedelta(days=2),  # långfredagen
            easter,  # påskdagen
            easter + dt.timedelta(days=1),  # annandag påsk
            dt.date(year, 5, 1),  # första maj
            easter + dt.timedelta(days=39),  # Kristi himmelsfärds dag
            easter + dt.timedelta(days=49),  # pingstdagen
            dt.date(year, 6, 6),  # nationaldagen
            midsummer_eve,
            midsummer_eve + dt.timedelta(days=1),  # midsommardagen
            _weekday_between(year, 10, 31, 5),  # alla helgons dag: the Saturday 31 Oct-6 Nov
            dt.date(year, 12, 24),  # julafton
            dt.date(year, 12, 25),  # juldagen
            dt.date(year, 12, 26),  # annandag jul
            dt.date(year, 12, 31),  # nyårsafton
        }
    )


def oracle_business_day(day: dt.date, extra: frozenset[dt.date] = frozenset()) -> bool:
    return day.weekday() < 5 and day not in oracle_closed_days(day.year) and day not in extra


def last_sunday(year: int, month: int) -> dt.date:
    day = dt.date(year, month, 31)
    return day - dt.timedelta(days=(day.weekday() - 6) % 7)


# -- strategies ------------------------------------------------------------------------------------

years = st.integers(FIRST_YEAR, LAST_YEAR - 1)

# Any instant (generated in UTC, so every existing Stockholm wall-clock time is reachable, and the
# repeated October hour twice).
any_instant = st.datetimes(
    min_value=dt.datetime(FIRST_YEAR, 1, 1), max_value=dt.datetime(LAST_YEAR - 1, 12, 31), timezones=st.just(UTC)
)


@st.composite
def dst_instants(draw: st.DrawFn) -> dt.datetime:
    """An instant within three days of a DST change (last Sunday of March or October, 01:00 UTC)."""
    year = draw(years)
    change = dt.datetime.combine(last_sunday(year, draw(st.sampled_from([3, 10]))), dt.time(1, 0), tzinfo=UTC)
    return change + dt.timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))


@st.composite
def around_holidays(draw: st.DrawFn) -> dt.datetime:
    """An instant within a week of a closed day (holiday clusters are where the rules bite)."""
    year = draw(years)
    closed = draw(st.sampled_from(sorted(oracle_closed_days(year))))
    start = dt.datetime.combine(closed, dt.time(0, 0), tzinfo=STOCKHOLM).astimezone(UTC)
    return start + dt.timedelta(seconds=draw(st.integers(-7 * 86400, 7 * 86400)))


instants = st.one_of(any_instant, dst_instants(), around_holidays())
extra_closed = st.frozensets(
    st.dates(min_value=dt.date(FIRST_YEAR, 1, 1), max_value=dt.date(LAST_YEAR, 12, 31)), max_size=20
)


def open_now(moment: dt.datetime) -> bool:
    local = moment.astimezone(STOCKHOLM)
    return not (dt.time(3, 0) <= local.time() < dt.time(5, 0))


# -- examples from the spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_time", "morning"),
    [
        (at(2026, 11, 27, 10, 0), at(2026, 11, 30, 7)),  # Friday 10:00 -> Monday 07:00
        (at(2026, 11, 30, 2, 59), at(2026, 11, 30, 7)),  # Monday 02:59 -> Monday 07:00 (before the cutoff)
        (at(2026, 11, 30, 3, 0), at(2026, 12, 1, 7)),  # exactly the cutoff -> next morning
        (at(2026, 11, 28, 1, 0), at(2026, 11, 30, 7)),  # Saturday night -> Monday
        (at(2026, 12, 23, 10, 0), at(2026, 12, 28, 7)),  # julafton, juldagen, annandag jul, weekend
        (at(2026, 12, 30, 12, 0), at(2027, 1, 4, 7)),  # nyårsafton, nyårsdagen, weekend
        (at(2026, 4, 2, 12, 0), at(2026, 4, 7, 7)),  # Easter: långfredagen .. annandag påsk
        (at(2026, 6, 18, 12, 0), at(2026, 6, 22, 7)),  # midsommarafton Friday 19 June
        (at(2025, 6, 5, 12, 0), at(2025, 6, 9, 7)),  # nationaldagen Friday 6 June 2025
        (dt.datetime(2026, 11, 27, 9, 0, tzinfo=UTC), at(2026, 11, 30, 7)),  # any timezone is accepted
    ],
)
def test_delivery_examples(order_time: dt.datetime, morning: dt.datetime) -> None:
    got = CALENDAR.delivery_for(order_time)
    assert got == morning
    assert (got.hour, got.minute, got.tzinfo) == (7, 0, STOCKHOLM)


def test_service_window_examples() -> None:
    assert not CALENDAR.is_service_open(at(2026, 11, 27, 4, 0))  # Friday 04:00 is closed
    assert not CALENDAR.is_service_open(at(2026, 11, 27, 3, 0))
    assert CALENDAR.is_service_open(at(2026, 11, 27, 2, 59))
    assert CALENDAR.is_service_open(at(2026, 11, 27, 5, 0))
    assert CALENDAR.next_service_opening(at(2026, 11, 27, 4, 0)) == at(2026, 11, 27, 5, 0)
    assert CALENDAR.next_service_opening(at(2026, 11, 27, 10, 0)) == at(2026, 11, 27, 10, 0)
    assert CALENDAR.next_service_closing(at(2026, 11, 27, 10, 0)) == at(2026, 11, 28, 3, 0)
    assert CALENDAR.next_service_closing(at(2026, 11, 27, 2, 0)) == at(2026, 11, 27, 3, 0)


@pytest.mark.parametrize(
    "day",
    [
        dt.date(2026, 12, 24),  # julafton
        dt.date(2027, 12, 24),
        dt.date(2026, 12, 31),  # nyårsafton
        dt.date(2027, 12, 31),
        dt.date(2026, 6, 19),  # midsommarafton
        dt.date(2027, 6, 25),
        dt.date(2026, 4, 3),  # långfredagen
        dt.date(2027, 3, 26),
        dt.date(2026, 4, 6),  # annandag påsk
        dt.date(2027, 3, 29),
        dt.date(2025, 6, 6),  # nationaldagen (Friday)
        dt.date(2029, 6, 6),  # (Wednesday)
        dt.date(2026, 5, 14),  # Kristi himmelsfärds dag
        dt.date(2026, 1, 6),  # trettondedag jul
        dt.date(2026, 5, 1),  # första maj
        dt.date(2026, 11, 28),  # Saturday
        dt.date(2026, 11, 29),  # Sunday
    ],
)
def test_no_business_day_on_holidays_eves_and_weekends(day: dt.date) -> None:
    assert not CALENDAR.is_business_day(day)
    with pytest.raises(ValueError, match="not a business day"):
        CALENDAR.delivery_morning(day)


@pytest.mark.parametrize(
    "day", [dt.date(2026, 12, 23), dt.date(2026, 12, 28), dt.date(2026, 4, 7), dt.date(2026, 6, 5)]
)
def test_ordinary_days_around_holidays_are_business_days(day: dt.date) -> None:
    assert CALENDAR.is_business_day(day)
    assert CALENDAR.delivery_morning(day) == at(day.year, day.month, day.day, 7)


def test_extra_closed_dates_are_respected() -> None:
    calendar = ServiceCalendar.with_closed_dates(["2026-11-30", dt.date(2026, 12, 1)])
    assert not calendar.is_business_day(dt.date(2026, 11, 30))
    assert calendar.delivery_for(at(2026, 11, 27, 10, 0)) == at(2026, 12, 2, 7)
    assert calendar.next_delivery_morning(at(2026, 11, 27, 8, 0)) == at(2026, 12, 2, 7)
    assert calendar.order_window(at(2026, 12, 2, 7)) == (at(2026, 11, 27, 5), at(2026, 12, 2, 3))
    assert list(calendar.delivery_mornings(dt.date(2026, 11, 27), dt.date(2026, 12, 2))) == [
        at(2026, 11, 27, 7),
        at(2026, 12, 2, 7),
    ]
    with pytest.raises(ValueError, match="not a delivery morning"):
        calendar.cutoff_for(at(2026, 11, 30, 7))
    assert ServiceCalendar().is_business_day(dt.date(2026, 11, 30))  # the default is unaffected


def test_naive_datetimes_raise() -> None:
    naive = dt.datetime(2026, 11, 27, 10, 0)
    for call in (
        CALENDAR.delivery_for,
        CALENDAR.is_service_open,
        CALENDAR.next_service_opening,
        CALENDAR.next_service_closing,
        CALENDAR.is_delivery_morning,
        CALENDAR.next_delivery_morning,
        CALENDAR.previous_delivery_morning,
        CALENDAR.order_window,
        CALENDAR.cutoff_for,
        parse_moment,
    ):
        with pytest.raises(ValueError, match="timezone-aware"):
            call(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_moment("2026-11-27T10:00:00")
    assert parse_moment("2026-11-27T10:00:00+01:00") == at(2026, 11, 27, 10)


def test_order_window_and_cutoff_examples() -> None:
    monday = at(2026, 11, 30, 7)
    assert CALENDAR.cutoff_for(monday) == at(2026, 11, 30, 3)
    assert CALENDAR.order_window(monday) == (at(2026, 11, 27, 5), at(2026, 11, 30, 3))
    assert CALENDAR.order_window(at(2026, 12, 28, 7)) == (at(2026, 12, 23, 5), at(2026, 12, 28, 3))
    with pytest.raises(ValueError, match="not a delivery morning"):
        CALENDAR.order_window(at(2026, 11, 30, 8))


def test_dst_change_mornings_have_the_right_offset() -> None:
    # Monday after the spring change: 07:00 CEST = 05:00 UTC; after the autumn change: 07:00 CET = 06:00 UTC.
    assert CALENDAR.delivery_for(at(2026, 3, 27, 12)) == dt.datetime(2026, 3, 30, 5, 0, tzinfo=UTC)
    assert CALENDAR.delivery_for(at(2026, 10, 23, 12)) == dt.datetime(2026, 10, 26, 6, 0, tzinfo=UTC)
    # The window over the spring weekend is one hour shorter in real time than over the autumn one.
    spring_open, spring_cut = CALENDAR.order_window(at(2026, 3, 30, 7))
    autumn_open, autumn_cut = CALENDAR.order_window(at(2026, 10, 26, 7))
    # (subtract in UTC: Python subtracts two datetimes with the same tzinfo as wall-clock times)
    spring = spring_cut.astimezone(UTC) - spring_open.astimezone(UTC)
    autumn = autumn_cut.astimezone(UTC) - autumn_open.astimezone(UTC)
    assert spring == dt.timedelta(days=3, hours=-3) and autumn == dt.timedelta(days=3, hours=-1)


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(instants)
def test_delivery_for_is_the_first_morning_whose_cutoff_is_after_the_order(order_time: dt.datetime) -> None:
    morning = CALENDAR.delivery_for(order_time)
    local = morning.astimezone(STOCKHOLM)
    assert (local.hour, local.minute, local.second, local.microsecond) == (7, 0, 0, 0)
    assert morning.utcoffset() in (ONE_HOUR, TWO_HOURS)
    assert morning.utcoffset() == local.utcoffset()
    assert CALENDAR.is_delivery_morning(morning)
    assert oracle_business_day(local.date())
    cutoff = CALENDAR.cutoff_for(morning)
    assert cutoff == at(local.year, local.month, local.day, 3)
    assert order_time < cutoff < morning
    # the file is never more than a couple of weeks away, and no earlier morning could take the order
    assert morning - order_time < dt.timedelta(days=14)
    previous = CALENDAR.previous_delivery_morning(morning)
    assert CALENDAR.cutoff_for(previous) <= order_time


@settings(max_examples=500, deadline=None)
@given(instants)
def test_open_orders_fall_inside_exactly_one_order_window(order_time: dt.datetime) -> None:
    morning = CALENDAR.delivery_for(order_time)
    opens, cutoff = CALENDAR.order_window(morning)
    if open_now(order_time):
        assert CALENDAR.is_service_open(order_time)
        assert opens <= order_time < cutoff
        for other in (CALENDAR.previous_delivery_morning(morning), CALENDAR.next_delivery_morning(morning)):
            other_opens, other_cutoff = CALENDAR.order_window(other)
            assert not other_opens <= order_time < other_cutoff
    else:
        assert not CALENDAR.is_service_open(order_time)
        opening = CALENDAR.next_service_opening(order_time)
        assert order_time < opening <= order_time + TWO_HOURS
        assert opening.astimezone(STOCKHOLM).time() == dt.time(5, 0)
        # a closed-time order is treated as one placed at the opening
        assert CALENDAR.delivery_for(opening) == morning
        assert opens <= opening < cutoff


@settings(max_examples=300, deadline=None)
@given(instants)
def test_order_windows_of_consecutive_mornings_tile_time(moment: dt.datetime) -> None:
    morning = CALENDAR.next_delivery_morning(moment)
    following = CALENDAR.next_delivery_morning(morning)
    assert morning > moment and following > morning
    assert CALENDAR.previous_delivery_morning(following) == morning
    opens, cutoff = CALENDAR.order_window(morning)
    next_opens, next_cutoff = CALENDAR.order_window(following)
    local = morning.astimezone(STOCKHOLM)
    # the next window opens at 05:00 on this morning's day, right after the closed 03:00-05:00
    assert next_opens == at(local.year, local.month, local.day, 5)
    assert next_opens - cutoff == TWO_HOURS
    assert cutoff == CALENDAR.cutoff_for(morning) and next_cutoff == CALENDAR.cutoff_for(following)
    assert opens < cutoff < next_opens < next_cutoff
    # the business days strictly between the two mornings: none
    day = local.date() + dt.timedelta(days=1)
    while day < following.astimezone(STOCKHOLM).date():
        assert not oracle_business_day(day)
        day += dt.timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=dt.date(FIRST_YEAR, 1, 1), max_value=dt.date(LAST_YEAR - 1, 12, 31)))
def test_business_days_match_the_independent_oracle(day: dt.date) -> None:
    assert CALENDAR.is_business_day(day) == oracle_business_day(day)
    nxt = CALENDAR.next_business_day(day)
    prev = CALENDAR.previous_business_day(day)
    assert prev < day < nxt
    assert oracle_business_day(nxt) and oracle_business_day(prev)
    assert CALENDAR.next_business_day(day, include_self=True) == (day if oracle_business_day(day) else nxt)
    assert CALENDAR.previous_business_day(day, include_self=True) == (day if oracle_business_day(day) else prev)
    assert all(not oracle_business_day(day + dt.timedelta(days=n)) for n in range(1, (nxt - day).days))
    assert all(not oracle_business_day(day - dt.timedelta(days=n)) for n in range(1, (day - prev).days))


@settings(max_examples=100, deadline=None)
@given(years)
def test_every_closed_day_of_a_year_is_skipped(year: int) -> None:
    for closed in oracle_closed_days(year):
        assert not CALENDAR.is_business_day(closed)
    mornings = list(CALENDAR.delivery_mornings(dt.date(year, 1, 1), dt.date(year, 12, 31)))
    assert all(m.astimezone(STOCKHOLM).date().weekday() < 5 for m in mornings)
    assert not {m.astimezone(STOCKHOLM).date() for m in mornings} & oracle_closed_days(year)
    weekdays = sum(
        1 for n in range(366) if (d := dt.date(year, 1, 1) + dt.timedelta(days=n)).year == year and d.weekday() < 5
    )
    closed_weekdays = sum(1 for d in oracle_closed_days(year) if d.weekday() < 5)
    assert len(mornings) == weekdays - closed_weekdays


@settings(max_examples=300, deadline=None)
@given(instants, extra_closed)
def test_extra_closed_dates_are_never_delivery_mornings(order_time: dt.datetime, extra: frozenset[dt.date]) -> None:
    calendar = ServiceCalendar(extra_closed_dates=extra)
    morning = calendar.delivery_for(order_time)
    day = morning.astimezone(STOCKHOLM).date()
    assert day not in extra and oracle_business_day(day, extra)
    assert order_time < calendar.cutoff_for(morning)
    # it is the first open business morning whose cutoff lies after the order
    assert calendar.cutoff_for(calendar.previous_delivery_morning(morning)) <= order_time
    if open_now(order_time):
        opens, cutoff = calendar.order_window(morning)
        assert opens <= order_time < cutoff


@settings(max_examples=300, deadline=None)
@given(instants)
def test_next_and_previous_delivery_mornings_bracket_a_moment(moment: dt.datetime) -> None:
    after = CALENDAR.next_delivery_morning(moment)
    before = CALENDAR.previous_delivery_morning(moment)
    assert before < moment < after
    span = list(CALENDAR.delivery_mornings(before.astimezone(STOCKHOLM).date(), after.astimezone(STOCKHOLM).date()))
    if CALENDAR.is_delivery_morning(moment):
        assert span == [before, moment, after]
    else:
        assert span == [before, after]
        assert CALENDAR.next_delivery_morning(before) == after


def test_a_delivery_morning_itself_is_neither_next_nor_previous() -> None:
    monday = at(2026, 11, 30, 7)
    assert CALENDAR.next_delivery_morning(monday) == at(2026, 12, 1, 7)
    assert CALENDAR.previous_delivery_morning(monday) == at(2026, 11, 27, 7)
    assert CALENDAR.next_delivery_morning(monday - dt.timedelta(microseconds=1)) == monday


def test_every_day_of_three_decades_matches_the_oracle() -> None:
    day, last = dt.date(FIRST_YEAR, 1, 1), dt.date(LAST_YEAR, 12, 31)
    mismatches = []
    while day <= last:
        if CALENDAR.is_business_day(day) != oracle_business_day(day):
            mismatches.append(day)
        day += dt.timedelta(days=1)
    assert mismatches == []


def test_a_datetime_given_as_closed_date_closes_that_day() -> None:
    calendar = ServiceCalendar.with_closed_dates([dt.datetime(2026, 11, 30, 0, 0)])
    assert not calendar.is_business_day(dt.date(2026, 11, 30))


def test_file_wait_window_moves_weekends_to_monday() -> None:
    morning, deadline, note = CALENDAR.file_wait_window(at(2026, 11, 28, 7), dt.time(10, 0))
    assert (morning, deadline) == (at(2026, 11, 30, 7), at(2026, 11, 30, 10))
    assert "weekend" in note
    assert CALENDAR.file_wait_window(at(2026, 11, 30, 7), dt.time(9, 30))[2] == ""
    with pytest.raises(ValueError, match="after the 07:00"):
        CALENDAR.file_wait_window(at(2026, 11, 30, 7), dt.time(6, 0))
