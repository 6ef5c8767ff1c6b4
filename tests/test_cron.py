"""Schedule math: the cron dialect, next nominal times under DST, every= grids,
the ISO ids of runs, and the rows of the ``cron`` command (DESIGN.md section 4).

The next-time arithmetic is checked against a brute-force reference written
here, independently of the code under test: it parses the expression itself,
walks UTC minute by minute, derives the local wall clock with zoneinfo, and
applies the DST rule from first principles.
"""
from __future__ import annotations

import bisect
import math
import os
import random
import sys
from datetime import datetime, timedelta, timezone, tzinfo
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import wheelq as S  # the schedule math is section 5 of wheelq.py

UTC = timezone.utc
MINUTE = 60


def utc(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs(expr, tz, after, n):
    """The next n runs as (ISO UTC, mark)."""
    cron = S._parse_cron(expr)
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    return [(iso(t), mark) for t, mark in S._cron_times(cron, zone, after, n)]


def fire_times(expr, start, end, tz=UTC):
    """Every run in (start, end), as aware datetimes in tz."""
    cron = S._parse_cron(expr)
    out, t = [], start
    while True:
        t, prev = S._cron_next(cron, tz, t)[0], t
        assert t > prev, (expr, t, prev)  # a broken next() must fail here, not loop
        if t >= end:
            return out
        out.append(datetime.fromtimestamp(t, tz))


# --------------------------------------------------------------------------
# The parser: every field form
# --------------------------------------------------------------------------

HOUR0 = utc(2025, 1, 6)  # a Monday


@pytest.mark.parametrize("expr, minutes", [
    ("* * * * *", set(range(60))),
    ("*/15 * * * *", {0, 15, 30, 45}),
    ("7 * * * *", {7}),
    ("05 * * * *", {5}),
    ("10-13 * * * *", {10, 11, 12, 13}),
    ("5,10-12,40-50/5 * * * *", {5, 10, 11, 12, 40, 45, 50}),
    ("0-59/20 * * * *", {0, 20, 40}),
    ("3-10/100 * * * *", None),  # step beyond the field: refused below, not here
    ("59 * * * *", {59}),
    ("*/60 * * * *", {0}),
    ("*/7,58 * * * *", {0, 7, 14, 21, 28, 35, 42, 49, 56, 58}),
])
def test_minute_field_forms(expr, minutes):
    if minutes is None:
        with pytest.raises(ValueError):
            S._parse_cron(expr)
        return
    got = {d.minute for d in fire_times(expr, HOUR0 - 1, HOUR0 + 3600 - 1)}
    assert got == minutes


@pytest.mark.parametrize("expr, hours", [
    ("0 */6 * * *", {0, 6, 12, 18}),
    ("0 1-10/3 * * *", {1, 4, 7, 10}),
    ("0 23,0 * * *", {0, 23}),
    ("0 9-17 * * *", set(range(9, 18))),
])
def test_hour_field_forms(expr, hours):
    got = {d.hour for d in fire_times(expr, HOUR0 - 1, HOUR0 + 86400 - 1)}
    assert got == hours


def days_in(expr, year, month, tz=UTC):
    start = datetime(year, month, 1, tzinfo=tz).timestamp() - 1
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz).timestamp()
    return sorted(d.day for d in fire_times(expr, start, end, tz))


def test_day_of_month_forms():
    assert days_in("0 0 1,15 * *", 2025, 1) == [1, 15]
    assert days_in("0 0 */10 * *", 2025, 1) == [1, 11, 21, 31]
    assert days_in("0 0 28-31 * *", 2025, 2) == [28]
    assert days_in("0 0 28-31 * *", 2024, 2) == [28, 29]
    assert days_in("0 0 31 * *", 2025, 4) == []


def test_month_field_and_names():
    def months(expr):
        return sorted({d.month for d in fire_times(expr, utc(2025, 1, 1) - 1, utc(2026, 1, 1))})
    assert months("0 0 1 */4 *") == [1, 5, 9]
    assert months("0 0 1 jan,Mar,JUL-aug *") == [1, 3, 7, 8]
    assert months("0 0 1 DEC *") == [12]
    assert months("0 0 1 2-11/3 *") == [2, 5, 8, 11]


def weekdays(expr):
    """The weekdays (0 = Sunday) of the runs in the two weeks from Monday 2025-01-06."""
    return sorted({d.isoweekday() % 7 for d in fire_times(expr, HOUR0 - 1, HOUR0 + 14 * 86400)})


@pytest.mark.parametrize("expr, days", [
    ("0 0 * * *", [0, 1, 2, 3, 4, 5, 6]),
    ("0 0 * * 0", [0]),
    ("0 0 * * 7", [0]),
    ("0 0 * * sun", [0]),
    ("0 0 * * SUN", [0]),
    ("0 0 * * mon-fri", [1, 2, 3, 4, 5]),
    ("0 0 * * 1-5", [1, 2, 3, 4, 5]),
    ("0 0 * * 5-7", [0, 5, 6]),
    ("0 0 * * fri-7", [0, 5, 6]),
    ("0 0 * * 0-7", [0, 1, 2, 3, 4, 5, 6]),
    ("0 0 * * */2", [0, 2, 4, 6]),
    ("0 0 * * 1-7/2", [0, 1, 3, 5]),
    ("0 0 * * sat,sun", [0, 6]),
    ("0 0 * * 0,7", [0]),
])
def test_day_of_week_forms(expr, days):
    assert weekdays(expr) == days


def test_or_rule_when_both_day_fields_are_restricted():
    # October 2024: Fridays are 4, 11, 18, 25; the 13th is a Sunday.
    assert days_in("0 0 13 * fri", 2024, 10) == [4, 11, 13, 18, 25]
    assert days_in("0 0 13 * 5", 2024, 10) == [4, 11, 13, 18, 25]
    # A field 1-31 is restricted (it does not begin with *): OR gives every day.
    assert days_in("0 0 1-31 * mon", 2024, 10) == list(range(1, 32))


