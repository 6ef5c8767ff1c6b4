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

from figures import NAME, Delays, median, perf, row, side_by_side


def peer_noop(*args, **kwargs):
    """The peers' task: does nothing (module level, so APScheduler can name it)."""


def _remove_sqlite(path):
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


class HueyAppender:
    """huey's ``schedule()`` of no-op tasks an hour ahead, on one of its stores."""

    def __init__(self, kind, path, **kwargs):
        from huey import FileHuey, SqliteHuey

        self.kind, self.path = kind, path
        if kind == "file":
            self.huey = FileHuey(name="bench", path=path)
        else:
            self.huey = SqliteHuey(name="bench", filename=path, **kwargs)
        self.schedule = self.huey.task(name=NAME)(peer_noop).schedule

    def run(self, start, stop):
        schedule = self.schedule
        t = perf()
        for i in range(start, stop):
            schedule(args=(i,), delay=3600)
        return perf() - t

    def close(self):
        if self.kind == "file":
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            self.huey.storage.close()
        except Exception:
            pass
        _remove_sqlite(self.path)


class APSchedulerAppender:
    """APScheduler 3 ``add_job`` (a date trigger an hour ahead) on a paused scheduler."""

    def __init__(self, path):
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.path = path
        self.store = SQLAlchemyJobStore(url="sqlite:///" + path)
        self.sched = BackgroundScheduler(jobstores={"default": self.store}, timezone="UTC")
        self.sched.start(paused=True)
        self.run_date = datetime.now(timezone.utc) + timedelta(hours=1)

    def run(self, start, stop):
        add, run_date = self.sched.add_job, self.run_date
        t = perf()
        for i in range(start, stop):
            add(peer_noop, "date", run_date=run_date, args=[i])
        return perf() - t

    def close(self):
        self.sched.shutdown(wait=False)
        self.store.engine.dispose()
        _remove_sqlite(self.path)


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
             lambda: HueyAppender("sqlite", scratch.path("huey", ".db"))),
            ("huey SqliteHuey(fsync=False)", "sqlite_nosync",
             lambda: HueyAppender("sqlite", scratch.path("huey", ".db"), fsync=False)),
            ("huey FileHuey", "file", lambda: HueyAppender("file", scratch.path("hueyfiles", ""))),
        ]
    if _available("apscheduler") and _available("sqlalchemy"):
        peers.append(("APScheduler 3 add_job, SQLAlchemyJobStore (SQLite)", "aps",
                      lambda: APSchedulerAppender(scratch.path("aps", ".db"))))
    if not peers:
        return [row(fig, "peers", None, "delay/s",
                    note='skipped: install them with pip install -e ".[bench]"')]
    ours = {
        "batch": lambda: Delays(scratch.path(), "batch", True),
        "always": lambda: Delays(scratch.path(), "always", True),
        "producer": lambda: Delays(scratch.path(), "batch", False),
    }
    # (our measurement, peer key, label, target)
    pairs = [("batch", "sqlite", 'owner, fsync="batch" (default)', ">= 30x"),
             ("producer", "sqlite", 'producer, fsync="batch"', None),
             ("always", "sqlite", 'owner, fsync="always" (also an fsync per add)', None),
             ("batch", "sqlite_nosync", 'owner, fsync="batch"', None),
             ("batch", "file", 'owner, fsync="batch"', None),
             ("batch", "aps", 'owner, fsync="batch"', None)]
    made = {key: make for _, key, make in peers}
    labels = {key: label for label, key, _ in peers}
    rows = []
    for ours_key, peer_key, label, target in pairs:
        if peer_key not in made:
            continue
        ws, ps, rs = [], [], []
        for r in range(cfg["repeats"]):
            # Each pair runs side by side, in slices, and which starts alternates.
            if r % 2:
                p, w = side_by_side(made[peer_key](), ours[ours_key](), n, slices=20)
            else:
                w, p = side_by_side(ours[ours_key](), made[peer_key](), n, slices=20)
            ws.append(w)
            ps.append(p)
            rs.append(w / p)
        ratio = median(rs)
        rows.append(row(fig, label, median(ws), "delay/s", labels[peer_key], median(ps),
                        ratio=ratio, target=target, ok=None if target is None else ratio >= 30,
                        note="%d tasks, one int argument, due in an hour" % n))
    return rows
