"""Figure: async def tasks on wheelq's event loop, and how fast a result comes back (issue 16).

(a) ``async_tasks`` (10,000) coroutines that each ``await asyncio.sleep(0.2)``, due in
    one tick, on a wheel with ``async_workers`` as large: the time from the tick to the
    last one journaled done, beside a bare ``asyncio.gather`` of the same coroutines
    under a ``Semaphore`` of the same size, in a fresh loop of this process.  Target:
    at most 1.5x the reference's time.  While it runs, the process's threads are
    counted (all but the main thread): the wheel's ``workers`` worker threads, its timer
    and its loop, so at most ``workers + 2``; a thread per coroutine would show.
(b) ``async_thread_tasks`` of the same work as plain functions that ``time.sleep(0.2)``,
    on the default 4 worker threads, beside the same number as coroutines: no target;
    it shows why an ``async def`` task is the one to write for work that waits.  At
    the size of (a) it would take ``n / 4 * 0.2`` s (500 s), so the quick mode runs
    fewer and the row says what 10,000 would take.
(c) The latency from a task's ``return`` to ``result()`` waking in another thread of
    the owner's process, for an async task (returning on the loop thread) and for a
    plain one (returning on a worker), beside a bare ``threading.Condition`` hand-over
    between two threads.  Target: a median under 1 ms.

Every repeat measures wheelq and its reference back to back, alternating which goes
first; rows quote medians and the median of the per-repeat ratios (reference time /
wheelq time: bigger is better for wheelq).  Journals are files (``fsync="batch"``), as
in figure 5.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import wheelq  # noqa: E402
from figures import T0, _alternate, _n, median, perf, row  # noqa: E402

FIGURE = "10. async"
SLEEP = 0.2  # seconds each task waits
WORKERS = 4  # the default thread workers


def _others() -> int:
    """Threads of this process besides the main thread."""
    return threading.active_count() - 1


# -- (a) and (b): a burst of waiting tasks -------------------------------------------------


async def _sleeper(i):
    await asyncio.sleep(SLEEP)


def _thread_sleeper(i):
    time.sleep(SLEEP)


def wheelq_burst(path: str, n: int, is_async: bool) -> tuple:
    """n waiting tasks due in one tick: (seconds from the tick to the last done, most threads)."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(path, workers=WORKERS, async_workers=max(n, 1), clock=clock)
    task = wheel.task(name="bench.sleep")(_sleeper if is_async else _thread_sleeper)
    wheel.start()
    delay = task.delay
    for i in range(n):
        delay(i, count_down=10.0)
    most = _others()
    t = perf()
    clock.advance(10.0)
    deadline = t + max(600.0, 2 * n * SLEEP / WORKERS)
    while not wheel.join(timeout=0.005):
        most = max(most, _others())
        if perf() > deadline:
            raise RuntimeError("the burst did not finish in time")
    dt = perf() - t
    done = wheel.stats()["done"]
    wheel.stop()
    for p in (path, path + ".lock"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if done != n:
        raise AssertionError("the burst ran %d tasks, expected %d" % (done, n))
    return dt, most


def gather_time(n: int) -> float:
    """The reference: asyncio.gather of the same n coroutines under a Semaphore(n)."""

    async def main():
        places = asyncio.Semaphore(max(n, 1))

        async def one(i):
            async with places:
                await _sleeper(i)

        t = perf()
        await asyncio.gather(*(one(i) for i in range(n)))
        return perf() - t

    return asyncio.run(main())


# -- (c) latency from return to result() -------------------------------------------------------


def result_latencies(path: str, count: int, is_async: bool) -> list:
    """Seconds from each task's return to result() waking in a waiting thread."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(path, clock=clock)
    returned: dict = {}
    pause = threading.Event()

    if is_async:
        async def answer(i):
            await asyncio.sleep(0.002)  # the waiter is waiting by now
            returned[i] = perf()
            return i
    else:
        def answer(i):
            pause.wait(0.002)
            returned[i] = perf()
            return i

    task = wheel.task(name="bench.answer", result_ttl=60)(answer)
    wheel.start()
    out = []
    try:
        for i in range(count):
            h = task.delay(i)
            woke: list = []
            ready = threading.Event()

            def wait():
                ready.set()
                value = h.result(timeout=30)
                woke.append((perf(), value))

            th = threading.Thread(target=wait)
            th.start()
            ready.wait(5)
            clock.advance(1.0)
            th.join(30)
            if not woke or woke[0][1] != i:
                raise RuntimeError("result() did not come back for task %d" % i)
            out.append(woke[0][0] - returned[i])
    finally:
        wheel.stop()
        for p in (path, path + ".lock"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    return out


def condition_latencies(count: int) -> list:
    """The reference: one thread sets a value and notifies a Condition another waits on."""
    out = []
    cond = threading.Condition()
    pause = threading.Event()
    for i in range(count):
        box: list = []
        ready = threading.Event()

        def wait():
            with cond:
                ready.set()
                while not box:
                    cond.wait(30)
            out.append(perf() - box[0])

        th = threading.Thread(target=wait)
        th.start()
        ready.wait(5)
        pause.wait(0.002)
        with cond:
            box.append(perf())
            cond.notify_all()
        th.join(30)
    return out


# -- the figure ------------------------------------------------------------------------------


def fig_async(cfg, scratch):
    n = cfg.get("async_tasks", 10_000)
    n_threads = cfg.get("async_thread_tasks", 400)
    n_latency = cfg.get("async_latency", 200)
    repeats = cfg.get("repeats", 5)
    rows = []

    # (a) coroutines on wheelq's loop against a bare gather.
    ws, gs, qs, most = [], [], [], 0
    for r in range(repeats):
        (w, threads), g = _alternate(r, lambda: wheelq_burst(scratch.path(), n, True),
                                     lambda: gather_time(n))
        ws.append(w)
        gs.append(g)
        qs.append(g / w)
        most = max(most, threads)
    q = median(qs)
    label = "%s async tasks (await asyncio.sleep(%g)) due in one tick, async_workers=%s" % (
        _n(n), SLEEP, _n(n))
    rows.append(row(FIGURE, label, median(ws), "s",
                    "asyncio.gather of the same under a Semaphore(%s)" % _n(n), median(gs),
                    ratio=q, target=">= 0.67x (at most 1.5x the reference's time)",
                    ok=q >= 1 / 1.5, note="ratio is reference time / wheelq time"))
    rows.append(row(FIGURE, label + ": most threads besides the main one", most, "threads",
                    target="<= workers + 2 = %d" % (WORKERS + 2), ok=most <= WORKERS + 2,
                    note="%d worker threads, the timer and the wheelq-asyncio loop" % WORKERS))

    # (b) the same work on threads, beside the same number as coroutines.  One repeat:
    # the time is the sleeps', and a repeat is long.
    t_threads, _ = wheelq_burst(scratch.path(), n_threads, False)
    t_async, _ = wheelq_burst(scratch.path(), n_threads, True)
    rows.append(row(FIGURE, "%s plain tasks (time.sleep(%g)) on the default %d threads"
                    % (_n(n_threads), SLEEP, WORKERS), t_threads, "s",
                    "the same %s as async tasks on wheelq's loop" % _n(n_threads), t_async,
                    ratio=t_async / t_threads,
                    note="no target; %d threads need n / %d * %gs = %.1f s at best (a queue "
                    "item carries up to 64 tasks, so a burst can leave some idle at its end); "
                    "%s would take %.0f s or more" % (WORKERS, WORKERS, SLEEP,
                                                      n_threads / WORKERS * SLEEP, _n(n),
                                                      n / WORKERS * SLEEP)))

    # (c) from return to result(), an async task and a plain one, against a Condition.
    for kind, is_async in (("an async task", True), ("a plain task", False)):
        lat_w, lat_r = [], []
        for r in range(repeats):
            per = max(1, n_latency // repeats)
            a, b = _alternate(r, lambda: result_latencies(scratch.path(), per, is_async),
                              lambda: condition_latencies(per))
            lat_w += a
            lat_r += b
        m, mr = median(lat_w) * 1e6, median(lat_r) * 1e6
        rows.append(row(FIGURE, "%s's return to result() waking in another thread: median "
                        "of %d" % (kind, len(lat_w)), m, "us",
                        "threading.Condition hand-over between two threads", mr,
                        ratio=mr / m if m else None, target="< 1 ms", ok=m < 1000.0,
                        note="max %.1f ms (reference %.1f ms)" % (max(lat_w) * 1e3,
                                                                 max(lat_r) * 1e3)))
    return rows


if __name__ == "__main__":  # python benchmarks/async_bench.py [--smoke]
    import json
    import tempfile

    from figures import Scratch

    smoke = "--smoke" in sys.argv
    cfg = dict(async_tasks=300, async_thread_tasks=20, async_latency=20, repeats=1) if smoke \
        else {}
    with tempfile.TemporaryDirectory() as d:
        for r in fig_async(cfg, Scratch(d)):
            print(json.dumps(r))