def test_star_prefixed_day_field_counts_as_unrestricted():
    # January 2024: Mondays 1, 8, 15, 22, 29.  */2 begins with *, so it is AND.
    assert days_in("0 0 */2 * 1", 2024, 1) == [1, 15, 29]
    # The same days written without the leading * are restricted: OR.
    assert days_in("0 0 1-31/2 * 1", 2024, 1) == sorted(set(range(1, 32, 2)) | {8, 22})
    assert days_in("0 0 * * 1", 2024, 1) == [1, 8, 15, 22, 29]
    # */1 in the weekday field is unrestricted too: only the 1st.
    assert days_in("0 0 1 * */1", 2024, 1) == [1]
    # Weekday restricted by a star-prefixed field, day of month restricted: AND.
    assert days_in("0 0 1-7 * */7", 2024, 9) == [1]  # 2024-09-01 is a Sunday


@pytest.mark.parametrize("macro, same_as", [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
    ("@DAILY", "0 0 * * *"),
    ("  @Hourly ", "0 * * * *"),
])
def test_macros(macro, same_as):
    start = utc(2023, 12, 30, 5)
    assert runs(macro, "Europe/Berlin", start, 5) == runs(same_as, "Europe/Berlin", start, 5)


def test_expr_is_normalised_and_hourly_flag():
    assert S._parse_cron("  */5   *\t* * *  ").expr == "*/5 * * * *"
    assert S._parse_cron("0 0 * * MON-Fri").expr == "0 0 * * mon-fri"
    assert S._parse_cron("@Daily").expr == "@daily"
    assert S._parse_cron("0 * * * *").hourly
    assert S._parse_cron("*/5 * * * *").hourly
    assert S._parse_cron("@hourly").hourly
    assert S._parse_cron("0 0-23 * * *").hourly  # every hour of the day
    assert not S._parse_cron("*/15 2 * * *").hourly
    assert not S._parse_cron("0 */2 * * *").hourly  # not every hour: fixed-time
    assert not S._parse_cron("@daily").hourly


# --------------------------------------------------------------------------
# The parser: every rejected form names the field and the fix
# --------------------------------------------------------------------------


def test_six_fields_message_is_exact():
    with pytest.raises(ValueError) as e:
        S._parse_cron("*/30 * * * * *")
    assert str(e.value) == ("cron expression '*/30 * * * * *' has 6 fields; wheelq takes 5 "
                            "(minute hour day month weekday): use every=30 for seconds")


@pytest.mark.parametrize("expr, fragments", [
    ("0 * * * * *", ["6 fields", "takes 5", "seconds"]),
    ("0 0 12 * * ? 2024", ["7 fields", "takes 5"]),
    ("* * * *", ["4 fields", "takes 5"]),
    ("", ["empty", "five fields"]),
    ("   ", ["empty"]),
    ("0 0 L * *", ["day-of-month", "'L'", "28-31"]),
    ("0 0 15W * *", ["day-of-month", "'W'"]),
    ("0 0 LW * *", ["day-of-month", "'L'"]),
    ("0 0 * * 5L", ["day-of-week", "'L'"]),
    ("0 0 * * 1#2", ["day-of-week", "'#'", "1-7"]),
    ("0 0 ? * 1", ["day-of-month", "'?'", "'*'"]),
    ("0 0 * * ?", ["day-of-week", "'?'", "'*'"]),
    ("@reboot", ["@reboot", "not supported"]),
    ("@fortnightly", ["@fortnightly", "@daily", "@hourly"]),
    ("@daily 5", ["macro", "alone"]),
    ("60 * * * *", ["minute", "60", "0-59"]),
    ("0 24 * * *", ["hour", "24", "0-23"]),
    ("0 0 0 * *", ["day-of-month", "0", "1-31"]),
    ("0 0 32 * *", ["day-of-month", "32", "1-31"]),
    ("0 0 1 0 *", ["month", "1-12"]),
    ("0 0 1 13 *", ["month", "13", "1-12"]),
    ("0 0 * * 8", ["day-of-week", "8", "0-7"]),
    ("0,,5 * * * *", ["minute", "empty"]),
    ("0, * * * *", ["minute", "empty"]),
    ("0 22-2 * * *", ["hour", "reversed", "22-23,0-2"]),
    ("0 0 * * fri-sun", ["day-of-week", "reversed", "5-7"]),
    ("*/0 * * * *", ["minute", "step", "at least 1"]),
    ("0 */0 * * *", ["hour", "step"]),
    ("*/90 * * * *", ["minute", "step", "every=5400"]),
    ("0 */36 * * *", ["hour", "step", "every=129600"]),
    ("0 0 */32 * *", ["day-of-month", "step", "1-31"]),
    ("5/15 * * * *", ["minute", "5-59/15"]),
    ("0 0 * * 1/2", ["day-of-week", "1-6/2"]),
    ("abc * * * *", ["minute", "'abc'"]),
    ("jan * * * *", ["minute", "names"]),
    ("0 0 mon * *", ["day-of-month", "names"]),
    ("0 0 * foo *", ["month", "'foo'", "jan"]),
    ("0 0 * * monday", ["day-of-week", "'monday'", "mon"]),
    ("0 0 * january *", ["month", "'january'", "jan"]),
    ("-5 * * * *", ["minute"]),
    ("1-2-3 * * * *", ["minute"]),
    ("*-5 * * * *", ["minute"]),
    ("*/5/2 * * * *", ["minute"]),
    ("1.5 * * * *", ["minute"]),
    ("*/mon * * * *", ["minute"]),
    ("0 0 * * */tue", ["day-of-week", "step"]),
    ("\u0663 * * * *", ["minute"]),  # an Arabic-Indic digit is not a number here
    ("0 0 30 2 *", ["never", "30", "2"]),
    ("0 0 31 4,6,9,11 *", ["never"]),
    ("0 0 31 feb *", ["never"]),
    ("0 0 30-31 2 */1", ["never"]),  # weekday field begins with *: AND, so never
])
def test_rejected_forms_name_the_field_and_the_fix(expr, fragments):
    with pytest.raises(ValueError) as e:
        S._parse_cron(expr)
    msg = str(e.value)
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_rejected_expression_is_quoted_in_the_message():
    with pytest.raises(ValueError, match=r"'61 \* \* \* \*'"):
        S._parse_cron("61 * * * *")


