"""The subset of systemd calendar expressions (systemd.time(7)) that pvc-ansible's backup and mirror
timers use, so the built-in schedule takes the very strings an operator already has in a timer.

Accepted: `[WEEKDAYS] [DATE] [TIME]` where WEEKDAYS is `Mon`, `Tue..Sun` or `Mon,Wed..Fri`; DATE is
`Y-M-D` and TIME is `h:m[:s]`, each field `*`, a number, a list `a,b`, a range `a..b` or a repeat
`a/step` (`*/step`); and the shorthands minutely, hourly, daily, weekly, monthly, quarterly,
semiannually, yearly and annually. Times are local (as systemd's). Not accepted (refused by name):
time zones, `~` (last days of a month) and sub-second fields.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from dataclasses import dataclass

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}
SEARCH_DAYS = 366 * 8          # a leap day on a given weekday can be years away


class CalendarError(ValueError):
    """A calendar expression outside the accepted subset; the message names the part."""


@dataclass(frozen=True)
class Calendar:
    """A parsed expression: the allowed values of each field."""

    text: str
    weekdays: frozenset[int]          # 0 = Monday
    years: frozenset[int] | None      # None: any year
    months: frozenset[int]
    days: frozenset[int]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]

    def matches_day(self, day: dt.date) -> bool:
        return (day.weekday() in self.weekdays and day.month in self.months and day.day in self.days
                and (self.years is None or day.year in self.years))

    def next_after(self, after: float) -> float | None:
        """The first instant strictly after `after` (epoch seconds) this expression names, or None
        when there is none within the search horizon (e.g. a date in the past)."""
        start = dt.datetime.fromtimestamp(after)
        for offset in range(SEARCH_DAYS):
            day = start.date() + dt.timedelta(days=offset)
            if not self.matches_day(day):
                continue
            for hour in self.hours:
                for minute in self.minutes:
                    for second in self.seconds:
                        moment = dt.datetime(day.year, day.month, day.day, hour, minute, second)
                        stamp = time.mktime(moment.timetuple())
                        if stamp > after:
                            return stamp
        return None


def _field(text: str, low: int, high: int, what: str, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CalendarError(f"'{expr}': the {what} repeat '/{step_text}' is not a positive number")
            step = int(step_text)
            if part == "*":
                part = str(low)
            if ".." not in part:
                part = f"{part}..{high}"
        if part == "*":
            first, last = low, high
        elif ".." in part:
            a, b = part.split("..", 1)
            if not (a.isdigit() and b.isdigit()):
                raise CalendarError(f"'{expr}': the {what} range '{part}' is not two numbers")
            first, last = int(a), int(b)
        elif part.isdigit():
            first = last = int(part)
        else:
            raise CalendarError(f"'{expr}': '{part}' is not a {what} (a number, *, a..b, a/step or a list)")
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise CalendarError(f"'{expr}': {what} '{part}' is outside {low}..{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _weekdays(text: str, expr: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        ends = part.split("..")
        if len(ends) > 2 or any(e[:3] not in WEEKDAYS or not re.fullmatch(r"[a-z]{3,9}", e) for e in ends):
            raise CalendarError(f"'{expr}': '{part}' is not a weekday or weekday range (e.g. Tue..Sun)")
        first, last = WEEKDAYS.index(ends[0][:3]), WEEKDAYS.index(ends[-1][:3])
        if first <= last:
            out.update(range(first, last + 1))
        else:                     # Sat..Mon wraps round the week, as systemd's
            out.update(range(first, 7))
            out.update(range(0, last + 1))
    return frozenset(out)


def parse(expr: str) -> Calendar:
    """Parse a calendar expression; CalendarError names what is wrong."""
    if not isinstance(expr, str) or not expr.strip():
        raise CalendarError("a calendar expression must be a non-empty string, e.g. 'daily' or "
                            "'Tue..Sun *-*-* 0:0:00'")
    text = " ".join(expr.split())
    norm = SHORTHANDS.get(text.lower(), text)
    parts = norm.split(" ")
    weekdays = frozenset(range(7))
    if parts and re.match(r"^[A-Za-z]", parts[0]):
        weekdays = _weekdays(parts.pop(0), expr)
    date_part, time_part = "*-*-*", "00:00:00"
    for part in parts:
        if "-" in part and ":" not in part:
            date_part = part
        elif ":" in part and "-" not in part:
            time_part = part
        else:
            raise CalendarError(f"'{expr}': '{part}' is neither a date (Y-M-D) nor a time (h:m[:s]); "
                                "time zones and '~' are not supported")
    if len(parts) > 2 or (len(parts) == 2 and ("-" in parts[0]) == ("-" in parts[1])):
        raise CalendarError(f"'{expr}': expected [weekdays] [Y-M-D] [h:m[:s]]")
    dates = date_part.split("-")
    if len(dates) == 2:
        dates = ["*", *dates]
    if len(dates) != 3:
        raise CalendarError(f"'{expr}': the date '{date_part}' is not Y-M-D or M-D")
    years = None if dates[0] == "*" else _field(dates[0], 1970, 2199, "year", expr)
    months = _field(dates[1], 1, 12, "month", expr)
    days = _field(dates[2], 1, 31, "day", expr)
    times = time_part.split(":")
    if len(times) == 2:
        times.append("00")
    if len(times) != 3 or "." in times[2]:
        raise CalendarError(f"'{expr}': the time '{time_part}' is not h:m or h:m:s (whole seconds)")
    hours = _field(times[0], 0, 23, "hour", expr)
    minutes = _field(times[1], 0, 59, "minute", expr)
    seconds = _field(times[2], 0, 59, "second", expr)
    return Calendar(text=text, weekdays=weekdays, years=years, months=months, days=days,
                    hours=tuple(sorted(hours)), minutes=tuple(sorted(minutes)),
                    seconds=tuple(sorted(seconds)))


def next_run(exprs: list[str] | tuple[str, ...], after: float) -> tuple[float, int] | None:
    """The earliest next run over several expressions, and the index of the one that names it (on
    a tie the later one wins: a forced-full schedule listed after the normal one takes the slot)."""
    best: tuple[float, int] | None = None
    for index, expr in enumerate(exprs):
        moment = parse(expr).next_after(after)
        if moment is not None and (best is None or moment <= best[0]):
            best = (moment, index)
    return best


def longest_gap(exprs: list[str] | tuple[str, ...], after: float, samples: int = 16) -> float | None:
    """The longest interval between consecutive runs of the union of `exprs` over the next
    `samples` runs: what "overdue" is measured against. None if they name fewer than two runs."""
    moments: list[float] = []
    cursor = after
    for _ in range(samples):
        found = next_run(exprs, cursor)
        if found is None:
            break
        moments.append(found[0])
        cursor = found[0]
    if len(moments) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(moments))
