"""Peers on the same work: N tasks with one int argument, due an hour from now.

Installed with ``pip install -e ".[bench]"`` (huey, apscheduler<4, sqlalchemy).
A peer that is not installed is reported as skipped; nothing fails.
Each peer runs with its defaults unless the label says otherwise:

* huey ``SqliteHuey``: WAL journal, SQLite's default ``synchronous=FULL``
  (an fsync per commit, so per enqueue).  ``fsync=False`` sets
  ``synchronous=OFF``.
* huey ``FileHuey``: one file per task, no fsync.
* APScheduler 3 ``BackgroundScheduler`` with ``SQLAlchemyJobStore`` on SQLite,
  started paused so that ``add_job`` writes to the store and nothing runs.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone

from figures import NAME, median, perf, row, wheelq_rate


def peer_noop(*args, **kwargs):
    """The peers' task: does nothing (module level, so APScheduler can name it)."""


def _remove_sqlite(path):
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _huey_schedule_rate(huey, n):
    """Schedules per second of ``n`` no-op tasks an hour ahead on ``huey``."""
    schedule = huey.task(name=NAME)(peer_noop).schedule
    t = perf()
    for i in range(n):
        schedule(args=(i,), delay=3600)
    return n / (perf() - t)


def huey_sqlite_rate(path, n, **kwargs):
    from huey import SqliteHuey

    huey = SqliteHuey(name="bench", filename=path, **kwargs)
    try:
        return _huey_schedule_rate(huey, n)
    finally:
        try:
            huey.storage.close()
        except Exception:
            pass
        _remove_sqlite(path)


def huey_file_rate(path, n):
    from huey import FileHuey

    try:
        return _huey_schedule_rate(FileHuey(name="bench", path=path), n)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def apscheduler_rate(path, n):
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    store = SQLAlchemyJobStore(url="sqlite:///" + path)
    sched = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    sched.start(paused=True)
    run_date = datetime.now(timezone.utc) + timedelta(hours=1)
    add = sched.add_job
    try:
        t = perf()
        for i in range(n):
            add(peer_noop, "date", run_date=run_date, args=[i])
        dt = perf() - t
    finally:
        sched.shutdown(wait=False)
        store.engine.dispose()
        _remove_sqlite(path)
    return n / dt


def _available(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def measure(cfg, scratch):
    fig = "7. peers"
    n = cfg["peers"]
    peers = []
    if _available("huey"):
        peers += [
            ("huey SqliteHuey (defaults: fsync per enqueue)", "sqlite",
             lambda: huey_sqlite_rate(scratch.path("huey", ".db"), n)),
            ("huey SqliteHuey(fsync=False)", "sqlite_nosync",
             lambda: huey_sqlite_rate(scratch.path("huey", ".db"), n, fsync=False)),
            ("huey FileHuey", "file", lambda: huey_file_rate(scratch.path("hueyfiles", ""), n)),
        ]
    if _available("apscheduler") and _available("sqlalchemy"):
        peers.append(("APScheduler 3 add_job, SQLAlchemyJobStore (SQLite)", "aps",
                      lambda: apscheduler_rate(scratch.path("aps", ".db"), n)))
    if not peers:
        return [row(fig, "peers", None, "delay/s",
                    note='skipped: install them with pip install -e ".[bench]"')]
    ours = {
        "batch": lambda: wheelq_rate(scratch.path(), n, "batch", True),
        "always": lambda: wheelq_rate(scratch.path(), n, "always", True),
        "producer": lambda: wheelq_rate(scratch.path(), n, "batch", False),
    }
    # (our measurement, peer key, label, target)
    pairs = [("batch", "sqlite", 'owner, fsync="batch" (default)', ">= 30x"),
             ("producer", "sqlite", 'producer, fsync="batch"', None),
             ("always", "sqlite", 'owner, fsync="always" (also an fsync per add)', None),
             ("batch", "sqlite_nosync", 'owner, fsync="batch"', None),
             ("batch", "file", 'owner, fsync="batch"', None),
             ("batch", "aps", 'owner, fsync="batch"', None)]
    labels = {key: label for label, key, _ in peers}
    runs = [(k, fn) for k, fn in ours.items()] + [(key, fn) for _, key, fn in peers]
    results = {}
    ratios = {}
    for r in range(cfg["repeats"]):
        got = {k: fn() for k, fn in (runs if r % 2 == 0 else runs[::-1])}
        for k, v in got.items():
            results.setdefault(k, []).append(v)
        for ours_key, peer_key, _, _ in pairs:
            if peer_key in got:
                ratios.setdefault((ours_key, peer_key), []).append(got[ours_key] / got[peer_key])
    m = {k: median(v) for k, v in results.items()}
    rows = []
    for ours_key, peer_key, label, target in pairs:
        if peer_key not in m:
            continue
        ratio = median(ratios[ours_key, peer_key])
        rows.append(row(fig, label, m[ours_key], "delay/s", labels[peer_key], m[peer_key],
                        ratio=ratio, target=target, ok=None if target is None else ratio >= 30,
                        note="%d tasks, one int argument, due in an hour" % n))
    return rows