def test_never_fire_check_knows_leap_years_and_the_or_rule():
    S._parse_cron("0 0 29 2 *")          # Feb 29 exists in leap years
    S._parse_cron("0 0 31 1-2 *")         # January has a 31st
    S._parse_cron("0 0 30 2 mon")         # OR: Mondays in February
    S._parse_cron("0 0 29 2 */7")         # AND: a Feb 29 that is a Sunday (2032)
    assert runs("0 0 29 2 */7", UTC, utc(2024, 1, 1), 1) == [("2032-02-29T00:00:00Z", None)]


def test_non_string_expression_is_a_type_error():
    with pytest.raises(TypeError):
        S._parse_cron(5)


# --------------------------------------------------------------------------
# The brute-force reference
# --------------------------------------------------------------------------

RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}


def ref_value(text, i):
    if i == 3 and text in MONTHS:
        return MONTHS.index(text) + 1
    if i == 4 and text in DAYS:
        return DAYS.index(text)
    return int(text)


def ref_field(text, i):
    lo, hi = RANGES[i]
    out = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            a, b = lo, (6 if i == 4 else hi)
        elif "-" in base:
            a, b = (ref_value(x, i) for x in base.split("-"))
        else:
            a = b = ref_value(base, i)
        out.update(range(a, b + 1, int(step) if step else 1))
    if i == 4 and 7 in out:
        out.discard(7)
        out.add(0)
    return out


def ref_cron(expr):
    """(matcher, hourly) for a valid expression, written from the dialect's text."""
    expr = expr.strip().lower()
    fields = MACROS.get(expr, expr).split()
    mins, hours, doms, months, dows = (ref_field(f, i) for i, f in enumerate(fields))
    loose = fields[2].startswith("*") or fields[4].startswith("*")

    def match(minute, hour, day, month, weekday):
        if minute not in mins or hour not in hours or month not in months:
            return False
        if loose:
            return day in doms and weekday in dows
        return day in doms or weekday in dows

    return match, len(hours) == 24


def wall_fields(d):
    return (d.minute, d.hour, d.day, d.month, d.isoweekday() % 7)


