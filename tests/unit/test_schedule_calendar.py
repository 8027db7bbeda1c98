"""pvc.core.calendar: the systemd calendar subset of pvc-ansible's backup and mirror timers."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from pvc.core.calendar import CalendarError, longest_gap, next_run, parse


def at(*fields: int) -> float:
    return time.mktime(dt.datetime(*fields).timetuple())


def nxt(expr: str, *after: int) -> dt.datetime:
    found = parse(expr).next_after(at(*after))
    assert found is not None
    return dt.datetime.fromtimestamp(found)


# 2026-12-06 is a Sunday, 2026-12-07 a Monday.
@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("Tue..Sun *-*-* 0:0:00", (2026, 12, 6, 12, 0), (2026, 12, 8, 0, 0)),      # skips Monday
    ("Tue..Sun *-*-* 0:0:00", (2026, 12, 5, 12, 0), (2026, 12, 6, 0, 0)),
    ("Mon *-*-* 0:0:00", (2026, 12, 6, 12, 0), (2026, 12, 7, 0, 0)),
    ("Mon *-*-* 0:0:00", (2026, 12, 7, 0, 0), (2026, 12, 14, 0, 0)),              # strictly after
    ("*-*-* 00/4:00:00", (2026, 12, 6, 13, 5), (2026, 12, 6, 16, 0)),
    ("*-*-* 00/4:00:00", (2026, 12, 6, 23, 0), (2026, 12, 7, 0, 0)),
    ("daily", (2026, 12, 6, 0, 0, 1), (2026, 12, 7, 0, 0)),
    ("hourly", (2026, 12, 6, 13, 59, 59), (2026, 12, 6, 14, 0)),
    ("weekly", (2026, 12, 8), (2026, 12, 14)),
    ("monthly", (2026, 12, 6), (2027, 1, 1)),
    ("yearly", (2026, 12, 6), (2027, 1, 1)),
    ("minutely", (2026, 12, 6, 10, 0, 30), (2026, 12, 6, 10, 1)),
    ("12:30", (2026, 12, 6, 13, 0), (2026, 12, 7, 12, 30)),
    ("*-*-01 03:00", (2026, 12, 6), (2027, 1, 1, 3, 0)),
    ("2027-02-28", (2026, 12, 6), (2027, 2, 28)),
    ("Sat..Mon 01:00", (2026, 12, 8), (2026, 12, 12, 1, 0)),                      # wraps the week
    ("Mon,Wed,Fri *-*-* 06:15:00", (2026, 12, 7, 7, 0), (2026, 12, 9, 6, 15)),
    ("*-02-29 00:00:00", (2026, 12, 6), (2028, 2, 29)),                           # leap day
    ("Mon *-*-* 0,12:0:00", (2026, 12, 7, 1, 0), (2026, 12, 7, 12, 0)),
    ("*:0/15", (2026, 12, 6, 10, 16), (2026, 12, 6, 10, 30)),
])
def test_next_after(expr: str, after: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert nxt(expr, *after) == dt.datetime(*expected)


def test_past_date_has_no_next_run() -> None:
    assert parse("2020-01-01 00:00:00").next_after(at(2026, 1, 1)) is None


@pytest.mark.parametrize("bad", ["", "Foo *-*-* 0:0:00", "*-*-* 25:00:00", "*-13-* 00:00", "*-*-* 0:0:0.5",
                                 "*-*-* 00:00:00 UTC", "*-*~01", "*-*-* */0:00", "1:2:3:4", "a..b"])
def test_refusals_name_the_expression(bad: str) -> None:
    with pytest.raises(CalendarError) as err:
        parse(bad)
    assert bad.split(" ")[0] in str(err.value) or "non-empty" in str(err.value)


def test_next_run_prefers_forced_full_on_a_tie_and_takes_the_earliest() -> None:
    exprs = ["Tue..Sun *-*-* 0:0:00", "Mon *-*-* 0:0:00"]
    moment, index = next_run(exprs, at(2026, 12, 6, 12))      # Sunday noon -> Monday 0:00, forced
    assert index == 1 and dt.datetime.fromtimestamp(moment) == dt.datetime(2026, 12, 7)
    moment, index = next_run(exprs, moment)
    assert index == 0 and dt.datetime.fromtimestamp(moment) == dt.datetime(2026, 12, 8)
    both = next_run(["daily", "*-*-* 00:00:00"], at(2026, 12, 6, 12))
    assert both is not None and both[1] == 1


def test_longest_gap() -> None:
    day = 86400.0
    upstream = ["Tue..Sun *-*-* 0:0:00", "Mon *-*-* 0:0:00"]
    assert longest_gap(upstream, at(2026, 12, 6)) == pytest.approx(day, abs=3600)
    assert longest_gap(["Mon *-*-* 0:0:00"], at(2026, 12, 6)) == pytest.approx(7 * day, abs=3600)
    assert longest_gap(["*-*-* 00/4:00:00"], at(2026, 12, 6)) == pytest.approx(4 * 3600, abs=3600)
    assert longest_gap(["2020-01-01"], at(2026, 1, 1)) is None
