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
*Ring.*  A hashed timing wheel of ``slots`` slots (3600 by default).  Tick
``k`` stands for the instant ``k * tick``; a task due at ``due`` belongs to the
first tick with ``k * tick >= due``, so it never fires early.  Its slot is
``k % slots`` and its round ``k // slots``.  Each slot is a dict keyed by the
absolute tick (which names the round) holding a single record, or an
insertion-ordered list of records when the tick holds several.  Cancelling
leaves a dead entry in the list, which a mostly dead list sheds, so adding
and cancelling are O(1) (amortised); processing a tick pops one key, so an
idle tick costs the same with a million tasks pending as with ten.  Each
slot also keeps a heap of its ticks, so a timer that wakes up more than a
whole revolution late catches up with one sweep of the slots: O(slots +
due), not O(ticks missed).  The ring is pure data: no locks, no I/O, no
clock.

*Journal.*  A JSON Lines file: a ``{"wheelq": 1}`` header, then one record per
line (``add``, ``done``, ``retry``, ``fail``, ``cancel``, ``requeue``,
``purge``).  Each record is one ``write()`` to a file opened with ``O_APPEND``,
so whole lines never interleave.  A task leaves the journal (a ``done``
record) only after its function returned, so execution is *at least once*:
tasks should be idempotent.  Arguments are JSON; nothing in the journal is
ever evaluated, and only registered task names run.  In this process a task
receives the argument objects it was given; after a restart it receives them
as JSON decoded them (tuples become lists, dict keys become strings).

*One owner, many producers.*  ``start()`` takes an exclusive ``flock`` on
``<path>.lock``; that process owns the journal: it replays it, runs the tasks
and compacts the file.  Any other ``Wheel(path)`` that is never started is a
producer: it appends records under ``flock`` on the journal, marked
``"p":1``, and the owner takes them in at its next tick.  A producer never
replays the journal to ``delay()``; ``get()``, ``pending()`` and friends read
it incrementally.  ``start(standby=True)`` waits for the owner lock and takes
over when the owner exits or dies.

*Threads.*  One timer thread (``wheelq-timer``) wraps ``Wheel.tick()``; a
bounded ``queue.Queue`` of small batches feeds ``workers`` threads
(``wheelq-worker-N``).  A full queue makes the timer wait in short steps
(backpressure); ``delay()`` keeps working meanwhile.  Lock order is always
journal lock, then state lock; no I/O and no user code runs under the state
lock.

Decisions the design contract leaves open
-----------------------------------------
* ``pending()`` lists every task not yet finished and not a dead letter:
  its ``status`` says whether it is pending, queued or running.
* ``delay(task_id=X)`` while a dead letter holds ``X`` raises ``WheelqError``:
  requeue or purge the dead letter first.  Nothing is replaced silently.
* ``requeue()`` resets ``tries`` so the task gets its full retries again.
* ``TaskHandle.status()`` remembers the last 65,536 finished ids of this
  process, and at times up to twice as many; an older one reads ``"unknown"``.
* A producer's ``cancel()`` is journaled for a task the producer sees
  pending; if the owner has already started it, it runs to the end.
* ``tick()`` on a journal-backed wheel that was never started refuses: only
  the owner runs tasks.  Eager mode is for ``Wheel()`` in memory.
* The ``done`` records of one batch are written together after the batch, so
  a SIGKILL can re-run the tasks of the batch that was in flight.
* I/O failures raise ``OSError`` of the usual subclass whose message names
  the journal and what to do; a failed ``delay()`` leaves nothing behind.
* Under ``fsync="always"``, the thread about to fsync for a group of
  concurrent writers first waits up to 0.5 ms for as many writers as its
  last fsync carried, so one fsync serves them all.  A writer alone waits
  at most once, just after the others stop.
* Under ``fsync="always"`` the owner's ``delay()`` leaves its line to the
  thread that commits the group, which writes all the group's lines with one
  ``write()`` (whole lines, ``O_APPEND``) before its fsync: with many threads
  adding, a system call apiece hands the GIL around at every call.  If that
  write fails, every ``delay()`` it carried raises and its task is forgotten.
  Until its ``delay()`` returns, such a task waits outside the ring, so it
  cannot run first.  Any other write goes after the lines still waiting, so
  the file keeps their order.  An add with a ``task_id`` is written at once,
  and a ``delay()`` that finds that id live returns once the add is durable.
* Replay reads the ``add`` and ``done`` lines that wheelq itself writes
  with one regular expression per few thousand lines (their args and kwargs
  with the JSON scanner), and every other line with the JSON parser: a
  parser's dict per line cost as much again as the record built from it.
  Both readings give the same records; a line whose due time is not a
  finite number is not a wheelq record.
* A tick that holds several records keeps them in a list, not in the
  insertion-ordered dict the design names: the list costs about half the
  memory (a pending task takes under 300 bytes in all), and a cancelled
  record's dead entry is skipped and, in bulk, compacted away.
* ``start()`` pauses the cyclic garbage collector (process-wide) while it
  replays the journal and builds the ring, and turns it back on if it was on:
  replay keeps every object it makes, so collecting would find nothing.  It
  then moves the young objects of the process into the oldest generation
  (``gc.freeze()``, ``gc.unfreeze()``), so the next collection does not walk
  a million new records at once.  Where objects are frozen already (by the
  process itself, or by CPython 3.12, which starts with some), they stay
  frozen and this step is skipped.
"""

from __future__ import annotations

__version__ = "0.1.0"

import argparse
import base64
import contextlib
import dataclasses
import errno
import fcntl
import functools
import gc
import heapq
import itertools
import json
import logging
import math
import os
import queue
import random
import re
import signal
import stat
import sys
import threading
import time
import weakref
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

__all__ = [
    "Wheel",
    "Task",
    "TaskHandle",
    "TaskInfo",
    "ManualClock",
    "SystemClock",
    "WheelqError",
    "JournalLocked",
    "JournalCorrupt",
    "UnknownTask",
    "WheelClosed",
    "main",
]

logger = logging.getLogger("wheelq")


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class WheelqError(Exception):
    """The root of wheelq's own errors."""


class JournalLocked(WheelqError):
    """Another process owns the journal (holds ``<path>.lock``)."""

    def __init__(self, path: str, pid: int | None):
        self.path = path
        self.pid = pid
        holder = "process %d" % pid if pid else "another process"
        super().__init__(
            "journal %s is owned by %s; stop it first, or call "
            "start(standby=True) to take over when it exits" % (path, holder)
        )


class JournalCorrupt(WheelqError):
    """A journal line that cannot be read; ``lineno`` counts the header as 1."""

    def __init__(self, path: str, lineno: int, reason: str):
        self.path = path
        self.lineno = lineno
        self.reason = reason
        super().__init__(
            "journal %s line %d: %s; run `python -m wheelq check %s` to see "
            "the bad lines and `python -m wheelq repair %s` to set them aside"
            % (path, lineno, reason, path, path)
        )


class UnknownTask(WheelqError):
    """No task (or no dead letter) with that id or name."""


class WheelClosed(WheelqError):
    """The wheel was stopped; build a new ``Wheel`` to go on."""


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
    return "free disk space and retry"


# --------------------------------------------------------------------------
# Clocks: the only code that reads the time
# --------------------------------------------------------------------------


class SystemClock:
    """Wall-clock time, and waits that an event cuts short."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set or ``timeout`` seconds have passed."""
        event.wait(None if timeout is None else max(0.0, timeout))


class ManualClock:
    """A clock that moves only when told to: for tests, wheelq's and yours.

    ``advance(seconds)`` wakes every timer waiting on this clock, which then
    processes the ticks up to the new time.  It never reads the real clock.
    """

    def __init__(self, start: float = 1_000_000.0):
        start = float(start)
        if not math.isfinite(start):
            raise ValueError("ManualClock start must be a finite number of seconds")
        self._now = start
        self._lock = threading.Lock()
        self._events: weakref.WeakSet = weakref.WeakSet()

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
            raise ValueError("advance() takes a finite, non-negative number of seconds")
        with self._lock:
            self._now += seconds
            events = list(self._events)
        for event in events:
            event.set()
        return self._now

    def wait(self, event: threading.Event, timeout: float | None) -> None:
        """Block until ``event`` is set (``advance`` sets it).

        Manual time does not pass on its own, so the real-time bound here only
        keeps a forgotten waiter from hanging forever.
        """
        if timeout is not None and timeout <= 0:
            return
        with self._lock:
            self._events.add(event)
        event.wait(1.0)


# --------------------------------------------------------------------------
# The ring: a hashed timing wheel, pure data
# --------------------------------------------------------------------------

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
DONE, FAILED, CANCELLED, UNKNOWN = "done", "failed", "cancelled", "unknown"


class _Extra:
    """What few tasks carry besides their args: kwargs, failed tries, the last error."""

    __slots__ = ("args", "kwargs", "tries", "error")

    def __init__(self, args, kwargs, tries, error):
        self.args = args
        self.kwargs = kwargs
        self.tries = tries
        self.error = error


class _Rec:
    """One task as the index and the ring hold it: five slots, no per-task dict.

    A million pending tasks are a million of these, so every slot counts:

    * ``body`` is the task's args, or an ``_Extra`` for the rare task that
      also has kwargs, failed tries or an error (read them as properties).
    * ``at`` says where the task is: its tick (an int) while it waits in the
      ring, else its state (``PENDING`` when it is pending outside a ring,
      as in a producer's view; ``QUEUED``, ``RUNNING``, ``FAILED``...).
    """

    __slots__ = ("id", "name", "body", "due", "at")

    def __init__(self, tid, name, args, due, at=PENDING):
        self.id = tid
        self.name = name
        self.body = args
        self.due = due
        self.at = at

    @property
    def args(self):
        body = self.body
        return body.args if body.__class__ is _Extra else body

    @property
    def kwargs(self):
        body = self.body
        return body.kwargs if body.__class__ is _Extra else None

    @property
    def tries(self):
        body = self.body
        return body.tries if body.__class__ is _Extra else 0

    @property
    def error(self):
        body = self.body
        return body.error if body.__class__ is _Extra else None

    def extra(self, kwargs, tries, error) -> None:
        """Set kwargs, tries and error together; a task with none of them keeps only its args."""
        args = self.args
        self.body = _Extra(args, kwargs, tries, error) if kwargs or tries or error is not None else args

    def outcome(self, tries, error) -> None:
        """Set tries and error, keeping kwargs."""
        self.extra(self.kwargs, tries, error)

    @property
    def state(self):
        at = self.at
        return PENDING if at.__class__ is int else at

    @state.setter
    def state(self, value):
        """Set a state other than pending-in-the-ring (the ring sets that, by placing it)."""
        self.at = value