class Window:
    """Every UTC minute of [start, end) with its local wall clock, for one zone.

    ``repeat`` says that this wall time was already shown earlier (a fall-back
    overlap); ``gap`` lists the wall times that were skipped just before this
    minute (a spring-forward gap).  Both come from comparing successive wall
    readings, not from any offset arithmetic.
    """

    WARMUP = 6 * 3600

    def __init__(self, tz, start, end):
        self.tz, self.start, self.end = tz, start, end
        self.rows = []
        prev = top = None
        first = int(start // MINUTE) * MINUTE - self.WARMUP
        for t in range(first, int(end), MINUTE):
            d = datetime.fromtimestamp(t, tz)
            wall = d.replace(tzinfo=None, fold=0)
            gap = []
            if prev is not None and wall - prev > timedelta(minutes=1):
                w = prev + timedelta(minutes=1)
                while w < wall:
                    gap.append(wall_fields(w))
                    w += timedelta(minutes=1)
            self.rows.append((t, wall_fields(d), top is not None and wall <= top, gap))
            prev = wall
            top = wall if top is None else max(top, wall)

    def runs(self, expr):
        """The reference: every (instant, mark) in (start, end) by the DST rule of DESIGN 4."""
        match, hourly = ref_cron(expr)
        out = []
        for t, fields, repeat, gap in self.rows:
            if hourly:
                if match(*fields):
                    out.append((t, "repeated" if repeat else None))
            elif gap and any(match(*g) for g in gap):
                out.append((t, "moved"))  # the first instant after the gap
            elif not repeat and match(*fields):
                out.append((t, None))
        return [r for r in out if r[0] > self.start]


def transitions(tz, year):
    """UTC instants in `year` where the zone's offset changes (daily scan, then bisection;
    these zones never change twice within a day)."""
    def off(t):
        return datetime.fromtimestamp(t, tz).utcoffset()
    out = []
    t = int(utc(year, 1, 1))
    end = int(utc(year + 1, 1, 1))
    before = off(t)
    while t < end:
        after = off(t + 86400)
        if after != before:
            lo, hi = t, t + 86400
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if off(mid) == before:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        before = after
        t += 86400
    return out


# --------------------------------------------------------------------------
# Next-time arithmetic against the reference
# --------------------------------------------------------------------------

HOUR_CHOICES = ["*", "2", "1", "0", "23", "0-3", "1,2", "2,3", "*/2", "1-3/2", "23,0,1",
                "*/3", "0-23", "*/1", "12", "1-4"]
MINUTE_CHOICES = ["0", "30", "*/15", "*/20", "15,45", "0-10", "*", "59", "45", "0,30", "*/7",
                  "10-50/20"]
DOM_CHOICES = ["*", "*", "*", "*/2", "1-15", "10-31", "*/3", "1-31/2"]
DOW_CHOICES = ["*", "*", "*", "1-5", "0,6", "*/2", "mon-fri", "sat-sat,sun", "5-7", "7", "1,3,5"]
MONTH_CHOICES = ["*", "*", "*", "*"]


def random_field(rng, i):
    lo, hi = RANGES[i]
    hi = 6 if i == 4 else hi
    kind = rng.random()
    if kind < 0.15:
        return "*/%d" % rng.randint(1, min(hi - lo + 1, 12))
    if kind < 0.35:
        a = rng.randint(lo, hi)
        b = rng.randint(a, hi)
        return "%d-%d" % (a, b)
    if kind < 0.5:
        a = rng.randint(lo, hi)
        b = rng.randint(a, hi)
        return "%d-%d/%d" % (a, b, rng.randint(1, 6))
    values = sorted(rng.sample(range(lo, hi + 1), rng.randint(2, min(8, hi - lo + 1))))
    return ",".join(map(str, values))


def random_expr(rng, month):
    minute = rng.choice(MINUTE_CHOICES) if rng.random() < 0.6 else random_field(rng, 0)
    hour = rng.choice(HOUR_CHOICES) if rng.random() < 0.7 else random_field(rng, 1)
    dom = rng.choice(DOM_CHOICES) if rng.random() < 0.75 else random_field(rng, 2)
    dow = rng.choice(DOW_CHOICES) if rng.random() < 0.75 else random_field(rng, 4)
    mon = rng.choice(MONTH_CHOICES)
    if rng.random() < 0.2:
        # A restricted month with a day field that every month has, so it can fire.
        mon = "%d,%s" % (month, ",".join(str(m) for m in rng.sample(range(1, 13), 2)))
        if rng.random() < 0.3:
            mon = MONTHS[month - 1]
        dom = rng.choice(DOM_CHOICES)
    if rng.random() < 0.05:
        return rng.choice(list(MACROS))
    return " ".join([minute, hour, dom, mon, dow])


class Steps(tzinfo):
    """A made-up zone whose offset changes at given UTC instants (PEP 495 folds included).

    It stands for zones no one has yet: shifts of 20, 30 and 150 minutes, a
    change exactly where a cache of spans might split (multiples of 2**25 s),
    and it is not a zoneinfo, so only the tzinfo protocol is used.
    """

    def __init__(self, changes, offsets):
        self.changes = changes            # sorted UTC instants
        self.offsets = offsets            # offsets[i] holds before changes[i]; one more at the end

    def _at(self, t):
        return self.offsets[bisect.bisect_right(self.changes, t)]

    def fromutc(self, dt):
        t = (dt.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        off = self._at(t)
        wall = dt.replace(tzinfo=None) + timedelta(seconds=off)
        # fold=1 when this wall time was already shown by an earlier offset.
        i = bisect.bisect_right(self.changes, t)
        fold = int(i > 0 and wall < datetime(1970, 1, 1) + timedelta(
            seconds=self.changes[i - 1] + self.offsets[i - 1]))
        return wall.replace(tzinfo=self, fold=fold)

    def utcoffset(self, dt):
        if dt is None:
            return None                   # not one fixed offset
        wall = (dt.replace(tzinfo=None, fold=0) - datetime(1970, 1, 1)).total_seconds()
        candidates = [o for o in set(self.offsets) if self._at(wall - o) == o]
        if not candidates:                # in a gap: PEP 495 says fold=0 is the offset before
            i = bisect.bisect_right([c + self.offsets[k] for k, c in enumerate(self.changes)], wall)
            o = self.offsets[i - 1 if dt.fold == 0 else i] if i else self.offsets[0]
            return timedelta(seconds=o)
        candidates.sort(reverse=True)     # the larger offset is the earlier instant
        return timedelta(seconds=candidates[min(dt.fold, len(candidates) - 1)])

    def dst(self, dt):
        return None

    def tzname(self, dt):
        return "Steps"


CHUNK = 2 ** 25
STEPS_AT = [45 * CHUNK - 86400 * 9, 45 * CHUNK - 86400 * 4, 45 * CHUNK, 60 * CHUNK,
            60 * CHUNK + 86400 * 3, 60 * CHUNK + 86400 * 7]
STEPS = Steps(STEPS_AT, [3600, 3600 + 1200, 7200, 3600, 5400, -3600, 3600])


def windows():
    """(zone label, tzinfo, start, end): three days around each DST change, and quiet days."""
    out = []
    plan = [
        ("Europe/Berlin", [2024, 1996]),
        ("America/New_York", [2024, 2007]),
        ("Australia/Lord_Howe", [2024]),
        ("America/Santiago", [2024, 2016]),
        ("America/Havana", [2024, 2013]),
        ("Pacific/Apia", [2011, 2012]),
    ]
    for name, years in plan:
        tz = ZoneInfo(name)
        for year in years:
            for t in transitions(tz, year):
                start = (t // 86400) * 86400 - 86400 - 3600 * 7 - 60 * 13
                out.append((name, tz, start, start + 3 * 86400))
    for t in STEPS_AT:
        start = t - 86400 - 3600 * 5 - 60 * 7
        out.append(("Steps", STEPS, start, start + 3 * 86400))
    rng = random.Random(1234)
    quiet = [("UTC", ZoneInfo("UTC")), ("UTC", UTC), ("Europe/Berlin", ZoneInfo("Europe/Berlin")),
             ("America/New_York", ZoneInfo("America/New_York")),
             ("Asia/Kolkata", ZoneInfo("Asia/Kolkata")),
             ("+05:45", timezone(timedelta(hours=5, minutes=45))),
             ("-03:30", timezone(-timedelta(hours=3, minutes=30)))]
    for name, tz in quiet:
        start = rng.randrange(int(utc(1975, 1, 1)), int(utc(2060, 1, 1)), 60) + rng.choice([0, 17.25])
        out.append((name, tz, start, start + 2 * 86400))
    return out


WINDOWS = windows()
EXPRS_PER_WINDOW = 50


@pytest.mark.parametrize("label, tz, start, end", WINDOWS,
                         ids=["%s@%s" % (w[0], iso(w[2])[:10]) for w in WINDOWS])
def test_next_matches_brute_force(label, tz, start, end):
    window = Window(tz, start, end)
    rng = random.Random("%s/%s" % (label, start))
    month = datetime.fromtimestamp(start + 86400, tz).month
    fixed_exprs = ["30 2 * * *", "*/15 2 * * *", "0 * * * *", "30 1 * * *", "0 0 * * *",
                   "*/30 * * * *", "0 2,3 * * *", "0,30 2 * * *", "15 2 * * *", "45 1 * * *",
                   "30 23 * * *", "0 23,0 * * *", "*/10 0 * * *", "0 1 * * *", "30 0 * * *"]
    exprs = fixed_exprs + [random_expr(rng, month) for _ in range(EXPRS_PER_WINDOW)]
    checked = 0
    for expr in exprs:
        cron = S._parse_cron(expr)
        ref = window.runs(expr)
        ours = []
        t = start
        while True:
            t, mark, prev = *S._cron_next(cron, tz, t), t
            assert t > prev, (expr, label, t, prev)
            if t >= end:
                break
            ours.append((t, mark))
        assert ours == ref, (expr, label, [(iso(a), m) for a, m in ours][:8],
                             [(iso(a), m) for a, m in ref][:8])
        # Random starting points, fractional ones and exact run instants included.
        instants = [r[0] for r in ref]
        for _ in range(12):
            pick = rng.random()
            if instants and pick < 0.4:
                after = rng.choice(instants) + rng.choice([0, -1e-3, 1e-3, -0.5, 0.5, -60])
            else:
                after = rng.uniform(start, end - 60)
            if after < start:
                continue
            i = bisect.bisect_right(instants, after)
            if i == len(instants):
                continue
            assert S._cron_next(cron, tz, after) == ref[i], (expr, label, after)
            checked += 1
    assert checked > len(exprs)


def test_cron_times_yields_consecutive_nexts():
    cron = S._parse_cron("*/20 1-3 * * *")
    tz = ZoneInfo("America/New_York")
    start = utc(2024, 11, 2)
    got = list(S._cron_times(cron, tz, start, 12))
    assert len(got) == 12
    t, expect = start, []
    for _ in range(12):
        t, mark = S._cron_next(cron, tz, t)
        expect.append((t, mark))
    assert got == expect
    assert list(S._cron_times(cron, tz, start, 0)) == []


# --------------------------------------------------------------------------
# DST by name
# --------------------------------------------------------------------------

NY = "America/New_York"


def test_spring_forward_fixed_time_runs_once_after_the_gap():
    assert runs("30 2 * * *", NY, utc(2024, 3, 9, 12), 3) == [
        ("2024-03-10T07:00:00Z", "moved"),  # 03:00 EDT
        ("2024-03-11T06:30:00Z", None),
        ("2024-03-12T06:30:00Z", None)]


def test_spring_forward_all_matches_of_one_gap_make_one_run():
    assert runs("*/15 2 * * *", NY, utc(2024, 3, 9, 12), 3) == [
        ("2024-03-10T07:00:00Z", "moved"),
        ("2024-03-11T06:00:00Z", None),
        ("2024-03-11T06:15:00Z", None)]


def test_moved_run_landing_on_a_matching_instant_is_one_run():
    assert runs("0 2,3 * * *", NY, utc(2024, 3, 9, 12), 3) == [
        ("2024-03-10T07:00:00Z", "moved"),
        ("2024-03-11T06:00:00Z", None),
        ("2024-03-11T07:00:00Z", None)]


def test_spring_forward_hourly_skips_the_gap():
    assert runs("30 * * * *", NY, utc(2024, 3, 10, 5), 3) == [
        ("2024-03-10T05:30:00Z", None),  # 00:30 EST
        ("2024-03-10T06:30:00Z", None),  # 01:30 EST
        ("2024-03-10T07:30:00Z", None)]  # 03:30 EDT: 02:30 did not exist


def test_fall_back_fixed_time_runs_once_at_the_first_occurrence():
    assert runs("30 1 * * *", NY, utc(2024, 11, 2, 12), 2) == [
        ("2024-11-03T05:30:00Z", None),  # 01:30 EDT
        ("2024-11-04T06:30:00Z", None)]
    # From inside the second pass of the hour, the first occurrence has passed.
    assert runs("45 1 * * *", NY, utc(2024, 11, 3, 6, 10), 1) == [("2024-11-04T06:45:00Z", None)]


def test_fall_back_hourly_runs_at_both_occurrences():
    assert runs("30 * * * *", NY, utc(2024, 11, 3, 5), 3) == [
        ("2024-11-03T05:30:00Z", None),        # 01:30 EDT
        ("2024-11-03T06:30:00Z", "repeated"),  # 01:30 EST
        ("2024-11-03T07:30:00Z", None)]        # 02:30 EST
    # From between the two occurrences, the second still comes.
    assert runs("30 * * * *", NY, utc(2024, 11, 3, 5, 45), 1) == [("2024-11-03T06:30:00Z", "repeated")]


def test_berlin():
    assert runs("30 2 * * *", "Europe/Berlin", utc(2024, 3, 30, 12), 2) == [
        ("2024-03-31T01:00:00Z", "moved"), ("2024-04-01T00:30:00Z", None)]
    assert runs("30 2 * * *", "Europe/Berlin", utc(2024, 10, 26, 12), 2) == [
        ("2024-10-27T00:30:00Z", None), ("2024-10-28T01:30:00Z", None)]


def test_lord_howe_half_hour_shift():
    lh = "Australia/Lord_Howe"
    # 2024-10-06 02:00 +10:30 -> 02:30 +11: the gap is half an hour.
    assert runs("15 2 * * *", lh, utc(2024, 10, 5), 1) == [("2024-10-05T15:30:00Z", "moved")]
    assert runs("30 2 * * *", lh, utc(2024, 10, 5), 1) == [("2024-10-05T15:30:00Z", None)]
    assert runs("0,30 2 * * *", lh, utc(2024, 10, 5), 2) == [
        ("2024-10-05T15:30:00Z", "moved"), ("2024-10-06T15:00:00Z", None)]
    # 2024-04-07 02:00 +11 -> 01:30 +10:30: 01:30-02:00 happens twice.
    assert runs("45 1 * * *", lh, utc(2024, 4, 6), 1) == [("2024-04-06T14:45:00Z", None)]
    assert runs("45 * * * *", lh, utc(2024, 4, 6, 14), 3) == [
        ("2024-04-06T14:45:00Z", None), ("2024-04-06T15:15:00Z", "repeated"),
        ("2024-04-06T16:15:00Z", None)]


def test_santiago_midnight_transitions():
    sc = "America/Santiago"
    # 2024-09-08 00:00 -04 -> 01:00 -03: the day starts at 01:00.
    assert runs("0 0 * * *", sc, utc(2024, 9, 7, 12), 2) == [
        ("2024-09-08T04:00:00Z", "moved"), ("2024-09-09T03:00:00Z", None)]
    assert runs("0 * * * *", sc, utc(2024, 9, 8, 2, 30), 2) == [
        ("2024-09-08T03:00:00Z", None), ("2024-09-08T04:00:00Z", None)]
    # 2024-04-07 00:00 -03 -> 2024-04-06 23:00 -04: the evening of the 6th repeats.
    assert runs("30 23 * * *", sc, utc(2024, 4, 6, 12), 2) == [
        ("2024-04-07T02:30:00Z", None), ("2024-04-08T03:30:00Z", None)]
    assert runs("30 * * * *", sc, utc(2024, 4, 7, 2), 3) == [
        ("2024-04-07T02:30:00Z", None), ("2024-04-07T03:30:00Z", "repeated"),
        ("2024-04-07T04:30:00Z", None)]


def test_havana_midnight_transitions():
    hv = "America/Havana"
    assert runs("0 0 * * *", hv, utc(2024, 3, 9, 12), 2) == [
        ("2024-03-10T05:00:00Z", "moved"), ("2024-03-11T04:00:00Z", None)]
    # 2024-11-03 01:00 -04 -> 00:00 -05: midnight happens twice.
    assert runs("0 0 * * *", hv, utc(2024, 11, 2, 12), 2) == [
        ("2024-11-03T04:00:00Z", None), ("2024-11-04T05:00:00Z", None)]
    assert runs("0 * * * *", hv, utc(2024, 11, 3, 3, 30), 3) == [
        ("2024-11-03T04:00:00Z", None), ("2024-11-03T05:00:00Z", "repeated"),
        ("2024-11-03T06:00:00Z", None)]


def test_apia_skipped_day():
    ap = "Pacific/Apia"
    # 2011-12-29 23:59:59 -10 was followed by 2011-12-31 00:00:00 +14.
    assert runs("30 2 * * *", ap, utc(2011, 12, 29), 3) == [
        ("2011-12-29T12:30:00Z", None),
        ("2011-12-30T10:00:00Z", "moved"),   # 2011-12-30 02:30 never existed
        ("2011-12-30T12:30:00Z", None)]      # 2011-12-31 02:30 +14
    assert runs("0 * * * *", ap, utc(2011, 12, 30, 8, 30), 3) == [
        ("2011-12-30T09:00:00Z", None), ("2011-12-30T10:00:00Z", None),
        ("2011-12-30T11:00:00Z", None)]
    assert runs("0 12 30 12 *", ap, utc(2011, 6, 1), 2) == [
        ("2011-12-30T10:00:00Z", "moved"), ("2012-12-29T22:00:00Z", None)]


def test_feb_29_across_2100():
    for tz in ("UTC", "Europe/Berlin"):
        cron = S._parse_cron("0 0 29 2 *")
        zone = ZoneInfo(tz)
        t0 = datetime(2096, 2, 29, tzinfo=zone).timestamp()
        t, mark = S._cron_next(cron, zone, t0)
        assert datetime.fromtimestamp(t, zone).replace(tzinfo=None) == datetime(2104, 2, 29)
        assert mark is None


def year_bounds(tz, year):
    return (datetime(year, 1, 1, tzinfo=tz).timestamp(), datetime(year + 1, 1, 1, tzinfo=tz).timestamp())


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                  "America/Santiago", "America/Havana", "Pacific/Apia"])
def test_multi_year_walk_is_strictly_increasing(name):
    tz = ZoneInfo(name)
    years = (2011, 2014) if name == "Pacific/Apia" else (2023, 2026)
    start, _ = year_bounds(tz, years[0])
    _, end = year_bounds(tz, years[1] - 1)
    days = (datetime(years[1], 1, 1) - datetime(years[0], 1, 1)).days
    for expr in ["30 2 * * *", "*/15 2 * * *", "0 0 * * *", "30 1 * * *", "0 * * * *",
                 "0 */2 * * *", "30 23 * * 1-5"]:
        cron = S._parse_cron(expr)
        prev, count, t = None, 0, start - 1
        while True:
            t, mark = S._cron_next(cron, tz, t)
            assert prev is None or t > prev
            if t >= end:
                break
            assert mark in (None, "moved", "repeated")
            assert mark != "repeated" or cron.hourly
            assert mark != "moved" or not cron.hourly
            prev = t
            count += 1
        if expr in ("30 2 * * *", "0 0 * * *", "30 1 * * *"):
            # A daily fixed-time schedule runs exactly once for each calendar day, except
            # that in Apia the moved 2011-12-30 00:00 lands on 2011-12-31 00:00: one run.
            merged = name == "Pacific/Apia" and expr == "0 0 * * *"
            assert count == days - merged, (expr, name, count)
        if expr == "0 * * * *" and name != "Australia/Lord_Howe":
            # Whole-hour offsets: every elapsed hour has exactly one run.
            assert count == round((end - start) / 3600), (expr, name, count)


def test_fixed_offset_and_naive_free_inputs():
    cron = S._parse_cron("30 2 * * *")
    tz = timezone(timedelta(hours=5, minutes=45))
    t, mark = S._cron_next(cron, tz, utc(2024, 1, 1))
    assert iso(t) == "2024-01-01T20:45:00Z" and mark is None
    # An integer start and a start exactly on a run: strictly after.
    t2, _ = S._cron_next(cron, tz, int(t))
    assert t2 == t + 86400
    assert isinstance(t2, float)


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("Europe/Berlin")])
def test_no_run_before_year_10000_is_a_value_error(tz):
    cron = S._parse_cron("0 0 1 1 *")
    t, _ = S._cron_next(cron, tz, utc(9998, 6, 1))
    assert datetime.fromtimestamp(t, tz).year == 9999
    with pytest.raises(ValueError):
        S._cron_next(cron, tz, utc(9999, 6, 1))
    for bad in (float("nan"), float("inf"), -1e15, 1e15):
        with pytest.raises(ValueError):
            S._cron_next(cron, tz, bad)


