"""Figure: what a producer's first look at a journal costs (issue 18, item 1).

A gunicorn worker is a producer: it never starts its ``Wheel``, and its first
``stats()``, ``get()``, ``pending()`` or ``status()`` builds its view of the
journal.  On a journal of ``view_pending`` (300,000) pending tasks, written
by wheelq itself (an owner's ``delay()``s), this figure measures, each in a
fresh interpreter as a new worker is:

- the producer's first ``stats()``,
- the producer's first ``status()`` of a task in the middle of the journal (a look
  at one task: the lines that name it),
- the owner's ``start()`` on the same journal (the reference: the full state,
  with the ring, that a restart replays),

their time (``perf_counter`` around the call, inside the child) and their
memory: the growth of the child's RSS across the call (``/proc/self/statm``
before and after: what the worker keeps), which is what the issue measured
("added 173 MB to each worker"); where there is no ``/proc``, the growth of
the peak RSS (``ru_maxrss``) instead, and the row says so.  Repeats
alternate which of the two runs first.  The ratio is producer / owner, so
lower is better; the issue asks for a view that costs "far less than the
owner's full state", read here as at most half (``<= 0.5x``).

Run it alone with ``python benchmarks/producer_view.py [--pending N]
[--repeats R]``; ``fig_producer_view(cfg, scratch)`` is the figure function
for ``run.py`` (``cfg["view_pending"]``, ``cfg["repeats"]``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from figures import NAME, T0, Scratch, median, row  # noqa: E402

import wheelq  # noqa: E402

FIG = "12. producer view"
PROBE = "probe-middle"  # the id get() looks up
TARGET = 0.5

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import wheelq
path, what, now, name, probe = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere

def rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize(), "RSS growth"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "peak RSS growth"

wheel = wheelq.Wheel(path, clock=wheelq.ManualClock(now))
wheel.task(name=name)(lambda *a, **k: None)
before, kind = rss()
t = time.perf_counter()
if what == "stats":
    wheel.stats()
elif what == "status":
    status = wheelq.TaskHandle(wheel, probe).status()
    assert status == "pending", "status() of %r is %r" % (probe, status)
elif what == "start":
    wheel.start()
else:
    raise SystemExit("what? " + what)
seconds = time.perf_counter() - t
grew = rss()[0] - before
pending = wheel.stats()["pending"]
wheel.stop()
print(json.dumps({"seconds": seconds, "rss": grew, "kind": kind, "pending": pending}))
"""


def build_journal(path: str, n: int) -> None:
    """``n`` pending tasks, due in 1 to 25 hours, added by an owner (fsync="never")."""
    clock = wheelq.ManualClock(T0)
    wheel = wheelq.Wheel(path, clock=clock, fsync="never")
    task = wheel.task(name=NAME)(lambda *a, **k: None)
    wheel.start()
    rnd = random.Random(18)
    delay = task.delay
    for i in range(n):
        if i == n // 2:
            delay(i, count_down=3600.0, task_id=PROBE)
        else:
            delay(i, count_down=3600.0 + rnd.random() * 86400.0)
    wheel.stop()


def measure(path: str, what: str) -> dict:
    """One call (``stats``, ``get`` or ``start``) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _CHILD, ROOT, path, what, str(T0 + 2.0), NAME, PROBE],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _mb(x: float) -> float:
    return x / 1e6


def fig_producer_view(cfg, scratch):
    n = cfg.get("view_pending", 300_000)
    repeats = cfg.get("view_repeats", 3)
    path = scratch.path("view")
    build_journal(path, n)
    size = os.path.getsize(path)
    whats = ("status", "stats")
    got = {"status": [], "stats": [], "start": []}
    ratios = {(what, key): [] for what in whats for key in ("seconds", "rss")}
    for r in range(repeats):
        for what in whats:
            if r % 2:
                owner, producer = measure(path, "start"), measure(path, what)
            else:
                producer, owner = measure(path, what), measure(path, "start")
            for m in (producer, owner):
                if m["pending"] != n:
                    raise AssertionError("found %d pending, expected %d" % (m["pending"], n))
            got[what].append(producer)
            got["start"].append(owner)
            for key in ("seconds", "rss"):
                ratios[(what, key)].append(producer[key] / owner[key] if owner[key] else float("nan"))
    Scratch.remove(path)
    rows = []
    label_n = "%dk" % (n // 1000) if n % 1000 == 0 else str(n)
    owner_s = median([m["seconds"] for m in got["start"]])
    owner_mb = _mb(median([m["rss"] for m in got["start"]]))
    # status(id) looks one task up (the lines that name it); stats() builds the whole view,
    # which is the owner's table without the ring: no target, the row says what it costs.
    for what, call, target in (("status", "status() of one task", TARGET), ("stats", "stats()", None)):
        s = median([m["seconds"] for m in got[what]])
        mb = _mb(median([m["rss"] for m in got[what]]))
        kind = got[what][0]["kind"]
        for key, value, unit, label, ref in (("seconds", s, "s", "time", owner_s),
                                             ("rss", mb, "MB", kind, owner_mb)):
            q = median(ratios[(what, key)])
            rows.append(row(FIG, "producer's first %s, %s pending (%.0f MB journal): %s"
                            % (call, label_n, size / 1e6, label), value, unit,
                            "owner's start(), same journal", ref, ratio=q,
                            target="<= %gx" % target if target else None,
                            ok=q <= target if target else None,
                            note="ratio is producer/owner: lower is better; each in a fresh "
                                 "interpreter" + ("" if key == "seconds" else "; %s across the call" % kind)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pending", type=int, default=300_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="wheelq-view-") as d:
        rows = fig_producer_view({"view_pending": args.pending, "view_repeats": args.repeats},
                                 Scratch(d))
    for r in rows:
        print("%-62s %8.3f %-2s | %-30s %8.3f %-2s | %.2fx %s %s" % (
            r["label"], r["value"], r["unit"], r["ref_label"], r["ref_value"], r["ref_unit"],
            r["ratio"], r["target"] or "", {True: "ok", False: "MISSED", None: ""}[r["ok"]]))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
