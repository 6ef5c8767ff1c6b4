"""Figure: the Redis store (wheelq_redis.py), against bare redis-py and arq on the same server.

``fig_redis(cfg, scratch)`` starts a redis-server of its own (from PATH; AOF on
with ``appendfsync everysec``, the usual production setting: with ``always``
every figure would time the disk's fsync) and returns rows in the format of
``figures.row``:

* ``delay()`` of a producer from one thread, against a bare redis-py ``XADD``
  of the same line, one round trip each (target >= 0.8x);
* ``delay()`` from 8 threads, against one thread sending the same records as
  pipelined ``XADD``s in batches of 8 (target >= 0.5x);
* wheelq's ``adelay()`` beside arq's ``enqueue_job(..., _defer_by=...)``, from
  one coroutine and from 8 (target: wheelq faster), when arq is installed
  (``pip install arq``, in the bench extra); skipped with a note otherwise;
* standby takeover after a SIGKILL of the owner, median and max over 10 kills
  (target: at most lease + 1 tick);
* ``start()`` of a queue of ``cfg["reopen"]`` pending tasks (1,000,000 with
  ``--full``) in a fresh interpreter, against reading the same stream with
  ``XRANGE`` plus ``json.loads`` of each entry, in a fresh interpreter too.

Repeats alternate which side goes first; ratios are medians of per-repeat
ratios.  Without redis-server or redis-py the figure returns one row saying so.

    python benchmarks/redis_bench.py [--smoke | --full]   (quick sizes by default)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import wheelq  # noqa: E402

perf = time.perf_counter


def median(xs):
    return statistics.median(xs)


def row(*args, **kwargs):
    """figures.row, imported when called: figures.py imports this module to list its figures."""
    from figures import row as make

    return make(*args, **kwargs)

FIG = "11. Redis store"
NAME = "bench.noop"


def noop(*args, **kwargs):
    return None


def _queue(server) -> str:
    return "%s?queue=b%s" % (server.url, uuid.uuid4().hex[:10])


def _key(url: str) -> str:
    return "wheelq:{%s}:log" % url.rsplit("queue=", 1)[1].split("&")[0]


# -- 1 and 2: delay() against bare XADD ----------------------------------------------------------


def _line(i: int) -> bytes:
    """The bytes a producer's delay(i, count_down=3600) journals."""
    return ('{"p":1,"op":"add","id":"bench-%x","task":"%s","due":%r,"args":[%d],"kwargs":{}}\n'
            % (i, NAME, time.time() + 3600.0, i)).encode()