def test_zone_name_is_accepted_in_place_of_a_tzinfo():
    cron = S._parse_cron("30 2 * * *")
    assert S._cron_next(cron, "America/New_York", utc(2024, 3, 9, 12)) == (utc(2024, 3, 10, 7), "moved")


# --------------------------------------------------------------------------
# every= grids
# --------------------------------------------------------------------------


def test_every_next_whole_seconds():
    assert S._every_next(300, 1000, 1000) == 1300
    assert S._every_next(300, 1000, 999.999) == 1000
    assert S._every_next(300, 1000, 1299.9999) == 1300
    assert S._every_next(300, 1000, 1300) == 1600
    assert S._every_next(300, 1000, 500) == 1000  # the grid starts at its anchor
    assert S._every_next(timedelta(minutes=5), 1000, 1000) == 1300


def test_every_next_huge_n_and_float_grids():
    # n is about 1.7e12: float n * every would drift; the result stays on the grid.
    t = S._every_next(0.001, 0.0, 1.7e9 + 0.0005)
    assert t > 1.7e9 + 0.0005
    assert t == float(Fraction(0.001) * 1_700_000_000_001)
    # Grid point 3 of every=0.1 is exactly 3 * 0.1000000000000000055..., which rounds to
    # 0.30000000000000004: it is after the float 0.3, so it is the next point after 0.3.
    third = float(3 * Fraction(0.1))
    assert S._every_next(0.1, 0.0, 0.2) == third
    assert S._every_next(0.1, 0.0, 0.3) == third
    assert S._every_next(0.1, 0.0, third) == float(4 * Fraction(0.1))
    # A grid too fine for the float: never <= after, never the same instant twice.
    after = 1.7e9
    t1 = S._every_next(1e-9, 0.0, after)
    assert t1 > after and t1 == float(Fraction(after) + Fraction(2) ** -22)
    assert S._every_next(1e-9, 0.0, t1) > t1
    with pytest.raises(ValueError):
        S._every_next(0, 0.0, 1.0)
    with pytest.raises(ValueError):
        S._every_next(-5, 0.0, 1.0)
    with pytest.raises(ValueError):
        S._every_next(float("nan"), 0.0, 1.0)


