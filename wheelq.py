"""wheelq: a durable delay queue in a single file.

Single file, no dependencies other than the Python standard library (POSIX
only: it uses ``fcntl.flock``).  Copy ``wheelq.py`` beside a script, or
``pip install`` it.

    wheel = wheelq.Wheel("tasks.json")

    @wheel.task()
    def close_unpaid_order(order_id):
        ...

    close_unpaid_order.delay(42, count_down=1800)
    wheel.run_forever()

Design
------
The file reads top to bottom in sections, each understandable without the
ones below it: exceptions; clocks (the only code that reads the time);
schedules (the time arithmetic of periodic tasks); the ring; task state;
stores; runners; ``Task`` and its kin; ``Wheel``; the command line.

*Ring.*  A hashed timing wheel of ``slots`` slots.  Tick ``k`` stands for the
instant ``k * tick``; a task due at ``due`` belongs to the first tick with
``k * tick >= due``, so it never fires early.  Its slot is ``k % slots`` and
its round ``k // slots``.  Each slot maps the ticks that fall on it to a
record or a list of records, and keeps a heap of those ticks, so that a
timer more than a revolution late takes every passed tick in one sweep:
O(slots + due), not O(ticks missed).  Adding and cancelling cost O(1), and
an idle tick pops one key whatever the number pending.  The ring is pure
data: it knows nothing of a record but the tick it waits for.

*Task state.*  One table holds every live task and where it stands (in the
ring, queued, running, a dead letter).  Each journal op (add, start, done,
retry, fail, cancel, requeue, purge, reschedule, pause, resume) is described
once, with its fields, how it applies and what compaction keeps of it, and
every reader and writer of the journal goes through that description: replay,
the owner's reading of other processes' lines, a producer's view, the owner's
own changes and the command line.

*Stores.*  The wheel keeps its records through a store: in memory, a file, or
(``wheelq_redis``) a Redis server.  A file journal is JSON Lines: a header,
then one record per line, each one ``write()`` to a file opened with
``O_APPEND`` under ``flock``.  A task leaves the journal (``done``) only after
its function returned, so execution is *at least once*: tasks should be
idempotent.  Arguments are JSON; nothing in the journal is ever evaluated,
and only registered task names run.

*One owner, many producers.*  ``start()`` takes the owner lock (a ``flock`` on
``<path>.lock``); that process replays the journal, runs the tasks and
compacts the file.  Any other ``Wheel(path)`` is a producer: it appends
records marked ``"p":1``, which the owner takes in, and reads the journal
without a lock for its view of the tasks.  ``start(standby=True)`` waits for
the owner lock and takes over when the owner exits or dies.

*Threads.*  One timer thread (``wheelq-timer``) is a loop around ``tick()``,
which is the whole step.  Due plain functions go to a bounded queue feeding
``workers`` threads (``wheelq-worker-N``); ``async def`` tasks to one event
loop (``wheelq-asyncio``).  Lock order: the store's lock, then the state
lock; no I/O and no user code runs under the state lock.

Decisions the design contract leaves open
-----------------------------------------
* ``pending()`` lists every task not yet finished and not a dead letter: its
  ``status`` says whether it is pending, queued or running.
* ``delay(task_id=X)`` in the owner while a dead letter holds ``X`` raises
  ``WheelqError``: requeue or purge the dead letter first.  A producer does
  not read the journal to add, so its add of such an id is ignored by the
  owner, as any add of a live id is.
* ``requeue()`` resets ``tries`` so the task gets its full retries again.
* ``TaskHandle.status()`` remembers the last 65,536 finished ids of this
  process, and at times up to twice as many; an older one reads ``"unknown"``.
* ``tick()`` on a journal-backed wheel that was never started refuses: only
  the owner runs tasks.  Eager mode is for ``Wheel()`` in memory (and
  ``testing()``).
* Every append, the owner's included, holds ``flock`` on the journal.  A line
  without its newline seen under that flock was therefore left by a writer
  that died, and the appender cuts it before it writes: no acknowledged line
  is ever glued onto a torn one, and no appender waits for another process
  to mend the file.  (The contract had only the owner cut torn lines, at
  open; that was because the owner appended without the flock.)
* Under that flock the owner first reads what others appended since its last
  append and applies it, so the live owner's state is always the state of
  the file up to its own line: the state after a restart equals the state of
  the live owner.
* The owner journals ``{"op": "start", "ids": [...]}`` before a batch runs
  (an op the contract does not list).  Replay then knows what was running: a
  producer's cancel of a running task is ignored there as it is live, and a
  task whose run a crash cut short is known.  Such a task is pending again
  and next runs alone; if it was the only task running when the process
  died, that counts against it, and after ``max(retries + 1, 3)`` such
  deaths it becomes a dead letter ("the process died while running it N
  times").  The floor of three keeps one or two kills of an owner (a
  deploy, the OOM killer) from dead-lettering a task that merely ran at
  that moment.
* The ``done`` records of one batch are written together after it, so a
  SIGKILL can re-run the tasks of the batch that was in flight.
* I/O failures raise ``OSError`` of the usual subclass whose message names
  the journal and what to do; a failed ``delay()`` leaves nothing behind.
* Under ``fsync="always"`` the owner's ``delay()`` leaves its line to the
  thread that commits the group, which writes all the group's lines with one
  ``write()`` before its fsync; until then the task waits outside the ring,
  so it cannot run first.  If that write fails, every ``delay()`` it carried
  raises and its task is forgotten.  An add with a ``task_id`` is written at
  once.  Outcomes that the event loop writes are fsynced by the timer (the
  loop never waits for the disk).
* Replay reads the ``add`` and ``done`` lines that wheelq itself writes with
  one regular expression per few thousand lines (their args and kwargs with
  the JSON scanner), and every other line with the JSON parser; both
  readings give the same records.  Every reader takes the journal as UTF-8
  only, and a line whose due time is not a finite number is not a record.
* A tick that holds several records keeps them in a list, not in the
  insertion-ordered dict the design names: the list costs about half the
  memory.  A cancelled record's dead entry is skipped and, in bulk,
  compacted away.
* When the wall clock steps back, the ring goes on from the new tick: ticks
  already processed are empty, so nothing runs twice.  The timer never waits
  longer than one tick, on any clock.
* A retry waits ``retry_delay * retry_backoff ** (n - 1)``, capped at a year.
* A naive ``eta`` is local time.  One that local time puts in the past
  logs a warning when it is more than an hour past, or more than a minute
  past while read as UTC it is not: that is ``datetime.utcnow()`` east of
  Greenwich, whatever the offset (Berlin's is one hour in winter).
* Task arguments, results and run ids nest at most 100 levels deep (the
  args list is one): ``delay()`` refuses deeper values, a deeper result is
  not kept, and the journal's readers refuse a deeper line, on every Python
  alike (how deep the JSON parser itself goes differs between them).
  ``task_id`` and task names may not hold control characters, and the
  command line and the logs escape the ones journal text holds.
"""

from __future__ import annotations

__version__ = "0.2.0"

import argparse
import asyncio
import base64
import collections
import contextlib
import contextvars
import dataclasses
import errno
import fcntl
import fnmatch
import functools
import heapq
import inspect
import itertools
import json
import logging
import math
import operator
import os
import queue
import random
import re
import signal
import stat
import sys
import threading
import time
import traceback
import weakref
import zoneinfo
from bisect import bisect_left, bisect_right
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Wheel",
    "Task",
    "TaskHandle",
    "TaskInfo",
    "ScheduleInfo",
    "ManualClock",
    "SystemClock",
    "current",
    "WheelqError",
    "JournalLocked",
    "JournalCorrupt",
    "UnknownTask",
    "WheelClosed",
    "TaskFailed",
    "ResultUnavailable",
    "main",
]

logger = logging.getLogger("wheelq")


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class WheelqError(Exception):
    """The root of wheelq's own errors."""


class JournalLocked(WheelqError):
    """Another process owns the journal (holds its owner lock)."""

    def __init__(self, path: str, pid: int | None, holder: str | None = None):
        self.path = path
        self.pid = pid
        who = holder or ("process %d" % pid if pid else "another process")
        super().__init__(
            "journal %s is owned by %s; stop it first, or call "
            "start(standby=True) to take over when it exits" % (path, who)
        )


class JournalCorrupt(WheelqError):
    """A journal line that cannot be read; ``lineno`` counts the header as 1."""

    def __init__(self, path: str, lineno: int, reason: str, advice: str | None = None):
        self.path = path
        self.lineno = lineno
        self.reason = reason
        super().__init__("journal %s line %d: %s; %s" % (
            path, lineno, reason, advice or "run `python -m wheelq check %s` to see the bad lines "
            "and `python -m wheelq repair %s` to set them aside" % (path, path)))


class UnknownTask(WheelqError):
    """No task (or no dead letter, or no schedule) with that id or name."""


class WheelClosed(WheelqError):
    """The wheel was stopped; build a new ``Wheel`` to go on."""


class TaskFailed(WheelqError):
    """The task became a dead letter; ``error`` is its last error, ``tries`` its failed runs."""

    def __init__(self, tid: str, error: str | None, tries: int):
        self.id = tid
        self.error = error
        self.tries = tries
        super().__init__("task %s failed %d time(s) and is a dead letter: %s; "
                         "wheel.requeue(%r) runs it again" % (tid, tries, error, tid))


class ResultUnavailable(WheelqError):
    """There is no result to return (not kept, expired, cancelled, unknown, or not JSON)."""


def _os_error(exc: OSError, path: str, doing: str, advice: str) -> OSError:
    """Re-raise an OSError, keeping its subclass, with a message naming the fix."""
    code = exc.errno or errno.EIO
    why = exc.strerror or str(exc)
    new = OSError(code, "%s %s: %s; %s" % (doing, path, why, advice))
    new.__cause__ = exc
    return new


def _write_advice(code: int | None) -> str:
    """What to do about a write that failed with errno ``code``."""
    if code == errno.EFBIG:
        return "the file reached a size limit (`ulimit -f`, or the filesystem's): raise it and retry"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions of the file and its directory (or the read-only mount) and retry"
    if code in (errno.EMFILE, errno.ENFILE):
        return "the process or the system ran out of open files: raise `ulimit -n` or close files, and retry"
    if code == errno.EIO:
        return "the disk reported an I/O error: check it and retry"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space and retry"
    return "check the file and its filesystem, and retry"


def _error_text(exc: BaseException) -> str:
    """One line for an error: an OSError's own words, not its ``[Errno N]`` repr."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror if exc.filename is None else "%s: %s" % (exc.filename, exc.strerror)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: Any) -> str:
    """``text`` with control characters escaped, for logs and terminals."""
    text = text if isinstance(text, str) else str(text)
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), text)


class _EscapedTracebacks(logging.Filter):
    """The traceback of a record, with control characters escaped (task errors are journal
    text): set as ``exc_text``, which every Formatter prints instead of formatting it again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = "\n".join(_printable(line) for line in text.split("\n"))
        return True


logger.addFilter(_EscapedTracebacks())


def _number(x: float) -> str:
    return "%d" % x if float(x).is_integer() else "%g" % x


_TRANSIENT = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR,
                        errno.ENOSPC, errno.EIO))


# --------------------------------------------------------------------------
# Clocks: the only code that reads the time
# --------------------------------------------------------------------------

# Elapsed real time, for measuring how long something took (a task's run, a
# blocked event loop); never for deciding when a task is due.
_monotonic = time.monotonic


class SystemClock:
    """Wall-clock time, and waits that an event cuts short."""

    # Seconds since the epoch: the C function itself, so that reading the clock
    # costs no Python frame on the path of every delay().
    time = staticmethod(time.time)

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set or ``timeout`` seconds have passed."""
        event.wait(None if timeout is None else max(0.0, timeout))


class ManualClock:
    """A clock that moves only when told to: for tests, wheelq's and yours.

    ``advance(seconds)`` and ``set(t)`` wake every timer waiting on this
    clock, which then processes the ticks up to the new time.  It never
    reads the real clock.
    """

    def __init__(self, start: float = 1_000_000.0):
        self._now = self._finite(start, "ManualClock start")
        self._lock = threading.Lock()
        self._events: weakref.WeakSet = weakref.WeakSet()

    @staticmethod
    def _finite(t: Any, what: str) -> float:
        if isinstance(t, datetime):
            t = t.timestamp()
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError("%s must be a number of seconds, not %s" % (what, type(t).__name__))
        t = float(t)
        if not math.isfinite(t):
            raise ValueError("%s must be a finite number of seconds, not %r" % (what, t))
        return t

    def time(self) -> float:
        """The current manual time, in seconds."""
        return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move time forward by ``seconds`` and wake the waiting timers."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError("advance() takes seconds as a number or timedelta")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("advance() takes a finite, non-negative number of seconds; "
                             "set() moves the clock back")
        with self._lock:
            self._now += seconds
        self._wake()
        return self._now

    def set(self, t: float | datetime) -> float:
        """Move the clock to ``t`` (epoch seconds or an aware datetime), backwards too."""
        t = self._finite(t, "set()")
        with self._lock:
            self._now = t
        self._wake()
        return t

    def _wake(self) -> None:
        with self._lock:
            events = list(self._events)
        for event in events:
            event.set()

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set (``advance`` and ``set`` set it), or for a short while.

        Manual time does not pass on its own.  A waiter returns when the
        clock moves, and otherwise after ``timeout`` seconds of real time, at
        most one: a timer on a manual clock still takes in other processes'
        records and syncs its journal, as it would on the system clock.
        """
        if timeout is not None and timeout <= 0:
            return
        with self._lock:
            self._events.add(event)
        event.wait(1.0 if timeout is None else min(timeout, 1.0))


# --------------------------------------------------------------------------
# Schedules: the cron parser, and the next nominal time after t (pure functions)
# --------------------------------------------------------------------------

# (name in messages, lowest value, highest value)
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31),
                ("month", 1, 12), ("day-of-week", 0, 7))
_CRON_MONTHS = {n: i + 1 for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_CRON_DAYS = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CRON_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                "@hourly": "0 * * * *"}
_CRON_ITEM = re.compile(r"(\*|[0-9]+|[a-z]+)(?:-([0-9]+|[a-z]+))?(?:/([0-9]+))?\Z")
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ORD_1970 = 719163                 # date(1970, 1, 1).toordinal()
_ORD_MAX = 3652059 - 2             # date(9999, 12, 29): room for any UTC offset
_T_MIN = -62135596800 + 2 * 86400   # 0001-01-03T00:00:00Z
_T_MAX = 253402300799 - 2 * 86400   # 9999-12-29T23:59:59Z
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH = datetime(1970, 1, 1)
_LOCALTIME = "/etc/localtime"


def _month_days(year: int, month: int) -> int:
    """Days in a month of the Gregorian calendar."""
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_DAYS[month]


class _Cron:
    """A parsed cron expression.

    ``expr`` is the text as given, lower-cased with single spaces (a macro stays
    a macro); ``fields`` the five fields it stands for.  ``hourly`` is True when
    the hour field matches every hour of the day (``*``, ``*/1``, ``0-23``): such
    a schedule skips a DST gap and runs twice in an overlap; any other is
    fixed-time.  The rest is for ``_cron_next``: ``times`` the sorted minutes of
    the day (hour * 60 + minute) that match, ``month_bits`` bit m set for each
    month m, ``day_masks[w * 4 + n - 28]`` the days (bit d) that match in a
    month of n days whose 1st falls on weekday w (0 = Sunday), with the
    day-of-month/day-of-week OR rule already applied, and ``every_day`` when
    every day of every month matches.
    """

    __slots__ = ("expr", "fields", "hourly", "minutes", "hours", "days", "months", "weekdays",
                 "times", "month_bits", "day_masks", "every_day")

    def __repr__(self) -> str:
        return "_Cron(%r)" % self.expr


def _cron_error(expr: str, name: str, text: str, problem: str) -> ValueError:
    """The ValueError for one field: the expression, the field, what is wrong and the fix."""
    return ValueError("cron expression %r: %s field %r %s" % (expr, name, text, problem))


def _cron_value(expr: str, index: int, field: str, token: str) -> int:
    """One number or name of a field, checked against the field's range."""
    name, lo, hi = _CRON_FIELDS[index]
    if token.isdigit():
        value = int(token)
        if not lo <= value <= hi:
            raise _cron_error(expr, name, field, "has %d, out of range: use %d-%d%s" % (
                value, lo, hi, " (0 and 7 are both Sunday)" if index == 4 else ""))
        return value
    names = _CRON_MONTHS if index == 3 else _CRON_DAYS if index == 4 else None
    if index in (2, 4) and token not in _CRON_DAYS and ("l" in token or index == 2 and "w" in token):
        raise _cron_unsupported(expr, index, field, token)
    if names is None:
        raise _cron_error(expr, name, field, "has %r: use numbers %d-%d (names are only for "
                          "month and day-of-week)" % (token, lo, hi))
    if token in names:
        return names[token]
    hint = " (%s)" % token[:3] if token[:3] in names else ""
    raise _cron_error(expr, name, field, "has %r, not a number or a name: use %d-%d or %s%s" % (
        token, lo, hi, "jan-dec" if index == 3 else "sun-sat", hint))


def _cron_unsupported(expr: str, index: int, field: str, item: str) -> ValueError:
    """The error for an item that is no form of the dialect, naming what it looks like."""
    name, lo, hi = _CRON_FIELDS[index]
    if item == "?":
        return _cron_error(expr, name, field, "has '?', which is Quartz syntax: use '*'")
    if "#" in item:
        return _cron_error(expr, name, field, "has '#' (the nth weekday of the month), which "
                           "wheelq does not support: run on days 1-7 ('0 9 1-7 * *') and check "
                           "the weekday in the task")
    if index in (2, 4) and "l" in item:
        return _cron_error(expr, name, field, "has 'L' (last day), which wheelq does not "
                           "support: list the days, e.g. 28-31, and check the date in the task")
    if index == 2 and "w" in item:
        return _cron_error(expr, name, field, "has 'W' (nearest weekday), which wheelq does not "
                           "support: list the days, and check the weekday in the task")
    return _cron_error(expr, name, field, "has %r, which is not a number, a name, a range a-b, "
                       "or a step */n or a-b/n: use e.g. 5, %d-%d or */2" % (item, lo, hi))


def _cron_field(expr: str, index: int, field: str) -> set:
    """The values one field matches (day of week 7 becomes 0)."""
    name, lo, hi = _CRON_FIELDS[index]
    top = 6 if index == 4 else hi       # '*' in day-of-week is 0-6; 7 only as an alias
    size = top - lo + 1
    values = set()
    for item in field.split(","):
        if not item:
            raise _cron_error(expr, name, field, "has an empty list item: remove the extra comma")
        m = _CRON_ITEM.match(item)
        if m is None:
            raise _cron_unsupported(expr, index, field, item)
        base, end, step = m.groups()
        if step is not None:
            n = int(step)
            if n < 1:
                raise _cron_error(expr, name, field, "has step %d: the step must be at least 1 "
                                  "(*/1 is every value)" % n)
            if n > size:
                fix = ("for every %d minutes use every=%d" % (n, n * 60) if index == 0 else
                       "for every %d hours use every=%d" % (n, n * 3600) if index == 1 else
                       "list the values instead")
                raise _cron_error(expr, name, field, "has step %d, out of range: the step must be "
                                  "1-%d; %s" % (n, size, fix))
        else:
            n = 1
        if base == "*":
            if end is not None:
                raise _cron_unsupported(expr, index, field, item)
            a, b = lo, top
        else:
            a = _cron_value(expr, index, field, base)
            if end is None:
                if step is not None:
                    raise _cron_error(expr, name, field, "has %r: a step needs a range; write "
                                      "%d-%d/%d (from %d to the end) or */%d" % (
                                          item, a, top, n, a, n))
                b = a
            else:
                b = _cron_value(expr, index, field, end)
                if a > b:
                    fix = ("write %d-7 (7 is Sunday too)" % a if index == 4 and b == 0 else
                           "write the smaller value first; for a range that wraps around, use a "
                           "list such as 22-23,0-2")
                    raise _cron_error(expr, name, field, "has the reversed range %r: %s" % (item, fix))
        values.update(range(a, b + 1, n))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return values


def _parse_cron(expr: str) -> _Cron:
    """Parse a cron expression of the dialect of DESIGN.md section 4 into a ``_Cron``.

    Five fields (minute hour day-of-month month day-of-week) of ``*``, numbers,
    ranges ``a-b``, lists ``a,b``, steps ``*/n`` and ``a-b/n``; English names
    for months and days; day of week 0-7 with 0 and 7 both Sunday; Vixie's OR
    rule when both day fields are restricted (a field beginning with ``*``
    counts as unrestricted); the macros @yearly @annually @monthly @weekly
    @daily @midnight @hourly.  Anything else, and an expression that can never
    fire, raises ``ValueError`` naming the field and the fix.
    """
    if not isinstance(expr, str):
        raise TypeError("a cron expression is a str such as '30 2 * * *', not %s"
                        % type(expr).__name__)
    text = " ".join(expr.split()).lower()
    if not text:
        raise ValueError("empty cron expression: give five fields (minute hour day month "
                         "weekday), e.g. '*/5 * * * *', or a macro such as @daily")
    if text.startswith("@"):
        if text == "@reboot":
            raise ValueError("cron expression '@reboot' is not supported: schedules run on the "
                             "clock; call the function when your program starts instead")
        if " " in text:
            raise ValueError("cron expression %r: a macro stands alone: write %r, or five fields"
                             % (expr, text.split()[0]))
        if text not in _CRON_MACROS:
            raise ValueError("cron expression %r is not a known macro: use @yearly, @annually, "
                             "@monthly, @weekly, @daily, @midnight or @hourly, or five fields"
                             % expr)
        fields = _CRON_MACROS[text].split()
    else:
        fields = text.split()
        if len(fields) != 5:
            n = len(fields)
            if n > 5:
                m = re.match(r"\*/([0-9]+)\Z", fields[0])
                fix = ("use every=%s for seconds" % m.group(1) if m else
                       "drop the seconds (and year) fields, or use every= for seconds")
            else:
                fix = "write all five, e.g. '0 * * * *' for every hour"
            raise ValueError("cron expression %r has %d fields; wheelq takes 5 (minute hour day "
                             "month weekday): %s" % (expr, n, fix))
    sets = [_cron_field(expr, i, f) for i, f in enumerate(fields)]
    minutes, hours, days, months, weekdays = sets
    loose = fields[2].startswith("*") or fields[4].startswith("*")
    dom_bits = sum(1 << d for d in days)
    masks = []
    for first in range(7):
        for n in range(28, 32):
            dow_bits = sum(1 << d for d in range(1, n + 1) if (first + d - 1) % 7 in weekdays)
            valid = (1 << (n + 1)) - 2
            masks.append(((dom_bits & dow_bits) if loose else (dom_bits | dow_bits)) & valid)
    # Only the day-of-month decides whether a date can ever match: every weekday
    # pattern of a month recurs within 400 years.
    if loose and not any(d <= (29 if m == 2 else _MONTH_DAYS[m]) for m in months for d in days):
        raise ValueError("cron expression %r can never fire: no month in %s has day %s; check "
                         "the day-of-month and month fields" % (
                             expr, fields[3], ",".join(str(d) for d in sorted(days))))
    c = _Cron()
    c.expr = text
    c.fields = tuple(fields)
    c.hourly = len(hours) == 24
    c.minutes, c.hours, c.days = tuple(sorted(minutes)), tuple(sorted(hours)), tuple(sorted(days))
    c.months, c.weekdays = tuple(sorted(months)), tuple(sorted(weekdays))
    c.times = tuple(h * 60 + m for h in c.hours for m in c.minutes)
    c.month_bits = sum(1 << m for m in months)
    c.day_masks = tuple(masks)
    c.every_day = c.month_bits == 0x1FFE and all(
        masks[i] == (1 << (28 + i % 4 + 1)) - 2 for i in range(28))
    return c


def _cron_day(c: _Cron, year: int, month: int, day: int, first: int, limit: int):
    """The ordinal of the first matching date on or after (year, month, day), no later
    than the ordinal ``limit``, or None.  ``first`` is the ordinal of (year, month, 1);
    ``day`` may be one past the month's end."""
    bits, masks = c.month_bits, c.day_masks
    while first <= limit:
        n = _month_days(year, month)
        if (bits >> month) & 1 and day <= n:
            # Ordinals count from Monday 0001-01-01 = 1, so ordinal % 7 is 0 on Sundays.
            found = masks[(first % 7) * 4 + n - 28] >> day
            if found:
                at = first + day - 1 + (found & -found).bit_length() - 1
                return at if at <= limit else None
        first += n
        day = 1
        month += 1
        if month == 13:
            month = 1
            year += 1
    return None


