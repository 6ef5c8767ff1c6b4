"""Figure: what declared schedules cost a wheel.

(a) The idle tick of an in-memory wheel with ``sched_count`` (10,000) schedules
declared, each with its run pending in the ring, beside the idle tick of the
same wheel with no schedules and as many plain tasks pending: a tick looks at
the schedules only when a run of one ends, so the target is within 2x.

(b) ``start()`` of a journal with ``sched_count`` schedules and a long history
(``sched_history`` finished runs each: add, start, done), in a fresh
interpreter as after a restart, every schedule declared, beside ``start()``
of a journal of plain tasks with the same number of lines.  Target: within
1.2x.  Both journals are written by wheelq itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from figures import T0, Scratch, median, perf, row  # noqa: E402

import wheelq  # noqa: E402

FIG = "9. schedules"


def _declare(wheel, n):
    for i in range(n):
        wheel.periodic(every=3600 + i % 600, name="bench.sched%d" % i)(lambda: None)


def _tick_cost(wheel, ticks, now):
    t = perf()
    for _ in range(ticks):
        now += 1.0
        if wheel.tick(now):
            raise AssertionError("a run came due during the idle-tick measurement")
    return (perf() - t) / ticks, now


def fig_schedules(cfg, scratch):
    n = cfg.get("sched_count", 10_000)
    history = cfg.get("sched_history", 20)
    ticks = min(cfg["tick_count"], 600)
    repeats = cfg["repeats"]
    rows = []

    # (a) the idle tick
    clock = wheelq.ManualClock(T0)
    with_s = wheelq.Wheel(clock=clock)
    _declare(with_s, n)
    with_s.stats()  # opens it: each schedule journals its first run
    plain = wheelq.Wheel(clock=wheelq.ManualClock(T0))
    task = plain.task(name="bench.plain")(lambda *a: None)
    for i in range(n):
        task.delay(count_down=3600 + i % 600)
    a, b, now_a, now_b = [], [], T0, T0
    for r in range(repeats):
        pair = ((with_s, a, "a"), (plain, b, "b")) if r % 2 == 0 else ((plain, b, "b"), (with_s, a, "a"))
        for wheel, out, which in pair:
            if which == "a":
                cost, now_a = _tick_cost(wheel, ticks, now_a)
            else:
                cost, now_b = _tick_cost(wheel, ticks, now_b)
            out.append(cost)
    ratio = median(a) / median(b)
    rows.append(row(FIG, "idle tick, %d schedules declared" % n, median(a) * 1e6, "us",
                    "the same wheel with %d plain tasks, no schedules" % n, median(b) * 1e6,
                    ratio=ratio, target="<= 2x", ok=ratio <= 2,
                    note="ratio = with schedules / without (lower is better)"))

    # (b) start() after a long history
    sched_path, plain_path = scratch.path("sched"), scratch.path("plain")
    clock = wheelq.ManualClock(T0)
    w = wheelq.Wheel(sched_path, clock=clock)
    _declare(w, n)
    w.start()
    for _ in range(history):
        clock.advance(4200)  # every schedule's run comes due once
        if not w.join(timeout=600):
            raise RuntimeError("the schedules' runs did not finish")
    assert w.stop(timeout=60)
    lines = _count(sched_path)
    p = wheelq.Wheel(plain_path, clock=wheelq.ManualClock(T0))
    t = p.task(name="bench.plain")(lambda *a: None)
    for i in range(lines - 1):
        t.delay(i, count_down=86400.0)
    p.stop()
    sa, sb = [], []
    for r in range(max(1, min(repeats, cfg.get("reopen_repeats", repeats)))):
        pair = ((sched_path, sa, True), (plain_path, sb, False))
        for path, out, sched in (pair if r % 2 == 0 else pair[::-1]):
            out.append(_start_time(path, n if sched else 0, clock.time()))
    ratio = median(sa) / median(sb)
    rows.append(row(FIG, "start() with %d schedules and %d finished runs each (%d lines)"
                    % (n, history, lines), median(sa), "s",
                    "start() of plain tasks, the same number of lines", median(sb), ratio=ratio,
                    target="<= 1.2x", ok=ratio <= 1.2, note="fresh interpreters; lower is better"))
    for path in (sched_path, plain_path):
        Scratch.remove(path)
    return rows


def _count(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


_START = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import wheelq
n = int(sys.argv[3])
wheel = wheelq.Wheel(sys.argv[2], clock=wheelq.ManualClock(float(sys.argv[4])))
wheel.task(name="bench.plain")(lambda *a: None)
for i in range(n):
    wheel.periodic(every=3600 + i % 600, name="bench.sched%d" % i)(lambda: None)
t = time.perf_counter()
wheel.start()
dt = time.perf_counter() - t
wheel.stop()
print(dt)
"""


def _start_time(path, schedules, now):
    out = subprocess.run([sys.executable, "-c", _START, os.path.dirname(HERE), path, str(schedules),
                          str(now)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])