def grid(every, anchor, n):
    return float(Fraction(anchor) + n * Fraction(every))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(min_value=1e-3, max_value=1e7), st.floats(min_value=0, max_value=4e9),
       st.floats(min_value=-1e6, max_value=1e11))
def test_every_next_is_the_first_grid_point_after(every, anchor, delta):
    after = anchor + delta
    t = S._every_next(every, anchor, after)
    assert t > after
    # t is a grid point n >= 0 and grid point n-1 (if any) is not after `after`.
    n = max(0, int((Fraction(t) - Fraction(anchor)) / Fraction(every)) - 2)
    while grid(every, anchor, n) < t:
        n += 1
    assert grid(every, anchor, n) == t
    assert n == 0 or grid(every, anchor, n - 1) <= after


# --------------------------------------------------------------------------
# ISO ids
# --------------------------------------------------------------------------


def test_iso_utc():
    assert S._iso_utc(1710054000.0) == "2024-03-10T07:00:00Z"
    assert S._iso_utc(1710054000) == "2024-03-10T07:00:00Z"
    assert S._iso_utc(0) == "1970-01-01T00:00:00Z"
    assert S._iso_utc(0.5) == "1970-01-01T00:00:00.5Z"
    assert S._iso_utc(-0.25) == "1969-12-31T23:59:59.75Z"
    assert S._iso_utc(1_800_000_000.1) == "2027-01-15T08:00:00.1Z"
    assert S._iso_utc(utc(2026, 12, 4, 10, 5)) == "2026-12-04T10:05:00Z"
    assert S._parse_iso_utc("2024-03-10T07:00:00Z") == 1710054000.0
    assert S._parse_iso_utc("1969-12-31T23:59:59.75Z") == -0.25
    for bad in ["2024-03-10 07:00:00Z", "2024-03-10T07:00:00", "2024-03-10T07:00:00+00:00",
                "2024-13-10T07:00:00Z", "2024-02-30T07:00:00Z", "yesterday", ""]:
        with pytest.raises(ValueError):
            S._parse_iso_utc(bad)
    with pytest.raises(ValueError):
        S._iso_utc(float("inf"))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.floats(min_value=-2e9, max_value=2e10))