def _cron_first(c: _Cron, lo: int, hi: int | None) -> int | None:
    """The first matching local wall minute m with lo <= m < hi (minutes since
    1970-01-01 00:00 local), or None.  With hi None, search to year 9999."""
    times = c.times
    day, minute = divmod(lo, 1440)
    if c.every_day:
        i = bisect_left(times, minute)
        m = day * 1440 + times[i] if i < len(times) else (day + 1) * 1440 + times[0]
        return m if hi is None or m < hi else None
    ordinal = day + _ORD_1970
    limit = _ORD_MAX if hi is None else min(_ORD_MAX, (hi - 1) // 1440 + _ORD_1970)
    if ordinal > limit:
        return None
    d = date.fromordinal(ordinal)
    year, month, mday = d.year, d.month, d.day
    if (c.month_bits >> month) & 1 and minute <= times[-1]:
        first = ordinal - mday + 1
        if (c.day_masks[(first % 7) * 4 + _month_days(year, month) - 28] >> mday) & 1:
            m = day * 1440 + times[bisect_left(times, minute)]
            return m if hi is None or m < hi else None
    ordinal = _cron_day(c, year, month, mday + 1, ordinal - mday + 1, limit)
    if ordinal is None:
        return None
    m = (ordinal - _ORD_1970) * 1440 + times[0]
    return m if hi is None or m < hi else None


class _Zone:
    """A time zone as spans of constant UTC offset, found by asking the tzinfo.

    Only ``tzinfo.fromutc`` is used (through ``astimezone``), so any tzinfo works,
    zoneinfo, pytz and dateutil alike.  The offsets of each stretch of
    ``_ZONE_CHUNK`` seconds are sampled once a day and every change is located to
    the second by bisection; the result is cached.  This assumes that an offset
    never changes and changes back within a day: in tzdata the closest such pair
    is four days apart (Africa/Freetown, 1939).
    """

    __slots__ = ("tz", "fixed", "chunks", "last")

    def __init__(self, tz: tzinfo):
        self.tz = tz
        self.chunks = {}
        self.last = (0, 0, 0, 0)
        self.fixed = None
        try:
            off = tz.utcoffset(None)  # a tzinfo with one offset gives it without a datetime
        except Exception:  # a hand-written tzinfo may not expect None
            off = None
        if off is not None:
            self.fixed = _td_seconds(off)
        elif (getattr(tz, "key", None) or "").startswith("Etc/") or getattr(tz, "key", None) in (
                "UTC", "UCT", "GMT", "Universal", "Zulu", "Greenwich", "GMT0"):
            self.fixed = self.offset(0)

    def offset(self, t: float):
        """The UTC offset in seconds at instant t (held constant a day inside years 1 and 9999)."""
        t = min(max(t, _T_MIN), _T_MAX)
        return _td_seconds((_EPOCH_UTC + timedelta(seconds=t)).astimezone(self.tz).utcoffset())

    def span(self, t: float) -> tuple:
        """(start, end, offset, offset before start) of the span holding instant t.
        Span ends at chunk boundaries may be no change at all (offset before == offset)."""
        k = int(t // _ZONE_CHUNK)
        chunk = self.chunks.get(k) or self._scan(k)
        before, first, changes, offsets = chunk
        i = bisect_right(changes, t)
        end = changes[i] if i < len(changes) else (k + 1) * _ZONE_CHUNK
        if i == 0:
            return k * _ZONE_CHUNK, end, first, before
        return changes[i - 1], end, offsets[i - 1], (first if i == 1 else offsets[i - 2])

    def _scan(self, k: int) -> tuple:
        off = self.offset
        lo = k * _ZONE_CHUNK
        hi = lo + _ZONE_CHUNK - 1
        first = cur = off(lo)
        changes, offsets = [], []
        a = lo
        while a < hi:
            b = min(a + 86400, hi)
            ob = off(b)
            while ob != cur:
                x, y = a, b        # off(x) == cur != off(y): a change in (x, y]
                while y - x > 1:
                    mid = (x + y) // 2
                    if off(mid) == cur:
                        x = mid
                    else:
                        y = mid
                cur = off(y)
                changes.append(y)
                offsets.append(cur)
                a = y
            a = b
        chunk = (off(lo - 1), first, tuple(changes), tuple(offsets))
        self.chunks[k] = chunk
        return chunk


_ZONE_CHUNK = 1 << 25  # about 388 days
_ZONES = {}


def _td_seconds(td: timedelta):
    """A UTC offset in seconds: an int, unless it has microseconds."""
    s = td.days * 86400 + td.seconds
    return s + td.microseconds / 1e6 if td.microseconds else s


def _zone(tz) -> _Zone:
    """The cached ``_Zone`` of a tzinfo (or of a zone name)."""
    try:
        key = tz
        z = _ZONES.get(key)
    except TypeError:  # an unhashable tzinfo: by identity (the _Zone keeps it alive)
        key = ("id", id(tz))
        z = _ZONES.get(key)
    if z is not None:
        return z
    if isinstance(tz, str):
        z = _Zone(_resolve_tz(tz)[0])
        if tz.strip().lower() == "local":
            return z  # follows TZ when it changes
    elif isinstance(tz, tzinfo):
        z = _Zone(tz)
    else:
        raise TypeError("tz must be a tzinfo or a zone name, not %s" % type(tz).__name__)
    if len(_ZONES) >= 256:
        _ZONES.clear()
    _ZONES[key] = z
    return z


def _cron_next(cron: _Cron, tz, after: float) -> tuple:
    """The first nominal time of ``cron`` in zone ``tz`` strictly after ``after``.

    Returns (epoch seconds, mark).  Fields match local wall time.  The mark is
    None, "moved" (a fixed-time schedule's matches in a spring-forward gap,
    made one run at the first instant after the gap; also when that instant
    matches by itself) or "repeated" (an hourly schedule's run at the second
    occurrence of a wall time in a fall-back overlap; the first is unmarked).
    A fixed-time schedule runs only at the first occurrence of an overlap's
    wall times; an hourly one skips a gap.  Successive calls give strictly
    increasing times, one run per instant at most.
    """
    try:
        zone = _ZONES[tz]
    except (KeyError, TypeError):
        zone = _zone(tz)
    if not _T_MIN < after < _T_MAX:
        raise ValueError("time %r is out of range: give epoch seconds between years 1 and 9999"
                         % (after,))
    off = zone.fixed
    if off is not None:
        m = _cron_first(cron, int((after + off) // 60) + 1, None)
        if m is None:
            raise ValueError("cron expression %r has no run before the year 9999" % cron.expr)
        return float(m * 60 - off), None
    hourly = cron.hourly
    start, end, off, prev = zone.last
    if not start <= after < end:
        zone.last = start, end, off, prev = zone.span(after)
    lo = int((after + off) // 60) + 1
    while True:
        if prev > off and not hourly:
            # Fall-back: this span's walls before start + prev were shown by the last span.
            lo = max(lo, -(-(start + prev) // 60))
        hi = -(-(end + off) // 60)
        if lo < hi:
            m = _cron_first(cron, lo, hi)
            if m is not None:
                mark = "repeated" if hourly and prev > off and m * 60 < start + prev else None
                return float(m * 60 - off), mark
        if end >= _T_MAX:
            raise ValueError("cron expression %r has no run before the year 9999" % cron.expr)
        start, end, new, prev = zone.span(end)
        if new > off and not hourly:
            # Spring-forward: wall times [start + off, start + new) never happen.
            g = _cron_first(cron, -(-(start + off) // 60), -(-(start + new) // 60))
            if g is not None:
                return float(start), "moved"
        off = new
        lo = -(-(start + off) // 60)


def _cron_times(cron: _Cron, tz, after: float, count: int | None):
    """Yield the next ``count`` (None: unending) nominal times after ``after`` as
    (epoch seconds, mark), as ``_cron_next`` gives them one after another."""
    t = after
    n = 0
    while count is None or n < count:
        t, mark = _cron_next(cron, tz, t)
        yield t, mark
        n += 1


def _every_next(every, anchor: float, after: float) -> float:
    """The first grid point ``anchor + n * every`` (n = 0, 1, 2 ...) strictly after ``after``.

    Exact: the grid point is computed in integers from the floats' exact values
    and rounded once, so it never drifts with n, never comes out <= after and
    no grid point is skipped (points that round to the same float are one
    instant).  The grid starts at its anchor: before it, the anchor is next.
    """
    if isinstance(every, timedelta):
        every = every.total_seconds()
    every, anchor, after = float(every), float(anchor), float(after)
    if not 0 < every < float("inf"):
        raise ValueError("every must be a positive number of seconds, not %r" % every)
    if not (abs(anchor) < float("inf") and abs(after) < float("inf")):
        raise ValueError("the anchor and the time must be finite, not %r and %r" % (anchor, after))
    if after < anchor:
        return anchor
    pe, qe = every.as_integer_ratio()
    pa, qa = anchor.as_integer_ratio()
    px, qx = after.as_integer_ratio()
    q = max(qe, qa, qx)          # all powers of two
    e, a, x = pe * (q // qe), pa * (q // qa), px * (q // qx)
    n = (x - a) // e + 1
    t = (a + n * e) / q          # int / int is correctly rounded
    while t <= after:
        n += 1
        t = (a + n * e) / q
    return t


def _iso_utc(epoch: float) -> str:
    """``2026-12-04T10:05:00Z``: the id form of a nominal time.

    Whole seconds have no fraction.  Otherwise the fraction is the digits of
    the float's shortest repr, so distinct floats give distinct text and
    ``_parse_iso_utc`` gives the same float back (``every=0.25`` grids:
    ``...:00.25Z``).
    """
    e = float(epoch)
    if e != e or e in (float("inf"), float("-inf")):
        raise ValueError("time %r is not a finite number of seconds" % (epoch,))
    whole = int(e // 1)
    try:
        d = _EPOCH + timedelta(seconds=whole)
    except OverflowError:
        raise ValueError("time %r is out of range (years 1-9999)" % (epoch,)) from None
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (d.year, d.month, d.day, d.hour, d.minute, d.second)
    if e == whole:
        return text + "Z"
    r = repr(e)
    if "e" in r:  # tiny magnitudes: the exact binary fraction, in decimal
        p, q = e.as_integer_ratio()
        k = q.bit_length() - 1
        digits = str((p - whole * q) * 5 ** k).zfill(k)
    else:
        digits = r.partition(".")[2]
        if e < 0:
            digits = str(10 ** len(digits) - int(digits)).zfill(len(digits))
    return text + "." + digits.rstrip("0") + "Z"


_ISO_UTC = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(?:\.([0-9]+))?Z\Z")


_from_iso = datetime.fromisoformat


def _parse_iso_utc(text: str) -> float:
    """The epoch seconds of a ``_iso_utc`` text (exact inverse)."""
    m = _ISO_UTC.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError("%r is not a UTC time of the form 2026-12-04T10:05:00Z" % (text,))
    try:
        d = _from_iso(text[:19])  # the shape is checked; only a value can be out of range
    except ValueError as exc:
        raise ValueError("%r is not a valid UTC time: %s" % (text, exc)) from None
    whole = (d.toordinal() - _ORD_1970) * 86400 + d.hour * 3600 + d.minute * 60 + d.second
    frac = m.group(7)
    if not frac:
        return float(whole)
    scale = 10 ** len(frac)
    return (whole * scale + int(frac)) / scale


def _resolve_tz(tz="UTC") -> tuple:
    """(tzinfo, name) for a schedule's ``tz``: an IANA name, a tzinfo, or "local".

    "local" is the system's zone as an IANA name, from ``TZ`` or the
    ``/etc/localtime`` symlink; an error when neither names one.  None means
    "UTC".  The name is the IANA key where there is one.
    """
    if tz is None:
        tz = "UTC"
    if isinstance(tz, tzinfo):
        name = getattr(tz, "key", None) or getattr(tz, "zone", None)
        if not isinstance(name, str):
            try:
                name = tz.tzname(None) if tz.utcoffset(None) is not None else None
            except Exception:  # a hand-written tzinfo may not expect None
                name = None
        return tz, name or str(tz)
    if not isinstance(tz, str):
        raise TypeError("tz must be an IANA zone name such as 'Europe/Berlin', 'local' or a "
                        "tzinfo, not %s" % type(tz).__name__)
    name = tz.strip()
    if name.lower() == "local":
        name = _local_zone_name()
    return _zoneinfo(name), name


def _zoneinfo(name: str) -> tzinfo:
    """``ZoneInfo(name)``, or a ValueError that says what a zone name looks like."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        if name in ("UTC", "Etc/UTC"):
            return timezone.utc  # no tzdata installed
        raise ValueError("unknown time zone %r: give an IANA name such as 'Europe/Berlin' or "
                         "'America/New_York', 'UTC', or 'local' for this machine's zone"
                         % name) from None


def _zone_from_path(path: str):
    """``Europe/Berlin`` from ``/usr/share/zoneinfo/Europe/Berlin``, or None."""
    i = path.rfind("zoneinfo/")
    if i < 0:
        return None
    name = path[i + len("zoneinfo/"):]
    for prefix in ("posix/", "right/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name or None


def _local_zone_name() -> str:
    """The IANA name of this machine's zone, from TZ or the /etc/localtime symlink."""
    env = os.environ.get("TZ")
    if env is not None:
        value = env[1:] if env.startswith(":") else env
        if not value:
            return "UTC"  # TZ set but empty is UTC, as in the C library
        name = _zone_from_path(value) if value.startswith("/") else value
        try:
            if name:
                zoneinfo.ZoneInfo(name)
                return name
        except (KeyError, ValueError, OSError):
            pass
        raise ValueError("cannot resolve tz='local': TZ=%r is not an IANA zone name; set TZ to "
                         "one such as Europe/Berlin, or pass tz='Europe/Berlin'" % env)
    try:
        target = os.readlink(_LOCALTIME)
    except OSError:
        target = None
    name = target and _zone_from_path(target)
    if name:
        try:
            zoneinfo.ZoneInfo(name)
            return name
        except (KeyError, ValueError, OSError):
            pass
    raise ValueError("cannot resolve tz='local' to an IANA zone name: TZ is not set and %s is "
                     "not a symlink into a zoneinfo directory; set TZ (e.g. TZ=Europe/Berlin) "
                     "or pass tz='Europe/Berlin'" % _LOCALTIME)


def _wall_to_epoch(tz, wall: float) -> float:
    """The instant a local wall time (seconds since 1970-01-01 00:00 local) first
    shows; for a wall time in a gap, the first instant after the gap."""
    zone = _zone(tz)
    if zone.fixed is not None:
        return wall - zone.fixed
    t = wall - 30 * 3600  # no zone is 30 hours from UTC
    start, end, off, _ = zone.span(t)
    start = t
    while True:
        if wall < start + off:
            return float(start)
        if wall < end + off:
            return wall - off
        start, end, off, _ = zone.span(end)


_WHEN = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})"
                   r"(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?"
                   r"(Z|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2})?)?)?\Z", re.IGNORECASE)
_EPOCH_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")


def _parse_when(text, tz) -> float:
    """Epoch seconds of ``--from``: ISO 8601 (with Z or an offset; without one it is
    wall time in ``tz``: in an overlap the first pass, in a gap the first instant
    after it) or epoch seconds.  A datetime or a number is taken as it is."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if isinstance(text, datetime):
        if text.tzinfo is not None and text.utcoffset() is not None:
            return text.timestamp()
        text = text.isoformat()
    s = text.strip() if isinstance(text, str) else ""
    if _EPOCH_TEXT.match(s):
        return float(s)
    m = _WHEN.match(s)
    problem = "is not ISO 8601"
    if m:
        y, mo, d, hh, mm, ss, frac, offset = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
            problem = ""
        except ValueError as exc:
            problem = "is not a valid time (%s), so not ISO 8601" % exc
    if problem:
        raise ValueError("time %r %s (2024-03-09T00:00:00Z, 2024-03-09T01:00+01:00, or "
                         "2024-03-09 02:30 read in the schedule's zone) or epoch seconds "
                         "(1710000000)" % (text, problem))
    wall = (dt.toordinal() - _ORD_1970) * 86400 + dt.hour * 3600 + dt.minute * 60 + dt.second
    fraction = float("0." + frac) if frac else 0.0
    if offset is None:
        return _wall_to_epoch(_resolve_tz(tz)[0], wall) + fraction
    if offset.upper() == "Z":
        return wall + fraction
    digits = offset[1:].replace(":", "")
    shift = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60 + int(digits[4:6] or 0)
    return wall - (shift if offset[0] == "+" else -shift) + fraction


def _iso_local(epoch: float, tz: tzinfo) -> str:
    """``2024-03-10T03:00:00-04:00``: an instant as wall time with its offset."""
    return (_EPOCH_UTC + timedelta(seconds=epoch)).astimezone(tz).isoformat(timespec="seconds")


def _cron_rows(expr, tz, start: float, count: int) -> list:
    """The rows of ``wheelq cron EXPR --tz ZONE --count N --from START``: the next
    ``count`` nominal times after ``start``, each ``{"utc", "local", "epoch", "dst"}``
    with ``dst`` None, "moved" or "repeated"."""
    cron = expr if isinstance(expr, _Cron) else _parse_cron(expr)
    zone = _resolve_tz(tz)[0]
    if count < 0:
        raise ValueError("--count must be 0 or more, not %d" % count)
    return [{"utc": _iso_utc(t), "local": _iso_local(t, zone), "epoch": t, "dst": mark}
            for t, mark in _cron_times(cron, zone, float(start), count)]


_MISFIRES = ("coalesce", "all", "skip")
_CATCH_UP = 1000  # misfire="all": runs made for missed nominal times, at most


class _Schedule:
    """A declared schedule: its spec, and the arithmetic of its nominal times.

    ``spec`` names it in the journal: the cron expression (as ``_Cron``
    spells it), or ``every N`` (seconds); ``tz`` is the zone's name.  An
    ``every`` schedule's grid is fixed by any one of its nominal times (the
    cursor), so none but the first is ever computed from the clock.
    """

    def __init__(self, name: str, cron: str | None, every: Any, tz: Any, misfire: str,
                 jitter: Any):
        if (cron is None) == (every is None):
            raise TypeError("periodic() takes cron= or every= (one of them), e.g. cron='30 2 * * *' "
                            "or every=timedelta(minutes=5)")
        if misfire not in _MISFIRES:
            raise ValueError("misfire must be 'coalesce', 'all' or 'skip', not %r" % (misfire,))
        self.name = name
        self.cron = None if cron is None else _parse_cron(cron)
        if every is not None:
            if isinstance(every, timedelta):
                every = every.total_seconds()
            if isinstance(every, bool) or not isinstance(every, (int, float)) \
                    or not math.isfinite(every) or every <= 0:
                raise ValueError("every= takes a number of seconds > 0 or a timedelta, not %r" % (every,))
        self.every = None if every is None else float(every)
        self.zone, self.tz = _resolve_tz(tz)
        if isinstance(jitter, timedelta):
            jitter = jitter.total_seconds()
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) \
                or not math.isfinite(jitter) or jitter < 0:
            raise ValueError("jitter= takes a number of seconds >= 0, not %r" % (jitter,))
        self.jitter = float(jitter)
        self.misfire = misfire
        self.spec = self.cron.expr if self.cron is not None else "every %s" % _number(self.every)

    def after(self, t: float, cursor: float | None) -> float:
        """The first nominal time after ``t`` (an ``every`` grid goes through ``cursor``)."""
        if self.cron is not None:
            return _cron_next(self.cron, self.zone, t)[0]
        if cursor is None:
            return t + self.every  # a new schedule: its grid starts a period from now
        return _every_next(self.every, cursor, t)

    def latest(self, t: float, cursor: float) -> float:
        """The last nominal time after ``cursor`` and at or before ``t`` (there is one)."""
        if self.every is not None:
            n = max(1, math.floor((t - cursor) / self.every))
            x = cursor + n * self.every
            while x > t and n > 1:
                n -= 1
                x = cursor + n * self.every
            while cursor + (n + 1) * self.every <= t:
                n += 1
                x = cursor + n * self.every
            return x
        # Cron: find a window before t that holds a nominal time, then walk it.
        span = 60.0
        while True:
            lo = max(cursor, t - span)
            x = self.after(lo, cursor)
            if x <= t:
                while True:
                    y = self.after(x, cursor)
                    if y > t:
                        return x
                    x = y
            span *= 16

    def next_run(self, cursor: float | None, now: float) -> tuple:
        """``(nominal time, note)`` of the run after ``cursor``, by the misfire policy.

        Nominal times after the cursor that have passed by ``now`` are
        missed: "coalesce" makes one run of the latest, "all" a run of each,
        oldest first (beyond ``_CATCH_UP`` it coalesces them), "skip" none.
        ``note`` says what was missed, or is None.
        """
        if cursor is None:
            return self.after(now, None), None
        first = self.after(cursor, cursor)
        if first > now:
            return first, None
        if self.misfire == "skip":
            return self.after(now, cursor), "skipped the runs missed since %s" % _iso_utc(cursor)
        if self.misfire == "all":
            x, n = first, 0
            while x <= now and n <= _CATCH_UP:
                n += 1
                x = self.after(x, cursor)
            if n <= _CATCH_UP:
                return first, None
            return self.latest(now, cursor), ("more than %d runs were missed since %s: coalesced "
                                              "into one" % (_CATCH_UP, _iso_utc(cursor)))
        latest = self.latest(now, cursor)
        return latest, (None if latest == first else "coalesced the runs missed since %s into one"
                        % _iso_utc(cursor))


# --------------------------------------------------------------------------
# The ring: a hashed timing wheel, pure data
# --------------------------------------------------------------------------


class _Bucket(list):
    """The records of one tick that holds several, in the order they were added.

    ``k`` is the tick.  A record is live here at its last entry whose
    ``at`` equals ``k``: removing one leaves its entry behind and counts it
    in ``dead``, and a bucket that is mostly dead is compacted, so removal
    is O(1) amortised.  (Records placed here share the one int object ``k``
    as their ``at``, which saves an int apiece; liveness compares values.)
    """

    __slots__ = ("k", "dead")

    def take(self) -> list:
        """The live records in insertion order, each taken out (``at`` set to None)."""
        k = self.k
        if not self.dead:
            for rec in self:
                rec.at = None
            return list(self)
        out = []
        for rec in reversed(self):  # a record's last entry is its place
            if rec.at == k:
                rec.at = None  # and its earlier entries no longer match
                out.append(rec)
        out.reverse()
        return out

    def compact(self) -> None:
        """Drop the dead entries."""
        self[:] = live = self.take()
        for rec in live:
            rec.at = self.k
        self.dead = 0


class _Ring:
    """A hashed timing wheel over integer ticks.

    It holds records and reads or writes nothing of them but ``at``: the
    tick a record waits for while the ring holds it, None otherwise.
    ``last`` is the last tick processed; ``add`` never places a record at or
    before it, so nothing is lost to a tick that has passed.  Each slot maps
    the ticks that fall on it (one per round) to a record or a ``_Bucket``,
    and keeps a heap of those ticks, so that a sweep after more than a
    revolution takes every passed tick without walking them one by one.
    """

    __slots__ = ("nslots", "slots", "heaps", "last", "size")

    def __init__(self, nslots: int, last: int):
        self.nslots = nslots
        self.slots: list[dict] = [{} for _ in range(nslots)]
        self.heaps: list[list[int]] = [[] for _ in range(nslots)]
        self.last = last
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rec: Any, k: int) -> None:
        """Place ``rec`` at tick ``k`` (or the next tick, if ``k`` has passed)."""
        if k <= self.last:
            k = self.last + 1
        i = k % self.nslots
        slot = self.slots[i]
        cur = slot.get(k)
        if cur is None:
            rec.at = k
            slot[k] = rec
            heapq.heappush(self.heaps[i], k)
        elif cur.__class__ is _Bucket:
            rec.at = cur.k
            cur.append(rec)
        else:
            bucket = slot[k] = _Bucket((cur, rec))
            bucket.k = rec.at = cur.at
            bucket.dead = 0
        self.size += 1

    def fill(self, recs: Iterable, tick_of: Callable[[float], int]) -> int:
        """Place ``recs`` at ``tick_of(rec.due)``, grouped by tick; return how many.

        For a replay: one slot entry and one heap entry a tick rather than a
        call of ``add`` a record, and each record touched once.
        """
        first = self.last + 1
        ticks: dict = {}  # tick -> [the tick, its records...]
        for rec in recs:
            k = tick_of(rec.due)
            if k < first:
                k = first
            group = ticks.get(k)
            if group is None:
                ticks[k] = group = [k]
            rec.at = group[0]  # one int object a tick, as in add
            group.append(rec)
        n, slots, heaps = self.nslots, self.slots, self.heaps
        placed = 0
        for k, group in ticks.items():
            i = k % n
            cur = slots[i].get(k)
            new = group[1:]
            placed += len(new)
            if cur is None and len(new) == 1:
                slots[i][k] = new[0]
                heaps[i].append(k)
                continue
            if cur is None:
                bucket = _Bucket(new)
                heaps[i].append(k)
            elif cur.__class__ is _Bucket:
                for rec in new:
                    rec.at = cur.k
                cur.extend(new)
                continue
            else:
                bucket = _Bucket([cur] + new)
            bucket.k = k
            bucket.dead = 0
            for rec in bucket:
                rec.at = k
            slots[i][k] = bucket
        for heap in heaps:
            heapq.heapify(heap)
        self.size += placed
        return placed

    def remove(self, rec: Any) -> bool:
        """Take ``rec`` out; False if the ring does not hold it."""
        k = rec.at
        if k is None:
            return False
        slot = self.slots[k % self.nslots]
        cur = slot.get(k)
        rec.at = None
        if cur is rec:
            del slot[k]
        else:  # the bucket of tick k holds it, live at its last entry
            cur.dead += 1
            if cur.dead == len(cur):
                del slot[k]
            elif cur.dead > 8 and cur.dead * 2 > len(cur):
                cur.compact()
        self.size -= 1
        return True

    def advance(self, to: int) -> list:
        """Process the ticks after ``last`` up to ``to``; return their records, in order."""
        last = self.last
        if to <= last:
            return []
        out: list = []
        n = self.nslots
        slots, heaps = self.slots, self.heaps
        if to - last >= n:
            # More than a revolution behind: one sweep takes every passed tick.
            passed = []
            for i in range(n):
                heap = heaps[i]
                slot = slots[i]
                while heap and heap[0] <= to:
                    k = heapq.heappop(heap)
                    cur = slot.pop(k, None)
                    if cur is not None:
                        passed.append((k, cur))
            passed.sort(key=_first)
            for _, cur in passed:
                _take(cur, out)
        else:
            for k in range(last + 1, to + 1):
                i = k % n
                heap = heaps[i]
                if heap and heap[0] <= k:
                    while heap and heap[0] <= k:
                        heapq.heappop(heap)
                    cur = slots[i].pop(k, None)
                    if cur is not None:
                        _take(cur, out)
        self.last = to
        self.size -= len(out)
        return out

    def take_early(self, k: int, ready: Callable[[Any], bool]) -> list:
        """Take out the records of the future tick ``k`` for which ``ready(rec)`` is true.

        Tick ``k`` stays unprocessed, and its other records stay in it.
        """
        slot = self.slots[k % self.nslots]
        cur = slot.get(k)
        if cur is None:
            return []
        if cur.__class__ is not _Bucket:
            recs = [cur]
        else:  # each live record once (a re-added one has an earlier entry too)
            recs = list({id(r): r for r in cur if r.at == k}.values())
        out = [r for r in recs if ready(r)]
        for rec in out:
            self.remove(rec)
        return out

    def rewind(self, to: int, tick_of: Callable[[Any], int]) -> None:
        """The clock went back: go on from tick ``to``.

        The ticks up to ``last`` are empty (they were processed), so nothing
        runs twice, and every later tick keeps its records; but a record
        added since the clock went back was pushed to ``last + 1``, its own
        tick (``tick_of(rec)``) having passed by the old time: it moves back
        to its own tick, or ``to + 1``.
        """
        if to >= self.last:
            return
        k = self.last + 1
        pushed = self.take_early(k, lambda rec: tick_of(rec) < k)
        self.last = to
        for rec in pushed:
            self.add(rec, tick_of(rec))


def _take(cur: Any, out: list) -> None:
    """Append the live records of one tick's entry to ``out``, taking them out."""
    if cur.__class__ is _Bucket:
        out += cur.take()
    else:
        cur.at = None
        out.append(cur)


def _first(pair: tuple) -> Any:
    return pair[0]


# --------------------------------------------------------------------------
# Task state: records, the journal's one codec, its ops, and the table
# --------------------------------------------------------------------------

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
DONE, FAILED, CANCELLED, UNKNOWN = "done", "failed", "cancelled", "unknown"

_FINISHED_MEMORY = 65536  # finished ids whose final state status() still knows (at least)
_MAX_DEPTH = 100  # how deeply task arguments and results may nest


class _Extra(collections.namedtuple("_Extra", "args kwargs tries error crashes sched")):
    """What few tasks carry besides their args (never changed: a change is a new one).

    ``crashes`` is None for a task whose runs were never cut short by the
    death of the process; else the number of such runs during which it was
    the only task running.  ``sched`` is ``(name, spec, tz)`` for a run of a
    schedule.
    """

    __slots__ = ()


def _extra_field(name: str, default: Any) -> property:
    """A field of ``_Extra`` read through a ``_Rec``: ``default`` for a task with only its args."""
    get = operator.attrgetter(name)

    def read(rec: Any) -> Any:
        body = rec.body
        return get(body) if body.__class__ is _Extra else default

    return property(read, doc="The task's %s (%r when it has none)." % (name, default))


class _Rec:
    """One task: five slots, no per-task dict (a million pending tasks are a million of these).

    ``body`` is the args, or an ``_Extra`` for the rare task with more
    (read them through the properties).  ``at`` belongs to the ring: the
    tick the task waits for while the ring holds it, else None.  Where a
    task stands (pending, queued, running, failed) the table knows.
    """

    __slots__ = ("id", "name", "body", "due", "at")

    def __init__(self, tid, name, args, due):
        self.id = tid
        self.name = name
        self.body = args
        self.due = due
        self.at = None

    @property
    def args(self):
        body = self.body
        return body.args if body.__class__ is _Extra else body

    kwargs = _extra_field("kwargs", None)
    tries = _extra_field("tries", 0)
    error = _extra_field("error", None)
    crashes = _extra_field("crashes", None)
    sched = _extra_field("sched", None)

    def set(self, kwargs=None, tries=0, error=None, crashes=None, sched=None) -> None:
        """Set everything but the args; a task with none of it keeps only its args."""
        args = self.args
        if kwargs or tries or error is not None or crashes is not None or sched is not None:
            self.body = _Extra(args, kwargs or None, tries, error, crashes, sched)
        else:
            self.body = args

    def outcome(self, tries, error, crashes) -> None:
        """Set tries, error and crashes; keep kwargs and sched."""
        self.set(self.kwargs, tries, error, crashes, self.sched)


# -- the codec: every journal line is written and read here ------------------------

_HEADER = b'{"wheelq": 1}\n'
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_json_str = json.encoder.encode_basestring
_INF = math.inf


def _depth(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers deeper than ``limit`` levels."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, tuple)):
            items = v
        elif isinstance(v, dict):
            items = v.values()
        else:
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in items)
    return False


def _too_deep_text(text: str, value: Any) -> bool:
    """True if the record ``value``, ``text`` in JSON, nests deeper than a record may.

    A record is one level, so its args, kwargs and result may nest
    ``_MAX_DEPTH`` levels.  Nesting n levels takes 2n brackets, so short
    text and text with few brackets are answered without looking at
    ``value``: the check costs the lines people write nothing.
    """
    limit = _MAX_DEPTH + 1
    return len(text) > 2 * limit and text.count("[") + text.count("{") > limit \
        and _depth(value, limit)


def _not_json(value: Any) -> Any:
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _too_deep(what: str) -> TypeError:
    return TypeError("%s nest more than %d levels deep, which the journal's readers refuse; "
                     "flatten them" % (what, _MAX_DEPTH))


def _line(record: dict) -> bytes:
    """One journal line for ``record``; TypeError names a value that is not JSON."""
    try:
        text = _encode(record)
    except (TypeError, ValueError) as exc:
        raise TypeError("task arguments and results must be JSON (str, int, float, bool, None, "
                        "list, dict): %s" % exc) from None
    except RecursionError:
        raise _too_deep("task arguments or results") from None
    if _too_deep_text(text, record):  # the same limit on every Python, whatever its stack
        raise _too_deep("task arguments or results")
    return (text + "\n").encode("utf-8")


def _value_encoder() -> Callable[[Any], str]:
    """Encode argument values (an args tuple or a kwargs dict) as ``_line`` would, fast.

    ``JSONEncoder.encode`` builds a C encoder on every call, a third of the
    cost of ``delay()``.  Flat values (no container inside: the common case)
    go through one encoder built here, which keeps no table of the
    containers it is in, so threads can share it and no cycle can reach it;
    nested values get a fresh encoder with such a table (a cycle raises, as
    in ``_line``), after a depth check.  Where the C accelerator is missing
    or behaves differently, ``_encode`` serves.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    try:
        def new(markers: dict | None) -> Any:
            return make(markers, _not_json, json.encoder.encode_basestring, None, ":", ",",
                        False, False, False)
        flat = new(None)
        if "".join(flat([1, 2.5, "\u00e9", None], 0)) != '[1,2.5,"\u00e9",null]' \
                or "".join(new({})({"a": [True]}, 0)) != '{"a":[true]}':
            return _checked(_encode)
    except Exception:
        return _checked(_encode)
    atoms = frozenset((str, int, float, bool, type(None)))

    def encode(values: Any) -> str:
        if values.__class__ is tuple and len(values) == 1:  # delay(order_id): no encoder call
            cls = values[0].__class__
            if cls is int:
                return "[%d]" % values
            if cls is str:
                return "[%s]" % _json_str(values[0])
        for v in values.values() if values.__class__ is dict else values:
            if v.__class__ not in atoms:
                if _depth(values, _MAX_DEPTH):
                    raise _too_deep("task arguments")
                return "".join(new({})(values, 0))
        return "".join(flat(values, 0))

    return encode


def _checked(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    def checked(values: Any) -> str:
        if _depth(values, _MAX_DEPTH):
            raise _too_deep("task arguments")
        return encode(values)
    return checked


_json_values = _value_encoder()
_OWNER_ADD = '{"op":"add","id":'
_PRODUCER_ADD = '{"p":1,"op":"add","id":'


def _add_part(name: str) -> str:
    """A task's own part of its add lines, encoded once when it is registered."""
    return ',"task":%s,"due":' % _json_str(name)


def _add_line(head: str, tid: str, part: str, name: str, due: float, args: tuple,
              kwargs: dict) -> bytes:
    """An ``add`` line: the bytes ``_line`` gives for the record, built from parts.

    The hot path of ``delay()``.  ``head`` is ``_OWNER_ADD`` or
    ``_PRODUCER_ADD``; ``part`` is ``_add_part(name)``.  Anything unusual
    (a due that is not a finite float, a value the fast encoder refuses)
    goes to ``_line``, which has the last word and the error messages.
    """
    if due.__class__ is float and -_INF < due < _INF:
        try:
            return (f"{head}{_json_str(tid)}{part}{due!r},"
                    f'"args":{_json_values(args) if args else "[]"},'
                    f'"kwargs":{_json_values(kwargs) if kwargs else "{}"}}}\n').encode()
        except (TypeError, ValueError):
            pass
    record = {"op": "add", "id": tid, "task": name, "due": due, "args": args, "kwargs": kwargs}
    return _line(record if head == _OWNER_ADD else dict(p=1, **record))


_JSON_ATOMS = (str, int, float, bool, type(None))


def _done_line(tid: str) -> bytes:
    """A plain ``done`` line, as ``_line`` spells it."""
    return b'{"op":"done","id":' + _json_str(tid).encode("utf-8") + b"}\n"


# The lines written most, read without the JSON parser: an add (an owner's or
# a producer's) with nothing but its five fields, a plain done, and a done with
# nothing but its schedule (compaction's record of a schedule's cursor).  A JSON
# string here has no escapes and no control characters, and a number is JSON's,
# so each part means what it means to a JSON parser.  An add's args and kwargs
# are left to the JSON scanner: one group with one place to end, so a line costs
# one pass whatever it holds.  Every other line matches the last branch and is
# read by the JSON parser.
_STR = r'"([^"\\\x00-\x1f]*)"'
_ROW = re.compile(
    r'(?:\{"p":1,|\{)"op":"add","id":%s,"task":%s,'
    r'"due":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?),'
    r'"args":(\[[^\n]*)\}\n'
    r'|\{"op":"done","id":"([^"\\\x00-\x1f]+)"(?:,"sched":"([^"\\\x00-\x1f]+)")?\}\n'
    r'|([^\n]*)\n' % (_STR, _STR))
_NO_KWARGS = ',"kwargs":{}'
_SCHED_TAIL = re.compile(r',"sched":%s,"spec":%s,"tz":%s\Z' % (_STR, _STR, _STR))  # a run of a schedule
_scan_json = json.JSONDecoder().scan_once  # one JSON value at an index: (value, end)
_BAD_JSON = (ValueError, StopIteration, RecursionError)


def _read_rows(chunk: str) -> list:
    """The rows of the whole lines ``chunk``, one a line, up to the first that is not JSON.

    A row is a ``_Rec`` for a plain add, the 1-tuple of its id for a plain
    done, and otherwise the line's JSON value (which ``_Table.apply_rows``
    checks).  Fewer rows than lines means the next line is not one JSON
    value, or one nested deeper than ``_line`` writes.  The fast rows are
    exactly what the JSON parser and ``add`` or ``done`` would make of the
    same line (tests check this).
    """
    rows: list = []
    append, scan, intern, lines = rows.append, _scan_json, sys.intern, None
    rec_of, inf, no_kwargs, plain = _Rec, _INF, _NO_KWARGS, len(_NO_KWARGS)
    short = 2 * _MAX_DEPTH  # a tail this short cannot nest its args more than the limit
    for tid, name, due, tail, done, sched, other in _ROW.findall(chunk):
        if tail:  # '[args],"kwargs":{kwargs}'
            try:
                if len(tail) >= short and tail.count("[") + tail.count("{") > _MAX_DEPTH:
                    raise ValueError("maybe too deep: the JSON path checks")
                args, stop = scan(tail, 0)
                due = float(due)
                if stop + plain == len(tail) and tail.endswith(no_kwargs):
                    if -inf < due < inf:
                        append(rec_of(tid, intern(name), args, due))
                        continue
                elif tail.startswith(',"kwargs":', stop):
                    kwargs, stop = scan(tail, stop + 10)
                    if kwargs.__class__ is dict and -inf < due < inf:
                        if stop == len(tail):
                            rec = rec_of(tid, intern(name), args, due)
                            if kwargs:
                                rec.set(kwargs)
                            append(rec)
                            continue
                        run = _SCHED_TAIL.match(tail, stop)
                        if run is not None:
                            rec = rec_of(tid, intern(name), args, due)
                            rec.set(kwargs, 0, None, None, tuple(map(intern, run.groups())))
                            append(rec)
                            continue
            except _BAD_JSON:
                pass
            if lines is None:  # not as _ROW read it: the JSON parser has the last word
                lines = chunk.split("\n")
            other = lines[len(rows)]
        elif done:
            append((done, sched) if sched else (done,))
            continue
        try:
            value, stop = scan(other, 0)
        except _BAD_JSON:
            stop = -1
        if stop != len(other):
            try:
                value = json.loads(other)  # white space around one value, or not JSON at all
            except _BAD_JSON:
                return rows
        if _too_deep_text(other, value):  # as deep as no writer writes: not a record here
            return rows
        append(value)
    return rows


def _decode(data: bytes) -> tuple:
    """Whole journal lines as text, and ``{index: raw bytes}`` of the lines that are not UTF-8.

    A line that is not UTF-8 becomes an empty line, which no reader takes
    for a record; the journal is UTF-8 only.
    """
    try:
        return str(memoryview(data), "utf-8"), None
    except UnicodeDecodeError:
        pass
    raws = bytes(data).split(b"\n")
    raws.pop()
    bad = {}
    out = []
    for i, raw in enumerate(raws):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad[i] = raw
            out.append("")
        out.append("\n")
    return "".join(out), bad


_NOT_OURS = ("wheelq writes only to a file that is empty or starts with that header, and changed "
             "nothing in this one: check the path")


def _check_header(line: bytes, path: str) -> None:
    """Raise JournalCorrupt unless ``line`` (the first, newline included) is wheelq's header."""
    try:
        head = json.loads(line)
    except ValueError:
        head = None
    if not isinstance(head, dict) or "wheelq" not in head:
        raise JournalCorrupt(path, 1, 'not a wheelq journal (no {"wheelq": 1} header)', _NOT_OURS)
    if head["wheelq"] != 1:
        raise JournalCorrupt(path, 1, "written by another version of wheelq (format %r)"
                             % (head["wheelq"],), "use that version of wheelq; this one changes "
                             "nothing in it")


# -- the ops: each described once ----------------------------------------------------


class _BadRecord(Exception):
    """A value, at ``index`` of its rows, that is not a wheelq record."""

    def __init__(self, index: int, reason: str):
        super().__init__(index, reason)
        self.index = index
        self.reason = reason


def _of(cls: type, what: str) -> Callable[[Any], Any]:
    """A field's reader that takes a value of exactly ``cls`` (``what`` names it in errors)."""

    def read(v: Any) -> Any:
        if v.__class__ is not cls:
            raise TypeError("must be %s, not %s" % (what, type(v).__name__))
        return v

    return read


_f_text = _f_id = _of(str, "a string")
_f_list = _of(list, "a list")
_f_object = _of(dict, "an object")


def _f_time(v: Any) -> float:
    if v.__class__ is not float:
        if v.__class__ is not int:
            raise TypeError("must be a number of seconds, not %s" % type(v).__name__)
        try:
            v = float(v)
        except OverflowError:  # an int beyond any float
            v = _INF
    if not -_INF < v < _INF:
        raise ValueError("must be a finite number of seconds")
    return v


def _f_count(v: Any) -> int:
    if v.__class__ is not int or v < 0:
        raise TypeError("must be a whole number >= 0, not %r" % (v,))
    return v


def _f_error(v: Any) -> str | None:
    if v is not None and v.__class__ is not str:
        raise TypeError("must be a string or null, not %s" % type(v).__name__)
    return v


def _f_ids(v: Any) -> list:
    if v.__class__ is not list or not all(x.__class__ is str for x in v):
        raise TypeError("must be a list of ids")
    return v


def _f_any(v: Any) -> Any:
    return v


# Every op: its required and optional fields (name -> reader), and what
# compaction keeps of it.  _Table has a method of the op's name that applies it;
# _line writes it (add and done also have fast paths above); _Table.snapshot
# writes what compaction keeps.  "p": 1 marks a line a producer wrote and is
# ignored, as is any field not listed here.
_OPS: dict = {
    # a new task, pending at due (a schedule's run carries sched/spec/tz).
    # Kept: one add per live task, with its tries, error and crashes.
    "add": ({"id": _f_id, "task": _f_text, "due": _f_time, "args": _f_list, "kwargs": _f_object},
            {"tries": _f_count, "error": _f_error, "crashes": _f_count, "sched": _f_text,
             "spec": _f_text, "tz": _f_text}),
    # the owner began running these tasks (one line a batch).  Kept: for a running task.
    "start": ({"ids": _f_ids}, {}),
    # the task returned; its result is kept until expires (epoch seconds).
    # Kept: while the result is kept; and, with sched, as a schedule's cursor.
    # (error: the result could not be kept, being no JSON value).
    # (sched with an id not live: compaction's record of a schedule's cursor, and of
    # its last finished run, ``last``, when that is another one.)
    "done": ({"id": _f_id}, {"result": _f_any, "expires": _f_time, "error": _f_error,
                             "sched": _f_text, "last": _f_time}),
    # the task is pending again at due: a failed try, a run that a crash cut
    # short (with crashes), or one that never began because the wheel stopped.
    # Kept: folded into the task's add.
    "retry": ({"id": _f_id, "due": _f_time, "tries": _f_count}, {"error": _f_error, "crashes": _f_count}),
    # the task is a dead letter.  Kept: after the dead letter's add.
    "fail": ({"id": _f_id, "tries": _f_count}, {"error": _f_error, "crashes": _f_count}),
    # a pending or queued task will not run.  Kept: nothing.
    "cancel": ({"id": _f_id}, {}),
    # a dead letter is pending again at due, with all its tries.  Kept: folded into the add.
    "requeue": ({"id": _f_id, "due": _f_time}, {}),
    # a dead letter is deleted.  Kept: nothing.
    "purge": ({"id": _f_id}, {}),
    # a pending task moves to due.  Kept: folded into the add.
    "reschedule": ({"id": _f_id, "due": _f_time}, {}),
    # a schedule stops making runs (its run that has not started is cancelled), or
    # starts again (the resume's write holds its next run).  Kept: a pause while it
    # holds, with the schedule's spec and zone.
    "pause": ({"sched": _f_text}, {"spec": _f_text, "tz": _f_text}),
    "resume": ({"sched": _f_text}, {}),
}


def _fields(obj: Any) -> tuple:
    """The op of a record and its fields, checked; raises naming what is wrong."""
    if obj.__class__ is not dict:
        raise TypeError("a record is a JSON object, not %s" % type(obj).__name__)
    op = obj.get("op")
    spec = _OPS.get(op) if op.__class__ is str else None
    if spec is None:
        raise ValueError("unknown op %r" % (op,))
    required, optional = spec
    out = {}
    for name, read in required.items():
        if name not in obj:
            raise KeyError("%s has no %r" % (op, name))
        try:
            out[name] = read(obj[name])
        except (TypeError, ValueError) as exc:
            raise type(exc)("%r %s" % (name, exc)) from None
    for name, read in optional.items():
        if name in obj:
            try:
                out[name] = read(obj[name])
            except (TypeError, ValueError) as exc:
                raise type(exc)("%r %s" % (name, exc)) from None
    return op, out


def _reason(exc: BaseException) -> str:
    return "not a wheelq record (%s: %s)" % (type(exc).__name__, exc)


# -- the table ----------------------------------------------------------------------------


class _Cursor:
    """What the journal says of one schedule: its latest run, its last finished one, a pause."""

    __slots__ = ("cursor", "last", "run", "paused", "spec", "tz")

    def __init__(self):
        self.cursor = None  # the nominal time of its latest run in the journal
        self.last = None  # the nominal time of its latest finished run
        self.run = None  # the id of its live run, if any
        self.paused = False
        self.spec = self.tz = None  # of its latest run (or pause): what the journal knows of it

    def note(self, nominal: float) -> None:
        """A run at ``nominal`` is in the journal: the cursor, if it is the latest."""
        if self.cursor is None or nominal > self.cursor:
            self.cursor = nominal


def _nominal(tid: str) -> float | None:
    """The nominal time in a schedule run's id (``name@2026-12-04T10:05:00Z``)."""
    try:
        return _parse_iso_utc(tid.rpartition("@")[2])
    except ValueError:
        return None


class _Table:
    """Every live task and where it stands; the one place where a task changes state.

    A live task is in ``tasks`` and in exactly one place: the ring (pending,
    when the table has a ring), ``queued``, ``running``, ``failed``, or none
    of these (pending outside a ring: in a producer's view, during a replay,
    or held a moment by a change being written).  Counts are the sizes of
    these.  Each journal op is a method of the op's name; replay, the
    owner's reading of other processes' lines, a producer's view, the
    owner's own changes and the command line all apply ops through them.

    ``counting`` (on in a live owner, off in a replay) counts the events
    ``stats()`` reports.  Callers hold the wheel's state lock.
    """

    def __init__(self, ring: _Ring | None = None, tick_of: Callable[[float], int] | None = None):
        self.ring = ring
        self.tick_of = tick_of
        self.tasks: dict = {}
        self.queued: dict = {}
        self.running: dict = {}
        self.failed: dict = {}
        self.finished: dict = {}  # id -> final state, of recent tasks
        self.results: dict = {}  # id -> (rec, value, expires, error): kept results
        self.expiring: list = []  # heap of (expires, id)
        self.expired: dict = {}  # id -> expires, of recent results that expired
        self.cursors: dict = {}  # schedule name -> _Cursor
        self.unplanned: set = set()  # schedules whose run was cancelled: the owner plans the next
        self.events = dict.fromkeys(("done", "failed", "retried", "cancelled"), 0)
        self.counting = False

    # -- where a task stands ----------------------------------------------------------

    def state(self, rec: _Rec) -> str:
        tid = rec.id
        if rec.at is not None:
            return PENDING
        if tid in self.queued:
            return QUEUED
        if tid in self.running:
            return RUNNING
        if tid in self.failed:
            return FAILED
        return PENDING

    def unplaced(self) -> list:
        """The pending tasks that no ring holds (after a replay, every pending one)."""
        elsewhere = (self.queued, self.running, self.failed)
        if not any(elsewhere):  # the common case: a million pending, and no state to ask
            return [rec for rec in self.tasks.values() if rec.at is None]
        return [rec for rec in self.tasks.values() if self.state(rec) == PENDING and rec.at is None]

    def status(self, tid: str) -> str:
        rec = self.tasks.get(tid)
        if rec is not None:
            return self.state(rec)
        if tid in self.results:
            return DONE
        return self.finished.get(tid, UNKNOWN)

    def counts(self) -> dict:
        queued, running, failed = len(self.queued), len(self.running), len(self.failed)
        return {"pending": len(self.tasks) - queued - running - failed, "queued": queued,
                "running": running, **self.events}

    def _place(self, rec: _Rec) -> None:
        """Make ``rec`` pending: in the ring, where the table has one."""
        if self.ring is not None:
            self.ring.add(rec, self.tick_of(rec.due))

    def _lift(self, rec: _Rec) -> str:
        """Take ``rec`` out of wherever it stands; return that state."""
        if rec.at is not None:
            self.ring.remove(rec)
            return PENDING
        tid = rec.id
        if self.queued.pop(tid, None) is not None:
            return QUEUED
        if self.running.pop(tid, None) is not None:
            return RUNNING
        if self.failed.pop(tid, None) is not None:
            return FAILED
        return PENDING

    def _end(self, rec: _Rec, final: str) -> None:
        """``rec`` is finished: forget it, remembering its final state for a while."""
        tid = rec.id
        if self.running.pop(tid, None) is None:  # (a done ends a running task, mostly)
            self._lift(rec)
        del self.tasks[tid]
        finished = self.finished
        finished[tid] = final
        if len(finished) > 2 * _FINISHED_MEMORY:
            # Drop the older half at once (a dict deleted from one at a time scans
            # the holes its deletions leave at the front).
            self.finished = dict(itertools.islice(finished.items(), _FINISHED_MEMORY, None))
        body = rec.body
        if body.__class__ is _Extra and body.sched is not None:
            cur = self.cursors.get(body.sched[0])
            if cur is not None and cur.run == tid:
                cur.run = None
                if final == DONE:
                    cur.last = _nominal(tid)

    def _count(self, event: str) -> None:
        if self.counting:
            self.events[event] += 1

    # -- the ops -----------------------------------------------------------------------

    def add(self, rec: _Rec, place: bool = True) -> _Rec:
        """A new task, pending; an id that is live keeps its task.  Returns the live one.

        ``place=False`` holds it out of the ring (until ``release``).
        """
        live = self.tasks.setdefault(rec.id, rec)
        if live is not rec:
            return live
        ring = self.ring
        if ring is not None and place:
            ring.add(rec, self.tick_of(rec.due))
        body = rec.body
        if body.__class__ is _Extra and body.sched is not None:
            self._note_run(rec)
        return rec

    def _note_run(self, rec: _Rec) -> None:
        cur = self.cursors.get(rec.sched[0])
        if cur is None:
            cur = self.cursors[rec.sched[0]] = _Cursor()
        nominal = _nominal(rec.id)
        if nominal is not None:  # (else not a run's id: no time in it)
            cur.note(nominal)
        cur.run = rec.id
        cur.spec, cur.tz = rec.sched[1], rec.sched[2]

    def start(self, ids: list) -> list:
        """These tasks began running; returns those that were pending or queued."""
        began = []
        tasks, running, queued = self.tasks, self.running, self.queued
        for tid in ids:
            rec = queued.pop(tid, None)  # the owner's case: out of the queue
            if rec is None:
                rec = tasks.get(tid)  # a replay's: pending
                if rec is None or tid in running or tid in self.failed:
                    continue
                self._lift(rec)
            running[tid] = rec
            began.append(rec)
        return began

    def done(self, id: str, sched: str | None = None, result: Any = None,
             expires: float | None = None, error: str | None = None,
             last: float | None = None) -> None:
        rec = self.tasks.get(id)
        if rec is None:
            if sched is not None:  # compaction's record of a schedule's cursor
                nominal = _nominal(id)
                if nominal is not None:
                    cur = self.cursors.get(sched)
                    if cur is None:
                        cur = self.cursors[sched] = _Cursor()
                    cur.note(nominal)
                    last = nominal if last is None else last
                    cur.last = last if cur.last is None else max(cur.last, last)
            return
        self._end(rec, DONE)
        if self.counting:
            self.events["done"] += 1
        if expires is not None:
            self.results[id] = (rec, result, expires, error)
            heapq.heappush(self.expiring, (expires, id))

    def retry(self, id: str, due: float, tries: int, error: str | None = None,
              crashes: int | None = None) -> None:
        rec = self.tasks.get(id)
        if rec is None:
            return
        self._lift(rec)
        rec.outcome(tries, error, crashes)
        rec.due = due
        self._place(rec)
        if crashes is None:
            self._count("retried")

    def fail(self, id: str, tries: int, error: str | None = None, crashes: int | None = None) -> None:
        rec = self.tasks.get(id)
        if rec is None:
            return
        self._lift(rec)
        rec.outcome(tries, error, crashes)
        self.failed[id] = rec
        self._count("failed")
        sched = rec.sched
        if sched is not None:
            cur = self.cursors.get(sched[0])
            if cur is not None and cur.run == id:
                cur.run = None
                cur.last = _nominal(id)

    def cancel(self, id: str) -> bool:
        rec = self.tasks.get(id)
        if rec is None or self.state(rec) not in (PENDING, QUEUED):
            return False
        self._end(rec, CANCELLED)
        self._count("cancelled")
        sched = rec.sched
        if sched is not None:
            cur = self.cursors.get(sched[0])
            if cur is not None and not cur.paused and cur.run is None:
                self.unplanned.add(sched[0])  # its next run is not journaled yet
        return True

    def requeue(self, id: str, due: float) -> bool:
        rec = self.failed.pop(id, None)
        if rec is None:
            return False
        rec.outcome(0, None, None)
        rec.due = due
        self._place(rec)
        return True

    def purge(self, id: str) -> bool:
        rec = self.failed.get(id)
        if rec is None:
            return False
        self._end(rec, CANCELLED)
        return True

    def reschedule(self, id: str, due: float) -> bool:
        rec = self.tasks.get(id)
        if rec is None or self.state(rec) != PENDING:
            return False
        self._lift(rec)
        rec.due = due
        self._place(rec)
        return True

    def pause(self, sched: str, spec: str | None = None, tz: str | None = None) -> None:
        """The schedule makes no more runs; its run that has not started is cancelled."""
        cur = self.cursors.setdefault(sched, _Cursor())
        cur.paused = True
        if spec is not None:
            cur.spec, cur.tz = spec, tz
        rec = self.tasks.get(cur.run) if cur.run is not None else None
        if rec is not None and self.state(rec) in (PENDING, QUEUED):
            self._end(rec, CANCELLED)
            self._count("cancelled")

    def resume(self, sched: str) -> None:
        self.cursors.setdefault(sched, _Cursor()).paused = False

    # -- applying what a reader read ----------------------------------------------------

    def apply(self, obj: Any) -> None:
        """Apply one record (a JSON value); raises naming what is not a wheelq record."""
        op, fields = _fields(obj)
        if op == "add":
            rec = _Rec(fields["id"], sys.intern(fields["task"]), fields["args"], fields["due"])
            sched = fields.get("sched")
            rec.set(fields["kwargs"], fields.get("tries", 0), fields.get("error"),
                    fields.get("crashes"),
                    None if sched is None else (sched, fields.get("spec"), fields.get("tz")))
            self.add(rec)
        else:
            getattr(self, op)(**fields)

    def apply_rows(self, rows: list, first: int = 0) -> None:
        """Apply ``rows`` of ``_read_rows`` from index ``first``; ``_BadRecord`` names a bad one."""
        add, done, apply = self.add, self.done, self.apply
        # A replay's many adds: with no ring to place in, ``add`` of a task that is no
        # schedule's run only keeps the first task of its id, which ``keep`` does
        # without the call.
        keep = self.tasks.setdefault if self.ring is None else None
        i = first
        try:
            for i in range(first, len(rows)):
                row = rows[i]
                cls = row.__class__
                if cls is _Rec:
                    if keep is not None and row.body.__class__ is not _Extra:
                        keep(row.id, row)
                    else:
                        add(row)
                elif cls is tuple:
                    done(*row)
                else:
                    apply(row)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise _BadRecord(i, _reason(exc)) from None

    def read(self, text: str, lineno: int, on_bad: Callable, raws: dict | None = None) -> None:
        """Apply the whole lines ``text``; the first is line ``lineno + 1``.

        The one reader of journal text: replay, the owner's reading of
        others' lines, a producer's view and ``check`` all come here.  A line
        that is not a record goes to ``on_bad(lineno, reason, raw, last)``
        (``last``: it ends ``text``), which raises to stop or returns to skip
        the line and go on.  ``raws`` maps the index (from 0) of a line that
        was not UTF-8 to its bytes.
        """
        pos, end, before = 0, len(text), lineno
        while pos < end:
            stop = text.find("\n", min(pos + _READ_CHUNK, end) - 1) + 1  # whole lines
            chunk = text[pos:stop]
            rows = _read_rows(chunk)
            count = chunk.count("\n")
            i = 0
            while True:
                try:
                    self.apply_rows(rows, i)
                    break
                except _BadRecord as bad:
                    n = before + bad.index + 1
                    on_bad(n, bad.reason, _raw(chunk, bad.index, raws, n - lineno - 1),
                           stop == end and bad.index == count - 1)
                    i = bad.index + 1
            if len(rows) < count:  # line j of the chunk is not one JSON value
                j = len(rows)
                n = before + j + 1
                raw = _raw(chunk, j, raws, n - lineno - 1)
                on_bad(n, _unreadable(raw), raw, stop == end and j == count - 1)
                skip = 0
                for _ in range(j + 1):  # go on after line j
                    skip = chunk.index("\n", skip) + 1
                pos += skip
                before += j + 1
                continue
            pos = stop
            before += count

    # -- the owner's own steps, not journaled as such ------------------------------------

    def due(self, to: int) -> list:
        """The tasks of the ticks up to ``to``, now queued."""
        recs = self.ring.advance(to)
        queued = self.queued
        for rec in recs:
            queued[rec.id] = rec
        return recs

    def due_early(self, k: int, now: float) -> list:
        """Eager mode: the tasks waiting for tick ``k`` that are due by ``now``, now queued."""
        recs = self.ring.take_early(k, lambda rec: rec.due <= now)
        for rec in recs:
            self.queued[rec.id] = rec
        return recs

    def unqueue(self, recs: Iterable) -> None:
        """Queued tasks that will not start: pending again."""
        for rec in recs:
            if self.queued.pop(rec.id, None) is rec:
                self._place(rec)

    def back(self, recs: Iterable) -> None:
        """Tasks that began but did not run (the wheel stops): pending again."""
        for rec in recs:
            if self.running.pop(rec.id, None) is rec:
                self._place(rec)

    def hold(self, rec: _Rec) -> bool:
        """Keep a pending task out of the ring while a change to it is written."""
        return self.ring is not None and self.ring.remove(rec)

    def release(self, rec: _Rec) -> None:
        """Put a held task back, if it is still live and pending."""
        if self.tasks.get(rec.id) is rec and rec.at is None and self.state(rec) == PENDING:
            self._place(rec)

    def forget(self, rec: _Rec) -> None:
        """A task whose add never reached the journal: as if it had never been."""
        if self.tasks.get(rec.id) is rec:
            self._lift(rec)
            del self.tasks[rec.id]

    def expire(self, now: float) -> None:
        """Drop the results that expired by ``now``."""
        heap, results = self.expiring, self.results
        while heap and heap[0][0] <= now:
            expires, tid = heapq.heappop(heap)
            kept = results.get(tid)
            if kept is not None and kept[2] == expires:
                del results[tid]
                self.finished[tid] = DONE
                self.expired[tid] = expires
        if len(self.expired) > 2 * _FINISHED_MEMORY:
            self.expired = dict(itertools.islice(self.expired.items(), _FINISHED_MEMORY, None))

    def result(self, tid: str, now: float) -> tuple | None:
        """``(rec, value, expires, error)`` of a kept, unexpired result, else None."""
        kept = self.results.get(tid)
        if kept is None or kept[2] <= now:
            return None
        return kept

    # -- compaction ----------------------------------------------------------------------

    def snapshot(self, now: float) -> list:
        """Lines that replay to this state: what compaction keeps of every op."""
        lines = []
        for rec in sorted(self.tasks.values(), key=_by_due):
            lines.append(_line(self._add_record(rec)))
            state = self.state(rec)
            if state == RUNNING:
                lines.append(_line({"op": "start", "ids": [rec.id]}))
            elif state == FAILED:
                fail = {"op": "fail", "id": rec.id, "tries": rec.tries, "error": rec.error}
                if rec.crashes is not None:
                    fail["crashes"] = rec.crashes
                lines.append(_line(fail))
        for tid, (rec, value, expires, error) in self.results.items():
            if expires > now and tid not in self.tasks:  # a live task of that id wins
                lines.append(_line(self._add_record(rec)))
                done = {"op": "done", "id": tid, "result": value, "expires": expires}
                if error is not None:
                    done = {"op": "done", "id": tid, "expires": expires, "error": error}
                lines.append(_line(done))
        for name, cur in self.cursors.items():
            if cur.paused:
                pause = {"op": "pause", "sched": name}
                if cur.spec is not None:
                    pause.update(spec=cur.spec, tz=cur.tz)
                lines.append(_line(pause))
            # The live run's add (above) holds the cursor; this line holds the rest.
            at = cur.cursor if cur.run is None or cur.run not in self.tasks else cur.last
            if at is not None:
                done = {"op": "done", "id": "%s@%s" % (name, _iso_utc(at)), "sched": name}
                if cur.last is not None and cur.last != at:
                    done["last"] = cur.last
                lines.append(_line(done))
        return lines

    @staticmethod
    def _add_record(rec: _Rec) -> dict:
        add = {"op": "add", "id": rec.id, "task": rec.name, "due": rec.due, "args": rec.args,
               "kwargs": rec.kwargs or {}}
        if rec.tries:
            add["tries"] = rec.tries
        if rec.error is not None:
            add["error"] = rec.error
        if rec.crashes is not None:
            add["crashes"] = rec.crashes
        if rec.sched is not None:
            add["sched"], spec, tz = rec.sched
            if spec is not None:
                add["spec"] = spec
            if tz is not None:
                add["tz"] = tz
        return add


_READ_CHUNK = 1 << 18  # characters a reader takes at a time (a few thousand lines)


def _raw(chunk: str, j: int, raws: dict | None, index: int) -> bytes:
    """The bytes of line ``j`` of ``chunk`` (line ``index`` of the text), for messages."""
    if raws and index in raws:
        return raws[index]
    return chunk.split("\n", j + 1)[j].encode("utf-8")


def _unreadable(raw: bytes) -> str:
    """Why ``_read_rows`` refused the line ``raw``, for messages (bad lines only: it parses again)."""
    try:
        json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "unreadable JSON (not UTF-8)"
    except RecursionError:
        return "nested more than %d levels deep" % _MAX_DEPTH
    except ValueError:
        return "unreadable JSON"
    return "nested more than %d levels deep" % _MAX_DEPTH  # JSON, but deeper than any writer


_name_of = operator.attrgetter("name")


def _by_due(rec: _Rec) -> float:
    return rec.due


# --------------------------------------------------------------------------
# Stores: where records are kept
# --------------------------------------------------------------------------
#
# The wheel keeps its records through a store, which it knows only by this
# interface (the Redis store of wheelq_redis.py implements it too):
#
#   name, durable      the path or URL for messages; False for the in-memory store
#   lock               a threading.Lock the wheel holds around an append and the
#                      change of state it journals, so changes apply in file order
#   deliver            set by the owner: deliver(text, lineno, raws) takes the lines
#                      other processes appended, in order (lineno: the line before)
#   skew               seconds to add to this host's clock (a server's time); 0 here
#   records()          how many records the journal holds (the owner's count), for
#                      the rule of when to compact
#   open()             first use: create the journal or check that it is one
#   append(data, build=None, lines=0, task_id=None) -> seq
#                      (holding lock) append whole lines.  First the lines others
#                      appended go to ``deliver`` (owner), so the state they make
#                      is in place; with ``build``, data = build() is made after that
#                      and may be b"" (nothing to write).  ``seq`` is for commit().
#                      ``task_id``: data is the add of a user's task id, which a
#                      store may deduplicate itself (the owner still applies only
#                      the first add of a live id)
#   concurrent         True: a producer's append need not hold lock (the store
#                      groups concurrent ones into one round trip); False here
#   clock              (optional) set by the wheel before open() to its clock, against
#                      which a store whose time is a server's measures ``skew``
#   defer(data) -> seq (holding lock) owner, fsync="always": the next commit writes it
#   commit(seq), sync()  make a write durable (group commit) / everything written so far
#   load(read)         owner: every line from the start, to read(text, lineno, raws,
#                      ends): ``ends`` says the text ends the journal (no partial line
#                      after it); read raises _Torn for a bad last line, which is cut
#   tail()             owner: deliver what others appended since (once a tick)
#   view() -> (reset, text, lineno, raws)  lines appended since the last view(),
#                      for a producer's view; it never takes a lock that append needs
#   lines_naming(needles) -> [(lineno, bytes)] | None   the whole lines holding any
#                      of the byte strings ``needles``, for a producer's look at one
#                      task without a view; None: no such search here (read the view)
#   rewrite(snapshot)  owner: replace the journal by snapshot(read), the lines to keep
#                      (compaction; ``read()`` gives the file's bytes, for repair)
#   acquire(wait) -> bool, release(), check() -> str | None   the owner lease; check()
#                      says why the owner lost it (the file replaced, the lease taken)
#   detached(why)      the message the owner logs when it stops taking tasks for that
#   after_fork()       in a child process: forget every descriptor; reopen lazily
#   close()            make everything durable (unless fsync="never") and let go


class _Torn(Exception):
    """Raised by a replay's reader for a bad last line: a write cut short, which the store cuts."""

    def __init__(self, lineno: int):
        super().__init__(lineno)
        self.lineno = lineno


class _MemoryStore:
    """Records kept nowhere: ``Wheel()`` with no path, and ``wheel.testing()``."""

    name = "(memory)"
    durable = False
    concurrent = False
    skew = 0.0

    def __init__(self):
        self.lock = threading.Lock()
        self.deliver = None

    def open(self) -> None:
        pass

    def records(self) -> int:
        return 0

    def append(self, data: bytes, build: Callable | None = None, lines: int = 0,
               task_id: str | None = None) -> int:
        if build is not None:
            build()
        return 0

    def defer(self, data: bytes) -> int:
        return 0

    def commit(self, seq: int) -> None:
        pass

    def sync(self) -> None:
        pass

    def load(self, read: Callable) -> None:
        pass

    def tail(self) -> None:
        pass

    def view(self) -> tuple:
        return False, "", 0, None

    def lines_naming(self, needles: tuple) -> None:
        return None

    def rewrite(self, snapshot: Callable) -> int:
        return len(snapshot(lambda: b""))

    def acquire(self, wait: bool) -> bool:
        return True

    def release(self) -> None:
        pass

    def check(self) -> str | None:
        return None

    def detached(self, why: str) -> str:
        return why

    def after_fork(self) -> None:
        self.lock = threading.Lock()

    def close(self) -> None:
        pass


_GATHER = 0.0005  # seconds an fsync="always" group commit waits for the writers it expects
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _closed_gate() -> Any:
    """A lock held closed: ``acquire`` waits until it is released, as a gate opens."""
    gate = threading.Lock()
    gate.acquire()
    return gate


def _unwritten(lost: OSError) -> OSError:
    """The error for a deferred line whose write failed: it never reached the file."""
    exc = OSError(lost.errno, lost.strerror)
    exc.unwritten = True
    return exc


class _FileStore:
    """A journal file: a JSON Lines file with a header, appended to by several processes.

    Every append, the owner's included, holds ``flock`` on the journal, so a
    line that does not end a file under the flock was left by a writer that
    died: the appender cuts it first and never glues a line onto it.  The
    owner also reads, under that flock, the lines others appended since its
    last append and hands them to ``deliver`` before it writes, so its state
    always is the state of the file up to its own line.  ``_end`` is where the
    bytes this process has accounted for end (its own lines and, for the
    owner, those it has read), and ``_lineno`` how many lines they are.

    The owner lock is a ``flock`` on ``<path>.lock`` holding the owner's pid.
    """

    durable = True
    concurrent = False
    skew = 0.0
    _fsync = staticmethod(os.fsync)  # a seam for fault-injection tests

    def __init__(self, path: str, fsync: str):
        self.name = self.path = path
        self.mode = fsync
        self.lock = threading.Lock()
        self.deliver: Callable | None = None
        self.fd: int | None = None
        self.closed = False
        self._end = -1  # -1: nothing accounted for yet
        self._lineno = 0
        self._lock_fd: int | None = None
        self._view = None  # (fd, inode, offset, lineno) of a producer's view
        self._found = None  # (needles, inode, offset, lineno, lines): lines_naming()'s last search
        self.reopened = 0  # times an append found the file replaced (compacted) and reopened it
        self._new_commits()

    def _new_commits(self) -> None:
        # Group commit.  Invariant: a write with sequence s is durable once
        # ``_synced >= s``; sequences are handed out in file order (under
        # ``lock``), and every sequence up to ``_appended`` is in the file or in
        # ``_lost``.  One thread at a time fsyncs (it holds the ``_fsyncing``
        # gate); before its fsync it writes the deferred lines (one write for
        # the group) and notes ``target = _appended``; after it, ``_synced =
        # target``, and it opens the gate.  Others wait on the gate, each
        # passing it on, and look again.  Under fsync="always", the thread
        # about to fsync may first wait on ``_gathering`` (at most _GATHER s)
        # until as many writes as its last fsync carried are in: the writer that
        # brings them in opens it.  ``_sync`` guards these fields, briefly.
        self._sync = threading.Lock()
        self._fsyncing: Any = None
        self._gathering: Any = None
        self._written = 0
        self._appended = 0
        self._synced = 0
        self._group = 1
        self._want = 0
        self._deferred: list = []
        self._lost: dict = {}

    # -- opening -------------------------------------------------------------------

    def open(self) -> None:
        """Open the journal, creating it (mode 0600, with its header) if missing or empty.

        Refuses, changing nothing, a file that is not a wheelq journal and a
        path that is a symlink belonging to another user.
        """
        if self.fd is not None:
            return
        if self.closed:
            raise WheelClosed("the journal %s is closed; build a new Wheel to go on" % self.path)
        self._refuse_foreign_symlink()
        fd = self._open_fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._check_or_create(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _refuse_foreign_symlink(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if not stat.S_ISLNK(st.st_mode):
            return
        me = os.geteuid()
        try:
            target = os.stat(self.path)
        except OSError:
            target = None
        if st.st_uid not in (me, 0) or (target is not None and target.st_uid != me):
            owner = st.st_uid if st.st_uid not in (me, 0) else target.st_uid
            raise WheelqError("journal %s is a symlink to a file of another user (uid %d): wheelq "
                              "will not write through it, since whoever controls it could point it "
                              "at another file; give the real path of a journal of your own"
                              % (self.path, owner))

    def _open_fd(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | _O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except IsADirectoryError as exc:
            raise _os_error(exc, self.path, "cannot open journal", "the path is a directory: give a file path") from None
        except PermissionError as exc:
            raise _os_error(exc, self.path, "cannot open journal",
                            "check the permissions of the file and its directory, or choose another path") from None
        except OSError as exc:
            raise _os_error(exc, self.path, "cannot open journal",
                            "the filesystem is read-only: choose a path on a writable one"
                            if exc.errno == errno.EROFS else
                            "check that the directory exists and is writable"
                            if exc.errno in (errno.ENOENT, errno.ENOTDIR) else
                            _write_advice(exc.errno)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "journal %s is not a regular file; give a file path" % self.path)
        return fd

    def _check_or_create(self, fd: int) -> None:
        """Holding flock: write the header into an empty file, or check the one there."""
        head = os.pread(fd, 4096, 0)  # (not the size: /proc and the like report 0 and hold text)
        if head and _HEADER.startswith(head) and head != _HEADER:
            return  # a header torn as the file was created: a journal with no tasks (appends mend it)
        if not head:
            self._write_fd(fd, _HEADER)
            if self.mode != "never":  # a new file: make its name durable too
                try:
                    self._fsync(fd)
                    _fsync_dir(self.path)
                except OSError as exc:  # nothing acknowledged rests on it yet
                    logger.warning("journal %s: fsync after creating it failed: %s", self.path, exc)
            return
        newline = head.find(b"\n")
        if newline < 0:
            raise JournalCorrupt(self.path, 1, 'not a wheelq journal (no {"wheelq": 1} header)',
                                 _NOT_OURS)
        _check_header(head[:newline + 1], self.path)

    def close(self) -> None:
        """Sync (unless fsync is "never") and close every descriptor; the caller holds ``lock``."""
        self.closed = True
        try:
            if self.fd is not None:
                try:
                    self._drain()
                    if self.mode != "never":
                        self.sync()
                finally:
                    os.close(self.fd)
                    self.fd = None
        finally:
            self._close_view()
            self.release()

    def after_fork(self) -> None:
        """In a child process: forget the parent's descriptors (closing our copies) and locks.

        The child shares the parent's open file descriptions, and with them
        their offsets and flocks; it opens its own at its first use.  Closing
        the copy of the owner lock drops nothing of the parent's (the lock
        stays while any descriptor of it is open), so a standby elsewhere can
        take over once the parent dies.
        """
        for fd in (self.fd, self._lock_fd, self._view[0] if self._view else None):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self._lock_fd = self._view = self._found = None
        self.deliver = None
        self._end, self._lineno = -1, 0
        self.lock = threading.Lock()
        self._new_commits()

    def records(self) -> int:
        return max(0, self._lineno - 1)

    # -- appending ---------------------------------------------------------------------

    def _lock_file(self) -> int:
        """Take flock on the journal, reopening it if compaction replaced it; return its fd."""
        while True:
            fd = self.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.deliver is not None or os.fstat(fd).st_nlink > 0:
                return fd  # (the owner is the one that replaces it)
            new = self._open_fd()  # replaced: the new file is at the path
            self.fd = new
            os.close(fd)  # also releases the flock on the replaced file
            self._end = -1
            self.reopened += 1

    def append(self, data: bytes, build: Callable | None = None, lines: int = 0,
               task_id: str | None = None) -> int:
        """Append whole lines (see the class); the caller holds ``lock``.

        ``lines``: how many lines ``data`` is, when the caller knows (an add
        is one); else they are counted.
        """
        fd = self.fd
        if fd is not None and build is None and self.deliver is not None and not self._deferred:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end == self._end:  # nobody appended since our last line: no flock
                return self._append_owner(fd, data, end, lines)
        if fd is None:
            self.open()
        if self._deferred:
            self._drain()
        fd = self._lock_file()
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end != self._end:
                end = self._others(fd, end)
                fd = self.fd  # waiting out an owner's torn line may have reopened a compacted file
            if build is not None:
                data = build()
            if data:
                n = self._write_fd(fd, data)
                while self.deliver is None and not self._check_own(fd, end, n):
                    end = os.lseek(fd, 0, os.SEEK_END)  # our line was cut with the torn one: again
                    n = self._write_fd(fd, data)
                self._end = end + len(data)
                if self.deliver is not None:
                    self._lineno += lines or data.count(b"\n")
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._written = self._appended = self._written + 1
        return self._written

    def _append_owner(self, fd: int, data: bytes, end: int, lines: int) -> int:
        """The owner's append, its hottest path: one write() with no flock (DESIGN section 6).

        Producers append under flock, and a producer's write may begin
        between the look at the file's end and this write.  So the write is
        checked afterwards: where this line began tells whether another line
        came first; if it did, it is read (and delivered before this one
        applies), and if it was torn by a writer that died, the line is
        spliced out of the file before this append returns.
        """
        try:
            n = os.write(fd, data)
        except OSError as exc:
            raise _os_error(exc, self.path, "cannot append to journal",
                            _write_advice(exc.errno) + "; nothing was written") from None
        cur = os.lseek(fd, 0, os.SEEK_CUR)  # with O_APPEND: where this write ended
        if n != len(data) or cur - n != end:
            cur = self._after_race(fd, end, cur, n, len(data))
        self._end = cur
        self._lineno += lines or data.count(b"\n")
        self._written = self._appended = self._written + 1
        return self._written

    def _after_race(self, fd: int, end: int, cur: int, n: int, want: int) -> int:
        """Owner: another writer's bytes fell before this line, or the write came back short.

        Under flock (so no producer is writing): deliver the whole lines that
        came first, splice out a torn line among them, and cut or splice out
        this write's own partial line.  Returns where this line now ends.
        """
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = cur - n
            before = os.pread(fd, start - end, end) if start > end else b""
            whole = before.rfind(b"\n") + 1
            if n != want:  # our own partial line: cut it (or take it out), then raise
                if os.fstat(self.fd).st_size == cur:
                    os.ftruncate(self.fd, start)
                else:
                    self._splice(start, cur, "a partial line of this owner")
            elif whole < len(before):  # a line torn by a writer that died, then ours
                self._splice(end + whole, start, "a torn line of a writer that died")
                cur -= start - (end + whole)
            if whole:
                self._deliver(before[:whole])
            if n != want:
                raise OSError(errno.ENOSPC, "cannot append to journal %s: only %d of %d bytes fit "
                              "(disk full or file size limit); free space and retry; nothing was "
                              "written" % (self.path, n, want))
            return cur
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _others(self, fd: int, end: int) -> int:
        """Holding flock, the file ends at ``end``, past our last account: see what others did.

        A last line with no end is cut if its writer died (see ``_torn``).
        The owner then reads what others appended and delivers it.  Returns
        the file's end.
        """
        if end and os.pread(fd, 1, end - 1) != b"\n":
            end = self._torn(fd, end)
            fd = self.fd
        if self.deliver is not None and self._end >= 0 and end > self._end:
            data = os.pread(fd, end - self._end, self._end)
            self._deliver(data)
        self._end = end
        return end

    def _torn(self, fd: int, end: int) -> int:
        """Holding flock: the file ends with a line that has no newline; return the new end.

        Producers write under this flock, so a producer's line (it starts
        ``{"p":1,``) that has no end was left by one that died: cut it.  The
        owner writes without it: if the owner lock is free, the owner that
        left the line died, and it is cut; if not, the owner is writing that
        line now, so wait (letting go of the flock, which the owner may need)
        until its newline is in.
        """
        while True:
            start = self._line_start(fd, end)
            head = os.pread(fd, 3, start)
            if self.deliver is not None or start == 0 or head == b'{"p' or self._owner_gone():
                return self._cut_torn(fd, end)
            fcntl.flock(fd, fcntl.LOCK_UN)
            threading.Event().wait(0.002)
            fd = self._lock_file()
            end = os.lseek(fd, 0, os.SEEK_END)
            if not end or os.pread(fd, 1, end - 1) == b"\n":
                return end

    def _owner_gone(self) -> bool:
        """Whether no owner holds the owner lock (tried without waiting, and let go at once)."""
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | _O_NOFOLLOW | _O_CLOEXEC)
        except OSError:
            return True  # no lock file: no owner ever started
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def _check_own(self, fd: int, end: int, n: int) -> bool:
        """Producer, after its write: a line the owner wrote meanwhile came first; is it whole?

        If the owner died inside that write, this line is glued onto its torn
        one: splice the torn bytes out.  A killed owner holds its lock until
        its last descriptor closes, which comes after its memory is freed, so
        its lock may still be held for a moment after its write stopped: wait
        for it, holding the flock (nobody else can write meanwhile).  If it is
        still held after that, the owner lives and its write came back short:
        it takes its partial line out itself, under this flock, so let go of
        the flock until it has.  Returns False if this line is no longer in
        the file (an owner that started meanwhile cut it as a torn last line),
        for the caller to write it again.
        """
        cur = os.lseek(fd, 0, os.SEEK_CUR)
        start = cur - n
        if start == end or os.pread(fd, 1, start - 1) == b"\n":
            return True
        mine = os.pread(fd, n, start)
        pause = threading.Event()
        for _ in range(100):  # 0.2 s: a dying owner lets go in milliseconds
            if self._owner_gone():
                self._splice(self._line_start(fd, start), start, "a torn line of an owner that died")
                return True
            pause.wait(0.002)
        warn_at = _monotonic() + 5.0
        while True:  # the owner lives: let it take its partial line out
            if warn_at is not None and _monotonic() > warn_at:
                warn_at = None
                logger.warning("journal %s: the owner wrote part of a line and has not taken it out "
                               "for 5 s (is it stopped?); this producer's record waits behind it",
                               self.path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            pause.wait(0.002)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:
                return True  # spliced: this line is in the new file, which the next append opens
            if os.pread(fd, n, start) != mine:
                return False
            if self._owner_gone():
                self._splice(self._line_start(fd, start), start, "a torn line of an owner that died")
                return True

    def _line_start(self, fd: int, end: int) -> int:
        """Where the line that holds byte ``end - 1`` starts."""
        pos = end
        while pos > 0:
            lo = max(0, pos - 65536)
            cut = os.pread(fd, pos - lo, lo).rfind(b"\n")
            if cut >= 0:
                return lo + cut + 1
            pos = lo
        return 0

    def _splice(self, a: int, b: int, what: str) -> None:
        """Holding flock: take bytes ``[a, b)`` out of the file, which is rewritten and renamed.

        The rare repair after a race glued a line onto a torn one.  A new
        file, like a compaction's, so that readers without a lock, who take
        a file to be whole once they read it, see another inode and read it
        again from the start.
        """
        old = self.fd
        data = _read_all(old)
        tmp = self.path + ".tmp"
        new = self._create_tmp(tmp, os.fstat(old))
        try:
            fcntl.flock(new, fcntl.LOCK_EX)
            _write_all(new, data[:a] + data[b:])
            if self.mode != "never":
                self._fsync(new)
            os.replace(tmp, self.path)
        except OSError as exc:
            os.close(new)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _os_error(exc, self.path, "cannot take a torn line out of journal",
                            _write_advice(exc.errno)) from None
        if self.mode != "never":
            try:
                _fsync_dir(self.path)
            except OSError:
                logger.warning("journal %s: fsync of its directory failed", self.path)
        self.fd = new
        self._fsync_done()
        os.close(old)  # releases its flock: waiters find the replaced inode
        self.reopened += 1
        logger.warning("journal %s: took out %s (%d bytes), which a line was written after; it was "
                       "never acknowledged", self.path, what, b - a)

    def _deliver(self, data: bytes) -> None:
        text, raws = _decode(data)
        self.deliver(text, self._lineno, raws)
        self._lineno += data.count(b"\n")

    def _cut_torn(self, fd: int, size: int) -> int:
        """Holding flock: cut the file back to its last newline; return the new size."""
        end = self._line_start(fd, size)
        logger.warning("journal %s: cut a torn last line (%d bytes), left by a writer that died; "
                       "it was never acknowledged", self.path, size - end)
        os.ftruncate(fd, end)
        if end == 0:
            self._write_fd(fd, _HEADER)
            end = len(_HEADER)
        return end

    def _write_fd(self, fd: int, data: bytes) -> int:
        """One write() of whole lines, holding flock; a short one is cut back and raises."""
        try:
            n = os.write(fd, data)
        except OSError as exc:
            raise _os_error(exc, self.path, "cannot append to journal",
                            _write_advice(exc.errno) + "; nothing was written") from None
        if n != len(data):
            end = os.lseek(fd, 0, os.SEEK_CUR)
            if os.fstat(fd).st_size == end:
                os.ftruncate(fd, end - n)
            else:  # a line of the owner (no flock) followed ours
                self._splice(end - n, end, "a partial line of this process")
            raise OSError(errno.ENOSPC, "cannot append to journal %s: only %d of %d bytes fit "
                          "(disk full or file size limit); free space and retry; nothing was written"
                          % (self.path, n, len(data)))
        return n

    def defer(self, data: bytes) -> int:
        """Owner, fsync="always": leave ``data`` for the next commit, which writes the group.

        Threads adding side by side then make one write between them instead
        of one each (each call hands the GIL around).  Every other append,
        compaction and close write the deferred lines first, so the file
        keeps the order of the sequences.  The caller holds ``lock``;
        ``commit`` raises if the write failed.
        """
        if self.fd is None:
            self.open()
        self._deferred.append(data)
        self._written += 1
        return self._written

    def _drain(self) -> None:
        """Holding ``lock``: write the deferred lines; if that fails, their commits raise."""
        deferred = self._deferred
        if not deferred:
            return
        data = b"".join(deferred)
        first = self._written - len(deferred) + 1  # deferred sequences are the newest ones
        deferred.clear()
        try:
            fd = self._lock_file()
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end != self._end:
                    end = self._others(fd, end)
                self._write_fd(fd, data)
                self._end = end + len(data)
                if self.deliver is not None:
                    self._lineno += data.count(b"\n")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            for seq in range(first, self._written + 1):
                self._lost[seq] = exc
        self._appended = self._written

    def _drain_to_commit(self) -> None:
        """The committing thread: write the deferred lines, unless another thread does.

        ``close()`` writes them holding ``lock`` and then waits for this
        commit, so never wait for ``lock`` once the lines are gone.
        """
        while self._deferred:
            if self.lock.acquire(timeout=0.001):
                try:
                    self._drain()
                finally:
                    self.lock.release()
                return

    def commit(self, seq: int) -> None:
        """Return once write ``seq`` is on disk; concurrent callers share one fsync.

        Raises OSError if ``seq`` was deferred and writing it failed.
        """
        self._commit(seq, True)

    def sync(self) -> None:
        """fsync if anything was written since the last fsync."""
        if self._written != self._synced:
            self._commit(self._written, False)

    def _commit(self, seq: int, own: bool) -> None:
        """``own``: ``seq`` is the caller's, whose lost write it reports (and only it)."""
        lock = self._sync
        while True:
            with lock:
                if self._want and self._written >= self._want:
                    self._want = 0
                    self._gathering.release()  # the writes its fsync waits for are in
                lost = self._lost.pop(seq, None) if own else None
                if lost is not None:
                    raise _unwritten(lost)
                if self._synced >= seq:
                    return
                if self.fd is None:  # closed, and close() could not make it durable
                    raise OSError(errno.EIO, "journal %s was closed before this write was made "
                                  "durable (its last fsync failed); check the disk" % self.path)
                running = self._fsyncing
                gather = None
                if running is None:
                    self._fsyncing = mine = _closed_gate()
                    if self._group > 1 and self.mode == "always" \
                            and self._written - self._synced < self._group:
                        # Writers are committing side by side: give the ones the
                        # last fsync carried a moment to write, so that one fsync
                        # serves them all instead of every other one.
                        self._want = self._synced + self._group
                        self._gathering = gather = _closed_gate()
            if running is not None:  # wait for that fsync, then look again
                if running.acquire(True, 1.0):
                    running.release()
                continue
            synced = False
            try:
                if gather is not None:
                    gather.acquire(True, _GATHER)
                self._drain_to_commit()
                target = self._appended
                self._fsync(self.fd)
                synced = True
            except OSError as exc:
                with lock:
                    lost = self._lost.pop(seq, None) if own else None
                if lost is not None:  # its own line never reached the file: say that
                    raise _unwritten(lost) from None
                raise _os_error(exc, self.path, "fsync failed on journal",
                                "the disk may be failing; check it and retry") from None
            finally:
                with lock:
                    if synced:
                        self._group = max(1, target - self._synced)
                        self._synced = max(self._synced, target)
                    self._want = 0
                    self._fsyncing = None
                mine.release()

    def _fsync_done(self) -> None:
        """Wait for an fsync in flight to end (compaction, before it closes the old file)."""
        with self._sync:
            running = self._fsyncing
        if running is not None:
            running.acquire()
            running.release()

    # -- reading ---------------------------------------------------------------------------

    def load(self, read: Callable) -> None:
        """Owner, holding the lease and ``lock``: replay the whole file (see the interface)."""
        if self.fd is None:
            self.open()
        fd = self._lock_file()
        try:
            data = _read_all(fd)
            if data != _HEADER and _HEADER.startswith(data):
                logger.warning("journal %s: cut a torn header (%d bytes)", self.path, len(data))
                os.ftruncate(fd, 0)
                self._write_fd(fd, _HEADER)
                data = _HEADER
            head = data.index(b"\n") + 1  # open() made sure there is a header line
            _check_header(data[:head], self.path)
            end = data.rfind(b"\n") + 1
            text, raws = _decode(memoryview(data)[head:end])
            try:
                read(text, 1, raws, end == len(data))
                lineno = 1 + text.count("\n")
            except _Torn as torn:
                end = data.rfind(b"\n", 0, end - 1) + 1
                lineno = torn.lineno - 1
            if end < len(data):
                logger.warning("journal %s: cut a torn last line (line %d, %d bytes); it was never "
                               "acknowledged", self.path, lineno + 1, len(data) - end)
                os.ftruncate(fd, end)
            self._end, self._lineno = end, lineno
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def tail(self) -> None:
        """Owner, holding ``lock``: deliver the whole lines others appended since.

        They count as a write of ours, so the next ``sync()`` covers them.
        """
        fd = self.fd
        if fd is None or os.fstat(fd).st_size <= self._end:
            return
        if self._deferred:
            # The deferred lines first, so that deferred sequences stay the newest ones; and
            # before reading, since writing them delivers what others appended up to them
            # and moves _end past it (read before, those lines would be delivered twice and
            # _end pushed past lines no one delivered).
            self._drain()
        size = os.fstat(fd).st_size
        if size <= self._end:
            return
        data = os.pread(fd, size - self._end, self._end)
        keep = data.rfind(b"\n") + 1
        if keep:
            self._deliver(data[:keep] if keep < len(data) else data)
            self._end += keep
            self._written = self._appended = self._written + 1
        if keep < len(data):
            self._cut_if_torn(fd)

    def _cut_if_torn(self, fd: int) -> None:
        """A line with no end: cut it if nobody is writing it (nobody holds the flock)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # an append in flight
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end > self._end and os.pread(fd, 1, end - 1) != b"\n":
                self._others(fd, end)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def view(self) -> tuple:
        """``(reset, text, lineno, raws)``: the whole lines appended since the last view().

        Read without any lock: whole lines appended with O_APPEND never
        change, a line being written is not taken until its newline is in,
        and a compaction replaces the file by rename, so an open descriptor
        reads one file whole.  ``reset`` says the journal was replaced
        (compacted or repaired) since: the text is the new file's, from its
        start.
        """
        reset = False
        view = self._view
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise WheelqError("journal %s does not exist (any more): check the path" % self.path) from None
        if view is None or view[1] != (st.st_dev, st.st_ino) or st.st_size < view[2]:
            reset = view is not None
            self._close_view()
            try:
                fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC)
            except OSError as exc:
                raise _os_error(exc, self.path, "cannot read journal", "check its permissions") from None
            fst = os.fstat(fd)
            view = self._view = (fd, (fst.st_dev, fst.st_ino), 0, 0)
        fd, ino, offset, lineno = view
        size = os.fstat(fd).st_size
        if size <= offset:
            return reset, "", lineno, None
        data = _pread_all(fd, size - offset, offset)
        data = data[:data.rfind(b"\n") + 1]
        if offset == 0:
            if not data:
                return reset, "", 0, None
            head = data.index(b"\n") + 1
            _check_header(data[:head], self.path)
            offset, lineno, data = head, 1, data[head:]
        text, raws = _decode(data)
        self._view = (fd, ino, offset + len(data), lineno + text.count("\n"))
        return reset, text, lineno, raws

    def view_reset(self) -> None:
        """Read the view from the start next time (after a reader refused a line)."""
        self._close_view()

    def lines_naming(self, needles: tuple) -> list:
        """``[(lineno, line)]``: the whole lines that hold any of ``needles``, in file order.

        A producer's look at one task (``needles``: its id as a JSON string)
        reads the file in chunks and keeps only those lines: the search runs
        at C speed, and nothing of any other task is kept.  Read without a
        lock, as ``view()`` reads.  The same needles again read only what was
        appended since (a replaced file: from its start), so a producer that
        polls one task's result reads each line once.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            raise WheelqError("journal %s does not exist (any more): check the path" % self.path) from None
        except OSError as exc:
            raise _os_error(exc, self.path, "cannot read journal", "check its permissions") from None
        try:
            fst = os.fstat(fd)
            ident = (fst.st_dev, fst.st_ino)
            last = self._found
            if last is not None and last[0] == needles and last[1] == ident and fst.st_size >= last[2]:
                offset, lineno, found = last[2], last[3], list(last[4])  # (threads may share it)
            else:
                offset, lineno, found = 0, 0, []
            carry = b""
            while True:
                chunk = os.pread(fd, 1 << 20, offset)
                if not chunk:
                    break
                offset += len(chunk)
                chunk = carry + chunk
                whole = chunk.rfind(b"\n") + 1
                chunk, carry = chunk[:whole], chunk[whole:]
                if not chunk:
                    continue
                if lineno == 0:
                    _check_header(chunk[:chunk.index(b"\n") + 1], self.path)
                hits = []
                for needle in needles:
                    at = chunk.find(needle)
                    while at >= 0:
                        start = chunk.rfind(b"\n", 0, at) + 1
                        stop = chunk.index(b"\n", at) + 1
                        hits.append((start, stop))
                        at = chunk.find(needle, stop)
                for start, stop in sorted(set(hits)):
                    found.append((lineno + chunk.count(b"\n", 0, start) + 1, chunk[start:stop]))
                lineno += chunk.count(b"\n")
            offset -= len(carry)  # a line still being written: read it next time
            self._found = (needles, ident, offset, lineno, found)
            return found
        finally:
            os.close(fd)

    def _close_view(self) -> None:
        if self._view is not None:
            try:
                os.close(self._view[0])
            except OSError:
                pass
            self._view = None

    # -- compaction -------------------------------------------------------------------------

    def rewrite(self, snapshot: Callable[[Callable[[], bytes]], list]) -> int:
        """Owner, holding ``lock``: replace the journal with the lines ``snapshot(read)`` gives.

        Holds flock on the old file throughout, so no append falls between
        the lines read and the copy; ``snapshot`` runs under it, after what
        others appended is delivered.  The copy is ``<path>.tmp``, created
        exclusively (never through a symlink) with the journal's mode, owner
        and group, written, fsynced, renamed over the journal, and its
        directory fsynced, all while it holds flock on the new file too:
        a producer opening the new file waits until its name is durable.
        Returns the number of records written.
        """
        self._drain()  # the snapshot holds their tasks, and their commits wait for a sync
        if self._lost:  # tasks whose delay() is about to raise: never write them back
            raise OSError(errno.EIO, "cannot compact journal %s now: a write to it just failed; "
                          "free space or fix the disk, and it compacts at a later tick" % self.path)
        old = self._lock_file()
        new = None
        try:
            end = os.lseek(old, 0, os.SEEK_END)
            if self.deliver is not None and end != self._end:  # (repair reads the file itself)
                self._others(old, end)
            lines = snapshot(lambda: _read_all(old))
            tmp = self.path + ".tmp"
            try:
                new = self._create_tmp(tmp, os.fstat(old))
                fcntl.flock(new, fcntl.LOCK_EX)
                size = len(_HEADER)
                buf = [_HEADER]
                for line in lines:
                    buf.append(line)
                    size += len(line)
                    if len(buf) >= 4096:
                        _write_all(new, b"".join(buf))
                        buf.clear()
                _write_all(new, b"".join(buf))
                self._fsync(new)
                os.replace(tmp, self.path)
            except OSError as exc:
                if new is not None:
                    os.close(new)
                    new = None
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                raise _os_error(exc, self.path, "cannot compact journal",
                                _write_advice(exc.errno) + "; the journal is unchanged") from None
            try:
                _fsync_dir(self.path)
            except OSError:
                logger.warning("journal %s: fsync of its directory failed after compaction", self.path)
            self.fd = new
        except BaseException:
            fcntl.flock(old, fcntl.LOCK_UN)
            raise
        self._fsync_done()  # one that started before the swap may still use the old file
        os.close(old)  # its waiters find the replaced inode and open the new file
        fcntl.flock(new, fcntl.LOCK_UN)
        self._end, self._lineno = size, len(lines) + 1
        self._synced = self._written
        return len(lines)

    def _create_tmp(self, tmp: str, like: os.stat_result) -> int:
        """``<path>.tmp``, created exclusively with the journal's mode, owner and group."""
        try:
            st = os.lstat(tmp)
        except FileNotFoundError:
            st = None
        if st is not None:  # left by a compaction that died: ours to remove, if it is ours
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise OSError(errno.EEXIST, "%s exists and is not a file of this user (a symlink "
                              "or another user's file); remove it" % tmp)
            os.unlink(tmp)
        mode = stat.S_IMODE(like.st_mode)
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
                     0o600)
        try:
            os.fchmod(fd, mode)
            if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, like.st_uid, like.st_gid)
                except PermissionError:
                    try:
                        os.fchown(fd, -1, like.st_gid)  # a member of the group may keep it
                    except PermissionError:
                        logger.warning("journal %s: compaction could not keep its owner and group "
                                       "(uid %d, gid %d)", self.path, like.st_uid, like.st_gid)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return fd

    # -- the owner lock -------------------------------------------------------------------

    def acquire(self, wait: bool) -> bool:
        """Take the owner lock.  ``wait``: return False if it is held; else raise JournalLocked."""
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(lock_path):  # EACCES in a sticky directory
                raise WheelqError("the owner lock %s is a symlink; wheelq never follows one there "
                                  "(another user could point it at your files): remove it"
                                  % lock_path) from None
            raise _os_error(exc, lock_path, "cannot open the owner lock",
                            "the journal's directory must be writable by the owner"
                            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT)
                            else _write_advice(exc.errno)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = int(os.pread(fd, 32, 0).strip() or 0)
            except (OSError, ValueError):
                pid = None
            os.close(fd)
            if wait:
                return False
            raise JournalLocked(self.path, pid) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError as exc:  # e.g. a full disk: the pid only names the owner to others
            logger.warning("journal %s: could not write this owner's pid to %s (%s); a second "
                           "owner will be refused without it", self.path, lock_path, exc.strerror)
        self._lock_fd = fd
        return True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the operating system drops the flock
            self._lock_fd = None

    def detached(self, why: str) -> str:
        """What the owner logs, and ``run`` says, when ``check()`` gave ``why``."""
        return ("journal %s: %s under this owner (pid %d), so other processes now use another "
                "file: this owner stops taking tasks, and keeps the owner lock until it stops, so "
                "that no second owner starts beside it; put the journal back and start it again"
                % (self.path, why, os.getpid()))

    def check(self) -> str | None:
        """Owner, once a tick: None while the path still names the journal and the lock it holds."""
        for path, fd in ((self.path, self.fd), (self.path + ".lock", self._lock_fd)):
            if fd is None:
                continue
            try:
                now = os.stat(path)
            except OSError:
                return "%s was deleted" % path
            held = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                return "%s was replaced by another file" % path
        return None


def _read_all(fd: int) -> bytes:
    """The whole file: one read of its size, so a big journal is not copied twice."""
    return _pread_all(fd, os.fstat(fd).st_size + 1, 0)  # one more: a file that grew reads on


def _pread_all(fd: int, want: int, offset: int) -> bytes:
    chunks = []
    while True:
        chunk = os.pread(fd, want, offset)
        if not chunk:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
        want = 1 << 24


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_url(path: str) -> bool:
    """A queue on a Redis server (DESIGN.md section 7) rather than a journal file."""
    return path.startswith(("redis://", "rediss://", "unix://"))


def _shown(path: str | None) -> str:
    """A journal path or store URL as messages and logs show it: a URL's password hidden."""
    if path is None:
        return "(memory)"
    if not _is_url(path):
        return path
    parts = urlsplit(path)
    if parts.password is None:
        return path
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, "%s:***@%s" % (user.split(":", 1)[0], host),
                       parts.path, parts.query, parts.fragment))


def _store_for(path: str, fsync: str) -> Any:
    """The store a path or URL names: a file, or (wheelq_redis) a Redis server."""
    if _is_url(path):
        try:
            import wheelq_redis
        except ImportError as exc:
            if getattr(exc, "name", None) not in ("wheelq_redis", "redis"):
                raise
            raise WheelqError("%s names a Redis server, which needs the optional Redis store: "
                              'pip install "wheelq[redis]" (it brings redis-py and wheelq_redis.py)'
                              % _shown(path)) from None
        return wheelq_redis.RedisStore(path, fsync)
    return _FileStore(path, fsync)


# --------------------------------------------------------------------------
# Runners: the thread pool and the event loop
# --------------------------------------------------------------------------
#
# A runner is handed batches of due records and two callbacks of the wheel:
# ``begin(batch)`` journals that the batch starts and returns the records
# still to run, and ``report(outcomes)`` journals how they ended.  Both
# runners call a task the same way (``_run_task`` or ``_arun_task``) and describe what
# happened the same way (an ``_Outcome``).

_MAX_BATCH = 64  # tasks a queue item carries at most
_BLOCKED = 1.0  # seconds a coroutine may hold the event loop before the watchdog warns

# The record of the task running in this thread or coroutine (current() reads it).
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("wheelq_current", default=None)


class _Outcome(collections.namedtuple("_Outcome", "rec task error value exc seconds",
                                       defaults=(None, None, None, None))):
    """How one run ended: ``error`` is None for a return (``value``), else the error's text.

    A run that returned None, with no result to keep and no run time to
    log (the common case), is reported as its bare record instead.
    """

    __slots__ = ()


def _failure(rec: Any, task: Any, exc: BaseException, seconds: float | None) -> _Outcome:
    return _Outcome(rec, task, "%s: %s" % (type(exc).__name__, exc), None, exc, seconds)


def _run_task(rec: Any, task: Any, timed: bool) -> _Outcome:
    """Call a plain function task in this thread; ``timed`` measures its run time."""
    if task is None:
        return _Outcome(rec, None, "unknown task %r" % rec.name)
    body = rec.body
    token = _CURRENT.set(rec)
    started = _monotonic() if timed else None
    try:
        if body.__class__ is _Extra:
            value = task.func(*body.args, **body.kwargs) if body.kwargs else task.func(*body.args)
        else:
            value = task.func(*body)
    except BaseException as exc:  # a task's failure never kills the worker
        return _failure(rec, task, exc, started and _monotonic() - started)
    finally:
        _CURRENT.reset(token)
    if value is None:
        if started is None and not task.result_ttl:
            return rec
    elif inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited, on purpose: no RuntimeWarning
        return _Outcome(rec, task, "TypeError: task %r returned a coroutine; declare it with "
                        "async def" % task.name)
    return _Outcome(rec, task, None, value, None, started and _monotonic() - started)


class _Watched:
    """Drive a coroutine step by step, warning when one step holds the loop too long.

    A coroutine that calls ``time.sleep()`` or blocking I/O stops every other
    coroutine on the loop; the step that did it is named in a WARNING.
    """

    __slots__ = ("coro", "rec")

    def __init__(self, coro: Any, rec: Any):
        self.coro = coro
        self.rec = rec

    def __await__(self) -> Any:
        it = self.coro.__await__()
        value: Any = None
        exc: BaseException | None = None
        while True:
            started = _monotonic()
            try:
                step = it.throw(exc) if exc is not None else it.send(value)
            except StopIteration as stop:
                self._check(started)
                return stop.value
            except BaseException:
                self._check(started)
                raise
            self._check(started)
            try:
                value, exc = (yield step), None
            except GeneratorExit:
                it.close()
                raise
            except BaseException as thrown:  # cancellation, passed on to the coroutine
                value, exc = None, thrown

    def _check(self, started: float) -> None:
        held = _monotonic() - started
        if held > _BLOCKED:
            logger.warning("task %s [%s] blocked the event loop for %.1f s: every other async task "
                           "waited meanwhile; use await (asyncio.sleep, an async client) or "
                           "loop.run_in_executor() for blocking work",
                           _printable(self.rec.name), _printable(self.rec.id), held)


async def _arun_task(rec: Any, task: Any, timed: bool) -> _Outcome:
    """Await an async task on the running loop, within its timeout."""
    body = rec.body
    token = _CURRENT.set(rec)
    started = _monotonic()
    try:
        if body.__class__ is _Extra:
            coro = task.func(*body.args, **body.kwargs) if body.kwargs else task.func(*body.args)
        else:
            coro = task.func(*body)
        watched = _Watched(coro, rec)
        if task.timeout is None:
            value = await watched
        else:
            try:
                value = await asyncio.wait_for(watched, task.timeout)
            except asyncio.TimeoutError:
                return _Outcome(rec, task, "TimeoutError: ran longer than its timeout of %ss"
                                % _number(task.timeout), None, None, _monotonic() - started)
    except asyncio.CancelledError:
        raise  # the wheel stopped: the task stays pending
    except BaseException as exc:
        return _failure(rec, task, exc, _monotonic() - started)
    finally:
        _CURRENT.reset(token)
    return _Outcome(rec, task, None, value, None, _monotonic() - started if timed else None)


class _Threads:
    """A bounded queue of batches feeding ``workers`` threads named wheelq-worker-N.

    Shutdown is one ``None`` sentinel per worker.  ``idle`` (a Condition on
    the wheel's state lock) is notified when a worker takes a batch or ends one.
    """

    def __init__(self, workers: int, queue_size: int, execute: Callable[[list], None],
                 recover: Callable[[list], None]):
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.execute, self.recover = execute, recover
        self.threads = [threading.Thread(target=self._work, name="wheelq-worker-%d" % (n + 1),
                                         daemon=True) for n in range(workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        get = self.queue.get
        while True:
            batch = get()
            if batch is None:
                return
            try:
                self.execute(batch)
            except Exception:  # wheelq's own failure: the worker goes on, the tasks run again
                logger.exception("a worker could not finish a batch of %d task(s); they are pending "
                                 "again", len(batch))
                self.recover(batch)

    def submit(self, batch: list, stopping: threading.Event) -> bool:
        """Queue a batch, waiting in short steps while full; False if stopping."""
        while not stopping.is_set():
            try:
                self.queue.put(batch, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def idle(self) -> bool:
        return self.queue.empty()

    def drain(self) -> list:
        """Take back every batch that no worker has started."""
        out = []
        while True:
            try:
                batch = self.queue.get_nowait()
            except queue.Empty:
                return out
            if batch is not None:
                out.extend(batch)

    def stop(self, deadline: float | None) -> None:
        """Send the sentinels and wait for the workers (each finishes its batch)."""
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(None if deadline is None else max(0.0, deadline - _monotonic()))


class _Loop:
    """One event loop in a thread named wheelq-asyncio, running at most ``limit`` coroutines.

    ``submit`` (the timer) waits for free places in short steps, as for the
    queue, and hands the batch to the loop; the outcomes of the coroutines
    that end in one pass of the loop are reported together.  ``busy`` counts
    the places taken (guarded by ``_count``).
    """

    def __init__(self, limit: int, begin: Callable[[list], list], report: Callable[[list], None],
                 unstart: Callable[[list], None]):
        self.limit = limit
        self.begin, self.report, self.unstart = begin, report, unstart
        self.places = threading.Semaphore(limit)
        self._count = threading.Lock()
        self.busy = 0
        self.loop: Any = None
        self.running: dict = {}  # asyncio.Task -> (rec, task); touched on the loop thread only
        self.ended: list = []
        self.cancelled: list = []
        self.stopping = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="wheelq-asyncio", daemon=True)
        self.threads = [self.thread]

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)

    def _main(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.call_soon(self.ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _free(self, n: int) -> None:
        with self._count:
            self.busy -= n
        for _ in range(n):
            self.places.release()

    def submit(self, batch: list, stopping: threading.Event) -> bool:
        """Start the tasks of ``batch`` on the loop as places come free, waiting in short steps.

        False if the wheel stops first; the caller takes back the tasks of
        the batch, and those already handed to the loop then do not begin
        (``begin`` starts only tasks still queued).
        """
        i, n = 0, len(batch)
        while i < n:
            if stopping.is_set():
                return False
            if not self.places.acquire(timeout=0.05):
                continue
            got = 1
            while i + got < n and self.places.acquire(blocking=False):
                got += 1
            with self._count:
                self.busy += got
            self.loop.call_soon_threadsafe(self._launch, batch[i:i + got])
            i += got
        return True

    def idle(self) -> bool:
        return self.busy == 0

    def _launch(self, batch: list) -> None:
        pairs = self.begin(batch)
        if len(pairs) < len(batch):  # cancelled meanwhile
            self._free(len(batch) - len(pairs))
        timed = logger.isEnabledFor(logging.DEBUG)
        for rec, task in pairs:
            t = self.loop.create_task(_arun_task(rec, task, timed))
            self.running[t] = (rec, task)
            t.add_done_callback(self._ended)

    def _ended(self, t: Any) -> None:
        rec, task = self.running.pop(t)
        self._free(1)
        if t.cancelled():
            if self.stopping:  # stop() cancelled it: it stays pending
                self.cancelled.append(rec)
                return
            outcome = _Outcome(rec, task, "CancelledError: the task was cancelled")
        else:
            outcome = t.result()
        if not self.ended:
            self.loop.call_soon(self._flush)
        self.ended.append(outcome)

    def _flush(self) -> None:
        ended, self.ended = self.ended, []
        if ended:
            self.report(ended)

    def stop(self, deadline: float | None) -> None:
        """Let running coroutines end until ``deadline``; cancel the rest (they stay pending)."""
        if self.loop is None or not self.thread.is_alive():
            return
        done = threading.Event()

        async def wind_down() -> None:
            try:
                tasks = list(self.running)
                if tasks:
                    timeout = None if deadline is None else max(0.0, deadline - _monotonic())
                    _, late = await asyncio.wait(tasks, timeout=timeout)
                    self.stopping = True
                    for t in late:
                        t.cancel()
                    if late:
                        await asyncio.wait(late)
                self._flush()
                if self.cancelled:
                    self.unstart(self.cancelled)
            finally:
                done.set()

        asyncio.run_coroutine_threadsafe(wind_down(), self.loop)
        done.wait(None if deadline is None else max(0.0, deadline - _monotonic()) + 5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)


_EAGER_IN_LOOP = ("tick() would run async tasks on an event loop of its own, and cannot inside a "
                  "running one: call it from a thread without a loop, or start() the wheel, whose "
                  "tasks then run on its wheelq-asyncio loop")


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_eagerly(pairs: list, limit: int) -> list:
    """Eager mode: run async tasks to completion on a private loop in this thread."""
    if _in_running_loop():
        raise RuntimeError(_EAGER_IN_LOOP)

    async def run_all() -> list:
        places = asyncio.Semaphore(limit)

        async def one(rec: Any, task: Any) -> _Outcome:
            async with places:
                return await _arun_task(rec, task, False)

        return list(await asyncio.gather(*(one(rec, task) for rec, task in pairs)))

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run_all())
    finally:
        loop.close()


# --------------------------------------------------------------------------
# Task, TaskHandle, TaskInfo, ScheduleInfo, current()
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task.  ``due`` is epoch seconds; a schedule's run has its name in ``schedule``."""

    id: str
    name: str
    args: tuple
    kwargs: dict
    due: float
    status: str
    tries: int
    error: str | None
    result: Any = None
    schedule: str | None = None


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """A declared schedule: its spec, its next and last nominal times (epoch seconds), its pause."""

    name: str
    spec: str
    tz: str
    next_due: float | None
    last_due: float | None
    paused: bool
    misfire: str


def _info(rec: Any, status: str, result: Any = None) -> TaskInfo:
    sched = rec.sched
    return TaskInfo(rec.id, rec.name, tuple(rec.args), dict(rec.kwargs or {}), rec.due, status,
                    rec.tries, rec.error, result, sched[0] if sched else None)


def current() -> TaskInfo | None:
    """Inside a running task (thread or coroutine), that task's TaskInfo; else None.

    A schedule's run reads its nominal time, before any jitter, as ``due``.
    """
    rec = _CURRENT.get()
    if rec is None:
        return None
    info = _info(rec, RUNNING)
    if info.schedule is not None:
        nominal = _nominal(rec.id)
        if nominal is not None:
            info = dataclasses.replace(info, due=nominal)
    return info


# Keywords that look like a misspelt option of delay(), and the option meant.
_MISSPELT = {"countdown": "count_down", "count_down_s": "count_down", "delay": "count_down",
             "eta_s": "eta"}


def _arity(func: Callable) -> tuple:
    """``(fewest, most, signature)`` positional arguments ``func`` takes without keywords.

    ``delay()`` checks a call against the signature only when it has
    keywords or an argument count outside that range, so the common call
    costs two comparisons.  A function whose signature cannot be read is
    not checked (``(0, inf, None)``); one with a required keyword-only
    parameter is always checked.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 0, _INF, None
    lo = hi = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo += 1
        elif p.kind is p.VAR_POSITIONAL:
            hi = _INF
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return 0, -1, sig
    return lo, hi, sig


class Task:
    """A registered function.  Calling it runs it now; ``delay`` runs it later."""

    def __init__(self, wheel: Wheel, func: Callable, name: str, retries: int, retry_delay: float,
                 retry_backoff: float, result_ttl: float, timeout: float | None, is_async: bool):
        functools.update_wrapper(self, func)  # first: the function's attributes never win
        self.wheel = wheel
        self.func = func
        self.name = name
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff
        self.result_ttl = result_ttl
        self.timeout = timeout
        self.is_async = is_async
        self._part = _add_part(name)
        self._lo, self._hi, self._sig = _arity(func)
        # The argument counts delay() accepts without a closer look (none, with a
        # required keyword-only parameter).
        self._counts = range(self._lo, sys.maxsize if self._hi == _INF else self._hi + 1)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function now, in this thread (an async task returns its coroutine)."""
        return self.func(*args, **kwargs)

    def delay(self, *args: Any, count_down: float | timedelta | None = None,
              eta: datetime | float | None = None, task_id: str | None = None,
              **kwargs: Any) -> TaskHandle:
        """Journal the call and run it ``count_down`` seconds from now, or at ``eta``.

        ``eta`` is an aware datetime, epoch seconds, or a naive datetime,
        which is read as LOCAL time (so ``datetime.utcnow()`` is wrong: use
        ``datetime.now(timezone.utc)``).  With neither, it runs at the next
        tick.  Returns once the task is journaled.
        """
        return self.wheel._submit(self, args, kwargs, count_down, eta, task_id)

    def schedule(self, args: Iterable = (), kwargs: dict | None = None, *,
                 count_down: float | timedelta | None = None,
                 eta: datetime | float | None = None,
                 task_id: str | None = None) -> TaskHandle:
        """Like ``delay``, for functions with their own ``count_down``, ``eta`` or ``task_id``."""
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("schedule() takes kwargs as a dict, not %s" % type(kwargs).__name__)
        return self.wheel._submit(self, tuple(args), kwargs or {}, count_down, eta, task_id,
                                  options_checked=True)

    async def adelay(self, *args: Any, count_down: float | timedelta | None = None,
                     eta: datetime | float | None = None, task_id: str | None = None,
                     **kwargs: Any) -> TaskHandle:
        """``delay`` for asyncio code: the wait for the disk (fsync="always") never blocks the loop."""
        return await self.wheel._asubmit(self, args, kwargs, count_down, eta, task_id, False)

    async def aschedule(self, args: Iterable = (), kwargs: dict | None = None, *,
                        count_down: float | timedelta | None = None,
                        eta: datetime | float | None = None,
                        task_id: str | None = None) -> TaskHandle:
        """``schedule`` for asyncio code."""
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("aschedule() takes kwargs as a dict, not %s" % type(kwargs).__name__)
        return await self.wheel._asubmit(self, tuple(args), kwargs or {}, count_down, eta,
                                         task_id, True)

    def _check_call(self, args: tuple, kwargs: dict, options_checked: bool = False) -> None:
        """Raise TypeError, before anything is journaled, for a call the function would refuse."""
        sig = self._sig
        params = sig.parameters if sig is not None else {}
        if not options_checked:
            for key in kwargs:
                meant = _MISSPELT.get(key)
                if meant is not None and key not in params:
                    raise TypeError("%s.delay() got the keyword %r, which looks like a misspelt "
                                    "option: use %s=..., or schedule(kwargs={%r: ...}) if the task "
                                    "really takes it" % (self.name, key, meant, key))
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError("%s.delay(): %s; nothing was journaled" % (self.name, exc)) from None

    def _retry_wait(self, tries: int) -> float:
        """Seconds before retry number ``tries``: retry_delay * retry_backoff ** (tries - 1), capped."""
        try:
            wait = self.retry_delay * self.retry_backoff ** (tries - 1)
        except OverflowError:
            wait = _INF
        return min(wait, _MAX_RETRY_WAIT)

    def __repr__(self) -> str:
        return "<Task %s>" % self.name


_MAX_RETRY_WAIT = 365 * 86400.0  # the longest wait before a retry, whatever the backoff says


class TaskHandle:
    """What ``delay()`` returns: the task's id, its status, its result, and ways to change it."""

    __slots__ = ("_wheel", "id")

    def __init__(self, wheel: Wheel, tid: str):
        self._wheel = wheel
        self.id = tid

    def status(self) -> str:
        """pending, queued, running, done, failed, cancelled or unknown."""
        return self._wheel._status(self.id)

    def cancel(self) -> bool:
        """Cancel the task if it has not started; True if it was cancelled."""
        return self._wheel.cancel(self.id)

    def reschedule(self, count_down: float | timedelta | None = None,
                   eta: datetime | float | None = None) -> bool:
        """Move the task if it is pending; True if it moved."""
        return self._wheel.reschedule(self.id, count_down=count_down, eta=eta)

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value once it has run (see ``Wheel`` for what can be raised)."""
        return self._wheel._result(self.id, timeout)

    async def aresult(self, timeout: float | None = None) -> Any:
        """``result`` for asyncio code: awaits without a thread."""
        return await self._wheel._aresult(self.id, timeout)

    def __repr__(self) -> str:
        return "<TaskHandle %s>" % self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id and other._wheel is self._wheel

    def __hash__(self) -> int:
        return hash(self.id)


_ID_PREFIX = ""
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    """A per-process prefix, so ids are unique across processes and restarts.

    40 random bits in 8 characters, and a hex counter: short ids, because a
    million pending tasks hold a million of them.
    """
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = base64.b32encode(os.urandom(5)).decode("ascii").lower() + "-"
    _ID_COUNTER = itertools.count(1)


_new_id_prefix()


# --------------------------------------------------------------------------
# Wheel
# --------------------------------------------------------------------------

_COMPACT_MIN = 10_000
_MEMORY, _PRODUCER, _OWNER = "memory", "producer", "owner"
_STATES = ("new", "standby", "running", "stopping", "closed")
_WHEELS: weakref.WeakSet = weakref.WeakSet()  # for fork: every Wheel of this process
_MIN_TICK = 0.001


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("'%s' must be an integer, not %s" % (name, type(value).__name__))
    if value < low:
        raise ValueError("'%s' must be an integer >= %d, not %r" % (name, low, value))
    return value


def _check_seconds(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("'%s' must be a number of seconds or a timedelta, not %s"
                        % (name, type(value).__name__))
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError("'%s' must be a finite number of seconds %s, not %r"
                         % (name, "> 0" if positive else ">= 0", value))
    return value


def _check_task_id(task_id: Any) -> str:
    if task_id.__class__ is not str or not task_id:
        raise TypeError("task_id must be a non-empty str, not %r" % (task_id,))
    if _CONTROL.search(task_id):
        raise ValueError("task_id %r holds a control character (a newline, an escape...), which "
                         "would garble logs and listings: use printable text" % (task_id,))
    return task_id


class Wheel:
    """A delay queue: a timing wheel, runners and a journal.

    ``Wheel(path)`` touches nothing until it is first used; it is then a
    producer (it adds and changes tasks) until ``start()`` makes it the
    owner.  ``Wheel()`` keeps everything in memory and, until it is
    started, runs due tasks in the calling thread on ``tick()``.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, workers: int = 4,
                 queue_size: int | None = None, async_workers: int = 100, slots: int = 3600,
                 tick: float = 1.0, fsync: str = "batch", clock: Any = None):
        self._registry: dict[str, Task] = {}
        self._schedules: dict[str, tuple] = {}  # name -> (_Schedule, args, kwargs): declared here
        self._store: Any = None  # chosen at first use
        self._table: _Table | None = None
        self._viewed = False  # a producer has read its view (else it looks tasks up one by one)
        self._role: str | None = None
        self._state = "new"
        self._fault: str | None = None  # why an owner stopped taking tasks from its journal
        self._lock = threading.Lock()  # the state lock: never held for I/O or user code
        # Notified whenever the processed tick or the queued/running tasks change
        # (join() waits), and when a task finishes (result() waits).
        self._idle = threading.Condition(self._lock)
        self._open_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._view_lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._wakeup = threading.Event()
        self._sync_soon = threading.Event()  # fsync="always": outcomes the loop wrote, for the timer
        self._threads: list[threading.Thread] = []
        self._pool: _Threads | None = None
        self._loop: _Loop | None = None
        self._waiters: list = []  # (loop, future) of aresult() calls in the owner
        self._finishes = 0  # outcomes applied so far: result() waits only if none came since it looked
        self._saved: Any = None  # what testing() put aside
        self._set(path=path, workers=workers, queue_size=queue_size, async_workers=async_workers,
                  slots=slots, tick=tick, fsync=fsync, clock=clock)
        _WHEELS.add(self)

    def _set(self, **options: Any) -> None:
        """Check and set constructor options (all of them, or those ``configure`` names)."""
        known = ("path", "workers", "queue_size", "async_workers", "slots", "tick", "fsync", "clock")
        for name in options:
            if name not in known:
                raise TypeError("unknown Wheel option %r; the options are %s"
                                % (name, ", ".join(known)))
        o = dict(getattr(self, "_options", {}), **options)
        path = o["path"]
        if path is not None:
            path = os.fspath(path)
            if not isinstance(path, str) or not path:
                raise TypeError("a journal path must be a non-empty str or os.PathLike, not %r" % (path,))
        workers = _check_int("workers", o["workers"], 1)
        queue_size = 2 * workers if o["queue_size"] is None else _check_int("queue_size", o["queue_size"], 1)
        async_workers = _check_int("async_workers", o["async_workers"], 1)
        slots = _check_int("slots", o["slots"], 1)
        tick = _check_seconds("tick", o["tick"], positive=True)
        if tick < _MIN_TICK:
            raise ValueError("'tick' must be at least %g s (a millisecond), not %r: a finer tick "
                             "cannot be kept by the timer and rounds due times wrongly"
                             % (_MIN_TICK, o["tick"]))
        fsync = o["fsync"]
        if fsync not in ("always", "batch", "never"):
            raise ValueError("'fsync' must be 'always', 'batch' or 'never', not %r" % (fsync,))
        clock = o["clock"] if o["clock"] is not None else SystemClock()
        if not (callable(getattr(clock, "time", None)) and callable(getattr(clock, "wait", None))):
            raise TypeError("'clock' must have time() and wait(event, timeout), as "
                            "wheelq.SystemClock and wheelq.ManualClock do")
        self._options = o
        self._path, self._workers, self._queue_size = path, workers, queue_size
        self._name = _shown(path)  # for messages and logs
        self._async_workers, self._nslots, self._tick = async_workers, slots, tick
        self._fsync, self._clock = fsync, clock
        self._always = fsync == "always"
        self._now = clock.time
        if tick == 1.0:
            # k * 1.0 is exact for every tick below 2**53 seconds: the C functions
            # give the ticks the general methods give, and fast.
            self._tick_floor, self._tick_ceil = math.floor, math.ceil
        else:
            self._tick_floor = functools.partial(Wheel._tick_floor, self)
            self._tick_ceil = functools.partial(Wheel._tick_ceil, self)

    def configure(self, **options: Any) -> Wheel:
        """Change constructor options (path, workers, fsync...) before the wheel is first used."""
        if self._store is not None:
            raise WheelqError("configure() comes too late: this Wheel is in use already (its journal "
                              "is open); configure it before its first delay(), start() or get()")
        self._set(**options)
        return self

    def __repr__(self) -> str:
        return "<Wheel %s %s %s>" % (self._name, self._role or "unopened", self._state)

    # -- registering -----------------------------------------------------------------

    def task(self, name: str | None = None, *, retries: int = 0, retry_delay: float = 1.0,
             retry_backoff: float = 2.0, result_ttl: float | timedelta = 0,
             timeout: float | timedelta | None = None) -> Callable[[Callable], Task]:
        """Register a function (or an ``async def``) as a task; returns a decorator."""
        _check_int("retries", retries, 0)
        retry_delay = _check_seconds("retry_delay", retry_delay)
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)):
            raise TypeError("'retry_backoff' must be a number >= 1, not %s" % type(retry_backoff).__name__)
        if not math.isfinite(retry_backoff) or retry_backoff < 1:
            raise ValueError("'retry_backoff' must be a finite number >= 1, not %r" % (retry_backoff,))
        result_ttl = _check_seconds("result_ttl", result_ttl)
        if timeout is not None:
            timeout = _check_seconds("timeout", timeout, positive=True)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError("task name must be a non-empty str, not %r" % (name,))
        if name is not None and _CONTROL.search(name):
            raise ValueError("task name %r holds a control character: use printable text" % (name,))

        def decorator(func: Callable) -> Task:
            if not callable(func):
                raise TypeError("@wheel.task() decorates a function, not %r" % (func,))
            is_async = inspect.iscoroutinefunction(func) or \
                inspect.iscoroutinefunction(getattr(func, "__call__", None))
            if timeout is not None and not is_async:
                raise TypeError("timeout= applies to async def tasks: a thread cannot be "
                                "interrupted; give the function a timeout of its own")
            module = getattr(func, "__module__", None)
            tname = name or "%s.%s" % (module, getattr(func, "__qualname__", type(func).__name__))
            if name is None and module == "__main__":
                logger.warning("task %s is registered from __main__: other processes import your "
                               "module under its own name and will not find it (their tasks of this "
                               "name become dead letters); give it a name, @wheel.task(name=%r), or "
                               "register it in an importable module", tname, tname.split(".", 1)[1])
            if tname in self._registry:
                raise ValueError("a task named %r is already registered; pass name=... to tell "
                                 "them apart" % tname)
            task = Task(self, func, tname, retries, retry_delay, float(retry_backoff), result_ttl,
                        timeout, is_async)
            self._registry[tname] = task
            return task

        return decorator

    def periodic(self, name: str | None = None, *, cron: str | None = None,
                 every: float | timedelta | None = None, tz: Any = "UTC", misfire: str = "coalesce",
                 jitter: float | timedelta = 0, args: Iterable = (), kwargs: dict | None = None,
                 retries: int = 0, retry_delay: float = 1.0, retry_backoff: float = 2.0,
                 result_ttl: float | timedelta = 0,
                 timeout: float | timedelta | None = None) -> Callable[[Callable], Task]:
        """Register a function as a task that runs on a schedule; returns a decorator.

        ``cron`` (five fields, in ``tz``) or ``every`` (seconds or a
        timedelta).  Only the owner makes runs: each is an ordinary task with
        the id ``<name>@<nominal time in UTC>``, which reads its nominal time
        as ``wheelq.current().due``.
        """
        args = tuple(args)
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("periodic() takes kwargs as a dict, not %s" % type(kwargs).__name__)
        spec = _Schedule(name or "", cron, every, tz, misfire, jitter)  # checks it before the task
        _line({"args": args, "kwargs": kwargs or {}})  # JSON, or TypeError now
        make = self.task(name, retries=retries, retry_delay=retry_delay, retry_backoff=retry_backoff,
                         result_ttl=result_ttl, timeout=timeout)

        def decorator(func: Callable) -> Task:
            task = make(func)
            if "@" in task.name:
                del self._registry[task.name]
                raise ValueError("a schedule's name may not hold '@' (its runs are <name>@<time>): "
                                 "%r" % task.name)
            task._check_call(args, kwargs or {}, True)
            spec.name = task.name
            self._schedules[task.name] = (spec, args, dict(kwargs or {}))
            if self._owns():
                self._plan([task.name], self._now())
            return task

        return decorator

    # -- time ---------------------------------------------------------------------------

    def _tick_floor(self, t: float) -> int:
        """The last tick whose instant ``k * tick`` is at or before ``t``."""
        k = math.floor(t / self._tick)
        if (k + 1) * self._tick <= t:
            k += 1
        elif k * self._tick > t:
            k -= 1
        return k

    def _tick_ceil(self, due: float) -> int:
        """The first tick whose instant ``k * tick`` is at or after ``due``."""
        k = math.ceil(due / self._tick)
        if k * self._tick < due:
            k += 1
        elif (k - 1) * self._tick >= due:
            k -= 1
        return k

    def _due(self, count_down: Any, eta: Any) -> float:
        """The due time of section 2: now + count_down, or eta; ValueError/TypeError otherwise."""
        if count_down is not None:
            if eta is not None:
                raise TypeError("give count_down or eta, not both")
            return self._now() + _check_seconds("count_down", count_down)
        if eta is None:
            return self._now()
        if isinstance(eta, datetime):
            due = eta.timestamp()
            if eta.tzinfo is None:
                now = self._now()
                if due < now - 3600 or (due < now - 60 and
                                        eta.replace(tzinfo=timezone.utc).timestamp() >= now - 60):
                    logger.warning("eta %s is a naive datetime %ss in the past as local time: wheelq "
                                   "reads a naive datetime as local time (datetime.utcnow() is "
                                   "wrong); pass an aware one, e.g. datetime.now(timezone.utc)",
                                   eta.isoformat(), _number(round(now - due)))
            return due
        if isinstance(eta, bool) or not isinstance(eta, (int, float)):
            raise TypeError("eta must be a datetime or epoch seconds, not %s" % type(eta).__name__)
        if not math.isfinite(eta):
            raise ValueError("eta must be finite, not %r" % eta)
        return float(eta)

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> _Table:
        """First use: open the store this wheel names; return the table."""
        with self._open_lock:
            if self._table is not None:
                return self._table
            if self._state == "closed":
                raise WheelClosed("this Wheel was stopped; build a new Wheel to go on")
            if self._path is None:
                store: Any = _MemoryStore()
                table = _Table(_Ring(self._nslots, self._tick_floor(self._now())), self._tick_ceil)
                table.counting = True
                role = _MEMORY
                plan = bool(self._schedules)
            else:
                store = _store_for(self._path, self._fsync)
                self._use_store_time(store)
                store.open()
                table, role, plan = _Table(), _PRODUCER, False
            self._store, self._role = store, role
            self._table = table
        if role is _MEMORY and plan:
            self._plan(list(self._schedules), self._now())
        return table

    def _use_store_time(self, store: Any) -> None:
        """A store whose time is a server's (Redis): this wheel's now is its clock plus ``skew``."""
        if hasattr(store, "clock"):
            clock = store.clock = self._clock
            self._now = lambda: clock.time() + store.skew

    # -- adding ---------------------------------------------------------------------------

    def _submit(self, task: Task, args: tuple, kwargs: dict, count_down: Any, eta: Any,
                task_id: Any, options_checked: bool = False) -> TaskHandle:
        if kwargs or len(args) not in task._counts:
            task._check_call(args, kwargs, options_checked)
        cls = count_down.__class__
        if (cls is float or cls is int) and eta is None and 0 <= count_down < _INF:
            due = self._now() + count_down  # the common case of _due, inline
        else:
            due = self._due(count_down, eta)
        tid = "%s%x" % (_ID_PREFIX, next(_ID_COUNTER)) if task_id is None else _check_task_id(task_id)
        table = self._table or self._open()
        role = self._role
        if role is _PRODUCER:
            return self._produce(task, tid, due, args, kwargs, task_id)
        data = _add_line(_OWNER_ADD, tid, task._part, task.name, due, args, kwargs)
        rec = _Rec(tid, task.name, args, due)
        if kwargs:
            rec.set(kwargs)
        # fsync="always": the line is deferred (see _FileStore.defer), and the task
        # waits outside the ring until it is durable, so the timer cannot run a
        # task whose delay() then fails.  A task_id is written at once, since
        # another delay() may look for it.
        deferred = self._always and task_id is None and role is _OWNER
        found = None
        store, lock = self._store, self._lock
        # acquire() and release(), not ``with``: on this, the hottest path, two
        # with statements cost as much again as the locks themselves.
        store.lock.acquire()
        try:
            if self._state in ("stopping", "closed"):
                raise WheelClosed("this Wheel was stopped; build a new Wheel to add tasks")
            if task_id is None and not deferred:
                seq = store.append(data, None, 1)
                lock.acquire()
                table.add(rec)
                lock.release()
            elif deferred:
                seq = store.defer(data)
                lock.acquire()
                table.add(rec, False)
                lock.release()
            else:
                def build() -> bytes:  # after the lines others appended are in
                    nonlocal found
                    with lock:
                        found = table.tasks.get(tid)
                    return b"" if found is not None else data
                seq = store.append(b"", build, 0, tid)
                if found is None:
                    with lock:
                        table.add(rec)
        finally:
            store.lock.release()
        if found is not None:
            return self._existing(found)
        if self._always and role is _OWNER:
            self._commit_or_take_back(seq, rec)
            if deferred:
                with lock:
                    table.release(rec)
        return TaskHandle(self, tid)

    def _produce(self, task: Task, tid: str, due: float, args: tuple, kwargs: dict,
                 task_id: str | None = None) -> TaskHandle:
        """A producer's add: one line, appended; the owner applies the first live add of an id."""
        data = _add_line(_PRODUCER_ADD, tid, task._part, task.name, due, args, kwargs)
        store = self._store
        if store.concurrent:  # the store groups side-by-side appends into one round trip
            if self._state == "closed":
                raise WheelClosed("this Wheel was stopped; build a new Wheel to add tasks")
            seq = store.append(data, None, 1, task_id)
        else:
            with store.lock:
                if self._state == "closed":
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to add tasks")
                seq = store.append(data, None, 1, task_id)
        if self._always:
            try:
                store.commit(seq)
            except OSError:
                self._take_back_line(tid)
                raise
        return TaskHandle(self, tid)

    def _existing(self, rec: _Rec) -> TaskHandle:
        """The handle of the live task a ``delay(task_id=...)`` found."""
        with self._lock:
            failed = self._table.state(rec) == FAILED
        if failed:
            raise WheelqError("a dead letter holds task id %r; requeue() or purge() it first" % rec.id)
        if self._always:
            self._store.sync()  # its add is in the file: return once it is durable too
        return TaskHandle(self, rec.id)

    def _commit_or_take_back(self, seq: int, rec: _Rec) -> None:
        """fsync="always": make the add durable, or take it back and raise."""
        try:
            self._store.commit(seq)
        except OSError as exc:
            try:
                if getattr(exc, "unwritten", False):  # never in the file: forget it here only
                    with self._lock:
                        self._table.forget(rec)
                else:
                    self.cancel(rec.id)
            except Exception:  # the original error is the one to report
                logger.exception("could not take back task %s after a failed write", rec.id)
            raise

    def _take_back_line(self, tid: str) -> None:
        """A producer's add reached the file but not the disk: journal a cancel for it."""
        try:
            with self._store.lock:
                self._store.append(_line({"p": 1, "op": "cancel", "id": tid}))
        except Exception:
            logger.exception("could not take back task %s after a failed fsync", tid)

    async def _asubmit(self, task: Task, args: tuple, kwargs: dict, count_down: Any, eta: Any,
                       task_id: Any, options_checked: bool) -> TaskHandle:
        """adelay(): the append happens here; an fsync="always" commit waits in a thread."""
        if not self._always:
            return self._submit(task, args, kwargs, count_down, eta, task_id, options_checked)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(
            self._submit, task, args, kwargs, count_down, eta, task_id, options_checked))

    # -- reading others' records ------------------------------------------------------------

    def _deliver(self, text: str, lineno: int, raws: dict | None) -> None:
        """Owner, called by the store holding its lock: apply the lines others appended."""
        with self._lock:
            self._table.read(text, lineno, self._skip_bad, raws)
            self._finishes += 1
            self._idle.notify_all()
        self._wake_waiters()

    def _skip_bad(self, lineno: int, reason: str, raw: bytes, last: bool) -> None:
        logger.warning("journal %s line %d: skipped a line this owner cannot read (%s): %s; "
                       "`python -m wheelq check` lists the bad lines", self._name, lineno,
                       _printable(reason), _printable(repr(raw[:120])))

    def _view(self) -> _Table:
        """The table, brought up to date for a producer (read without the store's lock)."""
        table = self._table or self._open()
        if self._role is not _PRODUCER or self._state == "closed":
            return table
        store = self._store

        def refuse(lineno: int, reason: str, raw: bytes, last: bool) -> None:
            raise JournalCorrupt(self._name, lineno, _bad_line(reason, raw))

        with self._view_lock:
            self._viewed = True
            reset, text, lineno, raws = store.view()
            if reset:
                self._table = table = _Table()
            if text:
                try:
                    with self._lock:
                        table.read(text, lineno, refuse, raws)
                except JournalCorrupt:
                    store.view_reset()  # read it all again next time
                    self._table = _Table()
                    raise
        return self._table

    def _view_of(self, tid: str) -> _Table:
        """A table that holds all the journal says of task ``tid``.

        The owner's table, or a producer's view once it has one; else (a
        gunicorn worker's ``get()``, ``status()``, ``cancel()`` or
        ``result()``) a table of only the lines that name the task, which
        the store finds without parsing the rest.  A schedule's run also
        needs its schedule's lines (a pause cancels the run that waits).
        """
        table = self._table or self._open()
        if self._role is not _PRODUCER or self._state == "closed" or self._viewed:
            return self._view()
        needles = (_json_str(tid).encode("utf-8"),)
        found = self._store.lines_naming(needles)
        if found is None:
            return self._view()
        table = self._lines_table(found)
        rec = table.tasks.get(tid)
        if rec is not None and rec.sched is not None:
            needles += (b'"sched":' + _json_str(rec.sched[0]).encode("utf-8"),)
            table = self._lines_table(self._store.lines_naming(needles))
        return table

    def _lines_table(self, found: list) -> _Table:
        table = _Table()

        def refuse(lineno: int, reason: str, raw: bytes, last: bool) -> None:
            raise JournalCorrupt(self._name, lineno, _bad_line(reason, raw))

        for lineno, line in found:
            text, raws = _decode(line)
            table.read(text, lineno - 1, refuse, raws)
        return table

    # -- inspecting --------------------------------------------------------------------------

    @property
    def is_owner(self) -> bool:
        """True while this wheel holds the owner lock (or, in memory, while started)."""
        return self._state in ("running", "stopping") and self._role in (_OWNER, _MEMORY)

    def get(self, task_id: str) -> TaskInfo | None:
        """The task with this id (a finished one while its result is kept), or None."""
        table = self._view_of(task_id)
        with self._lock:
            rec = table.tasks.get(task_id)
            if rec is not None:
                return _info(rec, table.state(rec))
            kept = table.result(task_id, self._now())
            return None if kept is None else _info(kept[0], DONE, kept[1])

    def pending(self, name: str | None = None) -> list[TaskInfo]:
        """Tasks not yet finished (pending, queued or running), sorted by due time.

        ``name`` is a task name or a shell-style pattern (``"shop.*"``).
        """
        match = _name_matcher(name)
        table = self._view()
        with self._lock:
            recs = [r for r in table.tasks.values() if r.id not in table.failed and match(r.name)]
            return [_info(r, table.state(r)) for r in sorted(recs, key=_by_due)]

    def failed(self) -> list[TaskInfo]:
        """The dead letters, sorted by due time."""
        table = self._view()
        with self._lock:
            failed = table.failed
            recs = [r for r in table.tasks.values() if r.id in failed]  # in the order of their adds
            return [_info(r, FAILED) for r in sorted(recs, key=_by_due)]

    def stats(self) -> dict:
        """Current pending/queued/running counts, and events since this Wheel was built."""
        table = self._view()
        with self._lock:
            return table.counts()

    def _status(self, tid: str) -> str:
        table = self._view_of(tid)
        with self._lock:
            return table.status(tid)

    # -- changing tasks -----------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not started; True if it was cancelled."""
        return self._change("cancel", task_id, {}, (PENDING, QUEUED))

    def reschedule(self, task_id: str, *, count_down: float | timedelta | None = None,
                   eta: datetime | float | None = None) -> bool:
        """Move a pending task to a new due time; True if it moved."""
        if (count_down is None) == (eta is None):
            raise TypeError("reschedule() takes count_down or eta (one of them)")
        return self._change("reschedule", task_id, {"due": self._due(count_down, eta)}, (PENDING,))

    def requeue(self, task_id: str, count_down: float | timedelta = 0) -> TaskHandle:
        """Give a dead letter a fresh start ``count_down`` seconds from now."""
        due = self._now() + _check_seconds("count_down", count_down)
        if not self._change("requeue", task_id, {"due": due}, (FAILED,)):
            raise UnknownTask("no dead letter with id %r; wheel.failed() lists them" % (task_id,))
        return TaskHandle(self, task_id)

    def purge(self, task_id: str) -> bool:
        """Delete a dead letter for good; True if there was one."""
        return self._change("purge", task_id, {}, (FAILED,))

    def _change(self, op: str, tid: str, fields: dict, allowed: tuple) -> bool:
        """Journal ``op`` for task ``tid`` if its state is one of ``allowed``, and apply it.

        The owner decides under the store's lock, after the lines others
        appended are in, and holds a pending task out of the ring while its
        line is written, so the timer cannot start it meanwhile.
        """
        if tid.__class__ is not str:
            raise TypeError("a task id is a str, not %s" % type(tid).__name__)
        table = self._view_of(tid)
        store = self._store
        if self._role is _PRODUCER:
            with self._lock:
                rec = table.tasks.get(tid)
                if rec is None or table.state(rec) not in allowed:
                    return False
            with store.lock:
                if self._state == "closed":
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to change tasks")
                seq = store.append(_line(dict({"p": 1, "op": op, "id": tid}, **fields)))
            if self._always:
                store.commit(seq)
            return True
        held: list = []

        def build() -> bytes:
            with self._lock:
                rec = table.tasks.get(tid)
                if rec is None or table.state(rec) not in allowed:
                    return b""
                if table.hold(rec):
                    held.append(rec)
                held.append(True)
            return _line(dict({"op": op, "id": tid}, **fields))

        with store.lock:
            if self._state == "closed" or (self._state == "stopping" and op != "cancel"):
                raise WheelClosed("this Wheel was stopped; build a new Wheel to change tasks")
            try:
                seq = store.append(b"", build)
            except BaseException:
                with self._lock:
                    for rec in held[:-1]:
                        table.release(rec)
                raise
            if not held:
                return False
            with self._lock:
                getattr(table, op)(tid, **fields)
                for rec in held[:-1]:
                    table.release(rec)
                self._idle.notify_all()
        if self._always and self._role is _OWNER:
            store.commit(seq)
        return True

    # -- schedules ------------------------------------------------------------------------

    def schedules(self) -> list[ScheduleInfo]:
        """The schedules declared here: spec, next and last run, pause."""
        table = self._view()
        out = []
        with self._lock:
            for name, (spec, _, _) in sorted(self._schedules.items()):
                cur = table.cursors.get(name)
                run = table.tasks.get(cur.run) if cur is not None and cur.run else None
                out.append(ScheduleInfo(name, spec.spec, spec.tz,
                                        run.due if run is not None and run.id not in table.failed else None,
                                        cur.last if cur is not None else None,
                                        bool(cur is not None and cur.paused), spec.misfire))
        return out

    def pause_schedule(self, name: str) -> bool:
        """Stop a schedule making runs (its run that has not started is cancelled); False if paused."""
        return self._switch(name, True)

    def resume_schedule(self, name: str) -> bool:
        """Let a paused schedule run again from the next nominal time; False if it was not paused."""
        return self._switch(name, False)

    def _switch(self, name: str, pause: bool) -> bool:
        """Journal a pause or a resume (with the next run) of schedule ``name``, and apply it."""
        table = self._view()
        with self._lock:
            cur = table.cursors.get(name)
            entry = self._schedules.get(name)
            if entry is None and cur is None:
                raise UnknownTask("no schedule named %r is declared in this process or known to the "
                                  "journal; schedules() lists those declared here" % (name,))
            spec = entry[0] if entry is not None else _schedule_of(name, cur)
        now = self._now()
        producer = self._role is _PRODUCER

        def records() -> list:
            with self._lock:
                cur = table.cursors.get(name)
                if bool(cur is not None and cur.paused) == pause:
                    return []
                if pause:
                    return [{"op": "pause", "sched": name, "spec": spec.spec, "tz": spec.tz}]
                args, kwargs = (entry[1], entry[2]) if entry is not None else ((), {})
                nominal = spec.after(now, cur.cursor if cur is not None else None)
                return [{"op": "resume", "sched": name},
                        self._run_record(spec, args, kwargs, nominal)]

        return self._journal_records(records, producer)

    def _journal_records(self, records: Callable[[], list], producer: bool) -> bool:
        """Write the records ``records()`` gives (after others' lines are in) and apply them.

        A producer marks them and leaves their applying to the owner (and to
        its own view, which reads them back).  False if there were none.
        """
        table, store = self._table, self._store
        made: list = []

        def build() -> bytes:
            made.extend(records())
            return b"".join(_line(dict(r, p=1) if producer else r) for r in made)

        with store.lock:
            if self._state == "closed":
                raise WheelClosed("this Wheel was stopped; build a new Wheel to change it")
            seq = store.append(b"", build)
            if made and not producer:
                with self._lock:
                    for record in made:
                        table.apply(record)
                    self._idle.notify_all()
        if made and self._always and self._role is not _MEMORY:
            store.commit(seq)
        return bool(made)

    def _owns(self) -> bool:
        """Whether this wheel makes schedules' runs: the owner, or a wheel in memory."""
        return self._state != "closed" and self._role in (_OWNER, _MEMORY)

    def _plan(self, names: Iterable, now: float) -> None:
        """Owner: journal the next run of each of these schedules that has none.

        A schedule whose run in the journal was made under another spec (its
        cron, every or zone changed in the code) gets that run cancelled and
        a new one from the cursor, under the new spec.
        """
        names = list(names)

        def records() -> list:
            out = []
            table = self._table
            with self._lock:
                for name in names:
                    entry = self._schedules.get(name)
                    if entry is None:
                        continue
                    spec, args, kwargs = entry
                    cur = table.cursors.get(name)
                    if cur is not None and cur.paused:
                        continue
                    run = table.tasks.get(cur.run) if cur is not None and cur.run else None
                    if run is not None:
                        if run.sched[1:] == (spec.spec, spec.tz) or table.state(run) not in (PENDING, QUEUED):
                            continue
                        logger.info("schedule %s: its run %s was made under %r (%s), and the code now "
                                    "says %r (%s): replaced", name, run.id, run.sched[1], run.sched[2],
                                    spec.spec, spec.tz)
                        out.append({"op": "cancel", "id": run.id})
                    nominal, note = spec.next_run(cur.cursor if cur is not None else None, now)
                    if note:
                        (logger.warning if "more than" in note else logger.info)(
                            "schedule %s: %s", name, note)
                    out.append(self._run_record(spec, args, kwargs, nominal))
            return out

        self._journal_records(records, False)

    @staticmethod
    def _run_record(spec: _Schedule, args: tuple, kwargs: dict, nominal: float) -> dict:
        """The add record of a schedule's run at ``nominal`` (its due time jittered)."""
        due = nominal + random.uniform(0.0, spec.jitter) if spec.jitter else nominal
        return {"op": "add", "id": "%s@%s" % (spec.name, _iso_utc(nominal)), "task": spec.name,
                "due": due, "args": list(args), "kwargs": kwargs, "sched": spec.name,
                "spec": spec.spec, "tz": spec.tz}

    def _next_record(self, rec: _Rec, now: float) -> dict | None:
        """The run that follows the run ``rec`` of a schedule declared here, as it ends."""
        sched = rec.sched
        entry = self._schedules.get(sched[0]) if sched is not None else None
        if entry is None:
            return None
        spec, args, kwargs = entry
        with self._lock:
            cur = self._table.cursors.get(sched[0])
            if cur is not None and (cur.paused or cur.run not in (None, rec.id)):
                return None
            cursor = cur.cursor if cur is not None else None
        nominal = _nominal(rec.id)
        if cursor is None or (nominal is not None and nominal > cursor):
            cursor = nominal
        nominal, note = spec.next_run(cursor, now)
        if note:
            (logger.warning if "more than" in note else logger.info)("schedule %s: %s", spec.name, note)
        return self._run_record(spec, args, kwargs, nominal)

    # -- results --------------------------------------------------------------------------

    def _result_now(self, tid: str) -> tuple:
        """``(True, value)`` if there is a result now, ``(False, None)`` to wait; or raise."""
        table = self._view_of(tid)
        with self._lock:
            rec = table.tasks.get(tid)
            if rec is not None:  # a live task of this id wins over an older result
                if tid in table.failed:
                    raise TaskFailed(tid, rec.error, rec.tries)
                task = self._registry.get(rec.name)
                if task is not None and not task.result_ttl:
                    raise ResultUnavailable("results of task %s are not kept: register it with "
                                            "result_ttl=SECONDS to keep them" % rec.name)
                return False, None
            kept = table.results.get(tid)
            if kept is not None:
                rec, value, expires, error = kept
                if expires <= self._now():
                    raise ResultUnavailable("the result of task %s expired at %s (result_ttl of "
                                            "%s); keep results longer with result_ttl=..."
                                            % (tid, _iso_utc(expires), rec.name))
                if error is not None:
                    raise ResultUnavailable("task %s returned a value that is not JSON, so it was "
                                            "not kept (%s); return JSON values" % (tid, error))
                return True, value
            final = table.finished.get(tid)
            expired = table.expired.get(tid)
        if final == CANCELLED:
            raise ResultUnavailable("task %s was cancelled (or purged): it has no result" % tid)
        if final == DONE and expired is not None:
            raise ResultUnavailable("the result of task %s expired at %s; keep results longer "
                                    "with result_ttl=..." % (tid, _iso_utc(expired)))
        if final == DONE:
            raise ResultUnavailable("task %s is done, but the results of its task are not kept: "
                                    "register it with result_ttl=SECONDS to keep them" % tid)
        raise ResultUnavailable("no task with id %r is known here: it never existed, or finished "
                                "long ago" % tid)

    def _look(self, tid: str, deadline: float | None, timeout: float | None) -> tuple:
        """A result() call's look: ``(True, value)``, or ``(False, seconds to wait)``.

        The owner is woken the moment a task finishes; a producer reads the
        journal again at least once a tick.
        """
        ready, value = self._result_now(tid)
        if ready:
            return True, value
        left = None if deadline is None else deadline - _monotonic()
        if left is not None and left <= 0:
            raise TimeoutError("task %s has not finished within %ss" % (tid, _number(timeout)))
        return False, self._tick if left is None else min(self._tick, left)

    def _result(self, tid: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else _monotonic() + _check_seconds("timeout", timeout)
        while True:
            seen = self._finishes
            ready, got = self._look(tid, deadline, timeout)
            if ready:
                return got
            if self._role is _PRODUCER:
                self._closed.wait(got)
            else:
                with self._idle:  # notified as tasks finish
                    if self._finishes == seen:
                        self._idle.wait(got)

    async def _aresult(self, tid: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else _monotonic() + _check_seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        while True:
            woken = loop.create_future()  # settled by _wake_waiters, as tasks finish
            if self._role is not _PRODUCER:
                with self._lock:  # first: a task that finishes while we look wakes us
                    self._waiters.append((loop, woken))
            try:
                ready, got = self._look(tid, deadline, timeout)
            except BaseException:
                self._unwait(loop, woken)
                raise
            if ready:
                self._unwait(loop, woken)
                return got
            if self._role is _PRODUCER:
                await asyncio.sleep(got)
                continue
            try:
                await asyncio.wait_for(woken, got)
            except asyncio.TimeoutError:
                pass
            finally:
                self._unwait(loop, woken)

    def _unwait(self, loop: Any, woken: Any) -> None:
        with self._lock:
            if (loop, woken) in self._waiters:
                self._waiters.remove((loop, woken))

    def _wake_waiters(self) -> None:
        """A task finished: wake the aresult() calls (each re-checks its own task)."""
        if not self._waiters:
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_settle, fut)
            except RuntimeError:  # that loop is closed
                pass

    # -- running ------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Process every tick up to ``now``; return how many tasks were dispatched.

        This is the whole step: take in what other processes appended, expire
        results, dispatch the due tasks, sync the journal (fsync="batch") and
        compact it when it is due; everything that depends on the time uses
        ``now``.  On a wheel that was never started (in memory), the due tasks
        run in this thread, and a task added with neither count_down nor eta
        runs at the next tick() without the clock moving.
        """
        table = self._table or self._open()
        eager = self._state == "new"
        if eager and self._role is not _MEMORY:
            raise WheelqError("tick() runs tasks, which only the owner of %s does: call start() "
                              "first (a Wheel(path) that is not started only adds tasks)" % self._name)
        now = self._now() if now is None else float(now)
        with self._tick_lock:
            owner = self._role is _OWNER
            store = self._store
            k = self._tick_floor(now)
            if owner:
                with store.lock:  # (a compaction swaps the file under this lock)
                    lost = store.check()
                    if lost is None:
                        self._rewind(k)  # first: what others added is placed by the new time
                        store.tail()
                if lost is not None:
                    self._detach(lost)
                    return 0
            else:
                self._rewind(k)
            if self._table.unplanned:
                with self._lock:
                    unplanned, self._table.unplanned = self._table.unplanned, set()
                self._plan(unplanned, now)
            with self._lock:
                table = self._table
                table.expire(now)
                due = table.due(k)
                if eager:
                    due += table.due_early(k + 1, now)
                self._idle.notify_all()
            if owner and (self._fsync == "batch" or self._sync_soon.is_set()):
                self._sync_soon.clear()
                try:
                    store.sync()
                except OSError as exc:
                    logger.error("%s; the next tick tries again", _error_text(exc))
            if due:
                if eager:
                    self._execute(due, now)
                else:
                    self._dispatch(due)
            if owner:
                self._maybe_compact(now)
            return len(due)

    def _rewind(self, k: int) -> None:
        """If the clock went back past the last tick processed, go on from tick ``k``."""
        with self._lock:
            ring = self._table.ring
            if k < ring.last:
                tick_of = self._tick_ceil
                ring.rewind(k, lambda rec: tick_of(rec.due))

    def _dispatch(self, due: list) -> None:
        """Hand due tasks to the runners in batches; a task a crash cut short runs alone."""
        stopping = self._stopping
        alone = [r for r in due if r.body.__class__ is _Extra and r.body.crashes is not None] \
            if any(r.body.__class__ is _Extra for r in due) else ()
        if alone:
            # Nothing else runs beside such a task, so that if the process dies
            # again the journal shows which task it was running.
            due = [r for r in due if r.body.__class__ is not _Extra or r.body.crashes is None]
            for i, rec in enumerate(alone):
                if not self._wait_idle() or not self._runner_for(rec).submit([rec], stopping):
                    self._unqueue(alone[i:] + due)
                    return
            if not self._wait_idle():
                self._unqueue(due)
                return
        asyncs = {n for n, t in self._registry.items() if t.is_async}
        if asyncs:
            threads, loop = [], []
            for rec in due:
                (loop if rec.name in asyncs else threads).append(rec)
        else:
            threads, loop = due, []
        for recs, runner in ((loop, self._loop_runner), (threads, lambda: self._pool)):
            if not recs:
                continue
            n = len(recs)
            size = max(1, min(_MAX_BATCH, -(-n // self._workers)))
            target = runner()
            for i in range(0, n, size):
                if not target.submit(recs[i:i + size], stopping):
                    self._unqueue(recs[i:])
                    break

    def _runner_for(self, rec: _Rec) -> Any:
        task = self._registry.get(rec.name)
        return self._loop_runner() if task is not None and task.is_async else self._pool

    def _loop_runner(self) -> _Loop:
        """The event loop runner, started the first time an async task comes due."""
        if self._loop is None:
            loop = _Loop(self._async_workers, self._begin, self._report, self._unstart)
            loop.start()
            self._loop = loop
        return self._loop

    def _wait_idle(self) -> bool:
        """Wait in short steps until no task runs or waits in a runner; False if stopping."""
        with self._idle:
            while not self._stopping.is_set():
                if not self._table.running and self._pool.idle() and \
                        (self._loop is None or self._loop.idle()):
                    return True
                self._idle.wait(0.05)
        return False

    def _unqueue(self, recs: list) -> None:
        with self._lock:
            self._table.unqueue(recs)
            self._idle.notify_all()

    def _begin(self, batch: list) -> list:
        """Journal that the batch starts; return ``(rec, task)`` of those still queued."""
        table, store = self._table, self._store
        ids: list = []

        def build() -> bytes:
            with self._lock:
                queued = table.queued
                ids.extend(r.id for r in batch if queued.get(r.id) is r)
            return _line({"op": "start", "ids": ids}) if ids and store.durable else b""

        with store.lock:
            try:
                store.append(b"", build)
            except Exception:
                if store.check() is not None:  # the owner lease is lost: another owner runs them
                    ids.clear()
                else:
                    logger.exception("could not journal the start of %d task(s); they run all the "
                                     "same", len(ids))
            with self._lock:
                began = table.start(ids)
                self._idle.notify_all()
        registry = self._registry
        return [(rec, registry.get(rec.name)) for rec in began]

    def _execute(self, batch: list, now: float | None = None) -> None:
        """Run a batch: in a worker thread, or in this thread in eager mode (``now`` given)."""
        if now is not None and _in_running_loop():
            registry = self._registry
            if any(getattr(registry.get(r.name), "is_async", False) for r in batch):
                # Refuse before anything starts: the batch stays pending, none of it runs.
                self._unqueue(batch)
                raise RuntimeError(_EAGER_IN_LOOP)
        pairs = self._begin(batch)
        timed = logger.isEnabledFor(logging.DEBUG)
        outcomes = []
        pooled = now is None
        stopping = self._stopping
        later = []
        for i, (rec, task) in enumerate(pairs):
            if pooled and stopping.is_set():
                self._unstart([r for r, _ in pairs[i:]])
                break
            if task is not None and task.is_async:
                later.append((rec, task))  # eager mode only: the loop runner takes them otherwise
                continue
            outcomes.append(_run_task(rec, task, timed))
        if later:
            outcomes += _run_eagerly(later, self._async_workers)
        if outcomes:
            self._report(outcomes, now)

    def _recover(self, batch: list) -> None:
        """A batch whose run or report failed inside wheelq: its unfinished tasks are pending again."""
        with self._lock:
            table = self._table
            stuck = [r for r in batch if table.running.get(r.id) is r]
            table.unqueue([r for r in batch if table.queued.get(r.id) is r])
        if stuck:
            self._unstart(stuck)

    def _unstart(self, recs: list) -> None:
        """Tasks journaled as started that will not run now (the wheel stops): pending again.

        Journaled as a retry that changes nothing, so a replay finds them pending.
        """
        lines = []
        for r in recs:
            retry = {"op": "retry", "id": r.id, "due": r.due, "tries": r.tries, "error": r.error}
            if r.crashes is not None:
                retry["crashes"] = r.crashes
            lines.append(_line(retry))
        store = self._store
        with store.lock:
            try:
                store.append(b"".join(lines))
            except Exception:
                logger.exception("could not journal that %d task(s) did not start", len(recs))
            with self._lock:
                self._table.back(recs)
                self._idle.notify_all()

    def _report(self, outcomes: list, now: float | None = None) -> None:
        """Journal how the tasks of ``outcomes`` ended, in one write, and apply it."""
        now = self._now() if now is None else now
        lines, changes = [], []
        for o in outcomes:
            if o.__class__ is _Rec:  # returned None, nothing to keep (see _Outcome)
                lines.append(_done_line(o.id))
                changes.append(o.id)
                if o.body.__class__ is _Extra and o.body.sched is not None:
                    self._then(o, now, lines, changes)
                continue
            rec, task = o.rec, o.task
            if o.error is None:
                ttl = task.result_ttl if task is not None else 0
                if ttl:
                    record = {"op": "done", "id": rec.id, "result": o.value, "expires": now + ttl}
                    try:
                        line = _line(record)
                        if o.value.__class__ not in _JSON_ATOMS:
                            # The value as JSON gives it back, as a producer and a restart read
                            # it: a tuple is a list, a dict's keys are strings, no alias remains.
                            record["result"] = json.loads(line)["result"]
                    except TypeError as exc:
                        logger.warning("task %s [%s] returned a value that is not JSON, so its result "
                                       "is not kept: %s", task.name, _printable(rec.id), exc)
                        record = {"op": "done", "id": rec.id, "expires": now + ttl,
                                  "error": "%s" % exc}
                        line = _line(record)
                    lines.append(line)
                    changes.append(("done", {k: v for k, v in record.items() if k != "op"}))
                else:
                    lines.append(_done_line(rec.id))
                    changes.append(rec.id)
                if o.seconds is not None:
                    logger.debug("task %s [%s] done in %.3fs", rec.name, _printable(rec.id), o.seconds)
                self._then(rec, now, lines, changes)
                continue
            tries = rec.tries + 1
            of = (task.retries + 1) if task is not None else 1
            if task is not None and tries <= task.retries:
                wait = task._retry_wait(tries)
                record = {"op": "retry", "id": rec.id, "due": now + wait, "tries": tries,
                          "error": o.error}
                logger.warning("task %s [%s] failed (try %d of %d): %s; retrying in %ss", rec.name,
                               _printable(rec.id), tries, of, _printable(o.error), _number(wait))
            else:
                record = {"op": "fail", "id": rec.id, "tries": tries, "error": o.error}
                exc = o.exc
                logger.error("task %s [%s] failed (try %d of %d): %s; it is now a dead letter",
                             _printable(rec.name), _printable(rec.id), tries, of, _printable(o.error),
                             exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)
            lines.append(_line(dict(record)))
            op = record.pop("op")
            changes.append((op, record))
            if op == "fail":
                self._then(rec, now, lines, changes)
        store = self._store
        seq = 0
        with store.lock:
            try:
                seq = store.append(b"".join(lines))
            except Exception:
                logger.exception("could not journal the outcome of %d task(s); they run again after "
                                 "a restart", len(lines))
            with self._lock:
                table = self._table
                self._finishes += 1
                done = table.done
                for change in changes:
                    if change.__class__ is str:  # a plain done
                        done(change)
                    elif change.__class__ is dict:  # a schedule's next run
                        table.apply(change)
                    else:
                        op, fields = change
                        getattr(table, op)(**fields)
                self._idle.notify_all()
        self._wake_waiters()
        if seq and self._always and self._role is _OWNER:
            if self._loop is not None and threading.current_thread() is self._loop.thread:
                self._sync_soon.set()  # the event loop never waits for the disk: the timer syncs
                self._wakeup.set()
            else:
                try:
                    store.commit(seq)
                except OSError:
                    logger.exception("fsync of finished tasks failed")

    def _then(self, rec: _Rec, now: float, lines: list, changes: list) -> None:
        """A run of a schedule ends: its next run goes in the same write (after the outcome)."""
        record = self._next_record(rec, now)
        if record is not None:
            lines.append(_line(record))
            changes.append(record)

    def join(self, timeout: float | None = None) -> bool:
        """True once every task due by now has finished, failed or been rescheduled for a retry."""
        if self._state == "new":
            if self._role is _MEMORY or (self._role is None and self._path is None):
                self.tick()
            return True
        if self._state == "closed" or self._table is None:
            return True

        def idle() -> bool:
            table = self._table
            return (not table.queued and not table.running and table.ring is not None
                    and table.ring.last >= self._tick_floor(self._now()))

        with self._idle:
            return self._idle.wait_for(idle, timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, standby: bool = False) -> Wheel:
        """Become the owner and start the timer and workers.

        With ``standby=True`` return at once; a background thread waits for
        the owner lock and takes over when the current owner exits or dies.
        """
        with self._lock:
            if self._state != "new":
                if self._state in ("stopping", "closed"):
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to start again")
                raise WheelqError("this Wheel is already started")
            self._state = "standby" if standby else "running"
        try:
            self._open()
        except BaseException:
            with self._lock:
                self._state = "new"
            raise
        if self._role is _MEMORY:
            self._launch()
            return self
        if standby:
            t = threading.Thread(target=self._standby, name="wheelq-standby", daemon=True)
            self._threads.append(t)
            t.start()
            return self
        try:
            self._store.acquire(False)
            self._become_owner()
        except BaseException:
            with self._lock:
                self._state = "new"
                self._role = _PRODUCER
            self._store.release()
            raise
        self._launch()
        return self

    def _become_owner(self, quiet: bool = False) -> None:
        """Replay the journal (cutting a torn tail) and hold the state here.

        ``quiet``: the command line, which owns the journal for a moment and
        runs nothing, so tasks it has no code for are no news.
        """
        store = self._store
        table = _Table()

        ends = [True]

        def refuse(lineno: int, reason: str, raw: bytes, last: bool) -> None:
            if last and ends[0] and reason.startswith("unreadable"):
                raise _Torn(lineno)  # the last line, cut short by a crash
            raise JournalCorrupt(self._name, lineno, _bad_line(reason, raw))

        def read(text: str, lineno: int, raws: dict | None, complete: bool) -> None:
            ends[0] = complete
            table.read(text, lineno, refuse, raws)

        with store.lock, self._lock, _gc_paused():
            store.load(read)
            table.ring = _Ring(self._nslots, self._tick_floor(self._now()) - 1)
            table.tick_of = self._tick_ceil
            table.ring.fill(table.unplaced(), self._tick_ceil)
            table.counting = True
            self._table = table
            self._role = _OWNER
            store.deliver = self._deliver
        self._settle_interrupted()
        if self._schedules:
            self._plan(list(self._schedules), self._now())
        with self._lock:
            counts = table.counts()
            names = collections.Counter(map(_name_of, table.tasks.values()))  # (at C speed)
        unknown = {name: n for name, n in names.items() if name not in self._registry}
        if quiet:
            return
        logger.info("journal %s: owner (pid %d), %d pending, %d dead letters", self._name,
                    os.getpid(), counts["pending"], len(table.failed))
        if unknown:
            logger.warning("journal %s holds tasks whose names no task of this process has: %s; "
                           "register them (with the same name=) before they come due, or they "
                           "become dead letters", self._name,
                           ", ".join("%s (%d)" % (_printable(n), c) for n, c in sorted(unknown.items())))

    def _settle_interrupted(self) -> None:
        """Tasks the journal shows running: the process running them died.

        Each is pending again and runs alone next time.  If it was the only
        task running when the process died, that counts against it, and a
        task that killed the process that way ``max(retries + 1, 3)`` times
        becomes a dead letter: a poison task no longer stops everything due
        after it.
        """
        table = self._table
        interrupted = list(table.running.values())
        if not interrupted:
            return
        alone = len(interrupted) == 1
        lines, changes = [], []
        for rec in interrupted:
            crashes = (rec.crashes or 0) + (1 if alone else 0)
            task = self._registry.get(rec.name)
            limit = max((task.retries if task is not None else 0) + 1, 3)
            if crashes >= limit:
                record = {"op": "fail", "id": rec.id, "tries": rec.tries,
                          "error": "the process died while running it %d times" % crashes,
                          "crashes": crashes}
                logger.error("task %s [%s]: the process died while running it %d times; it is now "
                             "a dead letter", _printable(rec.name), _printable(rec.id), crashes)
            else:
                record = {"op": "retry", "id": rec.id, "due": rec.due, "tries": rec.tries,
                          "error": rec.error, "crashes": crashes}
            lines.append(_line(record))
            changes.append(record)
        logger.warning("journal %s: %d task(s) were running when the last owner died; they run "
                       "again, each alone", self._name, len(interrupted))
        store = self._store
        with store.lock:
            store.append(b"".join(lines))
            with self._lock:
                for record in changes:
                    fields = dict(record)
                    getattr(table, fields.pop("op"))(**fields)

    def _standby(self) -> None:
        interval = min(self._tick / 4, 0.25)
        backoff = 0.0
        try:
            while not self._stopping.is_set():
                try:
                    if self._store.acquire(True):
                        break
                    backoff = 0.0
                except OSError as exc:
                    if exc.errno not in _TRANSIENT:
                        raise
                    backoff = min(30.0, max(interval, backoff * 2))
                    logger.warning("standby for %s: %s; trying again in %.1fs", self._name,
                                   _error_text(exc), backoff)
                self._stopping.wait(backoff or interval)
            else:
                return
            with self._lock:
                if self._state != "standby":
                    self._store.release()
                    return
                self._state = "running"
            self._become_owner()
            logger.info("journal %s: standby took over as owner", self._name)
            self._launch()
        except Exception:
            # Not left "running" with no timer: the wheel closes, and stop() returns at once.
            logger.exception("standby for %s failed to take over; this wheel is now closed", self._name)
            with self._lock:
                self._state = "stopping"
                self._stopping.set()
            self._close()

    def _launch(self) -> None:
        self._pool = _Threads(self._workers, self._queue_size, self._execute, self._recover)
        self._pool.start()
        if any(t.is_async for t in self._registry.values()):
            self._loop_runner()
        timer = threading.Thread(target=self._timer, name="wheelq-timer", daemon=True)
        self._threads.append(timer)
        timer.start()

    def _timer(self) -> None:
        """The timer thread: a loop around tick(), waking at least once a tick of real time."""
        clock, wakeup, stopping = self._clock, self._wakeup, self._stopping
        while not stopping.is_set():
            wakeup.clear()
            try:
                self.tick()
            except Exception:
                logger.exception("wheelq timer: a tick failed; trying again at the next tick")
            if stopping.is_set():
                return
            ahead = (self._table.ring.last + 1) * self._tick - self._now()
            clock.wait(wakeup, min(self._tick, max(0.0, ahead)))

    def _detach(self, why: str) -> None:
        """The store says this owner no longer owns what it names (``check()``): stop taking tasks."""
        if self._fault is None:
            self._fault = self._store.detached(why)
            logger.error("%s", self._fault)
            self._stopping.set()
            self._wakeup.set()

    def _maybe_compact(self, now: float) -> None:
        table = self._table
        live = len(table.tasks) + len(table.results)
        dead = self._store.records() - live
        if dead > _COMPACT_MIN and dead > live:
            try:
                self.compact()
            except OSError as exc:
                logger.error("%s", _error_text(exc))

    def compact(self) -> int:
        """Owner: rewrite the journal with only the live state; return its record count."""
        if self._role is not _OWNER:
            raise WheelqError("only the owner compacts %s: start() the wheel first" % self._name)
        store = self._store

        def snapshot(read: Callable) -> list:
            # Under the store's lock nothing changes a task but the timer's
            # dispatch, which does not change what a snapshot holds.
            with self._lock:
                return self._table.snapshot(self._now())

        with store.lock:
            count = store.rewrite(snapshot)
        logger.info("journal %s: compacted to %d records", self._name, count)
        return count

    def stop(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop the timer, let running tasks finish, and close the journal.

        Queued tasks that never started stay pending in the journal, and so do
        coroutines still running when ``timeout`` passes (they are cancelled).
        Returns True once fully stopped (False if ``timeout`` ran out first).
        """
        with self._lock:
            state = self._state
            if state in ("new", "standby", "running"):
                self._state = "stopping"
                self._stopping.set()
                self._wakeup.set()
                first = True
            else:
                first = False
        if first:
            if state == "new":
                self._close()
            else:
                deadline = None if timeout is None else _monotonic() + timeout
                threading.Thread(target=self._shutdown, args=(deadline,), name="wheelq-stopper",
                                 daemon=True).start()
        if not wait or threading.current_thread() in self._own_threads():
            return self._closed.is_set()  # a task or the timer cannot wait for itself
        return self._closed.wait(timeout)

    def _own_threads(self) -> list:
        out = list(self._threads)
        for runner in (self._pool, self._loop):
            if runner is not None:
                out += runner.threads
        return out

    def _shutdown(self, deadline: float | None) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        if self._pool is not None:
            self._unqueue(self._pool.drain())
        if self._loop is not None:
            # Cancel what still runs a little before the deadline, so that closing
            # the journal (the cancelled tasks journaled pending) fits in it too.
            self._loop.stop(None if deadline is None else deadline - min(0.1, (deadline - _monotonic()) / 10))
        if self._pool is not None:
            self._pool.stop(None)
        self._close()

    def _close(self) -> None:
        try:
            if self._store is not None:
                with self._store.lock:
                    self._store.close()
        except OSError:
            logger.exception("closing journal %s", self._name)
        finally:
            if self._store is not None:
                self._store.release()
            with self._lock:
                self._state = "closed"
                self._idle.notify_all()
            self._closed.set()
            _gc_debt[0] += 1
        self._wake_waiters()

    def _running_now(self) -> list:
        with self._lock:
            table = self._table
            return [] if table is None else list(table.running.values())

    def __enter__(self) -> Wheel:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Start (if needed) and run until SIGINT or SIGTERM, then stop gracefully.

        The first signal lets running tasks finish and says which they are; a
        second stops at once (those tasks run again after a restart).
        """
        self._serve()

    def _serve(self, standby: bool = False, started: Callable[[], None] | None = None) -> None:
        """``run_forever()``; the ``run`` command adds its ``start(standby=)`` and a note once started.

        The handlers are in place before ``start()``: no signal can fall
        between the first task and them, and be lost or kill the process.
        """
        signals: list = []
        woken = threading.Event()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, frame: Any) -> None:
                signals.append(signum)
                woken.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, on_signal)
        try:
            if self._state == "new":
                self.start(standby=standby)
            if started is not None:
                started()
            while not woken.wait(0.2) and not self._closed.is_set() and self._fault is None:
                pass
            if signals or self._fault is not None:
                # Any signal past the one that began the stop quits now, even one that
                # comes while the line below is being written.
                seen = 1 if signals else 0
                running = self._running_now()
                self.stop(wait=False)
                if running and signals:
                    logger.warning("stopping: waiting for %d running task(s) (%s); press Ctrl-C "
                                   "again to quit now", len(running),
                                   ", ".join("%s [%s]" % (_printable(r.name), _printable(r.id))
                                             for r in running[:10]))
                elif signals:
                    logger.info("stopping")
                while not self._closed.wait(0.2):
                    if len(signals) > seen:
                        running = self._running_now()
                        logger.warning("quitting now: %d task(s) still running (%s) run again after "
                                       "a restart", len(running),
                                       ", ".join("%s [%s]" % (_printable(r.name), _printable(r.id))
                                                 for r in running[:10]))
                        self._abandon()
                        break
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if not self._closed.is_set() and self._state != "closed":
                self.stop()

    def _abandon(self) -> None:
        """Stop without waiting for running tasks: let go of the journal now."""
        store = self._store
        if store is not None and store.lock.acquire(timeout=2.0):
            try:
                store.close()
            except OSError:
                logger.exception("closing journal %s", self._name)
            finally:
                store.lock.release()
        if store is not None:
            store.release()
        with self._lock:
            self._state = "closed"
            self._idle.notify_all()
        self._closed.set()

    # -- tests and forks -----------------------------------------------------------------

    @contextlib.contextmanager
    def testing(self, clock: ManualClock | None = None) -> Iterator[ManualClock]:
        """Until the block ends, keep everything in memory on ``clock`` and run tasks on ``tick()``.

        The journal is not touched; the wheel must not be started.  Yields the clock.
        """
        if self._state != "new":
            raise WheelqError("testing() needs a wheel that is not started (this one is %s)"
                              % self._state)
        clock = ManualClock() if clock is None else clock
        saved = (self._store, self._table, self._role, self._options)
        with self._open_lock:
            self._set(clock=clock)
            self._store, self._role = _MemoryStore(), _MEMORY
            self._table = _Table(_Ring(self._nslots, self._tick_floor(clock.time())), self._tick_ceil)
            self._table.counting = True
        try:
            yield clock
        finally:
            with self._open_lock:
                self._store, self._table, self._role = saved[0], saved[1], saved[2]
                self._set(**saved[3])
                if self._store is not None:
                    self._use_store_time(self._store)

    def _after_fork(self) -> None:
        """In a child process: fresh locks, no threads; a started owner's child is a producer."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._open_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._view_lock = threading.Lock()
        self._stopping, self._closed, self._wakeup = threading.Event(), threading.Event(), threading.Event()
        self._sync_soon = threading.Event()
        self._threads, self._pool, self._loop, self._waiters = [], None, None, []
        if self._store is not None:
            self._store.after_fork()
        if self._role is _OWNER:
            self._role = _PRODUCER
            self._table = _Table()
        if self._state in ("standby", "running", "stopping"):
            self._state = "new"
        if self._state == "closed":
            self._closed.set()


def _schedule_of(name: str, cur: _Cursor) -> _Schedule:
    """A schedule known from the journal alone (its latest run's or pause's spec and zone)."""
    if cur is None or cur.spec is None:
        raise UnknownTask("schedule %r has no spec in the journal (no run of it is left); resume it "
                          "from a process that declares it" % (name,))
    every = cur.spec[6:] if cur.spec.startswith("every ") else None
    spec = _Schedule(name, None if every else cur.spec, float(every) if every else None,
                     cur.tz or "UTC", "coalesce", 0)
    return spec


def _bad_line(reason: str, raw: bytes) -> str:
    """A reader's reason, with the bytes of a line that is not JSON at all."""
    return "%s: %.60r" % (reason, raw) if reason.startswith("unreadable") else reason


def _settle(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


def _name_matcher(name: str | None) -> Callable[[str], bool]:
    if name is None:
        return lambda n: True
    if not isinstance(name, str):
        raise TypeError("name must be a task name or a shell-style pattern, not %r" % (name,))
    if any(c in name for c in "*?["):
        return lambda n: fnmatch.fnmatchcase(n, name)
    return lambda n: n == name


def _after_fork_in_child() -> None:
    _new_id_prefix()
    for wheel in list(_WHEELS):
        wheel._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_gc_debt = [0]  # wheels closed in this process since a replay last collected garbage


@contextlib.contextmanager
def _gc_paused() -> Any:
    """Pause the cyclic garbage collector around a replay, turning it back on if it was on.

    A replay builds a few objects a line and keeps them all, so collecting
    meanwhile would walk the growing heap again and again and free nothing.
    After it, what it built goes to the oldest generation at once: left
    young, the first collection would walk every record, and walk them again
    as they aged.  When nothing is frozen, freeze then unfreeze does that as
    two list splices; when something is (the application froze it, or, on
    Python 3.12, the interpreter's own immortal tuples), unfreezing would
    thaw it too, so one young collection does it instead, walking the
    replay's objects once.  Either way what was frozen stays frozen and
    nothing else is, so a garbage cycle is still freed.  A collector the
    application turned off is left off and walks nothing.
    """
    import gc

    was = gc.isenabled()
    if was and _gc_debt[0]:
        # A paused collector does not count the replay's objects toward its next
        # collections, so the garbage of wheels stopped before (cycles, freed only by
        # a full collection) would wait ten replays or more: collect it now.  (A
        # process's first replay has none to free, and a full collection walks every
        # object the application made: skipped then.)
        _gc_debt[0] = 0
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count():
                gc.collect(1)
            else:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
#
# No command but `run` and `demo` ever starts a Wheel: starting one runs the
# due tasks, and a task whose name is not registered in this process would
# become a dead letter.  `status`, `list`, `schedules` and `check` read the
# file under a shared flock and change nothing.  `cancel`, `requeue`, `purge`,
# `reschedule`, `pause` and `resume` take the owner lock when no owner runs
# (replaying the journal as an owner would, with no threads), and otherwise
# append records as a producer, which the running owner takes in at its next
# tick.  `compact` and `repair` rewrite the file, so they refuse while an
# owner holds it.


class _CliError(WheelqError):
    """A command-line error; its message is the one line printed.  ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _demo(args: argparse.Namespace) -> int:
    """A small daemon: sample tasks with random delays, logged as they go."""
    import shutil
    import tempfile

    log = logging.getLogger("wheelq.demo")
    scratch = None if args.journal else tempfile.mkdtemp(prefix="wheelq-demo-")
    path = args.journal or os.path.join(scratch, "demo.json")
    try:
        wheel = Wheel(path, tick=args.tick)

        @wheel.task(name="demo.close_unpaid_order")
        def close_unpaid_order(order_id):
            log.info("running  close_unpaid_order(%s)", order_id)
            log.info("finished close_unpaid_order(%s): order closed", order_id)

        @wheel.task(name="demo.send_reminder", retries=2, retry_delay=args.tick)
        def send_reminder(user, attempt_fail=False):
            log.info("running  send_reminder(%r)", user)
            if attempt_fail and random.random() < 0.5:
                raise ConnectionError("reminder service did not answer (the demo fails on purpose)")
            log.info("finished send_reminder(%r)", user)
            handle = send_reminder.delay(user, count_down=random.uniform(1, args.max_delay))
            log.info("received %s: send_reminder(%r) again", handle.id, user)

        @wheel.periodic(name="demo.heartbeat", every=max(2.0, 8 * args.tick))
        def heartbeat():
            log.info("running  heartbeat (periodic): nominal time %s",
                     _iso_utc(current().due))

        log.info("demo journal: %s (inspect it with any text viewer, or `python -m wheelq "
                 "status %s`); Ctrl-C stops", path, path)
        wheel.start()
        for order_id in range(1, 4):
            cd = random.uniform(0.5, args.max_delay)
            h = close_unpaid_order.delay(order_id, count_down=cd)
            log.info("received %s: close_unpaid_order(%d) in %.1fs", h.id, order_id, cd)
        for user in ("ada", "lin"):
            cd = random.uniform(0.5, args.max_delay)
            h = send_reminder.delay(user, attempt_fail=True, count_down=cd)
            log.info("received %s: send_reminder(%r) in %.1fs", h.id, user, cd)
        wheel.run_forever()
        log.info("stopped cleanly; %s", wheel.stats())
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _import_target(target: str) -> Any:
    """The object ``MODULE:NAME`` names, or the wheel ``MODULE:factory()`` returns."""
    import importlib

    module_name, _, attr = target.partition(":")
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    if not module_name or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise _CliError("run takes MODULE:WHEEL or MODULE:FACTORY(), e.g. `wheelq run tasks:wheel` "
                        "for the Wheel named `wheel` in tasks.py, or `wheelq run 'app:create_app()'` "
                        "for a function that returns one, not %r" % target, code=2)
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _CliError("no module named %r in %s or on PYTHONPATH: run wheelq from the "
                            "directory that holds it, or set PYTHONPATH" % (module_name, here)) from None
        raise _CliError("importing %s failed: %s: %s (--log-level DEBUG shows the traceback)"
                        % (module_name, type(exc).__name__, exc)) from None
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise _CliError("importing %s raised %s: %s (--log-level DEBUG shows the traceback)"
                        % (module_name, type(exc).__name__, exc)) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _CliError("module %s has no attribute %r: give the name your Wheel (or the "
                            "function that returns it) is bound to" % (module_name, attr)) from None
    if call:
        if not callable(obj):
            raise _CliError("%s is not callable, so %s() cannot make the wheel" % (attr, attr))
        try:
            obj = obj()
        except Exception as exc:
            logger.debug("%s() failed", attr, exc_info=True)
            raise _CliError("%s() raised %s: %s (--log-level DEBUG shows the traceback)"
                            % (attr, type(exc).__name__, exc)) from None
        # An app factory may return its app, with the wheel as an attribute of it.
        if not _is_wheel(obj):
            for name in ("wheel", "wheelq"):
                found = getattr(obj, name, None) or getattr(getattr(obj, "extensions", None) or {},
                                                            "get", lambda n: None)(name)
                if _is_wheel(found):
                    obj = found
                    break
    if not _is_wheel(obj):
        what = "a class" if isinstance(obj, type) else "a %s" % type(obj).__name__
        raise _CliError("%s is %s, not a wheelq.Wheel: give the name your Wheel is bound to, or a "
                        "function that returns it" % (target, what))
    return obj


def _is_wheel(obj: Any) -> bool:
    # `python -m wheelq` runs this file as __main__, so the module's `import wheelq`
    # is a second copy of it: recognise a Wheel by what it does, not by its class.
    return not isinstance(obj, type) and callable(getattr(obj, "_serve", None)) \
        and callable(getattr(obj, "start", None))


def _run(args: argparse.Namespace) -> int:
    """Import the user's wheel and run it until SIGINT or SIGTERM."""
    wheel = _import_target(args.target)

    def started() -> None:
        logger.info("running %s (pid %d)%s; Ctrl-C or SIGTERM stops it", args.target, os.getpid(),
                    " as a standby, to take over when the owner exits" if args.standby else "")

    try:
        try:
            # start() under run_forever()'s signal handlers (the module may have started it)
            wheel._serve(standby=args.standby, started=started)
        except KeyboardInterrupt:  # Ctrl-C before run_forever() took over the signals
            wheel.stop()
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if "WheelqError" not in names:
            raise
        hint = "; `wheelq run --standby %s` waits and takes over" % args.target
        raise _CliError(str(exc) + (hint if "JournalLocked" in names and not args.standby else "")) from None
    fault = getattr(wheel, "_fault", None)
    if fault is not None:
        raise _CliError("stopped: %s" % fault)
    logger.info("%s stopped cleanly", args.target)
    return 0


# -- reading a journal without changing it ------------------------------------------


def _check_path(path: str) -> None:
    """Fail with one line unless ``path`` names an existing regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _CliError("no journal at %s: check the path (these commands never create a "
                        "journal; a Wheel creates it when it first opens it)" % path) from None
    except NotADirectoryError:
        raise _CliError("no journal at %s: a part of the path is not a directory" % path) from None
    if stat.S_ISDIR(st.st_mode):
        raise _CliError("%s is a directory: give the path of a journal file" % path)
    if not stat.S_ISREG(st.st_mode):
        raise _CliError("%s is not a regular file: give the path of a journal file" % path)


def _check_head(path: str, data: bytes) -> None:
    """Fail with one line unless ``data`` (the file's start) begins a wheelq journal."""
    if not data:
        raise _CliError('%s is empty, not a wheelq journal (a journal starts with the line '
                        '{"wheelq": 1}): check the path' % path)
    end = data.find(b"\n")
    if end < 0:
        if _HEADER.startswith(data):
            return  # a header torn as the file was created: a journal with no tasks
        head = data
    else:
        head = data[:end + 1]
    try:
        _check_header(head, path)
    except JournalCorrupt as exc:
        if "version" in exc.reason:
            raise _CliError("%s was %s" % (path, exc.reason)) from None
        raise _CliError('%s is not a wheelq journal: its first line is not {"wheelq": 1}; '
                        'check the path' % path) from None


def _open_readonly(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except PermissionError:
        raise _CliError("cannot read %s: permission denied; run as a user who may read it"
                        % path) from None
    except FileNotFoundError:
        raise _CliError("no journal at %s: it was removed just now" % path) from None


def _read_journal(path: str) -> bytes:
    """The whole journal at ``path``, read under a shared flock; nothing is modified."""
    _check_path(path)
    while True:
        fd = _open_readonly(path)
        try:
            # Every append and every rewrite holds LOCK_EX: this read sees neither half done.
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.fstat(fd).st_nlink == 0:
                continue  # compaction replaced the file while we waited: read the new one
            data = _read_all(fd)
        finally:
            os.close(fd)
        _check_head(path, data)
        return data


def _read_head(path: str) -> None:
    """Check that ``path`` is an existing journal, reading only its first line."""
    _check_path(path)
    fd = _open_readonly(path)
    try:
        data = os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    _check_head(path, data)


def _scan(path: str, data: bytes, stop: bool = False) -> tuple:
    """Read a journal as an owner would; return ``(table, line count, bad)``.

    ``bad`` lists ``(lineno, reason, raw bytes)`` of each line an owner could
    not apply, a torn last line included (line numbers count the header as
    1, as ``sed -n Np`` does).  With ``stop``, the first bad line that is not
    the last raises JournalCorrupt, as a replay would.
    """
    table = _Table()
    bad: list = []
    end = data.rfind(b"\n") + 1
    if end == 0:
        if data and not _HEADER.startswith(data):
            raise JournalCorrupt(path, 1, 'not a wheelq journal (no {"wheelq": 1} header)', _NOT_OURS)
        return table, (1 if data else 0), ([(1, "torn header (no newline: a write cut short by a "
                                                "crash)", data)] if data else [])
    head = data.index(b"\n") + 1

    def note(lineno: int, reason: str, raw: bytes, last: bool) -> None:
        if stop and not (last and reason.startswith("unreadable")):
            raise JournalCorrupt(path, lineno, reason)
        if last and reason.startswith("unreadable") and end == len(data):
            reason += " (the last line: an owner cuts it as torn when it opens the journal)"
        bad.append((lineno, reason, raw))

    text, raws = _decode(memoryview(data)[head:end])
    table.read(text, 1, note, raws)
    nlines = 1 + text.count("\n")
    if end < len(data):
        bad.append((nlines + 1, "torn last line (no newline: a write cut short by a crash; it was "
                    "never acknowledged)", data[end:]))
        nlines += 1
    return table, nlines, bad


def _load(path: str) -> _Table:
    """The state of the journal at ``path`` (or a queue's URL), as an owner would replay it."""
    if _is_url(path):  # read as a producer reads it: no lock, nothing changes
        wheel = Wheel(path)
        try:
            return wheel._view()
        finally:
            wheel.stop()
    return _scan(path, _read_journal(path), stop=True)[0]


def _files_only(path: str, verb: str) -> None:
    if _is_url(path):
        raise _CliError("%s is for journal files: a Redis stream holds whole entries, never a torn "
                        "or half-written line (an entry wheelq did not write is named, with the "
                        "XDEL that removes it, when an owner starts); `wheelq status %s` reads "
                        "the queue" % (verb, path), code=2)


# -- changing a journal ---------------------------------------------------------------


def _edit(path: str, change: Callable[[Wheel, Any], Any]) -> tuple:
    """Run ``change(wheel, owner_pid)`` on the journal and return ``(result, owner_pid)``.

    With no owner running, this process holds the owner lock meanwhile and
    ``owner_pid`` is None: the journal is replayed (a torn tail is cut, as an
    owner does) and no thread starts.  Otherwise ``wheel`` is a producer that
    appends records for the owner, whose pid (0 if unknown) is passed.
    """
    if not _is_url(path):
        _read_head(path)
    wheel = Wheel(path)
    try:
        wheel._open()
        try:
            wheel._store.acquire(False)
        except JournalLocked as exc:
            owner = exc.pid or 0
        else:
            owner = None
            wheel._become_owner(quiet=True)
        return change(wheel, owner), owner
    finally:
        wheel.stop()


def _hold_for_rewrite(wheel: Wheel, verb: str) -> None:
    """Take the owner lock for a command that rewrites the file, or refuse."""
    try:
        wheel._open()
        wheel._store.acquire(False)
    except JournalLocked as exc:
        holder = "process %d" % exc.pid if exc.pid else "another process"
        raise _CliError("%s is owned by %s, which is running: %s rewrites the file, which only "
                        "happens while no owner holds it; stop the owner first%s"
                        % (exc.path, holder, verb,
                           " (a running owner compacts on its own)" if verb == "compact" else "")
                        ) from None


def _lookup(wheel: Wheel, path: str, tid: str, want: str) -> None:
    """Fail with one line unless task ``tid`` exists and is ``want`` ("pending" or "failed")."""
    info = wheel.get(tid)
    shown = _printable(tid)
    if info is None:
        raise _CliError("no task with id %r in %s: it has finished, was cancelled or purged, or "
                        "never existed; `wheelq list %s` shows the ids" % (shown, path, path))
    if want == FAILED and info.status != FAILED:
        raise _CliError("task %r in %s is %s, not a dead letter: only dead letters are requeued "
                        "or purged (`wheelq cancel` cancels a pending task)" % (shown, path, info.status))
    if want == PENDING and info.status == FAILED:
        raise _CliError("task %r in %s is a dead letter, not pending: `wheelq requeue` runs it "
                        "again and `wheelq purge` deletes it" % (shown, path))
    if want == PENDING and info.status != PENDING:
        raise _CliError("task %r in %s is %s and can no longer be changed" % (shown, path, info.status))


def _ids(args: argparse.Namespace, verb: str) -> None:
    if (args.id is None) == (not args.failed):
        raise _CliError("%s takes either a task id or --failed (every dead letter)%s: e.g. "
                        "`wheelq %s %s ID`" % (verb, ", not both" if args.failed else "",
                                                verb, args.path), code=2)


_PAST = {"cancel": "cancelled", "requeue": "requeued", "purge": "purged",
         "reschedule": "rescheduled", "pause": "paused", "resume": "resumed"}


def _report_edit(args: argparse.Namespace, verb: str, done: list, owner: Any) -> int:
    """Print what a change did."""
    if args.json:
        _print_json({"path": args.path, "op": verb, "ids": done, "owner_pid": owner})
        return 0
    if not done:
        print("no dead letters in %s" % args.path)
        return 0
    if owner is None:
        for tid in done:
            print("%s %s" % (_PAST[verb], _printable(tid)))
        return 0
    for tid in done:
        print("sent %s %s" % (verb, _printable(tid)))
    print("%s owns %s: it takes %s in at its next tick%s"
          % ("process %d" % owner if owner else "another process", args.path,
             "this" if len(done) == 1 else "these",
             " (a task it has already started runs to the end)" if verb == "cancel" else ""))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    def change(wheel: Wheel, owner: Any) -> list:
        _lookup(wheel, args.path, args.id, PENDING)
        if not wheel.cancel(args.id):
            raise _CliError("task %r in %s could not be cancelled: it has just started or "
                            "finished" % (_printable(args.id), args.path))
        return [args.id]

    done, owner = _edit(args.opens, change)
    return _report_edit(args, "cancel", done, owner)


def _reschedule(args: argparse.Namespace) -> int:
    if (args.count_down is None) == (args.eta is None):
        raise _CliError("reschedule takes --count-down SECONDS or --eta TIME (one of them)", code=2)
    eta = None if args.eta is None else _parse_time_arg(args.eta, "--eta")

    def change(wheel: Wheel, owner: Any) -> list:
        _lookup(wheel, args.path, args.id, PENDING)
        if not wheel.reschedule(args.id, count_down=args.count_down, eta=eta):
            raise _CliError("task %r in %s could not be rescheduled: it has just started or "
                            "finished" % (_printable(args.id), args.path))
        return [args.id]

    done, owner = _edit(args.opens, change)
    return _report_edit(args, "reschedule", done, owner)


def _parse_time_arg(text: str, what: str) -> float:
    """ISO 8601 (an aware time, or a naive one read as local time) or epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _CliError("%s takes an ISO 8601 time (2030-01-01T09:00:00+01:00; without an offset "
                        "it is local time) or epoch seconds, not %r" % (what, text), code=2) from None


def _pause(args: argparse.Namespace) -> int:
    return _switch_schedule(args, True)


def _resume(args: argparse.Namespace) -> int:
    return _switch_schedule(args, False)


def _switch_schedule(args: argparse.Namespace, pause: bool) -> int:
    verb = "pause" if pause else "resume"

    def change(wheel: Wheel, owner: Any) -> list:
        try:
            changed = wheel.pause_schedule(args.name) if pause else wheel.resume_schedule(args.name)
        except UnknownTask as exc:
            raise _CliError("%s; `wheelq schedules %s` lists the schedules it holds"
                            % (exc, args.path)) from None
        if not changed:
            raise _CliError("schedule %r in %s is %s already" % (_printable(args.name), args.path,
                                                                 "paused" if pause else "not paused"))
        return [args.name]

    done, owner = _edit(args.opens, change)
    return _report_edit(args, verb, done, owner)


def _schedules_cmd(args: argparse.Namespace) -> int:
    table = _load(args.opens)
    rows = _schedule_rows(table, SystemClock().time())
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no schedules in %s (a schedule's runs appear once its owner has made one)" % args.path)
        return 0
    out = [["NAME", "SPEC", "TZ", "NEXT RUN (local)", "NEXT RUN (UTC)", "PAUSED"]]
    for r in rows:
        nxt = r["next_due"]
        out.append([r["name"], r["spec"] or "-", r["tz"] or "-", _when(nxt) if nxt else "-",
                    _iso_utc(nxt) if nxt else "-", "yes" if r["paused"] else "no"])
    _table(out)
    return 0


def _cron_cmd(args: argparse.Namespace) -> int:
    now = SystemClock().time()
    try:
        start = now if args.start is None else _parse_when(args.start, args.tz)
        rows = _cron_rows(args.expr, args.tz, start, args.count)
    except ValueError as exc:
        raise _CliError(str(exc), code=2) from None
    if args.json:
        _print_json(rows)
        return 0
    zone = _resolve_tz(args.tz)[1]
    out = [["LOCAL (%s)" % zone, "UTC", "DST"]]
    for r in rows:
        out.append([r["local"], r["utc"],
                    {"moved": "moved: its wall time falls in a gap (clocks went forward)",
                     "repeated": "repeated: its wall time came twice (clocks went back)"}
                    .get(r["dst"], "")])
    _table(out)
    return 0


def _dead_letter_ids(wheel: Wheel, args: argparse.Namespace) -> list:
    """The ids a requeue or purge names: every dead letter (--failed), or one checked id."""
    if args.failed:
        return [t.id for t in wheel.failed()]
    _lookup(wheel, args.path, args.id, FAILED)
    return [args.id]


def _requeue(args: argparse.Namespace) -> int:
    _ids(args, "requeue")
    count_down = _check_seconds("--count-down", args.count_down)

    def change(wheel: Wheel, owner: Any) -> list:
        ids = _dead_letter_ids(wheel, args)
        for tid in ids:
            wheel.requeue(tid, count_down=count_down)
        return ids

    done, owner = _edit(args.opens, change)
    return _report_edit(args, "requeue", done, owner)


def _purge(args: argparse.Namespace) -> int:
    _ids(args, "purge")

    def change(wheel: Wheel, owner: Any) -> list:
        return [tid for tid in _dead_letter_ids(wheel, args) if wheel.purge(tid)]

    done, owner = _edit(args.opens, change)
    return _report_edit(args, "purge", done, owner)


def _progress(message: str, *values: Any) -> None:
    """Say on stderr what a long job is doing."""
    print("wheelq: " + message % values, file=sys.stderr, flush=True)


def _compact(args: argparse.Namespace) -> int:
    path = args.path
    url = _is_url(path)
    if not url:
        _read_head(path)
    wheel = Wheel(args.opens)
    try:
        _hold_for_rewrite(wheel, "compact")
        size = 0 if url else os.path.getsize(path)
        if size >= _BIG:
            _progress("reading %s (%s)...", path, _size(size))
        wheel._become_owner(quiet=True)
        lines, size = wheel._store.records() + 1, 0 if url else os.path.getsize(path)
        if url:
            _progress("compacting %s (%d records)...", path, lines - 1)
        else:
            _progress("compacting %s (%d lines, %s)...", path, lines, _size(size))
        started = _monotonic()
        records = wheel.compact()
        after = 0 if url else os.path.getsize(path)
    finally:
        wheel.stop()
    if url:  # a stream has entries, not lines and bytes
        if args.json:
            _print_json({"path": path, "records_before": lines - 1, "records_after": records})
        else:
            print("compacted %s: %d records -> %d in %.1fs"
                  % (path, lines - 1, records, _monotonic() - started))
        return 0
    if args.json:
        _print_json({"path": path, "lines_before": lines, "lines_after": records + 1,
                     "bytes_before": size, "bytes_after": after})
    else:
        print("compacted %s: %d lines -> %d, %s -> %s in %.1fs"
              % (path, lines, records + 1, _size(size), _size(after), _monotonic() - started))
    return 0


def _repair(args: argparse.Namespace) -> int:
    path = args.path
    _files_only(path, "repair")
    corrupt = path + ".corrupt"
    _check_path(path)
    size = os.path.getsize(path)
    if size >= _BIG:
        _progress("checking %s (%s)...", path, _size(size))
    _, nlines, bad = _scan(path, _read_journal(path))
    if not bad:
        if args.json:
            _print_json({"path": path, "lines": nlines, "moved": [], "corrupt_path": None})
        else:
            print("nothing to repair: all %d lines of %s are readable" % (nlines, path))
        return 0
    wheel = Wheel(path)
    done: dict = {}

    def snapshot(read: Callable[[], bytes]) -> list:
        # rewrite() calls this holding the journal's flock, and keeps it until
        # the new file is in place: no producer's line can fall in between.
        data = read()
        _check_head(path, data)
        _, nlines, bad = _scan(path, data)
        _progress("moving %d bad line(s) of %s to %s and rewriting it (%d lines, %s)...",
                  len(bad), path, corrupt, nlines, _size(len(data)))
        skip = {lineno for lineno, _, _ in bad}
        try:
            fd = os.open(corrupt, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC,
                         0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(corrupt):  # EACCES in a sticky directory
                raise _CliError("%s is a symlink; wheelq never writes through one there (another "
                                "user could point it at your files): remove it" % corrupt) from None
            raise
        try:
            _write_all(fd, b"".join(raw + b"\n" for _, _, raw in bad))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(corrupt)  # the bad lines are safe before the journal loses them
        done.update(lines=nlines, bad=bad)
        lines = data.split(b"\n")
        lines.pop()
        return [lines[i - 1] + b"\n" for i in range(2, len(lines) + 1) if i not in skip]

    try:
        _hold_for_rewrite(wheel, "repair")
        store = wheel._store
        with store.lock:
            try:
                kept = store.rewrite(snapshot)
            except OSError as exc:
                raise _CliError("could not rewrite %s (%s); the journal is unchanged"
                                % (path, _error_text(exc.__cause__ or exc))) from None
    finally:
        wheel.stop()
    moved = [{"line": n, "reason": why, "text": raw.decode("utf-8", "replace")} for n, why, raw in done["bad"]]
    if args.json:
        _print_json({"path": path, "lines": done["lines"], "kept": kept, "moved": moved,
                     "corrupt_path": corrupt})
    else:
        for n, why, raw in done["bad"]:
            print("moved line %d: %s" % (n, _printable(why)))
        print("repaired %s: kept %d good record(s), moved %d bad line(s) to %s"
              % (path, kept, len(moved), corrupt))
    return 0


# -- printing --------------------------------------------------------------------------

_BIG = 1 << 20  # journals from this size on get a line saying they are being read


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%d %s" % (n, unit) if unit == "bytes" else "%.1f %s" % (n, unit)
        n /= 1024
    return str(n)


def _when(t: float) -> str:
    """Epoch seconds as local time, to the second."""
    try:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return repr(t)


def _span(seconds: float) -> str:
    """A duration in words: 45s, 3m 12s, 2h 5m, 3d 4h."""
    s = int(round(abs(seconds)))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm %ds" % divmod(s, 60)
    if s < 86400:
        return "%dh %dm" % (s // 3600, s % 3600 // 60)
    return "%dd %dh" % (s // 86400, s % 86400 // 3600)


def _relative(t: float, now: float) -> str:
    return "in " + _span(t - now) if t >= now else _span(now - t) + " ago"


def _call(info: TaskInfo, width: int = 48) -> str:
    """``(1, "a", x=2)``: the arguments as JSON, cut to ``width`` characters."""
    dump = functools.partial(json.dumps, ensure_ascii=False)
    parts = [dump(a) for a in info.args] + ["%s=%s" % (k, dump(v)) for k, v in info.kwargs.items()]
    text = _printable("(%s)" % ", ".join(parts))
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(rows: list) -> None:
    """Print rows of cells in left-aligned columns (the last column unpadded)."""
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths)] + [row[-1]]
        print("  ".join(cells).rstrip())


def _nice_step(largest: int, width: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... tasks per mark that fits ``largest`` in ``width`` marks."""
    k = 0
    while True:
        step = (1, 2, 5)[k % 3] * 10 ** (k // 3)
        if -(-largest // step) <= width:
            return step
        k += 1


def _histogram(title: str, counts: list, starts: list, suffix: str) -> list:
    """Text rows for ``counts``, row ``i`` starting at the local time ``starts[i]``."""
    step = _nice_step(max(counts) or 1, 40)
    out = ["%s (each # is %d task%s)" % (title, step, "" if step == 1 else "s")]
    rows = []
    i = 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[i] == 0 and counts[j + 1] == 0:
            j += 1
        if j - i < 2:
            j = i  # fold only runs of three or more empty rows
        label = "+%d%s" % (i, suffix) if j == i else "+%d%s..+%d%s" % (i, suffix, j, suffix)
        rows.append((datetime.fromtimestamp(starts[i]).strftime("%H:%M"), label,
                     counts[i] if j == i else 0))
        i = j + 1
    lw = max(len(r[1]) for r in rows)
    cw = len(str(max(counts)))
    for clock, label, n in rows:
        out.append(("  %s %-*s %*d %s" % (clock, lw, label, cw, n, "#" * -(-n // step))).rstrip())
    return out


def _buckets(pending: list, now: float) -> dict:
    """Pending tasks by the clock minute and clock hour they come due in (row 0: the current one).

    Rows start on the minute and the hour of the local clock, so a task
    shows on the row its due time reads: 12:34:34 is on the 12:34 row.
    """
    minute0 = now - now % 60
    # The clock hour's start from the local time itself, a whole number of seconds: `now`
    # less the minutes, seconds and (rounded) microseconds it shows is off by a fraction
    # of a microsecond, and a task due on the hour would show on the row before.
    hour0 = datetime.fromtimestamp(now).replace(minute=0, second=0, microsecond=0).timestamp()
    per_minute, per_hour, later, overdue = [0] * 60, [0] * 24, 0, 0
    for t in pending:
        if t.due < now:
            overdue += 1
            continue
        m = int((t.due - minute0) // 60)
        h = int((t.due - hour0) // 3600)
        if m < 60:
            per_minute[m] += 1
        if h < 24:
            per_hour[h] += 1
        else:
            later += 1
    return {"per_minute": per_minute, "per_hour": per_hour, "later": later, "overdue": overdue,
            "minute_starts": [minute0 + 60 * i for i in range(60)],
            "hour_starts": [hour0 + 3600 * i for i in range(24)]}


def _infos(table: _Table, failed: bool = False) -> list:
    recs = [r for r in table.tasks.values() if (r.id in table.failed) is failed]
    return [_info(r, table.state(r)) for r in sorted(recs, key=_by_due)]


def _status(args: argparse.Namespace) -> int:
    path = args.path
    table = _load(args.opens)
    now = SystemClock().time()
    pending, failed = _infos(table), _infos(table, failed=True)
    b = _buckets(pending, now)
    next_due = pending[0].due if pending else None
    schedules = _schedule_rows(table, now)
    if args.json:
        _print_json({"path": path, "now": now, "pending": len(pending), "overdue": b["overdue"],
                     "failed": len(failed), "next_due": next_due, "per_minute": b["per_minute"],
                     "per_hour": b["per_hour"], "later": b["later"], "schedules": schedules})
        return 0
    print("journal   %s" % path)
    print("pending   %d (%d overdue)" % (len(pending), b["overdue"]))
    print("failed    %d%s" % (len(failed), " (`wheelq list %s --failed` shows them)" % path
                              if failed else ""))
    if schedules:
        print("schedules %d (`wheelq schedules %s` lists them)" % (len(schedules), path))
        for s in schedules:
            print("  %s: next %s%s" % (_printable(s["name"]), _when(s["next_due"]) if s["next_due"]
                                       else "-", " (paused)" if s["paused"] else ""))
    if next_due is None:
        print("next due  -")
        return 0
    print("next due  %s (%s)" % (_when(next_due), _relative(next_due, now)))
    print()
    print("\n".join(_histogram("Due in the next hour, per minute", b["per_minute"],
                               b["minute_starts"], "m")))
    print()
    print("\n".join(_histogram("Due in the next day, per hour", b["per_hour"], b["hour_starts"], "h")))
    print("  later: %d" % b["later"])
    return 0


def _schedule_rows(table: _Table, now: float) -> list:
    """What the journal holds of each schedule: its next run, its last, its pause."""
    rows = []
    for name, cur in sorted(table.cursors.items()):
        run = table.tasks.get(cur.run) if cur.run else None
        rows.append({"name": name, "spec": cur.spec, "tz": cur.tz,
                     "next_due": run.due if run is not None and run.id not in table.failed else None,
                     "next_id": run.id if run is not None else None,
                     "last_due": cur.last, "paused": cur.paused})
    return rows


def _list(args: argparse.Namespace) -> int:
    path = args.path
    table = _load(args.opens)
    if args.done:
        now = SystemClock().time()
        tasks = [_info(rec, DONE, value) for rec, value, expires, error in table.results.values()
                 if expires > now and error is None]
    else:
        tasks = _infos(table, failed=True) if args.failed else \
            sorted(_infos(table) + _infos(table, failed=True), key=lambda t: t.due)
    if args.task:
        tasks = [t for t in tasks if _name_matcher(args.task)(t.name)]
    total = len(tasks)
    if args.limit is not None:
        tasks = tasks[:args.limit]
    if args.json:
        _print_json([dataclasses.asdict(t) for t in tasks])
    elif not tasks:
        what = "dead letters" if args.failed else "finished tasks with kept results" if args.done \
            else "tasks"
        print("no %s%s in %s" % (what, " named %r" % args.task if args.task else "", path))
    else:
        now = SystemClock().time()
        errors = any(t.error for t in tasks)
        extra = ["RESULT"] if args.done else (["ERROR"] if errors else [])
        rows = [["ID", "TASK", "DUE (local time)", "STATUS", "TRIES", "ARGS"] + extra]
        for t in tasks:
            status = "overdue" if t.status == PENDING and t.due < now else t.status
            row = [t.id, t.name, _when(t.due), status, str(t.tries), _call(t)]
            if args.done:
                row.append(_printable(json.dumps(t.result, ensure_ascii=False))[:60])
            elif errors:
                row.append(t.error or "")
            rows.append(row)
        _table(rows)
    if len(tasks) < total:
        print("wheelq: showing %d of %d tasks (--limit %d)" % (len(tasks), total, args.limit),
              file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    path = args.path
    _files_only(path, "check")
    table, nlines, bad = _scan(path, _read_journal(path))
    pending, failed = len(_infos(table)), len(table.failed)
    if args.json:
        _print_json({"path": path, "ok": not bad, "lines": nlines, "pending": pending,
                     "failed": failed, "bad": [{"line": n, "reason": why,
                                                "text": raw.decode("utf-8", "replace")}
                                               for n, why, raw in bad]})
    elif not bad:
        print("%s: all %d lines readable; %d pending, %d dead letter%s"
              % (path, nlines, pending, failed, "" if failed == 1 else "s"))
    else:
        print("%s: %d lines, %d unreadable" % (path, nlines, len(bad)))
        for n, why, raw in bad:
            print("line %d: %s: %s" % (n, _printable(why),
                                       _printable(repr(raw.decode("utf-8", "replace"))[:72])))
    if bad:
        print("wheelq: error: %d unreadable line(s) in %s; `wheelq repair %s` moves them to "
              "%s.corrupt and keeps every good line" % (len(bad), path, path, path), file=sys.stderr)
        return 1
    return 0


# -- parsing and main -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, "wheelq: error: %s; see `%s --help`\n" % (message, self.prog))


def _count(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wheelq", description="wheelq: a durable delay queue in one file.",
                epilog="Commands that take PATH work on a journal whether or not an owner runs "
                       "it; none of them runs tasks.  PATH may also be the URL of a queue on a "
                       "Redis server (redis://HOST:PORT/DB?queue=NAME), except for check and "
                       "repair, which are for files.")
    p.add_argument("--version", action="version", version="wheelq " + __version__)
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO for run "
                                       "and demo, WARNING otherwise)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable, help: str, data: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(func=func)
        # SUPPRESS: given after the command they count; absent, the main parser's value stays.
        c.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if data:
            c.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="print machine-readable JSON")
        return c

    demo = command("demo", _demo, "run a small demo daemon (the default command)", data=False)
    demo.add_argument("--journal", help="journal path (default: a new temporary file, removed "
                                        "when the demo ends)")
    demo.add_argument("--tick", type=_seconds, default=0.25, help="tick in seconds (default 0.25)")
    demo.add_argument("--max-delay", type=_seconds, default=4.0,
                      help="longest random delay in seconds (default 4)")
    run = command("run", _run, "import MODULE and run its Wheel until SIGINT or SIGTERM", data=False)
    run.add_argument("target", metavar="MODULE:WHEEL",
                     help="e.g. tasks:wheel for `wheel = wheelq.Wheel(...)` in tasks.py, or "
                          "'app:create_app()' for a function that returns the wheel")
    run.add_argument("--standby", action="store_true",
                     help="wait for the owner lock and take over when the current owner exits")
    status = command("status", _status, "counts, next due time and a histogram of due times")
    status.add_argument("path", metavar="PATH")
    ls = command("list", _list, "list pending tasks and dead letters, by due time")
    ls.add_argument("path", metavar="PATH")
    ls.add_argument("--task", metavar="NAME", help="only tasks with this name (shell-style "
                                                   "wildcards allowed, e.g. 'shop.*')")
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="only dead letters")
    which.add_argument("--done", action="store_true",
                       help="finished tasks whose results are kept, with the result")
    ls.add_argument("--limit", metavar="N", type=_count, help="at most N tasks")
    cancel = command("cancel", _cancel, "cancel a pending task")
    cancel.add_argument("path", metavar="PATH")
    cancel.add_argument("id", metavar="ID")
    resched = command("reschedule", _reschedule, "move a pending task to a new due time")
    resched.add_argument("path", metavar="PATH")
    resched.add_argument("id", metavar="ID")
    resched.add_argument("--count-down", metavar="SECONDS", type=float,
                         help="due this many seconds from now")
    resched.add_argument("--eta", metavar="TIME", help="due at this time (ISO 8601 or epoch seconds)")
    requeue = command("requeue", _requeue, "run a dead letter again (or all of them)")
    requeue.add_argument("path", metavar="PATH")
    requeue.add_argument("id", metavar="ID", nargs="?")
    requeue.add_argument("--failed", action="store_true", help="every dead letter")
    requeue.add_argument("--count-down", metavar="SECONDS", type=float, default=0.0,
                         help="run it this many seconds from now (default 0)")
    purge = command("purge", _purge, "delete a dead letter (or all of them)")
    purge.add_argument("path", metavar="PATH")
    purge.add_argument("id", metavar="ID", nargs="?")
    purge.add_argument("--failed", action="store_true", help="every dead letter")
    compact = command("compact", _compact, "rewrite the journal with only its live tasks")
    compact.add_argument("path", metavar="PATH")
    check = command("check", _check, "report unreadable lines (exit 1 if any)")
    check.add_argument("path", metavar="PATH")
    repair = command("repair", _repair, "move unreadable lines to PATH.corrupt, keep every good one")
    repair.add_argument("path", metavar="PATH")
    scheds = command("schedules", _schedules_cmd, "list the schedules a journal holds, with their next run")
    scheds.add_argument("path", metavar="PATH")
    for verb, func, what in (("pause", _pause, "pause a schedule (its pending run is cancelled)"),
                             ("resume", _resume, "resume a paused schedule from its next nominal time")):
        c = command(verb, func, what)
        c.add_argument("path", metavar="PATH")
        c.add_argument("name", metavar="NAME")
    cron = command("cron", _cron_cmd, "print the next nominal times of a cron expression, marking "
                                      "the runs a DST change moves or repeats")
    cron.add_argument("expr", metavar="EXPR", help="five fields, e.g. '30 2 * * *', or @daily")
    cron.add_argument("--tz", default="UTC", help="an IANA zone, e.g. Europe/Berlin, or local "
                                                 "(default UTC)")
    cron.add_argument("--count", type=_count, default=10, help="how many (default 10)")
    cron.add_argument("--from", dest="start", metavar="TIME",
                      help="start after this time: ISO 8601 (without an offset, in --tz) or epoch "
                           "seconds (default now)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m wheelq [COMMAND] ...``."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(argv + ["demo"])
    if getattr(args, "path", None) is not None:
        # A command opens args.opens and shows args.path: a URL's password stays out of
        # what it prints.
        args.opens, args.path = args.path, _shown(args.path)
    daemon = args.command in ("demo", "run")
    level_name = str(args.log_level or ("INFO" if daemon else "WARNING")).upper()
    level = getattr(logging, level_name, None)
    if not isinstance(level, int):
        parser.error("--log-level must be DEBUG, INFO, WARNING or ERROR, not %r" % args.log_level)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s" if daemon
                        else "wheelq: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except _CliError as exc:
        print("wheelq: error: %s" % exc, file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader went away (`wheelq list ... | head`): stop quietly.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except (WheelqError, OSError, ValueError, TypeError) as exc:
        logger.debug("command %s failed", args.command, exc_info=True)
        print("wheelq: error: %s" % _printable(_error_text(exc)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