def _one_thread(server, n: int, slices: int = 10) -> tuple:
    """(wheelq delay/s, XADD/s): one thread each, alternating slices of n/slices."""
    import redis

    url = _queue(server)
    wheel = wheelq.Wheel(url)
    task = wheel.task(name=NAME)(noop)
    task.delay(0, count_down=3600.0)  # connected, and the view of the URL is open
    r = redis.Redis.from_url(server.url)
    key = "bench:{bare}:log"
    line = _line(1)
    r.xadd(key, {"r": line})
    step = max(1, n // slices)
    ours = ref = 0.0
    for s in range(slices):
        pair = [("ours", lambda: [task.delay(i, count_down=3600.0) for i in range(step)]),
                ("ref", lambda: [r.xadd(key, {"r": line}) for _ in range(step)])]
        if s % 2:
            pair.reverse()
        for who, job in pair:
            t = perf()
            job()
            took = perf() - t
            if who == "ours":
                ours += took
            else:
                ref += took
    wheel.stop()
    r.delete(key, _key(url))
    return step * slices / ours, step * slices / ref


def _eight_threads(server, n: int) -> float:
    url = _queue(server)
    wheel = wheelq.Wheel(url)
    task = wheel.task(name=NAME)(noop)
    task.delay(0, count_down=3600.0)
    go = threading.Barrier(9)
    per = n // 8

    def add():
        go.wait()
        for i in range(per):
            task.delay(i, count_down=3600.0)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    go.wait()
    t0 = perf()
    for t in threads:
        t.join()
    took = perf() - t0
    wheel.stop()
    return per * 8 / took


def _pipelined(server, n: int) -> float:
    import redis

    r = redis.Redis.from_url(server.url)
    key = "bench:{pipe}:log"
    lines = [_line(i) for i in range(8)]
    t0 = perf()
    for _ in range(n // 8):
        pipe = r.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(key, {"r": line})
        pipe.execute()
    took = perf() - t0
    r.delete(key)
    return (n // 8) * 8 / took


def _delay_rows(cfg, server) -> list:
    n = min(cfg["n"], 20_000)
    one, bare, eight, piped, q1, q8 = [], [], [], [], [], []
    for rep in range(cfg["repeats"]):
        a, b = _one_thread(server, n)
        one.append(a)
        bare.append(b)
        q1.append(a / b)
        if rep % 2:
            p = _pipelined(server, n)
            e = _eight_threads(server, n)
        else:
            e = _eight_threads(server, n)
            p = _pipelined(server, n)
        eight.append(e)
        piped.append(p)
        q8.append(e / p)
    r1, r8 = median(q1), median(q8)
    return [
        row(FIG, "producer delay(), 1 thread", median(one), "delay/s",
            "redis-py XADD of the same line, 1 round trip each", median(bare), "delay/s",
            ratio=r1, target=">= 0.8x", ok=r1 >= 0.8),
        row(FIG, "producer delay(), 8 threads", median(eight), "delay/s",
            "pipelined XADD of the same records, batches of 8", median(piped), "delay/s",
            ratio=r8, target=">= 0.5x", ok=r8 >= 0.5),
    ]


# -- 3: beside arq --------------------------------------------------------------------------------


async def _arq_rate(server, n: int, coroutines: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings

    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    pool = await create_pool(RedisSettings(host="127.0.0.1", port=port,
                                           database=0), default_queue_name="arq:b%s"
                             % uuid.uuid4().hex[:8])
    per = n // coroutines
    await pool.enqueue_job("noop", -1, _defer_by=3600)

    async def add(c):
        for i in range(per):
            await pool.enqueue_job("noop", c * per + i, _defer_by=3600)

    t0 = perf()
    await asyncio.gather(*(add(c) for c in range(coroutines)))
    took = perf() - t0
    await pool.aclose() if hasattr(pool, "aclose") else await pool.close()
    return per * coroutines / took


async def _adelay_rate(server, n: int, coroutines: int) -> float:
    wheel = wheelq.Wheel(_queue(server))
    task = wheel.task(name=NAME)(noop)
    await task.adelay(-1, count_down=3600.0)
    per = n // coroutines

    async def add(c):
        for i in range(per):
            await task.adelay(c * per + i, count_down=3600.0)

    t0 = perf()
    await asyncio.gather(*(add(c) for c in range(coroutines)))
    took = perf() - t0
    wheel.stop()
    return per * coroutines / took


def _arq_rows(cfg, server) -> list:
    try:
        import arq  # noqa: F401
    except ImportError:
        return [row(FIG, "adelay() beside arq enqueue_job(_defer_by=)", None, "delay/s",
                    note="arq is not installed (pip install arq, in the bench extra): skipped")]
    n = min(cfg["n"], 10_000)
    rows = []
    for coroutines in (1, 8):
        ours, theirs, qs = [], [], []
        for rep in range(cfg["repeats"]):
            first = [lambda: _adelay_rate(server, n, coroutines),
                     lambda: _arq_rate(server, n, coroutines)]
            if rep % 2:
                first.reverse()
            got = [asyncio.run(f()) for f in first]
            if rep % 2:
                got.reverse()
            ours.append(got[0])
            theirs.append(got[1])
            qs.append(got[0] / got[1])
        q = median(qs)
        rows.append(row(FIG, "adelay(), %d coroutine%s" % (coroutines, "s" if coroutines > 1 else ""),
                        median(ours), "delay/s", "arq enqueue_job(_defer_by=3600)", median(theirs),
                        "delay/s", ratio=q, target="> 1x", ok=q > 1))
    return rows


# -- 4: standby takeover ----------------------------------------------------------------------------

_ROLE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import wheelq
wheel = wheelq.Wheel(sys.argv[2], tick=float(sys.argv[3]))
wheel.task(name="bench.noop")(lambda *a: None)
wheel.start(standby=sys.argv[4] == "standby")
print("STARTED", flush=True)
while not wheel.is_owner:
    time.sleep(0.001)
print("OWNER %r" % time.time(), flush=True)
while True:
    time.sleep(1)
"""


def _takeover_rows(cfg, server) -> list:
    lease, tick = 1.0, 0.1
    url = _queue(server) + "&lease=%g" % lease
    kills = 3 if cfg["repeats"] == 1 else 10

    def spawn(role):
        p = subprocess.Popen([sys.executable, "-c", _ROLE, ROOT, url, str(tick), role],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().startswith("STARTED")
        return p

    owner = spawn("owner")
    assert owner.stdout.readline().startswith("OWNER")
    times = []
    rnd = random.Random(7)
    try:
        for _ in range(kills):
            standby = spawn("standby")
            time.sleep(rnd.uniform(0.2, 0.2 + lease))  # anywhere in a renewal period
            owner.send_signal(signal.SIGKILL)
            killed = time.time()
            owner.wait()
            line = standby.stdout.readline()
            times.append(float(line.split()[1]) - killed)
            owner = standby
    finally:
        owner.kill()
        owner.wait()
    worst = max(times)
    return [row(FIG, "standby takeover after SIGKILL, median of %d" % kills, median(times), "s",
                note="lease %g s, tick %g s" % (lease, tick)),
            row(FIG, "standby takeover after SIGKILL, max of %d" % kills, worst, "s",
                target="<= lease + 1 tick (%.1f s)" % (lease + tick), ok=worst <= lease + tick)]


# -- 5: start() of a big queue ------------------------------------------------------------------------

_START = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import wheelq
wheel = wheelq.Wheel(sys.argv[2], clock=wheelq.ManualClock(1_000_000.0))
wheel.task(name="bench.noop")(lambda *a: None)
t = time.perf_counter()
wheel.start()
dt = time.perf_counter() - t
pending = wheel.stats()["pending"]
wheel.stop()
print(dt, pending)
"""

_XRANGE = r"""
import json, sys, time
import redis
r = redis.Redis.from_url(sys.argv[1])
key = sys.argv[2]
loads = json.loads
t = time.perf_counter()
n, last = 0, "-"
while True:
    chunk = r.xrange(key, last, "+", count=1000)
    if last != "-":
        chunk = chunk[1:]
    for eid, fields in chunk:
        loads(fields[b"r"])
        n += 1
    if not chunk:
        break
    last = chunk[-1][0]
print(time.perf_counter() - t, n)
"""


def _fill(server, url: str, n: int) -> None:
    """``n`` pending adds in the queue's log, as producers write them (nonce and all)."""
    import redis

    r = redis.Redis.from_url(server.url)
    key = _key(url)
    rnd = random.Random(4)
    writer = uuid.uuid4().hex[:16]
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        due = 1_000_000.0 + 3600.0 + rnd.random() * 86400.0
        line = ('{"p":1,"op":"add","id":"b-%x","task":"%s","due":%r,"args":[%d],"kwargs":{}}\n'
                % (i, NAME, due, i))
        pipe.execute_command("XADD", key, "*", "r", line, "n", "%s:%d" % (writer, i))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.hset("wheelq:{%s}:meta" % url.rsplit("queue=", 1)[1], "wheelq", 1)


def _child(code, *args):
    out = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _start_rows(cfg, server) -> list:
    n = cfg["reopen"]
    url = _queue(server)
    _fill(server, url, n)
    ours, ref, qs = [], [], []
    for rep in range(cfg["reopen_repeats"]):
        runs = [lambda: _child(_START, ROOT, url), lambda: _child(_XRANGE, server.url, _key(url))]
        if rep % 2:
            runs.reverse()
        got = [run() for run in runs]
        if rep % 2:
            got.reverse()
        (dt, pending), (rt, count) = got
        if int(pending) != n or int(count) != n:
            raise AssertionError("start() found %s pending and XRANGE %s entries, not %d"
                                 % (pending, count, n))
        ours.append(float(dt))
        ref.append(float(rt))
        qs.append(float(dt) / float(rt))
    q = median(qs)
    return [row(FIG, "start() of %s pending on Redis" % "{:,}".format(n), median(ours), "s",
                "XRANGE + json.loads of each entry", median(ref), "s", ratio=q,
                note="ratio is time/reference: lower is better")]


# -- the figure ------------------------------------------------------------------------------------


def fig_redis(cfg, scratch):
    try:
        import redis  # noqa: F401

        from redis_server import RedisServer
    except ImportError:
        return [row(FIG, "Redis store", None, "-", note='redis-py is not installed: pip install '
                    '"wheelq[redis]"; skipped')]
    if shutil.which("redis-server") is None:
        return [row(FIG, "Redis store", None, "-", note="redis-server is not on PATH: skipped")]
    server = RedisServer(appendfsync="everysec")
    try:
        rows = _delay_rows(cfg, server)
        rows += _arq_rows(cfg, server)
        rows += _takeover_rows(cfg, server)
        rows += _start_rows(cfg, server)
    finally:
        server.stop()
    return rows


if __name__ == "__main__":
    import run

    mode = "full" if "--full" in sys.argv else "smoke" if "--smoke" in sys.argv else "quick"
    for r in fig_redis(dict(run.MODES[mode]), None):
        print(json.dumps(r))