def test_iso_utc_round_trips_and_is_unique(t):
    text = S._iso_utc(t)
    assert S._parse_iso_utc(text) == t
    assert text.endswith("Z") and "T" in text
    if t == int(t):
        assert len(text) == 20
    assert S._iso_utc(math.nextafter(t, math.inf)) != text


def test_iso_ids_of_a_fine_grid_are_distinct():
    t, seen = 1_800_000_000.0, set()
    for _ in range(200):
        t = S._every_next(0.01, 1_800_000_000.0, t)
        seen.add(S._iso_utc(t))
    assert len(seen) == 200


# --------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------


def test_resolve_tz_names_and_objects():
    tz, name = S._resolve_tz("Europe/Berlin")
    assert name == "Europe/Berlin" and tz.utcoffset(datetime(2024, 1, 1)) == timedelta(hours=1)
    tz, name = S._resolve_tz("UTC")
    assert name == "UTC" and tz.utcoffset(datetime(2024, 1, 1)) == timedelta(0)
    assert S._resolve_tz()[1] == "UTC"
    z = ZoneInfo("America/New_York")
    assert S._resolve_tz(z) == (z, "America/New_York")
    fixed = timezone(timedelta(hours=2))
    tz, name = S._resolve_tz(fixed)
    assert tz is fixed and name


