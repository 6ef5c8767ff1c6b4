"""The measurements.  Each ``fig_*`` function runs in its own interpreter
(``run.py`` starts one per figure) and returns a list of rows.

A row is a dict: ``figure``, ``label``, ``value`` and ``unit`` for what wheelq
did; ``ref_label``, ``ref_value`` and ``ref_unit`` for the reference measured
in the same run; ``ratio`` (the median of the per-repeat ratios, oriented so
that bigger is better for wheelq unless ``ratio_note`` says otherwise);
``target`` (text) and ``ok`` (True, False or None when no target applies).
Every repeat measures wheelq and its reference back to back, alternating which
goes first, so a machine that slows down mid-run slows both; where both can
run a slice at a time (``side_by_side``), they alternate slices.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import wheelq  # noqa: E402
from naive import NaiveQueue, make_tasks  # noqa: E402

NAME = "bench.noop"
T0 = 1_000_000.0  # ManualClock start: a whole number of ticks
perf = time.perf_counter


def noop(*args, **kwargs):
    """The task every figure runs: it does nothing, so the queue is what is measured."""


def median(xs):
    return statistics.median(xs)


def row(figure, label, value, unit, ref_label=None, ref_value=None, ref_unit=None,
        ratio=None, target=None, ok=None, note=None):
    return {"figure": figure, "label": label, "value": value, "unit": unit,
            "ref_label": ref_label, "ref_value": ref_value, "ref_unit": ref_unit or unit,
            "ratio": ratio, "target": target, "ok": ok, "note": note}


class Scratch:
    """Fresh file paths in the benchmark's directory, removed with their side files."""

    def __init__(self, directory):
        self.dir = directory
        self.n = 0

    def path(self, stem="journal", ext=".json"):
        self.n += 1
        return os.path.join(self.dir, "%s-%d%s" % (stem, self.n, ext))

    @staticmethod
    def remove(path):
        for p in (path, path + ".lock", path + ".tmp", path + ".corrupt"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _alternate(r, first, second):
    """Run two measurements in an order that alternates with the repeat number."""
    if r % 2:
        b = second()
        a = first()
    else:
        a = first()
        b = second()
    return a, b


# --------------------------------------------------------------------------
# 1. delay() throughput
# --------------------------------------------------------------------------


class FloorAppender:
    """The floor: one JSON line per task, one write() and a flush (and an fsync)."""

    def __init__(self, path, fsync, prefix="0123456789-"):
        self.path, self.fsync, self.prefix = path, fsync, prefix
        self.file = open(path, "ab")

    def run(self, start, stop):
        """Append tasks ``start`` to ``stop``; return the seconds it took."""
        dumps, now, prefix, sync = json.dumps, time.time, self.prefix, self.fsync
        write, flush, fd = self.file.write, self.file.flush, self.file.fileno()
        t = perf()
        for i in range(start, stop):
            rec = {"op": "add", "id": prefix + str(i), "task": NAME, "due": now() + 3600.0,
                   "args": (i,), "kwargs": {}}
            write((dumps(rec) + "\n").encode("utf-8"))
            flush()
            if sync:
                os.fsync(fd)
        return perf() - t

    def close(self):
        self.file.close()
        Scratch.remove(self.path)


class Delays:
    """delay() on the owner's path (a started wheel) or from a producer (never started)."""

    def __init__(self, path, fsync, owner):
        self.path = path
        self.wheel = wheelq.Wheel(path, fsync=fsync)
        self.task = self.wheel.task(name=NAME)(noop)
        if owner:
            self.wheel.start()

    def run(self, start, stop):
        """delay() tasks ``start`` to ``stop``, due in an hour; return the seconds it took."""
        delay = self.task.delay
        t = perf()
        for i in range(start, stop):
            delay(i, count_down=3600.0)
        return perf() - t

    def run_threads(self, n, threads):
        """``n`` delay()s from ``threads`` threads at once; return (calls, seconds)."""
        per = n // threads
        barrier = threading.Barrier(threads + 1)

        def work():
            barrier.wait()
            self.run(0, per)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for th in ts:
            th.start()
        barrier.wait()
        t = perf()
        for th in ts:
            th.join()
        return per * threads, perf() - t

    def close(self):
        self.wheel.stop()
        Scratch.remove(self.path)


def side_by_side(first, second, n, slices=100):
    """Calls per second of two appenders, run in alternating slices of ``n / slices`` calls.

    A shared machine's speed drifts within seconds; run in slices side by
    side, both measurements see the same moments of it, and their ratio
    holds still where two runs one after the other would not.  Each keeps its
    own file and state from slice to slice, as if it ran alone.
    """
    step = max(1, n // slices)
    ta = tb = 0.0
    try:
        for k, s in enumerate(range(0, n, step)):
            e = min(n, s + step)
            if k % 2:
                tb += second.run(s, e)
                ta += first.run(s, e)
            else:
                ta += first.run(s, e)
                tb += second.run(s, e)
    finally:
        first.close()
        second.close()
    return n / ta, n / tb


def floor_rate(path, n, fsync):
    """The floor's appends per second, on its own."""
    floor = FloorAppender(path, fsync)
    try:
        return n / floor.run(0, n)
    finally:
        floor.close()


def wheelq_rate(path, n, fsync, owner, threads=1):
    """delay() per second on the owner's path or from a producer, on its own."""
    d = Delays(path, fsync, owner)
    try:
        if threads == 1:
            return n / d.run(0, n)
        calls, dt = d.run_threads(n, threads)
        return calls / dt
    finally:
        d.close()


def naive_add_rate(path, size, adds):
    """The naive design's add() per second when the file already holds ``size`` tasks."""
    q = NaiveQueue(path)
    q.preload(make_tasks(size, NAME, time.time() + 3600.0, 86400.0))
    due = time.time() + 3600.0
    t = perf()
    for i in range(adds):
        q.add(NAME, [i], due)
    dt = perf() - t
    q.remove_file()
    return adds / dt


def fig_delay(cfg, scratch):
    n, n_sync, repeats = cfg["n"], cfg["n_sync"], cfg["repeats"]
    fig = "1. delay()"
    res = {k: [] for k in ("floor", "owner_never", "owner_batch", "prod_never", "prod_batch",
                           "floor_fsync", "owner_always1", "owner_always8", "prod_always1")}
    ratios = {k: [] for k in res}
    for r in range(repeats):
        subjects = [("owner_never", "never", True), ("owner_batch", "batch", True),
                    ("prod_never", "never", False), ("prod_batch", "batch", False)]
        if r % 2:
            subjects.reverse()
        for key, mode, owner in subjects:
            ours, floor = side_by_side(Delays(scratch.path(), mode, owner),
                                       FloorAppender(scratch.path("floor", ".jsonl"), False), n)
            res[key].append(ours)
            res["floor"].append(floor)
            ratios[key].append(ours / floor)
        for key, owner in (("owner_always1", True), ("prod_always1", False)):
            ours, floor = side_by_side(Delays(scratch.path(), "always", owner),
                                       FloorAppender(scratch.path("floor", ".jsonl"), True), n_sync)
            res[key].append(ours)
            res["floor_fsync"].append(floor)
            ratios[key].append(ours / floor)
        # Threads cannot run in slices: the floor runs just before and after.
        before = floor_rate(scratch.path("floor", ".jsonl"), n_sync // 2, True)
        ours = wheelq_rate(scratch.path(), n_sync, "always", True, threads=8)
        floor = (before + floor_rate(scratch.path("floor", ".jsonl"), n_sync // 2, True)) / 2
        res["owner_always8"].append(ours)
        res["floor_fsync"].append(floor)
        ratios["owner_always8"].append(ours / floor)
    m = {k: median(v) for k, v in res.items()}
    q = {k: median(v) for k, v in ratios.items() if v}
    floor = "JSON-line append floor (write+flush)"
    floor_fs = "append floor + fsync per record"
    unit = "delay/s"
    rows = [
        row(fig, 'owner, fsync="batch", 1 thread', m["owner_batch"], unit, floor, m["floor"],
            ratio=q["owner_batch"], target=">= 0.7x", ok=q["owner_batch"] >= 0.7),
        row(fig, 'owner, fsync="never", 1 thread', m["owner_never"], unit, floor, m["floor"],
            ratio=q["owner_never"]),
        row(fig, 'producer, fsync="batch"', m["prod_batch"], unit, floor, m["floor"],
            ratio=q["prod_batch"], target=">= 0.4x", ok=q["prod_batch"] >= 0.4),
        row(fig, 'producer, fsync="never"', m["prod_never"], unit, floor, m["floor"],
            ratio=q["prod_never"], target=">= 0.4x", ok=q["prod_never"] >= 0.4),
        row(fig, 'owner, fsync="always", 1 thread', m["owner_always1"], unit, floor_fs,
            m["floor_fsync"], ratio=q["owner_always1"]),
        row(fig, 'owner, fsync="always", 8 threads', m["owner_always8"], unit, floor_fs,
            m["floor_fsync"], ratio=q["owner_always8"], target=">= 3x", ok=q["owner_always8"] >= 3),
        row(fig, 'producer, fsync="always", 1 thread', m["prod_always1"], unit, floor_fs,
            m["floor_fsync"], ratio=q["prod_always1"]),
    ]
    return rows


def fig_naive(cfg, scratch):
    """wheelq's owner path against the naive design at sizes where the naive one finishes."""
    fig = "1. delay()"
    rows = []
    for size in cfg["naive_sizes"]:
        adds = max(5, min(cfg["naive_adds"], int(2_000_000 // max(size, 1))))
        ws, ns, rs = [], [], []
        for r in range(cfg["repeats"]):
            w, nv = _alternate(
                r,
                lambda: wheelq_rate(scratch.path(), max(adds, 2000), "batch", True),
                lambda: naive_add_rate(scratch.path("naive"), size, adds))
            ws.append(w)
            ns.append(nv)
            rs.append(w / nv)
        rows.append(row(fig, 'owner, fsync="batch" (vs naive, file of %s tasks)' % _n(size),
                        median(ws), "delay/s", "naive: rewrite whole JSON file per add",
                        median(ns), ratio=median(rs)))
    return rows


def _n(x):
    if x >= 1_000_000 and x % 1_000_000 == 0:
        return "%dM" % (x // 1_000_000)
    if x >= 1000 and x % 1000 == 0:
        return "%dk" % (x // 1000)
    return str(x)


# --------------------------------------------------------------------------
# 2. Idle tick
# --------------------------------------------------------------------------


def _filled_memory_wheel(n, seed, start_after, spread):
    """An unstarted in-memory Wheel on a ManualClock holding ``n`` pending tasks."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(clock=clock)
    task = wheel.task(name=NAME)(noop)
    rnd = random.Random(seed)
    delay = task.delay
    for i in range(n):
        delay(i, count_down=start_after + rnd.random() * spread)
    return wheel, task


def fig_tick(cfg, scratch):
    fig = "2. idle tick"
    ticks = cfg["tick_count"]
    repeats = cfg["repeats"]
    per_tick = {}
    naive = {}
    rows = []
    for size in cfg["tick_sizes"]:
        # Tasks come due 10 to 34 hours ahead, so every slot holds later rounds
        # and each measured tick (a whole revolution of 3600) finds nothing due.
        wheel, _ = _filled_memory_wheel(size, size, 10 * 3600.0, 86400.0)
        now = T0
        ts = []
        for r in range(repeats):
            t = perf()
            for _ in range(ticks):
                now += 1.0
                if wheel.tick(now):
                    raise AssertionError("a task came due during the idle-tick measurement")
            ts.append((perf() - t) / ticks)
        if wheel.stats()["pending"] != size:
            raise AssertionError("the idle-tick wheel lost tasks")
        per_tick[size] = median(ts)
        del wheel
        gc.collect()
        if size <= cfg["naive_poll_max"]:
            path = scratch.path("naive")
            q = NaiveQueue(path)
            q.preload(make_tasks(size, NAME, time.time() + 36000.0, 86400.0))
            ps = []
            for r in range(max(1, min(repeats, 3 if size >= 1_000_000 else repeats))):
                t = perf()
                q.poll(time.time())
                ps.append(perf() - t)
            naive[size] = median(ps)
            q.remove_file()
            del q
            gc.collect()
    small = min(per_tick)
    big = max(per_tick)
    for size in cfg["tick_sizes"]:
        us = per_tick[size] * 1e6
        target = ok = None
        if size == big:
            target = "<= 0.05 ms"
            ok = per_tick[size] <= 0.05e-3
        if size in naive:
            rows.append(row(fig, "tick with nothing due, %s pending" % _n(size), us, "us",
                            "naive poll: read+parse whole file", naive[size] * 1e6,
                            ratio=naive[size] / per_tick[size], target=target, ok=ok))
        else:
            rows.append(row(fig, "tick with nothing due, %s pending" % _n(size), us, "us",
                            target=target, ok=ok,
                            note="naive poll skipped at this size (see naive_poll_max)"))
    growth = per_tick[big] / per_tick[small]
    rows.append(row(fig, "idle tick %s pending / %s pending" % (_n(big), _n(small)), growth, "x",
                    "tick at %s pending" % _n(small), per_tick[small] * 1e6, "us",
                    target="<= 2", ok=growth <= 2))
    return rows


# --------------------------------------------------------------------------
# 3. Memory per pending task
# --------------------------------------------------------------------------


def fig_memory(cfg, scratch):
    """tracemalloc: bytes Python allocated and still holds per pending task."""
    import tracemalloc

    fig = "3. memory"
    n = cfg["mem"]
    rnd = random.Random(3)
    count_downs = [60.0 + rnd.random() * 86400.0 for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(clock=clock)
    task = wheel.task(name=NAME)(noop)
    delay = task.delay
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        delay(i, count_down=count_downs[i])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    per_task = (after - before) / n
    # The reference: the same data held as plainly as Python can, id -> (name, args, due).
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    plain = {}
    prefix = "0123456789-"
    for i in range(n):
        plain[prefix + str(i + 1)] = (NAME, (i,), T0 + count_downs[i])
    gc.collect()
    ref = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    return [row(fig, "per pending task at %s, tracemalloc" % _n(n), per_task, "B",
                "dict id -> (name, args, due)", ref, ratio=per_task / ref,
                target="<= 300 B", ok=per_task <= 300,
                note="one int argument per task; due times uniform over a day")]


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fig_memory_rss(cfg, scratch):
    """RSS growth per pending task (includes allocator rounding and free lists)."""
    fig = "3. memory"
    if not os.path.exists("/proc/self/statm"):
        return [row(fig, "per pending task, RSS", None, "B", note="skipped: no /proc/self/statm")]
    n = cfg["mem"]
    rnd = random.Random(3)
    count_downs = [60.0 + rnd.random() * 86400.0 for _ in range(n)]
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(clock=clock)
    task = wheel.task(name=NAME)(noop)
    delay = task.delay
    gc.collect()
    before = _rss()
    for i in range(n):
        delay(i, count_down=count_downs[i])
    gc.collect()
    per_task = (_rss() - before) / n
    gc.collect()
    before = _rss()
    plain = {}
    prefix = "0123456789-"
    for i in range(n):
        plain[prefix + str(i + 1)] = (NAME, (i,), T0 + count_downs[i])
    gc.collect()
    ref = (_rss() - before) / n
    return [row(fig, "per pending task at %s, RSS growth" % _n(n), per_task, "B",
                "dict id -> (name, args, due)", ref, ratio=per_task / ref)]


# --------------------------------------------------------------------------
# 4. Reopen (replay)
# --------------------------------------------------------------------------


def _build_journal(path, n, finished):
    """A journal with ``n`` pending tasks and ``finished`` tasks added and done, interleaved."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(path, clock=clock, fsync="never")
    task = wheel.task(name=NAME)(noop)
    wheel.start()
    rnd = random.Random(4)
    delay = task.delay
    j = 0
    for i in range(n):
        delay(i, count_down=3600.0 + rnd.random() * 86400.0)
        if j < finished and i % 2 == 0:
            delay(j, count_down=0)
            j += 1
    while j < finished:
        delay(j, count_down=0)
        j += 1
    clock.advance(1.0)
    if not wheel.join(timeout=600):
        raise RuntimeError("the finished tasks did not run")
    wheel.stop()


_REOPEN = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import wheelq
wheel = wheelq.Wheel(sys.argv[2], clock=wheelq.ManualClock(float(sys.argv[3])))
wheel.task(name=sys.argv[4])(lambda *a: None)
t = time.perf_counter()
wheel.start()
dt = time.perf_counter() - t
pending = wheel.stats()["pending"]
wheel.stop()
print(dt, pending)
"""

_LOADS = r"""
import json, sys, time
loads = json.loads
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    for line in f:
        loads(line)
print(time.perf_counter() - t)
"""


def _child(code, *args):
    """Run ``code`` in a fresh interpreter and return what it printed, split."""
    out = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _reopen_time(path):
    """start() of the journal in a fresh process, as after a restart (the time inside it)."""
    dt, pending = _child(_REOPEN, os.path.dirname(HERE), path, T0 + 2.0, NAME)
    return float(dt), int(pending)


def _loads_lines(path):
    """The reference, in a fresh process too: json.loads of each line of the file."""
    return float(_child(_LOADS, path)[0])


def _count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def fig_reopen(cfg, scratch):
    fig = "4. reopen"
    n = cfg["reopen"]
    path = scratch.path()
    _build_journal(path, n, int(n * 0.45))
    rows = []
    for phase in ("before", "after"):
        if phase == "after":
            wheel = wheelq.Wheel(path, clock=wheelq.ManualClock(T0 + 2.0))
            wheel.start()
            wheel.compact()
            wheel.stop()
            del wheel  # its million records must not stay alive beside the ones measured
        lines = _count_lines(path)
        ws, rs, qs = [], [], []
        for r in range(cfg["reopen_repeats"]):
            gc.collect()
            (w, pending), ref = _alternate(r, lambda: _reopen_time(path), lambda: _loads_lines(path))
            if pending != n:
                raise AssertionError("reopen found %d pending, expected %d" % (pending, n))
            ws.append(w)
            rs.append(ref)
            qs.append(w / ref)
        q = median(qs)
        rows.append(row(fig, "start() of %s pending, %s compaction (%s lines)"
                        % (_n(n), phase, _n(lines)), median(ws), "s",
                        "json.loads of each line", median(rs), ratio=q,
                        target="<= 1.2x", ok=q <= 1.2, note="ratio is time/reference: lower is better"))
    Scratch.remove(path)
    return rows


# --------------------------------------------------------------------------
# 5. Burst
# --------------------------------------------------------------------------


def bare_queue_time(n, consumers=4, size=8):
    """The reference: a bare queue.Queue(8) feeding 4 no-op consumer threads."""
    q = queue.Queue(size)

    def consume():
        get = q.get
        while True:
            item = get()
            if item is None:
                return
            noop(item)

    ts = [threading.Thread(target=consume) for _ in range(consumers)]
    for t in ts:
        t.start()
    put = q.put
    t0 = perf()
    for i in range(n):
        put(i)
    for _ in ts:
        put(None)
    for t in ts:
        t.join()
    return perf() - t0


def wheelq_burst_time(path, n, workers=4):
    """n no-op tasks due in one tick: from the tick to the last one journaled done."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(path, workers=workers, clock=clock)
    task = wheel.task(name=NAME)(noop)
    wheel.start()
    delay = task.delay
    for i in range(n):
        delay(i, count_down=10.0)
    t = perf()
    clock.advance(10.0)
    if not wheel.join(timeout=600):
        raise RuntimeError("the burst did not finish within 600 s")
    dt = perf() - t
    done = wheel.stats()["done"]
    wheel.stop()
    Scratch.remove(path)
    if done != n:
        raise AssertionError("burst ran %d tasks, expected %d" % (done, n))
    return dt


def fig_burst(cfg, scratch):
    fig = "5. burst"
    n = cfg["burst"]
    ws, bs, qs = [], [], []
    for r in range(cfg["repeats"]):
        w, b = _alternate(r, lambda: wheelq_burst_time(scratch.path(), n), lambda: bare_queue_time(n))
        ws.append(w)
        bs.append(b)
        qs.append(b / w)
    q = median(qs)
    return [row(fig, "%s no-op tasks due in one tick, 4 workers (journal, fsync=\"batch\")" % _n(n),
                median(ws), "s", "bare queue.Queue(8) + 4 no-op consumers", median(bs),
                ratio=q, target=">= 1.0x", ok=q >= 1.0, note="ratio is reference time / wheelq time")]


# --------------------------------------------------------------------------
# 6. Lateness on the real clock
# --------------------------------------------------------------------------


def _pct(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    i = min(len(sorted_xs) - 1, max(0, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[i]


def fig_lateness(cfg, scratch):
    fig = "6. lateness"
    rows = []
    for tick, count, span in cfg["late"]:
        path = scratch.path()
        wheel = wheelq.Wheel(path, tick=tick)
        late = []
        done = threading.Event()
        lock = threading.Lock()

        @wheel.task(name="bench.late")
        def record(due):
            lateness = time.time() - due
            with lock:
                late.append(lateness)
                if len(late) == count:
                    done.set()

        wheel.start()
        rnd = random.Random(6)
        start = time.time() + tick
        dues = sorted(start + rnd.random() * span for _ in range(count))
        for due in dues:
            record.delay(due, eta=due)

        # The reference, in the same window: a thread sleeping to each due time.
        ref = []

        def sleeper():
            ev = threading.Event()
            for due in dues:
                ev.wait(max(0.0, due - time.time()))
                ref.append(time.time() - due)

        th = threading.Thread(target=sleeper)
        th.start()
        finished = done.wait(span + 5 * tick + 30)
        th.join()
        wheel.stop()
        Scratch.remove(path)
        if not finished:
            raise RuntimeError("only %d of %d lateness tasks ran" % (len(late), count))
        late.sort()
        ref.sort()
        early = sum(1 for x in late if x < 0)
        p99 = _pct(late, 99)
        label = "tick=%g, %d tasks over %gs" % (tick, count, span)
        rows.append(row(fig, label + ": p50", _pct(late, 50) * 1e3, "ms",
                        "Event.wait to each due time", _pct(ref, 50) * 1e3))
        rows.append(row(fig, label + ": p99", p99 * 1e3, "ms", "Event.wait to each due time",
                        _pct(ref, 99) * 1e3, target="<= tick + 50 ms", ok=p99 <= tick + 0.050))
        rows.append(row(fig, label + ": max", late[-1] * 1e3, "ms", "Event.wait to each due time",
                        ref[-1] * 1e3))
        rows.append(row(fig, label + ": ran early", early, "tasks", "Event.wait to each due time",
                        sum(1 for x in ref if x < 0), "wakeups", target="0", ok=early == 0))
    return rows


# --------------------------------------------------------------------------
# 7. Peers
# --------------------------------------------------------------------------


def fig_peers(cfg, scratch):
    import peers

    return peers.measure(cfg, scratch)


FIGURES = {
    "delay": fig_delay,
    "naive": fig_naive,
    "tick": fig_tick,
    "memory": fig_memory,
    "memory_rss": fig_memory_rss,
    "reopen": fig_reopen,
    "burst": fig_burst,
    "lateness": fig_lateness,
    "peers": fig_peers,
}


def _more_figures():
    """Figures that live in modules of their own."""
    from async_bench import fig_async
    from cron_bench import fig_cron
    from producer_view import fig_producer_view
    from redis_bench import fig_redis
    from sched_bench import fig_schedules

    FIGURES.update(cron=fig_cron, schedules=fig_schedules, redis=fig_redis,
                   producer_view=fig_producer_view)
    FIGURES["async"] = fig_async


_more_figures()