class _Bucket(list):
    """The records of one tick that holds several, in insertion order.

    ``k`` is the tick, the one int object that the ``at`` of every record
    placed here is (an int apiece would cost 28 bytes a task).  Removing a
    record leaves its entry behind, dead, and counts it in ``dead``: a record
    is live at its last entry, and only if its ``at`` is still ``k``.  A
    bucket that is mostly dead is compacted, so a removal costs O(1)
    amortised.  A list costs about half the bytes of a dict of the same
    records.
    """

    __slots__ = ("k", "dead")

    def live(self, mark: Any) -> list:
        """The live records in insertion order, their ``at`` set to ``mark``."""
        k = self.k
        if not self.dead:
            for rec in self:
                rec.at = mark
            return list(self)
        out = []
        for rec in reversed(self):  # the last entry of a re-added record is its place
            if rec.at is k:
                rec.at = mark  # and an earlier entry of it no longer matches
                out.append(rec)
        out.reverse()
        return out

    def compact(self) -> None:
        """Drop the dead entries."""
        self[:] = live = self.live(None)
        for rec in live:
            rec.at = self.k
        self.dead = 0


class _Ring:
    """A hashed timing wheel over integer ticks.

    ``last`` is the last tick processed.  ``add`` never places a record at or
    before it, so nothing is lost to a tick that has passed.  ``advance``
    returns the records of the ticks it processes, marked ``QUEUED``.
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

    def add(self, rec: _Rec, k: int) -> None:
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
        """Place the pending ``recs`` in an empty ring, at ``tick_of(rec.due)``; return how many.

        The records of a replay are grouped by tick first: one slot entry and
        one heap entry a tick, not a call of ``add`` a record; and each record
        is touched once, which counts when a million lie all over memory.
        """
        first = self.last + 1
        ticks: dict = {}  # tick -> [the tick, its records...]
        for rec in recs:
            if rec.at is not PENDING:
                continue
            k = tick_of(rec.due)
            if k < first:
                k = first
            group = ticks.get(k)
            if group is None:
                ticks[k] = group = [k]
            rec.at = group[0]  # one int object a tick: the ``k`` of its bucket
            group.append(rec)
        n, slots, heaps = self.nslots, self.slots, self.heaps
        for k, group in ticks.items():
            if len(group) == 2:
                cur = group[1]
            else:
                cur = _Bucket(group[1:])
                cur.k = k
                cur.dead = 0
            i = k % n
            slots[i][k] = cur
            heaps[i].append(k)
        for heap in heaps:
            heapq.heapify(heap)
        placed = sum(map(len, ticks.values())) - len(ticks)
        self.size += placed
        return placed

    def remove(self, rec: _Rec) -> bool:
        """Take ``rec`` out, leaving it ``PENDING``; False if it is not in the ring."""
        k = rec.at
        if k.__class__ is not int:
            return False
        slot = self.slots[k % self.nslots]
        cur = slot.get(k)
        rec.at = PENDING
        if cur is rec:
            del slot[k]
        else:  # the bucket of tick k holds it: ``at`` is only ever set by add
            cur.dead += 1
            if cur.dead == len(cur):
                del slot[k]
            elif cur.dead > 8 and cur.dead * 2 > len(cur):
                cur.compact()
        self.size -= 1
        return True

    def advance(self, to: int) -> list:
        """Process the ticks after ``last`` up to ``to``; return their records in order."""
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


def _take(cur: Any, out: list) -> None:
    """Append the live records of one tick's entry to ``out``, marked ``QUEUED``."""
    if cur.__class__ is _Bucket:
        out += cur.live(QUEUED)
    else:
        cur.at = QUEUED
        out.append(cur)


def _first(pair: tuple) -> Any:
    return pair[0]


# --------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------