@pytest.mark.parametrize("bad", ["Europe/Berln", "Mars/Olympus", "", "../etc/passwd", "/etc/passwd",
                                 "Europe", "+01:00"])
def test_resolve_tz_rejects_unknown_zones(bad):
    with pytest.raises(ValueError) as e:
        S._resolve_tz(bad)
    assert "Europe/Berlin" in str(e.value)
    if bad:
        assert repr(bad) in str(e.value)


def test_resolve_tz_rejects_other_types():
    with pytest.raises(TypeError):
        S._resolve_tz(5)


def test_local_from_tz_variable(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert S._resolve_tz("local")[1] == "Asia/Tokyo"
    monkeypatch.setenv("TZ", ":America/New_York")
    assert S._resolve_tz("local")[1] == "America/New_York"
    monkeypatch.setenv("TZ", "/usr/share/zoneinfo/Europe/Berlin")
    assert S._resolve_tz("local")[1] == "Europe/Berlin"
    monkeypatch.setenv("TZ", "")
    assert S._resolve_tz("local")[1] == "UTC"  # as the C library reads an empty TZ
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    with pytest.raises(ValueError) as e:
        S._resolve_tz("local")
    assert "TZ" in str(e.value) and "Europe/Berlin" in str(e.value)


def test_local_from_etc_localtime(monkeypatch, tmp_path):
    monkeypatch.delenv("TZ", raising=False)
    link = tmp_path / "localtime"
    os.symlink("/usr/share/zoneinfo/Australia/Lord_Howe", link)
    monkeypatch.setattr(S, "_LOCALTIME", str(link))
    tz, name = S._resolve_tz("local")
    assert name == "Australia/Lord_Howe" and tz.key == "Australia/Lord_Howe"
    plain = tmp_path / "plain"
    plain.write_bytes(b"TZif")
    monkeypatch.setattr(S, "_LOCALTIME", str(plain))
    with pytest.raises(ValueError) as e:
        S._resolve_tz("local")
    assert "/etc/localtime" in str(e.value) or str(plain) in str(e.value)
    assert "TZ" in str(e.value)
    monkeypatch.setattr(S, "_LOCALTIME", str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        S._resolve_tz("local")


# --------------------------------------------------------------------------
# The cron command's rows and --from
# --------------------------------------------------------------------------


def test_cron_rows_mark_the_moved_run():
    start = S._parse_when("2024-03-09", "America/New_York")
    rows = S._cron_rows("30 2 * * *", "America/New_York", start, 3)
    assert rows == [
        {"utc": "2024-03-09T07:30:00Z", "local": "2024-03-09T02:30:00-05:00",
         "epoch": 1709969400.0, "dst": None},
        {"utc": "2024-03-10T07:00:00Z", "local": "2024-03-10T03:00:00-04:00",
         "epoch": 1710054000.0, "dst": "moved"},
        {"utc": "2024-03-11T06:30:00Z", "local": "2024-03-11T02:30:00-04:00",
         "epoch": 1710138600.0, "dst": None},
    ]


def test_cron_rows_mark_the_repeated_run_and_take_tzinfo():
    rows = S._cron_rows("0 * * * *", ZoneInfo("America/Havana"), utc(2024, 11, 3, 3, 30), 2)
    assert [(r["local"], r["dst"]) for r in rows] == [
        ("2024-11-03T00:00:00-04:00", None), ("2024-11-03T00:00:00-05:00", "repeated")]
    with pytest.raises(ValueError):
        S._cron_rows("0 0 30 2 *", "UTC", 0, 3)


def test_parse_when():
    ny = "America/New_York"
    assert S._parse_when("1710054000", ny) == 1710054000.0
    assert S._parse_when("1710054000.5", ny) == 1710054000.5
    assert S._parse_when("2024-03-10T07:00:00Z", ny) == 1710054000.0
    assert S._parse_when("2024-03-10T03:00:00-04:00", ny) == 1710054000.0
    assert S._parse_when("2024-03-10T08:00+01:00", ny) == 1710054000.0
    assert S._parse_when("2024-03-10T03:00", ny) == 1710054000.0        # naive: New York
    assert S._parse_when("2024-03-10 03:00:00", ny) == 1710054000.0
    assert S._parse_when("2024-03-09", "UTC") == utc(2024, 3, 9)
    assert S._parse_when("2024-03-09T00:00:00.25Z", "UTC") == utc(2024, 3, 9) + 0.25
    # A naive time in the gap means the first instant after it; in an overlap, the first pass.
    assert S._parse_when("2024-03-10T02:30", ny) == utc(2024, 3, 10, 7)
    assert S._parse_when("2024-11-03T01:30", ny) == utc(2024, 11, 3, 5, 30)
    assert S._parse_when("2011-12-30T12:00", "Pacific/Apia") == utc(2011, 12, 30, 10)
    assert S._parse_when(1710054000, ny) == 1710054000.0
    assert S._parse_when(datetime(2024, 3, 10, 7, tzinfo=UTC), ny) == 1710054000.0
    assert S._parse_when(datetime(2024, 3, 10, 3), ny) == 1710054000.0
    for bad in ["tomorrow", "2024-03-10T25:00", "2024-02-30", "10/03/2024", "", "nan", "inf"]:
        with pytest.raises(ValueError) as e:
            S._parse_when(bad, ny)
        assert "ISO 8601" in str(e.value)
