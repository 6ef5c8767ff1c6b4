"""Roles for the multi-process tests of the Redis store (tests/test_redis.py), one process each.

    python tests/redis_agent.py owner URL RECORD [--standby] [--tick T] [--sleep S]
    python tests/redis_agent.py produce URL TAG N [--spread S]
    python tests/redis_agent.py same URL START_AT ID...
    python tests/redis_agent.py compact-crash URL STEP

``owner`` registers the task ``job(key, due)``, which appends ``start KEY DUE T``
and ``end KEY DUE T`` lines to RECORD (T: the time it ran, on this host's
clock) and sleeps S seconds between them; it prints ``OWNER <time>`` once it
owns the queue, runs until SIGTERM, and exits 1 (printing ``FAULT ...``) if it
stopped because it lost the queue.  ``produce`` adds N tasks ``TAG-i``, due
within S seconds, each with ``eta`` = its due time, and prints ``ACKED N``.
``same`` waits until START_AT (epoch seconds) and adds each ID with
``task_id=ID``.  ``compact-crash`` owns the queue, finishes some tasks, and
dies (``os._exit``) at the given step of a compaction.

No role sleeps to wait for another: the test drives them and bounds every wait.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time

import wheelq

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(process)d %(levelname)s %(message)s")


def say(text: str) -> None:
    print(text, flush=True)


def register(wheel: wheelq.Wheel, record: str | None = None, sleep: float = 0.0) -> wheelq.Task:
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if record else None

    @wheel.task(name="job")
    def job(key, due):
        if fd is not None:
            os.write(fd, b"start %s %r %r\n" % (key.encode(), due, time.time()))
        if sleep:
            time.sleep(sleep)
        if fd is not None:
            os.write(fd, b"end %s %r %r\n" % (key.encode(), due, time.time()))

    return job


def owner(args: argparse.Namespace) -> int:
    wheel = wheelq.Wheel(args.url, tick=args.tick, workers=4)
    register(wheel, args.record, args.sleep)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    wheel.start(standby=args.standby)
    said = False
    while not stop.wait(0.005):
        if not said and wheel.is_owner:
            say("OWNER %r" % time.time())
            said = True
        if wheel._fault is not None:
            say("FAULT %s" % wheel._fault)
            wheel.stop(timeout=10)
            return 1
    wheel.stop(timeout=10)
    return 0


def produce(args: argparse.Namespace) -> int:
    wheel = wheelq.Wheel(args.url)
    job = register(wheel)
    rnd = random.Random(args.tag)
    for i in range(args.n):
        due = time.time() + rnd.uniform(0, args.spread)
        job.delay("%s-%d" % (args.tag, i), due, eta=due)
    say("ACKED %d" % args.n)
    wheel.stop()
    return 0


def same(args: argparse.Namespace) -> int:
    wheel = wheelq.Wheel(args.url)
    job = register(wheel)
    wheel.stats()  # opened before the start, so the adds race each other, not the connects
    while time.time() < args.start_at:
        pass
    for tid in args.ids:
        job.delay("%s@%d" % (tid, os.getpid()), 0.0, task_id=tid, count_down=3600)
    say("ADDED %d" % len(args.ids))
    wheel.stop()
    return 0


def compact_crash(args: argparse.Namespace) -> int:
    import wheelq_redis

    wheelq_redis._CHUNK = 10  # snapshot chunks of 10 lines: several chunk steps
    wheel = wheelq.Wheel(args.url, clock=wheelq.ManualClock())
    register(wheel)
    wheel.start()
    store = wheel._store

    def between(step: str) -> None:
        say("STEP %s" % step)
        if step == args.step:
            os._exit(17)  # as a SIGKILL would: no cleanup, the lease stays until it expires

    store._between = between
    say("READY")
    wheel.compact()
    say("COMPACTED")
    os._exit(0)


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    o = sub.add_parser("owner")
    o.add_argument("url")
    o.add_argument("record")
    o.add_argument("--standby", action="store_true")
    o.add_argument("--tick", type=float, default=0.05)
    o.add_argument("--sleep", type=float, default=0.0)
    o.set_defaults(func=owner)
    pr = sub.add_parser("produce")
    pr.add_argument("url")
    pr.add_argument("tag")
    pr.add_argument("n", type=int)
    pr.add_argument("--spread", type=float, default=1.0)
    pr.set_defaults(func=produce)
    s = sub.add_parser("same")
    s.add_argument("url")
    s.add_argument("start_at", type=float)
    s.add_argument("ids", nargs="+")
    s.set_defaults(func=same)
    c = sub.add_parser("compact-crash")
    c.add_argument("url")
    c.add_argument("step")
    c.set_defaults(func=compact_crash)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