_HEADER = b'{"wheelq": 1}\n'
_GATHER = 0.0005  # seconds an fsync="always" group commit waits for its writers
_MARK = b'{"p":1,'
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _line(record: dict) -> bytes:
    """One journal line; TypeError names a value that is not JSON."""
    try:
        return (_encode(record) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(
            "task arguments must be JSON (str, int, float, bool, None, list, "
            "dict): %s" % exc
        ) from None


def _not_json(value: Any) -> Any:
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _value_encoder() -> Callable[[Any], str]:
    """Encode argument values (an args tuple or a kwargs dict) with C encoders.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which is a
    third of the cost of ``delay()``.  Flat values (no containers inside, the
    common case) go through one encoder built here; it keeps no table of the
    containers it is inside, so threads can share it, and no cycle can
    reach it.  Nested values get a fresh encoder with such a table, so a
    cycle raises at once as ``_encode`` would.  Where the C accelerator is
    missing or behaves differently, ``_encode`` serves.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    try:
        def new(markers: dict | None) -> Any:
            return make(markers, _not_json, json.encoder.encode_basestring, None, ":", ",",
                        False, False, False)
        flat = new(None)
        if "".join(flat([1, 2.5, "\u00e9", None], 0)) != '[1,2.5,"\u00e9",null]' \
                or "".join(new({})({"a": [True]}, 0)) != '{"a":[true]}':
            return _encode
    except Exception:
        return _encode
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
                return "".join(new({})(values, 0))
        return "".join(flat(values, 0))

    return encode


_json_values = _value_encoder()
_json_str = json.encoder.encode_basestring
_INF = math.inf


_OWNER_ADD = '{"op":"add","id":'
_PRODUCER_ADD = _MARK.decode("ascii") + '"op":"add","id":'


def _add_line(head: str, tid: str, task: Task, due: float, args: tuple, kwargs: dict) -> bytes:
    """An ``add`` record: the bytes ``_line`` gives, built from parts (the hot path).

    ``head`` is ``_OWNER_ADD``, or ``_PRODUCER_ADD`` for a producer's line.
    """
    if due.__class__ is float and -_INF < due < _INF:
        try:
            return (f"{head}{_json_str(tid)}{task.json_task}{due!r},"
                    f'"args":{_json_values(args) if args else "[]"},'
                    f'"kwargs":{_json_values(kwargs) if kwargs else "{}"}}}\n').encode()
        except (TypeError, ValueError):
            pass  # _line raises the error that names the value
    record = {"op": "add", "id": tid, "task": task.name, "due": due, "args": args, "kwargs": kwargs}
    return _line(record if head == _OWNER_ADD else dict(p=1, **record))


def _unwritten(lost: OSError) -> OSError:
    """The error for a deferred line whose write failed: it never reached the file."""
    exc = OSError(lost.errno, lost.strerror)
    exc.unwritten = True
    return exc


def _closed_gate() -> Any:
    """A lock held closed: ``acquire`` waits until it is released, as a gate opens."""
    gate = threading.Lock()
    gate.acquire()
    return gate


class _Journal:
    """The file: appends, the fsync policy, replay, following the tail, compaction.

    ``lock`` serialises this process's use of the file descriptor.  A
    producer (``shared``) also holds ``flock`` on the journal around each
    append; the owner does not, because it is the only one that compacts.
    ``path is None`` makes an in-memory journal whose writes go nowhere.
    """

    _fsync = staticmethod(os.fsync)  # a seam for fault-injection tests

    def __init__(self, path: str | None, fsync: str):
        self.path = path
        self.mode = fsync
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.shared = True
        self.offset = 0  # bytes of the file read so far (whole lines only)
        self.lineno = 0  # lines read so far; the header is line 1
        self.generation = 0  # bumped when the file is replaced under us
        self._size = 0  # the file's size when flock was last taken
        self._end = -1  # owner: where its last append ended (-1: unknown)
        # Group commit.  _sync guards the fields below and is only ever held
        # briefly.  While an fsync runs, _fsyncing is a gate (a lock held
        # closed) that its thread opens when it is done; writers wait on it,
        # each passing it on to the next as it goes through, and then look
        # again whether _synced reached their write.  The owner's adds under
        # fsync="always" are deferred: the thread about to fsync writes them
        # first.  Under fsync="always" that thread may first wait on the
        # _gathering gate, for at most _GATHER seconds, until as many writes as
        # its last fsync carried are in (_want): the writer that brings them
        # in opens it.  Gates, not Conditions: a woken writer then takes no
        # shared lock to get going, and with a dozen threads each handing the
        # GIL to the next that is much of a group's time.
        self._sync = threading.Lock()
        self._fsyncing: Any = None
        self._gathering: Any = None
        self._written = 0
        self._synced = 0
        self._group = 1  # writes the last fsync made durable
        self._want = 0  # the _written that ends a gathering (0: nobody gathers)
        self._deferred: list[bytes] = []  # owner, fsync="always": lines the next commit writes
        self._appended = 0  # every sequence up to this one is in the file (or lost)
        self._lost: dict[int, OSError] = {}  # sequences whose deferred write failed

    # -- opening -----------------------------------------------------------

    def open(self) -> None:
        """Open (creating with mode 0600 and a header) the journal file."""
        if self.path is None or self.fd is not None:
            return
        self.fd = self._open_fd()
        if os.fstat(self.fd).st_size == 0:
            self._lock_file()
            try:
                if self._size == 0:
                    self._write(_HEADER)
                    if self.mode != "never":  # a new file: make its name durable too
                        try:
                            self._fsync(self.fd)
                            _fsync_dir(self.path)
                        except OSError as exc:  # nothing acknowledged rests on it yet
                            logger.warning("journal %s: fsync after creating it failed: %s", self.path, exc)
            finally:
                self._unlock_file()

    def _open_fd(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
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
                            "check that the directory exists and is writable") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "journal %s is not a regular file; give a file path" % self.path)
        return fd

    def close(self) -> None:
        """Sync unless fsync is "never", and close the file."""
        if self.fd is None:
            return
        try:
            self._drain()
            if self.mode != "never":
                self.sync()
        finally:
            os.close(self.fd)
            self.fd = None

    # -- appending -----------------------------------------------------------

    def _lock_file(self) -> None:
        """Take flock on the journal, reopening it if compaction replaced it.

        Leaves the file's size in ``_size``.
        """
        while True:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            st = os.fstat(self.fd)
            self._size = st.st_size
            if st.st_nlink > 0:
                return
            old, self.fd = self.fd, self._open_fd()
            os.close(old)  # also releases the flock on the replaced file
            self.offset = self.lineno = 0
            self.generation += 1

    def _unlock_file(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def write(self, data: bytes) -> int:
        """Append whole lines; the caller holds ``lock``.  Returns a sync sequence."""
        if self.fd is None:
            if self.path is None:
                return 0
            raise WheelClosed("the journal %s is closed; build a new Wheel to add tasks" % self.path)
        if self.shared:
            self._lock_file()
            try:
                self._append_after_whole_line(data)
            finally:
                self._unlock_file()
        else:
            if self._deferred:
                self._drain()
            self._append_own(data)
        self._written = self._appended = self._written + 1
        return self._written

    def defer(self, data: bytes) -> int:
        """Owner, under fsync="always": leave ``data`` for the next ``commit`` to write.

        The thread that commits writes every deferred line in one write()
        before its fsync.  Threads adding side by side then make one system
        call between them instead of one each, and each call hands the GIL
        around.  Every other write (compaction and close included) writes the
        deferred lines first, so the file keeps the order of the sequences.
        The caller holds ``lock``; ``commit`` raises if the write failed.
        """
        if self.fd is None:
            return self.write(data)  # in memory, or closed: as write() says
        self._deferred.append(data)
        self._written += 1
        return self._written

    def _drain(self) -> None:
        """Holding ``lock``: write the deferred lines; if that fails, their commits raise."""
        deferred = self._deferred
        if not deferred:
            return
        data = b"".join(deferred)
        first = self._written - len(deferred) + 1  # sequences are contiguous: see note_foreign_writes
        deferred.clear()
        try:
            self._append_own(data)
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

    def _append_own(self, data: bytes) -> None:
        """Owner: append, never onto a torn line (see ``_owner_mend``)."""
        end = os.lseek(self.fd, 0, os.SEEK_END)  # cheaper than fstat on this path
        if end != self._end:
            end = self._owner_mend(end)
        self._write(data)
        self._end = end + len(data)

    def write_locked(self, data: bytes) -> int:
        """Like ``write`` for a producer that already holds the flock."""
        self._append_after_whole_line(data)
        self._written = self._appended = self._written + 1
        return self._written

    def _append_after_whole_line(self, data: bytes) -> None:
        """Producer, holding flock: append, but never onto a torn last line.

        A line glued onto a torn one would be cut with it at the next replay,
        losing a task whose ``delay()`` returned.
        """
        if self._size and os.pread(self.fd, 1, self._size - 1) != b"\n":
            self._mend_tail()
        self._write(data)

    def _mend_tail(self) -> None:
        """The file does not end with a newline: cut the torn line, as the owner would.

        Only with the owner lock held too, because a running owner appends
        without flock and its append may be in flight; then wait for it.
        """
        try:
            lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise _os_error(exc, self.path + ".lock", "the journal ends with a torn line and cannot open",
                            "start the owner, which cuts it, and retry") from None
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # An owner's append in flight ends in microseconds, and a line
                # torn by a killed producer the owner cuts at its next tick: wait
                # without the flock, which the owner needs to cut it.
                pause = threading.Event()
                for _ in range(400):
                    self._unlock_file()
                    pause.wait(0.005)
                    self._lock_file()
                    if not self._size or os.pread(self.fd, 1, self._size - 1) == b"\n":
                        return
                raise OSError(errno.EIO, "journal %s ends with a torn line while its owner runs; "
                              "restart the owner, which cuts it, then retry" % self.path) from None
            self._cut_torn_line()
        finally:
            os.close(lock_fd)

    def _cut_torn_line(self) -> None:
        """Holding flock and the owner lock: cut the file back to its last newline."""
        size = os.fstat(self.fd).st_size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            cut = os.pread(self.fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        logger.warning("journal %s: cut a torn last line (%d bytes); it was never acknowledged",
                       self.path, size - end)
        os.ftruncate(self.fd, end)
        if end == 0:
            self._write(_HEADER)

    def _owner_mend(self, end: int) -> int:
        """Owner, before an append, when the file grew past its last one: never glue.

        The kernel copies a write page by page and stops at SIGKILL, so a
        producer killed inside ``write()`` leaves a line with no end; a line
        appended onto it would be lost with it at the next replay.  If the
        file does not end with a newline, flock waits out a producer's append
        in flight, and what is still torn is cut.  Returns the file's end.
        """
        if end and os.pread(self.fd, 1, end - 1) != b"\n":
            self._lock_file()
            try:
                if self._size and os.pread(self.fd, 1, self._size - 1) != b"\n":
                    self._cut_torn_line()
            finally:
                self._unlock_file()
            end = os.lseek(self.fd, 0, os.SEEK_END)
        return end

    def note_foreign_writes(self) -> None:
        """Owner, holding ``lock``: producers appended since the last sync; the next sync covers them."""
        self._drain()  # first, so that the deferred lines keep contiguous sequences
        self._written = self._appended = self._written + 1

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self.fd, data)
        except OSError as exc:
            raise _os_error(exc, self.path, "cannot append to journal",
                            _write_advice(exc.errno) + "; nothing was written") from None
        if n != len(data):
            # Cut our own partial line, so a failed write leaves nothing behind.
            end = os.lseek(self.fd, 0, os.SEEK_CUR)
            try:
                if os.fstat(self.fd).st_size == end:
                    os.ftruncate(self.fd, end - n)
            except OSError:
                pass
            raise OSError(errno.ENOSPC, "cannot append to journal %s: only %d of %d bytes fit "
                          "(disk full or file size limit); free space and retry; nothing was written"
                          % (self.path, n, len(data)))

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
        """Wait for an fsync in flight to end (compaction, before it closes the file)."""
        with self._sync:
            running = self._fsyncing
        if running is not None:
            running.acquire()
            running.release()

    # -- reading -------------------------------------------------------------

    def load(self, apply_all: Callable[[list], None]) -> None:
        """Owner, holding the owner lock and ``lock``: replay the whole file.

        A torn last line is cut off with a warning; a bad line anywhere else
        raises ``JournalCorrupt``.  A file that is not a wheelq journal is
        never modified.
        """
        self._lock_file()
        try:
            data = _read_all(self.fd)
            if data != _HEADER and _HEADER.startswith(data):
                if data:
                    logger.warning("journal %s: cut a torn header (%d bytes)", self.path, len(data))
                    os.ftruncate(self.fd, 0)
                self._write(_HEADER)
                data = _HEADER
            end, lineno = _replay(data, self.path, apply_all)
            if end < len(data):
                logger.warning("journal %s: cut a torn last line (line %d, %d bytes); it was "
                               "never acknowledged", self.path, lineno + 1, len(data) - end)
                os.ftruncate(self.fd, end)
            self.offset, self.lineno = end, lineno
        finally:
            self._unlock_file()

    def tail(self) -> tuple:
        """Read the complete lines appended since the last read.

        Returns ``(data, lineno)``: whole lines, and the number of the line
        before the first of them.  The header is checked and skipped.
        """
        size = os.fstat(self.fd).st_size
        if size <= self.offset:
            return b"", self.lineno
        data = os.pread(self.fd, size - self.offset, self.offset)
        data = data[:data.rfind(b"\n") + 1]
        if self.offset == 0 and data:
            head = data[:data.index(b"\n") + 1]
            _check_header(head, self.path)
            self.offset, self.lineno = len(head), 1
            data = data[len(head):]
        before = self.lineno
        self.offset += len(data)
        self.lineno += data.count(b"\n")
        return data, before

    # -- compaction ------------------------------------------------------------

    def compact(self, snapshot: Callable[[], Iterable[bytes]]) -> int:
        """Owner, holding ``lock``: rewrite the file with the lines ``snapshot()`` gives.

        Holds ``flock`` throughout, so no producer appends in between;
        ``snapshot`` runs under it and takes in what producers appended.
        Returns the number of records written.
        """
        tmp = self.path + ".tmp"
        self._drain()  # the snapshot holds their tasks, and their commits wait for a sync
        if self._lost:  # tasks whose delay() is about to raise: never write them back
            raise OSError(errno.EIO, "cannot compact journal %s now: a write to it just failed; "
                          "free space or fix the disk, and it compacts at a later tick" % self.path)
        old = self.fd
        self._lock_file()
        try:
            lines = snapshot()
            count = 0
            size = len(_HEADER)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
                try:
                    buf = [_HEADER]
                    for line in lines:
                        buf.append(line)
                        size += len(line)
                        count += 1
                        if len(buf) >= 4096:
                            _write_all(fd, b"".join(buf))
                            buf.clear()
                    _write_all(fd, b"".join(buf))
                    self._fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise _os_error(exc, self.path, "cannot compact journal",
                                _write_advice(exc.errno) + "; the journal is unchanged") from None
            # From here on the new file is the journal, whatever else fails:
            # never go on writing to the replaced one, whose lines would be lost.
            try:
                self.fd = self._open_fd()
            except OSError as exc:
                self._unlock_file()
                os.close(old)
                self.fd = None
                raise OSError(exc.errno, "journal %s was compacted but cannot be reopened (%s); this "
                              "Wheel cannot write any more: restart the process" % (self.path, exc)) from None
        finally:
            if self.fd is old:
                self._unlock_file()
        self._fsync_done()  # one that started before the swap may still use the old file
        os.close(old)  # releases the flock: waiting producers find the new inode
        try:
            _fsync_dir(self.path)
        except OSError:
            logger.warning("journal %s: fsync of its directory failed after compaction", self.path)
        self.offset, self.lineno = size, count + 1
        self._synced = self._written
        return count


def _read_all(fd: int) -> bytes:
    """The whole file: one read of its size, so a big journal is not copied twice."""
    want = os.fstat(fd).st_size + 1  # one more: a file that grew meanwhile reads on
    chunks = []
    offset = 0
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


def _check_header(line: bytes, path: str) -> None:
    try:
        head = json.loads(line)
    except ValueError:
        head = None
    if not isinstance(head, dict) or "wheelq" not in head:
        raise JournalCorrupt(path, 1, 'not a wheelq journal (no {"wheelq": 1} header)')
    if head["wheelq"] != 1:
        raise JournalCorrupt(path, 1, "written by a newer wheelq (format %r)" % (head["wheelq"],))


def _replay(data: bytes, path: str, apply_all: Callable[[list], None]) -> tuple:
    """Apply every line of a whole journal; return (bytes of good lines, their count).

    ``apply_all`` applies a list of records in order, and raises
    ``_BadRecord`` for one that is not a wheelq record.  A bad last line
    counts as torn and stops the replay before it; a bad line anywhere else
    raises ``JournalCorrupt``.
    """
    end = data.rfind(b"\n") + 1
    if end == 0:
        raise JournalCorrupt(path, 1, 'not a wheelq journal (no {"wheelq": 1} header)')
    head = data.index(b"\n") + 1
    _check_header(data[:head], path)
    # Replay is bound by parsing: decode the file once, and read it a few
    # thousand lines at a time (``_scan_rows``).
    raws = None
    try:
        text = str(memoryview(data)[head:end], "utf-8")  # no copy of the bytes
    except UnicodeDecodeError:
        raws = data[head:end].split(b"\n")
        raws.pop()
        text = "".join([_utf8_or_empty(raw) + "\n" for raw in raws])
    first = 0  # the index of the chunk's first line (the header is not counted)
    a = 0
    while a < len(text):
        b = text.find("\n", min(a + _REPLAY_CHUNK, len(text)) - 1) + 1  # a chunk of whole lines
        chunk = text[a:b]
        rows = _scan_rows(chunk)
        try:
            apply_all(rows)
        except _BadRecord as bad:
            raise JournalCorrupt(path, first + bad.index + 2, bad.reason) from None
        count = chunk.count("\n")
        if len(rows) < count:  # line ``j`` is not one JSON value
            j = first + len(rows)
            raw = chunk.split("\n")[len(rows)].encode("utf-8") if raws is None else raws[j]
            if b == len(text) and len(rows) == count - 1 and end == len(data):
                return end - len(raw) - 1, j + 1  # the last line: torn
            raise JournalCorrupt(path, j + 2, "unreadable JSON: %.60r" % raw)
        a = b
        first += count
    return end, first + 1


_REPLAY_CHUNK = 1 << 18  # characters the scanner reads at a time (a few thousand lines)
_scan_json = json.JSONDecoder().scan_once  # one JSON value at an index: (value, end)


class _BadRecord(Exception):
    """A replayed value, at ``index`` of its chunk, that is not a wheelq record."""

    def __init__(self, index: int, exc: Exception):
        super().__init__(index, exc)
        self.index = index
        self.reason = _not_a_record(exc)


def _not_a_record(exc: Exception) -> str:
    return "not a wheelq record (%s: %s)" % (type(exc).__name__, exc)


# The lines an owner writes most, as wheelq spells them: an add (an owner's, or a
# producer's, marked "p":1) with no tries, and a done.  Every other line matches
# the last branch.  A JSON string here has no escapes and no control characters,
# and a number is JSON's, so the parts mean what they mean to a JSON parser.  An
# add's args and kwargs are left to the JSON scanner: one group, with one place
# to end, so a line costs one pass whatever it holds.
_STR = r'"([^"\\\x00-\x1f]*)"'
_ROW = re.compile(
    r'(?:\{"p":1,|\{)"op":"add","id":%s,"task":%s,'
    r'"due":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?),'
    r'"args":(\[[^\n]*)\}\n'
    r'|\{"op":"done","id":"([^"\\\x00-\x1f]+)"\}\n'
    r'|([^\n]*)\n' % (_STR, _STR))
_NO_KWARGS = ',"kwargs":{}'


def _scan_rows(chunk: str) -> list:
    """The records of the whole lines ``chunk``, one row a line, up to the first unreadable one.

    A JSON parser builds a dict a line, which costs as much again as the
    record built from it; so the lines ``_ROW`` knows are read by it, in one
    call a chunk: an add becomes its ``_Rec`` and a done the 1-tuple of its id.
    The JSON scanner reads an add's args where they start, which is where
    they end too, and then its kwargs, which must end the line.  Any other
    line is decoded as JSON: a row that is neither a ``_Rec`` nor a tuple is a
    line's JSON value.  Fewer rows than lines means the next line is not one
    JSON value.
    """
    rows: list = []
    append, scan, intern, lines = rows.append, _scan_json, sys.intern, None
    rec_of, inf, no_kwargs, plain = _Rec, _INF, _NO_KWARGS, len(_NO_KWARGS)
    for tid, name, due, tail, done, other in _ROW.findall(chunk):
        if tail:  # '[args],"kwargs":{kwargs}'
            try:
                args, stop = scan(tail, 0)
                due = float(due)
                if stop + plain == len(tail) and tail.endswith(no_kwargs):
                    if -inf < due < inf:
                        append(rec_of(tid, intern(name), args, due))
                        continue
                elif tail.startswith(',"kwargs":', stop):
                    kwargs, stop = scan(tail, stop + 10)
                    if stop == len(tail) and kwargs.__class__ is dict and -inf < due < inf:
                        rec = rec_of(tid, intern(name), args, due)
                        if kwargs:
                            rec.extra(kwargs, 0, None)
                        append(rec)
                        continue
            except (ValueError, StopIteration):
                pass
            # Not as _ROW read it: the JSON parser has the last word.
            if lines is None:
                lines = chunk.split("\n")
            other = lines[len(rows)]
        elif done:
            append((done,))
            continue
        try:
            value, stop = scan(other, 0)
        except (ValueError, StopIteration):
            stop = -1
        if stop != len(other):
            try:
                value = json.loads(other)  # white space around one value, or not JSON at all
            except ValueError:
                return rows
        append(value)
    return rows


def _utf8_or_empty(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # unreadable: the replay names the line by its bytes


def _apply_one(apply: Callable[[dict], None], obj: Any, path: str, lineno: int) -> None:
    try:
        apply(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise JournalCorrupt(path, lineno, _not_a_record(exc)) from None


def _apply_lines(data: bytes, lineno: int, path: str, apply: Callable[[dict], None],
                 producers_only: bool) -> None:
    """Apply the whole lines ``data`` that follow line ``lineno``.

    ``producers_only`` (the owner following its own file) applies only lines
    marked ``"p":1`` and logs and skips an unreadable one instead of stopping
    the owner: the next replay reports it.
    """
    if not data:
        return
    lines = data.split(b"\n")
    lines.pop()
    loads = json.loads
    for i, line in enumerate(lines, lineno + 1):
        if producers_only:
            if line.startswith(_MARK):
                try:
                    _apply_one(apply, loads(line.decode("utf-8")), path, i)
                except (ValueError, JournalCorrupt) as exc:
                    logger.error("journal %s line %d: skipped an unreadable record (%s)", path, i, exc)
            continue
        try:
            obj = loads(line.decode("utf-8"))  # UTF-8 only, as replay reads it
        except ValueError:
            raise JournalCorrupt(path, i, "unreadable JSON: %.60r" % line) from None
        _apply_one(apply, obj, path, i)


# --------------------------------------------------------------------------
# Worker pool
# --------------------------------------------------------------------------

_MAX_BATCH = 64


class _Pool:
    """A bounded queue of task batches feeding named worker threads.

    ``run_batch`` is the wheel's; the pool only moves batches.  Shutdown is
    one ``None`` sentinel per worker.
    """

    def __init__(self, workers: int, queue_size: int, run_batch: Callable[[list], None]):
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.run_batch = run_batch
        self.threads = [
            threading.Thread(target=self._work, name="wheelq-worker-%d" % (n + 1), daemon=True)
            for n in range(workers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        get = self.queue.get
        while True:
            batch = get()
            if batch is None:
                return
            self.run_batch(batch)

    def put(self, batch: list, stopping: threading.Event) -> bool:
        """Queue a batch, waiting in short steps while full; False if stopping."""
        while not stopping.is_set():
            try:
                self.queue.put(batch, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

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

    def shutdown(self) -> None:
        """Send the sentinels and join the workers."""
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()


# --------------------------------------------------------------------------
# Task, TaskHandle, TaskInfo
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task."""

    id: str
    name: str
    args: tuple
    kwargs: dict
    due: float
    status: str
    tries: int
    error: str | None


def _info(rec: _Rec) -> TaskInfo:
    return TaskInfo(rec.id, rec.name, tuple(rec.args), dict(rec.kwargs or {}),
                    rec.due, rec.state, rec.tries, rec.error)


class Task:
    """A registered function.  Calling it runs it now; ``delay`` runs it later."""

    def __init__(self, wheel: Wheel, func: Callable, name: str, retries: int,
                 retry_delay: float, retry_backoff: float):
        functools.update_wrapper(self, func)  # first: the function's attributes never win
        self.wheel = wheel
        self.func = func
        self.name = name
        self.json_task = ',"task":%s,"due":' % _json_str(name)  # its part of an add line
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_backoff = retry_backoff

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function now, in this thread."""
        return self.func(*args, **kwargs)

    def delay(self, *args: Any, count_down: float | timedelta | None = None,
              eta: datetime | float | None = None, task_id: str | None = None,
              **kwargs: Any) -> TaskHandle:
        """Journal the call and run it ``count_down`` seconds from now, or at ``eta``."""
        return self.wheel._submit(self, args, kwargs, count_down, eta, task_id)

    def schedule(self, args: Iterable = (), kwargs: dict | None = None, *,
                 count_down: float | timedelta | None = None,
                 eta: datetime | float | None = None,
                 task_id: str | None = None) -> TaskHandle:
        """Like ``delay``, for functions with their own ``count_down``, ``eta`` or ``task_id``."""
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError("schedule() takes kwargs as a dict, not %s" % type(kwargs).__name__)
        return self.wheel._submit(self, tuple(args), kwargs or {}, count_down, eta, task_id)

    def __repr__(self) -> str:
        return "<Task %s>" % self.name


class TaskHandle:
    """What ``delay()`` returns: the task's id, its status, and a way to cancel it."""

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
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_prefix)


# --------------------------------------------------------------------------
# Wheel
# --------------------------------------------------------------------------

_FINISHED_MEMORY = 65536
_COMPACT_MIN = 10_000


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
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


def _due_of(value: Any) -> float:
    """A journal record's due time; ValueError unless it is a finite number."""
    if value.__class__ is not float:
        if value.__class__ is not int:
            raise TypeError("due must be a number, not %s" % type(value).__name__)
        try:
            value = float(value)
        except OverflowError:  # an int beyond any float
            value = _INF
    if not -_INF < value < _INF:
        raise ValueError("due must be a finite number of seconds")
    return value


class Wheel:
    """A delay queue: a timing wheel, a worker pool and a journal.

    ``Wheel(path)`` is a producer until ``start()`` makes it the owner;
    ``Wheel()`` keeps everything in memory and runs due tasks in the calling
    thread on ``tick()`` until it is started.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, workers: int = 4,
                 queue_size: int | None = None, slots: int = 3600, tick: float = 1.0,
                 fsync: str = "batch", clock: Any = None):
        self._workers = _check_int("workers", workers, 1)
        self._queue_size = _check_int("queue_size", 2 * workers if queue_size is None else queue_size, 1)
        self._nslots = _check_int("slots", slots, 1)
        self._tick = _check_seconds("tick", tick, positive=True)
        if self._tick == 1.0:
            # k * 1.0 is exact for every tick below 2**53 seconds: the plain C
            # functions give the same ticks as the general methods, and fast.
            self._tick_floor, self._tick_ceil = math.floor, math.ceil
        if fsync not in ("always", "batch", "never"):
            raise ValueError("'fsync' must be 'always', 'batch' or 'never', not %r" % (fsync,))
        self._clock = clock if clock is not None else SystemClock()
        self._now = time.time if self._clock.__class__ is SystemClock else self._clock.time
        self._path = None if path is None else os.fspath(path)
        self._journal = _Journal(self._path, fsync)
        self._always = fsync == "always"
        self._registry: dict[str, Task] = {}

        # State lock; _idle is notified by the timer and the workers whenever
        # the processed tick or the queued/running counts change (join waits).
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._tasks: dict[str, _Rec] = {}
        self._ring = _Ring(self._nslots, self._tick_floor(self._clock.time()))
        self._finished: dict = {}  # id -> final state, of the last 65,536 or more
        # Events and the queued/running counts; "pending" is the ring's size (see stats()).
        self._counts = dict.fromkeys(("queued", "running", "done", "failed", "retried",
                                      "cancelled"), 0)
        self._live = path is None  # state is held here (owner, or in memory)
        self._state = "new"  # new, standby, running, stopping, closed
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._wakeup = threading.Event()
        self._tick_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pool: _Pool | None = None
        self._owner_fd: int | None = None
        self._generation = 0
        if self._path is not None:
            self._journal.open()

    def __repr__(self) -> str:
        return "<Wheel %s %s>" % (self._path or "(memory)", self._state)

    # -- registering -------------------------------------------------------------

    def task(self, name: str | None = None, *, retries: int = 0, retry_delay: float = 1.0,
             retry_backoff: float = 2.0) -> Callable[[Callable], Task]:
        """Register a function as a task; returns a decorator."""
        _check_int("retries", retries, 0)
        retry_delay = _check_seconds("retry_delay", retry_delay)
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) \
                or not math.isfinite(retry_backoff) or retry_backoff < 1:
            raise ValueError("'retry_backoff' must be a finite number >= 1, not %r" % (retry_backoff,))
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError("task name must be a non-empty str, not %r" % (name,))

        def decorator(func: Callable) -> Task:
            if not callable(func):
                raise TypeError("@wheel.task() decorates a function, not %r" % (func,))
            tname = name or "%s.%s" % (func.__module__, func.__qualname__)
            if tname in self._registry:
                raise ValueError("a task named %r is already registered; pass name=... to tell "
                                 "them apart" % tname)
            task = Task(self, func, tname, retries, retry_delay, float(retry_backoff))
            self._registry[tname] = task
            return task

        return decorator

    # -- time ------------------------------------------------------------------------

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
        if count_down is not None:
            if eta is not None:
                raise TypeError("give count_down or eta, not both")
            if count_down.__class__ is not float and count_down.__class__ is not int:
                count_down = _check_seconds("count_down", count_down)
            elif not (0 <= count_down < math.inf):
                _check_seconds("count_down", count_down)
            return self._now() + count_down
        if eta is None:
            return self._now()
        if isinstance(eta, datetime):
            return eta.timestamp()
        if isinstance(eta, bool) or not isinstance(eta, (int, float)):
            raise TypeError("eta must be a datetime or epoch seconds, not %s" % type(eta).__name__)
        if not math.isfinite(eta):
            raise ValueError("eta must be finite, not %r" % eta)
        return float(eta)

    # -- adding ------------------------------------------------------------------------

    def _submit(self, task: Task, args: tuple, kwargs: dict, count_down, eta, task_id) -> TaskHandle:
        cls = count_down.__class__
        if (cls is float or cls is int) and eta is None and 0 <= count_down < _INF:
            due = self._now() + count_down  # the common case of _due, inline
        else:
            due = self._due(count_down, eta)
        if task_id is None:
            tid = "%s%x" % (_ID_PREFIX, next(_ID_COUNTER))
        elif task_id.__class__ is not str or not task_id:
            raise TypeError("task_id must be a non-empty str, not %r" % (task_id,))
        else:
            tid = task_id
        journal = self._journal
        if self._live:
            data = _add_line(_OWNER_ADD, tid, task, due, args, kwargs)
            rec = _Rec(tid, task.name, args, due)
            if kwargs:
                rec.extra(kwargs, 0, None)
            k = self._tick_ceil(due)
            # Under fsync="always" the line is deferred (see _Journal.defer), and
            # the task waits outside the ring until its line is in the file, so
            # that the timer cannot run a task whose delay() then fails.  A
            # task_id is written at once, since another delay() may find it.
            deferred = self._always and task_id is None
            found = None
            # acquire() and release(), not ``with``: on this path two with
            # statements cost as much again as the two locks themselves.
            journal.lock.acquire()
            try:
                if self._state in ("stopping", "closed"):
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to add tasks")
                if task_id is not None:
                    found = self._tasks.get(tid)
                if found is None:
                    seq = journal.defer(data) if deferred else journal.write(data)
                    self._lock.acquire()
                    try:
                        self._tasks[tid] = rec
                        if not deferred:
                            self._ring.add(rec, k)
                    finally:
                        self._lock.release()
            finally:
                journal.lock.release()
            if found is not None:
                return self._existing(found)
            if deferred:
                self._commit_or_cancel(seq, tid)
                with self._lock:
                    if rec.at is PENDING and self._tasks.get(tid) is rec:
                        self._ring.add(rec, k)
                return TaskHandle(self, tid)
        else:
            data = _add_line(_PRODUCER_ADD, tid, task, due, args, kwargs)
            found = None
            with journal.lock:
                if self._state == "closed":
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to add tasks")
                if task_id is None:
                    seq = journal.write(data)
                else:
                    journal._lock_file()
                    try:
                        self._refresh_view()
                        found = self._tasks.get(tid)
                        if found is None:
                            seq = journal.write_locked(data)
                    finally:
                        journal._unlock_file()
            if found is not None:
                return self._existing(found)
        if self._always:
            self._commit_or_cancel(seq, tid)
        return TaskHandle(self, tid)

    def _existing(self, rec: _Rec) -> TaskHandle:
        """The handle of the live task that a ``delay(task_id=...)`` found (called with no lock held)."""
        if rec.state == FAILED:
            raise WheelqError("a dead letter holds task id %r; requeue() or purge() it first" % rec.id)
        if self._always:
            self._journal.sync()  # its add is in the file: return once it is durable too
        return TaskHandle(self, rec.id)

    def _commit_or_cancel(self, seq: int, tid: str) -> None:
        """fsync="always": make the add durable, or take it back and raise."""
        try:
            self._journal.commit(seq)
        except OSError as exc:
            try:
                if getattr(exc, "unwritten", False):  # not in the file: forget it here only
                    with self._lock:
                        rec = self._tasks.pop(tid, None)
                        if rec is not None:
                            self._ring.remove(rec)
                            rec.at = UNKNOWN
                else:
                    self.cancel(tid)
            except Exception:  # the original error is the one to report
                logger.exception("could not take back task %s after a failed write", tid)
            raise

    # -- the state machine of one record (replay, tail, producer view) ----------------

    def _apply(self, o: dict) -> None:
        """Apply one journal record to the in-memory state."""
        op = o["op"]
        tid = o["id"]
        if tid.__class__ is not str:
            raise TypeError("id must be a string")
        tasks = self._tasks
        if op == "add":
            args = o["args"]
            kwargs = o["kwargs"]
            due = o["due"]
            name = o["task"]
            if args.__class__ is not list or kwargs.__class__ is not dict or name.__class__ is not str:
                raise TypeError("task must be a string, args a list and kwargs an object")
            # Interned: a million records share the one str of their task's name.
            rec = _Rec(tid, sys.intern(name), args, _due_of(due))
            if tasks.setdefault(tid, rec) is not rec:
                return  # an id that is already live: adding is idempotent
            if kwargs or "tries" in o:
                rec.extra(kwargs or None, o.get("tries", 0), o.get("error"))
            if self._live:
                self._ring.add(rec, self._tick_ceil(rec.due))
            return
        rec = tasks.get(tid)
        if op in ("done", "cancel", "purge"):
            if rec is None:
                return
            if op == "purge" and rec.state != FAILED:
                return
            if op == "cancel" and rec.state not in (PENDING, QUEUED):
                return
            self._finish(rec, DONE if op == "done" else CANCELLED)
        elif op == "retry":
            due = _due_of(o["due"])
            tries = int(o["tries"])
            if rec is not None:
                self._unplace(rec)
                rec.outcome(tries, o.get("error"))
                rec.due = due
                self._place(rec)
        elif op == "fail":
            tries = int(o["tries"])
            if rec is not None:
                self._unplace(rec)
                rec.outcome(tries, o.get("error"))
                rec.state = FAILED
        elif op == "requeue":
            due = _due_of(o["due"])
            if rec is not None and rec.state == FAILED:
                rec.outcome(0, None)
                rec.due = due
                self._place(rec)
        else:
            raise ValueError("unknown op %r" % (op,))

    def _replay_records(self, rows: list) -> None:
        """Apply the rows of ``_scan_rows`` in order, as ``_apply`` would; ``_BadRecord`` names a bad one.

        Replay holds no ring (``_live`` is off), and a big replay is bound by
        this loop: the adds and dones that ``_scan_rows`` read are applied
        here inline, and only the other lines go through ``_apply``.
        """
        tasks = self._tasks
        keep, get = tasks.setdefault, tasks.get
        apply, finish = self._apply, self._finish
        i = 0
        try:
            for i, row in enumerate(rows):
                cls = row.__class__
                if cls is _Rec:
                    keep(row.id, row)  # a live id keeps its record: adding is idempotent
                elif cls is tuple:
                    rec = get(row[0])
                    if rec is not None:
                        finish(rec, DONE)
                else:
                    apply(row)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _BadRecord(i, exc) from None

    def _place(self, rec: _Rec) -> None:
        """Make ``rec`` pending (caller holds the state lock, or owns all state)."""
        rec.state = PENDING
        if self._live:
            self._ring.add(rec, self._tick_ceil(rec.due))

    def _unplace(self, rec: _Rec) -> None:
        """Take a pending ``rec`` out of the ring (queued/running ones are not in it)."""
        self._ring.remove(rec)

    def _finish(self, rec: _Rec, state: str) -> None:
        """Forget ``rec`` as finished, remembering its final state for a while.

        Replay calls this for every ``done`` line, so it reads ``at`` directly.
        """
        at = rec.at
        if at.__class__ is int:  # pending in the ring
            self._ring.remove(rec)
        elif at == QUEUED:
            self._counts["queued"] -= 1
        if state == CANCELLED and self._live:
            self._counts["cancelled"] += 1
        rec.at = state
        self._tasks.pop(rec.id, None)
        finished = self._finished
        finished[rec.id] = state
        if len(finished) > 2 * _FINISHED_MEMORY:
            # Drop the older half at once.  One at a time costs more: a dict
            # scans the holes its deletions leave at the front (about 25 us a
            # call at this size), and an OrderedDict keeps a node per entry.
            self._finished = dict(itertools.islice(finished.items(), _FINISHED_MEMORY, None))

    def _restore(self, rec: _Rec, op: str, saved: tuple) -> None:
        """Undo ``_apply`` of a change whose record could not be written."""
        if rec.id not in self._tasks:
            self._tasks[rec.id] = rec
            self._finished.pop(rec.id, None)
        self._unplace(rec)
        if op == "cancel":
            self._counts["cancelled"] -= 1
        rec.due = saved[1]
        rec.outcome(*saved[2:])
        if saved[0] == FAILED:
            rec.state = FAILED
        else:
            self._place(rec)

    def _refresh_view(self) -> None:
        """Producer, holding the journal lock and flock: read what was appended."""
        journal = self._journal
        try:
            data, lineno = journal.tail()
            with self._lock:
                if journal.generation != self._generation:
                    # Compaction replaced the file: rebuild the view from its start.
                    self._generation = journal.generation
                    self._tasks.clear()
                _apply_lines(data, lineno, self._path, self._apply, producers_only=False)
        except JournalCorrupt:
            journal.offset = journal.lineno = 0  # read it all again next time
            journal.generation += 1
            raise

    def _view(self) -> None:
        """Bring a producer's view of the journal up to date."""
        if not self._live and self._path is not None and self._journal.fd is not None:
            with self._journal.lock:
                self._journal._lock_file()
                try:
                    self._refresh_view()
                finally:
                    self._journal._unlock_file()

    # -- inspecting and changing tasks -------------------------------------------------

    @property
    def is_owner(self) -> bool:
        """True while this wheel holds the owner lock (or, in memory, while started)."""
        return self._state in ("running", "stopping") and self._live

    def get(self, task_id: str) -> TaskInfo | None:
        """The task with this id, or None if it is finished or unknown."""
        self._view()
        with self._lock:
            rec = self._tasks.get(task_id)
            return None if rec is None else _info(rec)

    def pending(self) -> list[TaskInfo]:
        """Tasks not yet finished (pending, queued or running), sorted by due time."""
        self._view()
        with self._lock:
            recs = [r for r in self._tasks.values() if r.state != FAILED]
            return [_info(r) for r in sorted(recs, key=_by_due)]

    def failed(self) -> list[TaskInfo]:
        """The dead letters, sorted by due time."""
        self._view()
        with self._lock:
            recs = [r for r in self._tasks.values() if r.state == FAILED]
            return [_info(r) for r in sorted(recs, key=_by_due)]

    def stats(self) -> dict:
        """Current pending/queued/running counts and events since this Wheel was built."""
        self._view()
        with self._lock:
            if self._live:
                # A running owner's pending tasks wait in the ring.  (After stop(), the
                # queued tasks it took back are pending in the journal, not here.)
                pending = len(self._ring)
            else:
                pending = sum(1 for r in self._tasks.values() if r.state != FAILED)
            return dict(pending=pending, **self._counts)

    def _status(self, tid: str) -> str:
        self._view()
        with self._lock:
            rec = self._tasks.get(tid)
            if rec is not None:
                return rec.state
            return self._finished.get(tid, UNKNOWN)

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not started; True if it was cancelled."""
        return self._change(task_id, "cancel", (PENDING, QUEUED), None)

    def requeue(self, task_id: str, count_down: float | timedelta = 0) -> TaskHandle:
        """Give a dead letter a fresh start ``count_down`` seconds from now."""
        due = self._clock.time() + _check_seconds("count_down", count_down)
        if not self._change(task_id, "requeue", (FAILED,), due):
            raise UnknownTask("no dead letter with id %r; wheel.failed() lists them" % (task_id,))
        return TaskHandle(self, task_id)

    def purge(self, task_id: str) -> bool:
        """Delete a dead letter for good; True if there was one."""
        return self._change(task_id, "purge", (FAILED,), None)

    def _change(self, tid: str, op: str, states: tuple, due: float | None) -> bool:
        """Journal ``op`` for ``tid`` if its state is one of ``states``, then apply it."""
        record = {"op": op, "id": tid} if due is None else {"op": op, "id": tid, "due": due}
        journal = self._journal
        with journal.lock:
            if self._state == "closed" or (self._state == "stopping" and op != "cancel"):
                raise WheelClosed("this Wheel was stopped; build a new Wheel to change tasks")
            if self._live:
                with self._lock:
                    rec = self._tasks.get(tid)
                    if rec is None or rec.state not in states:
                        return False
                    saved = (rec.state, rec.due, rec.tries, rec.error)
                    self._apply(record)  # first, so the timer cannot dispatch it meanwhile
                    self._idle.notify_all()
                try:
                    seq = journal.write(_line(record))
                except BaseException:
                    with self._lock:
                        self._restore(rec, op, saved)
                    raise
            else:
                if journal.fd is None:
                    raise WheelClosed("this Wheel was stopped; build a new Wheel to change tasks")
                journal._lock_file()
                try:
                    self._refresh_view()
                    rec = self._tasks.get(tid)
                    if rec is None or rec.state not in states:
                        return False
                    seq = journal.write_locked(_line(dict(p=1, **record)))
                finally:
                    journal._unlock_file()
        if self._always:
            journal.commit(seq)
        return True

    # -- running -----------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Process every tick up to ``now``; return how many tasks were dispatched.

        On a wheel that was never started, the due tasks run in this thread.
        """
        if not self._live:
            raise WheelqError("tick() runs tasks, which only the owner of %s does: call start() "
                              "first (a Wheel(path) that is not started only adds tasks)" % self._path)
        if now is None:
            now = self._clock.time()
        with self._tick_lock:
            if self._path is not None:
                with self._journal.lock:
                    if self._journal.fd is not None:
                        self._ingest()
                        journal = self._journal
                        end = os.lseek(journal.fd, 0, os.SEEK_END)
                        if end > journal.offset:
                            # A line without its end: an append in flight, or one a killed
                            # producer tore, which blocks producers until it is cut.
                            journal._owner_mend(end)
            with self._lock:
                due = self._ring.advance(self._tick_floor(now))  # marked QUEUED
                n = len(due)
                self._counts["queued"] += n
                self._idle.notify_all()
            if not due:
                return 0
            if self._pool is None:
                self._run_batch(due)
                return n
            size = max(1, min(_MAX_BATCH, -(-n // self._workers)))
            for i in range(0, n, size):
                if not self._pool.put(due[i:i + size], self._stopping):
                    self._unqueue(due[i:])
                    break
            return n

    def _ingest(self) -> None:
        """Owner, holding the journal lock: apply what producers appended."""
        data, lineno = self._journal.tail()
        if data and _MARK in data:  # else it is all this owner's own lines: nothing to apply
            self._journal.note_foreign_writes()  # so fsync="batch" covers them too
            with self._lock:
                _apply_lines(data, lineno, self._path, self._apply, producers_only=True)

    def _unqueue(self, recs: list) -> None:
        """Tasks that were queued but will not start: they stay pending in the journal."""
        with self._lock:
            for rec in recs:
                if rec.state == QUEUED:
                    rec.state = PENDING
                    self._counts["queued"] -= 1
            self._idle.notify_all()

    def _run_batch(self, batch: list) -> None:
        """Run a batch of due tasks, then journal their outcomes together."""
        outcomes = []
        stopping = self._stopping
        lock = self._lock
        registry = self._registry
        for i, rec in enumerate(batch):
            if stopping.is_set() and self._pool is not None:
                self._unqueue(batch[i:])
                break
            with lock:
                if rec.at is not QUEUED:
                    continue  # cancelled while it waited in the queue
                rec.at = RUNNING
                self._counts["queued"] -= 1
                self._counts["running"] += 1
            task = registry.get(rec.name)
            if task is None:
                outcomes.append((rec, None, "unknown task %r" % rec.name))
                logger.error("task %s: unknown task %r; it is now a dead letter", rec.id, rec.name)
                continue
            try:
                body = rec.body
                if body.__class__ is _Extra:
                    task.func(*body.args, **body.kwargs) if body.kwargs else task.func(*body.args)
                else:
                    task.func(*body)
            except BaseException as exc:  # a task's failure never kills the worker
                logger.exception("task %s (%s) raised", rec.id, rec.name)
                outcomes.append((rec, task, "%s: %s" % (type(exc).__name__, exc)))
            else:
                outcomes.append((rec, task, None))
        if outcomes:
            self._record(outcomes)

    def _record(self, outcomes: list) -> None:
        """Journal done/retry/fail for finished tasks and update the state."""
        now = self._clock.time()
        lines = []
        plans = []
        for rec, task, error in outcomes:
            if error is None:
                lines.append(b'{"op":"done","id":' + _encode(rec.id).encode("utf-8") + b"}\n")
                plans.append((rec, DONE, None))
                continue
            tries = rec.tries + 1
            if task is not None and tries <= task.retries:
                due = now + task.retry_delay * task.retry_backoff ** (tries - 1)
                record = {"op": "retry", "id": rec.id, "due": due, "tries": tries, "error": error}
                plans.append((rec, "retry", (due, tries, error)))
            else:
                record = {"op": "fail", "id": rec.id, "tries": tries, "error": error}
                plans.append((rec, FAILED, (tries, error)))
            lines.append(_line(record))
        seq = 0
        journal = self._journal
        with journal.lock:
            try:
                seq = journal.write(b"".join(lines))
            except Exception:
                logger.exception("could not journal the outcome of %d task(s); they will run "
                                 "again after a restart", len(lines))
            with self._lock:
                counts = self._counts
                for rec, what, extra in plans:
                    counts["running"] -= 1
                    if what == DONE:
                        self._finish(rec, DONE)
                        counts["done"] += 1
                    elif what == "retry":
                        rec.due = extra[0]
                        rec.outcome(*extra[1:])
                        self._place(rec)
                        counts["retried"] += 1
                    else:
                        rec.outcome(*extra)
                        rec.state = FAILED
                        counts["failed"] += 1
                self._idle.notify_all()
        if self._always and seq:
            try:
                journal.commit(seq)
            except OSError:
                logger.exception("fsync of finished tasks failed")

    def join(self, timeout: float | None = None) -> bool:
        """True once every task due by now has finished, failed or been rescheduled."""
        if self._pool is None:
            if self._live and self._state == "new":
                self.tick()
                return True
            if self._state in ("closed", "new"):
                return True
        def idle() -> bool:
            return (self._counts["queued"] == 0 and self._counts["running"] == 0
                    and self._ring.last >= self._tick_floor(self._clock.time()))
        with self._idle:
            return self._idle.wait_for(idle, timeout)

    # -- lifecycle -----------------------------------------------------------------------

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
        if self._path is None:
            self._launch()
            return self
        if standby:
            t = threading.Thread(target=self._standby, name="wheelq-standby", daemon=True)
            self._threads.append(t)
            t.start()
            return self
        try:
            self._take_owner_lock(blocking=False)
            self._become_owner()
        except BaseException:
            with self._lock:
                self._state = "new"
            self._release_owner_lock()
            raise
        self._launch()
        return self

    def _take_owner_lock(self, blocking: bool) -> bool:
        lock_path = self._path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise _os_error(exc, lock_path, "cannot open the owner lock",
                            "the journal's directory must be writable by the owner") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if blocking:
                os.close(fd)
                return False
            try:
                pid = int(os.pread(fd, 32, 0).strip() or 0)
            except (OSError, ValueError):
                pid = None
            os.close(fd)
            raise JournalLocked(self._path, pid) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError as exc:  # e.g. a full disk: the pid only names the owner to others
            logger.warning("journal %s: could not write this owner's pid to %s (%s); a second "
                           "owner will be refused without it", self._path, lock_path, exc.strerror)
        self._owner_fd = fd
        return True

    def _release_owner_lock(self) -> None:
        if self._owner_fd is not None:
            os.close(self._owner_fd)  # the operating system drops the flock
            self._owner_fd = None

    def _become_owner(self) -> None:
        """Replay the journal (cutting a torn tail) and hold the state here."""
        journal = self._journal
        with journal.lock, self._lock, _gc_paused():
            self._tasks.clear()
            self._live = False
            journal.offset = journal.lineno = 0
            journal.load(self._replay_records)
            self._live = True
            journal.shared = False
            ring = self._ring = _Ring(self._nslots, self._tick_floor(self._clock.time()) - 1)
            pending = ring.fill(self._tasks.values(), self._tick_ceil)
        logger.info("journal %s: owner (pid %d), %d pending, %d dead letters",
                    self._path, os.getpid(), pending, len(self._tasks) - pending)

    def _standby(self) -> None:
        interval = min(self._tick / 4, 0.25)
        try:
            while not self._stopping.is_set():
                if self._take_owner_lock(blocking=True):
                    break
                self._stopping.wait(interval)
            else:
                return
            with self._lock:
                if self._state != "standby":
                    self._release_owner_lock()
                    return
                self._state = "running"
            self._become_owner()
            logger.info("journal %s: standby took over as owner", self._path)
            self._launch()
        except Exception:
            # Not left "running" with no timer: the wheel closes, and stop() returns at once.
            logger.exception("standby for %s failed to take over; this wheel is now closed", self._path)
            with self._lock:
                self._state = "stopping"
                self._stopping.set()
            self._close()

    def _launch(self) -> None:
        self._pool = _Pool(self._workers, self._queue_size, self._run_batch)
        self._pool.start()
        timer = threading.Thread(target=self._timer, name="wheelq-timer", daemon=True)
        self._threads.append(timer)
        timer.start()

    def _timer(self) -> None:
        """The timer thread: a loop around tick(), sleeping to absolute deadlines."""
        clock, wakeup, stopping = self._clock, self._wakeup, self._stopping
        while not stopping.is_set():
            wakeup.clear()
            try:
                self.tick()
                if self._journal.mode == "batch":
                    self._journal.sync()
                self._maybe_compact()
            except Exception:
                logger.exception("wheelq timer: a tick failed; trying again at the next tick")
            if stopping.is_set():
                return
            clock.wait(wakeup, (self._ring.last + 1) * self._tick - clock.time())

    def _maybe_compact(self) -> None:
        journal = self._journal
        if journal.fd is None:
            return
        live = len(self._tasks)
        dead = journal.lineno - 1 - live
        if dead > _COMPACT_MIN and dead > live:
            self.compact()

    def compact(self) -> int:
        """Owner: rewrite the journal with only the live tasks; return its record count."""
        if not self._live or self._path is None:
            raise WheelqError("only the owner compacts %s: start() the wheel first" % self._path)
        journal = self._journal

        def snapshot() -> list:
            # Under the journal lock no record can finish or change, so the
            # copy taken under the state lock stays true while it is encoded.
            self._ingest()
            with self._lock:
                recs = sorted(self._tasks.values(), key=_by_due)
            lines = []
            for rec in recs:
                add = {"op": "add", "id": rec.id, "task": rec.name, "due": rec.due,
                       "args": rec.args, "kwargs": rec.kwargs or {}}
                if rec.tries:
                    add["tries"] = rec.tries
                    add["error"] = rec.error
                lines.append(_line(add))
                if rec.state == FAILED:
                    lines.append(_line({"op": "fail", "id": rec.id, "tries": rec.tries,
                                        "error": rec.error}))
            return lines

        with journal.lock:
            count = journal.compact(snapshot)
        logger.info("journal %s: compacted to %d records", self._path, count)
        return count

    def stop(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop the timer, let running tasks finish, and close the journal.

        Queued tasks that never started stay pending in the journal.  Returns
        True once fully stopped (False if ``timeout`` ran out first).
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
                threading.Thread(target=self._shutdown, name="wheelq-stopper", daemon=True).start()
        if not wait or threading.current_thread() in self._threads + self._pool_threads():
            return self._closed.is_set()  # a task or the timer cannot wait for itself
        return self._closed.wait(timeout)

    def _pool_threads(self) -> list:
        return [] if self._pool is None else self._pool.threads

    def _shutdown(self) -> None:
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        if self._pool is not None:
            self._unqueue(self._pool.drain())
            self._pool.shutdown()
        self._close()

    def _close(self) -> None:
        try:
            with self._journal.lock:
                self._journal.close()
        except OSError:
            logger.exception("closing journal %s", self._path)
        finally:
            self._release_owner_lock()
            with self._lock:
                self._state = "closed"
                self._idle.notify_all()
            self._closed.set()

    def __enter__(self) -> Wheel:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Start (if needed) and run until SIGINT or SIGTERM, then stop gracefully."""
        stop = threading.Event()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda signum, frame: stop.set())
        try:
            if self._state == "new":
                self.start()
            while not stop.wait(0.2) and not self._closed.is_set():
                pass
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.stop()


def _by_due(rec: _Rec) -> float:
    return rec.due


@contextlib.contextmanager
def _gc_paused() -> Any:
    """Pause the cyclic garbage collector around a replay, and file what it built as old.

    A replay builds a few objects per journal line and keeps them all, so the
    collector would walk the growing heap again and again (a fifth of the
    time of a big replay) and find nothing to free.  Afterwards the
    collector's young generation holds all of them, and its next collection
    would walk them once more, right away: so they are moved to the oldest
    generation as they are (``freeze`` then ``unfreeze``), unless objects
    are frozen already (by the process, or by CPython 3.12 at startup), which
    must stay frozen.  The collector is enabled again if it was enabled before.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if was:
            gc.enable()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
#
# No command but `run` and `demo` ever starts a Wheel: starting one runs the
# due tasks, and a task whose name is not registered in this process would
# become a dead letter.  `status`, `list` and `check` read the file under a
# shared flock and change nothing.  `cancel`, `requeue` and `purge` take the
# owner lock when no owner runs (replaying the journal as an owner would, with
# no threads), and otherwise append records as a producer, which the running
# owner takes in at its next tick.  `compact` and `repair` rewrite the file, so
# they refuse while an owner holds it.


class _CliError(WheelqError):
    """A command-line error; its message is the one line printed.  ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _demo(args: argparse.Namespace) -> int:
    """A small daemon: sample tasks with random delays, logged as they go."""
    import tempfile

    log = logging.getLogger("wheelq.demo")
    path = args.journal or os.path.join(tempfile.mkdtemp(prefix="wheelq-demo-"), "demo.json")
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
    return 0


def _run(args: argparse.Namespace) -> int:
    """Import MODULE, find its Wheel and run it until SIGINT or SIGTERM."""
    import importlib

    module_name, _, attr = args.target.partition(":")
    if not module_name or not attr:
        raise _CliError("run takes MODULE:WHEEL, e.g. `wheelq run tasks:wheel` for the Wheel "
                        "named `wheel` in tasks.py, not %r" % args.target, code=2)
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
    wheel: Any = module
    for part in attr.split("."):
        try:
            wheel = getattr(wheel, part)
        except AttributeError:
            raise _CliError("module %s has no attribute %r: give the name your Wheel is bound to"
                            % (module_name, attr)) from None
    # `python -m wheelq` runs this file as __main__, so the module's `import wheelq`
    # is a second copy of it: recognise its Wheel by what it does, not by its class.
    if isinstance(wheel, type) or not (callable(getattr(wheel, "run_forever", None))
                                       and callable(getattr(wheel, "start", None))):
        what = "a class" if isinstance(wheel, type) else "a %s" % type(wheel).__name__
        raise _CliError("%s is %s, not a wheelq.Wheel: give the name your Wheel is bound to"
                        % (args.target, what))
    try:
        try:
            if not getattr(wheel, "is_owner", False):  # the module may have started it
                wheel.start(standby=args.standby)
            logger.info("running %s (pid %d)%s; Ctrl-C or SIGTERM stops it", args.target, os.getpid(),
                        " as a standby, to take over when the owner exits" if args.standby else "")
            wheel.run_forever()
        except KeyboardInterrupt:  # Ctrl-C before run_forever() took over the signals
            wheel.stop()
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if "WheelqError" not in names:
            raise
        hint = "; `wheelq run --standby %s` waits and takes over" % args.target
        raise _CliError(str(exc) + (hint if "JournalLocked" in names and not args.standby else "")) from None
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
        if "newer" in exc.reason:
            raise _CliError("%s was %s: use that version of wheelq" % (path, exc.reason)) from None
        raise _CliError('%s is not a wheelq journal: its first line is not {"wheelq": 1}; '
                        'check the path' % path) from None


def _open_readonly(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
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
            # Producers append and compaction rewrites under LOCK_EX: this read
            # sees neither half done.
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


def _view_wheel() -> Wheel:
    """An in-memory Wheel that only holds records, as a producer's view does."""
    view = Wheel(slots=1)
    view._live = False  # records only: no ring, no counts, nothing ever runs
    return view


def _load(path: str, data: bytes) -> Wheel:
    """The tasks of a journal, replayed as an owner would (a torn tail is ignored, not cut)."""
    view = _view_wheel()
    if b"\n" in data:
        _replay(data, path, view._replay_records)
    return view


def _scan(path: str, data: bytes) -> tuple:
    """Check every line; return ``(view, line count, bad)``.

    ``bad`` lists ``(lineno, reason, raw bytes)`` for each line an owner could
    not apply, a torn last line included.  Line numbers count the header as 1,
    as ``sed -n Np`` does; ``view`` holds the tasks of the good lines.
    """
    view = _view_wheel()
    lines = data.split(b"\n")
    tail = lines.pop()  # the bytes after the last newline: b"" unless torn
    bad = []
    loads = json.loads
    for lineno in range(2, len(lines) + 1):
        line = lines[lineno - 1]
        try:
            obj = loads(line.decode("utf-8"))  # UTF-8 only, as replay reads it
        except ValueError:
            reason = "unreadable JSON"
            if lineno == len(lines) and not tail:
                reason += " (the last line: an owner cuts it as torn when it opens the journal)"
            bad.append((lineno, reason, line))
            continue
        try:
            _apply_one(view._apply, obj, path, lineno)
        except JournalCorrupt as exc:
            bad.append((lineno, exc.reason, line))
    if tail:
        what = "torn header" if not lines else "torn last line"
        bad.append((len(lines) + 1, what + " (no newline: a write cut short by a crash; it was "
                    "never acknowledged)", tail))
    return view, len(lines) + (1 if tail else 0), bad


# -- changing a journal ---------------------------------------------------------------


def _edit(path: str, change: Callable[[Wheel, Any], Any]) -> tuple:
    """Run ``change(wheel, owner_pid)`` on the journal and return ``(result, owner_pid)``.

    With no owner running, this process holds the owner lock meanwhile and
    ``owner_pid`` is None: the journal is replayed (a torn tail is cut, as an
    owner does) and no thread starts.  Otherwise ``wheel`` is a producer that
    appends records for the owner, whose pid (0 if unknown) is passed.
    """
    _read_head(path)
    wheel = Wheel(path)
    try:
        try:
            wheel._take_owner_lock(blocking=False)
        except JournalLocked as exc:
            owner = exc.pid or 0
        else:
            owner = None
            wheel._become_owner()
        return change(wheel, owner), owner
    finally:
        wheel.stop()


def _hold_for_rewrite(wheel: Wheel, verb: str) -> None:
    """Take the owner lock for a command that rewrites the file, or refuse."""
    try:
        wheel._take_owner_lock(blocking=False)
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
    if info is None:
        raise _CliError("no task with id %r in %s: it has finished, was cancelled or purged, or "
                        "never existed; `wheelq list %s` shows the ids" % (tid, path, path))
    if want == FAILED and info.status != FAILED:
        raise _CliError("task %r in %s is %s, not a dead letter: only dead letters are requeued "
                        "or purged (`wheelq cancel` cancels a pending task)" % (tid, path, info.status))
    if want == PENDING and info.status == FAILED:
        raise _CliError("task %r in %s is a dead letter, not pending: `wheelq requeue` runs it "
                        "again and `wheelq purge` deletes it" % (tid, path))
    if want == PENDING and info.status != PENDING:
        raise _CliError("task %r in %s is %s and can no longer be cancelled" % (tid, path, info.status))


def _ids(args: argparse.Namespace, verb: str) -> None:
    if (args.id is None) == (not args.failed):
        raise _CliError("%s takes either a task id or --failed (every dead letter)%s: e.g. "
                        "`wheelq %s %s ID`" % (verb, ", not both" if args.failed else "",
                                                verb, args.path), code=2)


def _report_edit(args: argparse.Namespace, verb: str, done: list, owner: Any) -> int:
    """Print what cancel/requeue/purge did."""
    if args.json:
        _print_json({"path": args.path, "op": verb, "ids": done, "owner_pid": owner})
        return 0
    if not done:
        print("no dead letters in %s" % args.path)
        return 0
    if owner is None:
        past = {"cancel": "cancelled", "requeue": "requeued", "purge": "purged"}[verb]
        for tid in done:
            print("%s %s" % (past, tid))
        return 0
    for tid in done:
        print("sent %s %s" % (verb, tid))
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
                            "finished" % (args.id, args.path))
        return [args.id]

    done, owner = _edit(args.path, change)
    return _report_edit(args, "cancel", done, owner)


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

    done, owner = _edit(args.path, change)
    return _report_edit(args, "requeue", done, owner)


def _purge(args: argparse.Namespace) -> int:
    _ids(args, "purge")

    def change(wheel: Wheel, owner: Any) -> list:
        return [tid for tid in _dead_letter_ids(wheel, args) if wheel.purge(tid)]

    done, owner = _edit(args.path, change)
    return _report_edit(args, "purge", done, owner)


def _progress(message: str, *values: Any) -> None:
    """Say on stderr what a long job is doing."""
    print("wheelq: " + message % values, file=sys.stderr, flush=True)


def _compact(args: argparse.Namespace) -> int:
    path = args.path
    _read_head(path)
    wheel = Wheel(path)
    try:
        _hold_for_rewrite(wheel, "compact")
        size = os.path.getsize(path)
        if size >= _BIG:
            _progress("reading %s (%s)...", path, _size(size))
        wheel._become_owner()
        lines, size = wheel._journal.lineno, os.path.getsize(path)
        _progress("compacting %s (%d lines, %s)...", path, lines, _size(size))
        started = time.monotonic()
        records = wheel.compact()
        after = os.path.getsize(path)
    finally:
        wheel.stop()
    if args.json:
        _print_json({"path": path, "lines_before": lines, "lines_after": records + 1,
                     "bytes_before": size, "bytes_after": after})
    else:
        print("compacted %s: %d lines -> %d, %s -> %s in %.1fs"
              % (path, lines, records + 1, _size(size), _size(after), time.monotonic() - started))
    return 0


def _repair(args: argparse.Namespace) -> int:
    path = args.path
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
    journal = wheel._journal
    done: dict = {}

    def snapshot() -> list:
        # compact() calls this holding the journal's flock, and keeps it until
        # the new file is in place: no producer's line can fall in between.
        data = _read_all(journal.fd)
        _check_head(path, data)
        _, nlines, bad = _scan(path, data)
        _progress("moving %d bad line(s) of %s to %s and rewriting it (%d lines, %s)...",
                  len(bad), path, corrupt, nlines, _size(len(data)))
        skip = {lineno for lineno, _, _ in bad}
        fd = os.open(corrupt, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
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
        with journal.lock:
            try:
                kept = journal.compact(snapshot)
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
            print("moved line %d: %s" % (n, why))
        print("repaired %s: kept %d good record(s), moved %d bad line(s) to %s"
              % (path, kept, len(moved), corrupt))
    return 0


# -- printing --------------------------------------------------------------------------

_BIG = 1 << 20  # journals from this size on get a line saying they are being read


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _size(n: int) -> str:
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
    text = "(%s)" % ", ".join(parts)
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(rows: list) -> None:
    """Print rows of cells in left-aligned columns (the last column unpadded)."""
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


def _histogram(title: str, counts: list, unit: int, suffix: str, now: float) -> list:
    """Text rows for ``counts`` per ``unit`` seconds from ``now``; runs of empty rows fold into one."""
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
        clock = datetime.fromtimestamp(now + i * unit).strftime("%H:%M")
        rows.append((clock, label, counts[i] if j == i else 0))
        i = j + 1
    lw = max(len(r[1]) for r in rows)
    cw = len(str(max(counts)))
    for clock, label, n in rows:
        out.append(("  %s %-*s %*d %s" % (clock, lw, label, cw, n, "#" * -(-n // step))).rstrip())
    return out


def _status(args: argparse.Namespace) -> int:
    path = args.path
    view = _load(path, _read_journal(path))
    now = SystemClock().time()
    pending, failed = view.pending(), view.failed()
    per_minute, per_hour, later, overdue = [0] * 60, [0] * 24, 0, 0
    for t in pending:
        ahead = t.due - now
        if ahead < 0:
            overdue += 1
        elif ahead < 86400:
            per_hour[int(ahead // 3600)] += 1
            if ahead < 3600:
                per_minute[int(ahead // 60)] += 1
        else:
            later += 1
    next_due = pending[0].due if pending else None
    if args.json:
        _print_json({"path": path, "now": now, "pending": len(pending), "overdue": overdue,
                     "failed": len(failed), "next_due": next_due, "per_minute": per_minute,
                     "per_hour": per_hour, "later": later})
        return 0
    print("journal   %s" % path)
    print("pending   %d (%d overdue)" % (len(pending), overdue))
    print("failed    %d%s" % (len(failed), " (`wheelq list %s --failed` shows them)" % path
                              if failed else ""))
    if next_due is None:
        print("next due  -")
        return 0
    print("next due  %s (%s)" % (_when(next_due), _relative(next_due, now)))
    print()
    print("\n".join(_histogram("Due in the next hour, per minute", per_minute, 60, "m", now)))
    print()
    print("\n".join(_histogram("Due in the next day, per hour", per_hour, 3600, "h", now)))
    print("  later: %d" % later)
    return 0


def _list(args: argparse.Namespace) -> int:
    path = args.path
    view = _load(path, _read_journal(path))
    tasks = view.failed() if args.failed else sorted(view.pending() + view.failed(), key=_by_due)
    if args.task:
        import fnmatch

        tasks = [t for t in tasks if fnmatch.fnmatchcase(t.name, args.task)]
    total = len(tasks)
    if args.limit is not None:
        tasks = tasks[:args.limit]
    if args.json:
        _print_json([dataclasses.asdict(t) for t in tasks])
    elif not tasks:
        what = "dead letters" if args.failed else "tasks"
        print("no %s%s in %s" % (what, " named %r" % args.task if args.task else "", path))
    else:
        now = SystemClock().time()
        errors = any(t.error for t in tasks)
        rows = [["ID", "TASK", "DUE (local time)", "STATUS", "TRIES", "ARGS"] + (["ERROR"] if errors else [])]
        for t in tasks:
            status = "overdue" if t.status == PENDING and t.due < now else t.status
            row = [t.id, t.name, _when(t.due), status, str(t.tries), _call(t)]
            rows.append(row + ([t.error or ""] if errors else []))
        _table(rows)
    if len(tasks) < total:
        print("wheelq: showing %d of %d tasks (--limit %d)" % (len(tasks), total, args.limit),
              file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    path = args.path
    view, nlines, bad = _scan(path, _read_journal(path))
    pending, failed = len(view.pending()), len(view.failed())
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
            print("line %d: %s: %.70r" % (n, why, raw.decode("utf-8", "replace")))
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
                       "it; none of them runs tasks.")
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
    demo.add_argument("--journal", help="journal path (default: a new temporary file)")
    demo.add_argument("--tick", type=_seconds, default=0.25, help="tick in seconds (default 0.25)")
    demo.add_argument("--max-delay", type=_seconds, default=4.0,
                      help="longest random delay in seconds (default 4)")
    run = command("run", _run, "import MODULE and run its Wheel until SIGINT or SIGTERM", data=False)
    run.add_argument("target", metavar="MODULE:WHEEL",
                     help="e.g. tasks:wheel for `wheel = wheelq.Wheel(...)` in tasks.py")
    run.add_argument("--standby", action="store_true",
                     help="wait for the owner lock and take over when the current owner exits")
    status = command("status", _status, "counts, next due time and a histogram of due times")
    status.add_argument("path", metavar="PATH")
    ls = command("list", _list, "list pending tasks and dead letters, by due time")
    ls.add_argument("path", metavar="PATH")
    ls.add_argument("--task", metavar="NAME", help="only tasks with this name (shell-style "
                                                   "wildcards allowed, e.g. 'shop.*')")
    ls.add_argument("--failed", action="store_true", help="only dead letters")
    ls.add_argument("--limit", metavar="N", type=_count, help="at most N tasks")
    cancel = command("cancel", _cancel, "cancel a pending task")
    cancel.add_argument("path", metavar="PATH")
    cancel.add_argument("id", metavar="ID")
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
    return p


def _error_text(exc: BaseException) -> str:
    """One line for an error: an OSError's own words, not its ``[Errno N]`` repr."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror if exc.filename is None else "%s: %s" % (exc.filename, exc.strerror)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m wheelq [COMMAND] ...``."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(argv + ["demo"])
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
        print("wheelq: error: %s" % _error_text(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
