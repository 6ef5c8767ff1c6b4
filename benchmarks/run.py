#!/usr/bin/env python
"""wheelq's benchmark suite: ``python benchmarks/run.py [--full | --smoke]``.

Quick mode is the default (a few minutes).  ``--full`` runs at a scale of
1,000,000 and takes much longer.  ``--smoke`` is the CI mode: tiny sizes, one
repeat, well under a minute; it checks that every figure runs, not how fast.

Each figure runs in a fresh interpreter, so one figure's garbage, threads and
memory never weigh on the next.  Every figure stands beside a reference
measured in the same run (back to back, alternating which goes first), and
the table quotes medians of the repeats and the median of the per-repeat
ratios, because absolute times on a shared machine drift.

The table is printed and, except in ``--smoke`` mode, written to
``benchmarks/RESULTS.md`` (``--out`` chooses another file, ``--out -`` none).
The exit status is 0 when every figure ran, whatever the timings (``--strict``
also fails on a missed target); 1 when a figure could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Sizes per mode.  ``late`` is (tick, tasks, seconds over which they come due).
MODES = {
    "smoke": dict(n=3000, n_sync=200, naive_sizes=[100, 1000], naive_adds=20,
                  tick_sizes=[1000, 10_000], tick_count=600, naive_poll_max=10_000,
                  mem=20_000, reopen=10_000, reopen_repeats=1, burst=5000,
                  late=[(0.1, 20, 0.5), (1.0, 5, 1.0)], peers=100, repeats=1,
                  cron_calls=2000, sched_count=300, sched_history=3,
                  async_tasks=300, async_thread_tasks=20, async_latency=20,
                  view_pending=2000, view_repeats=1),
    "quick": dict(n=100_000, n_sync=4000, naive_sizes=[1000, 10_000], naive_adds=200,
                  tick_sizes=[10_000, 100_000, 1_000_000], tick_count=3600,
                  naive_poll_max=100_000, mem=1_000_000, reopen=100_000, reopen_repeats=5,
                  burst=100_000, late=[(0.1, 300, 3.0), (1.0, 100, 5.0)], peers=2000,
                  repeats=5, cron_calls=20_000, sched_count=10_000, sched_history=5,
                  async_tasks=10_000, async_thread_tasks=400, async_latency=200,
                  view_pending=100_000, view_repeats=3),
    "full": dict(n=1_000_000, n_sync=10_000, naive_sizes=[1000, 10_000, 100_000],
                 naive_adds=200, tick_sizes=[10_000, 100_000, 1_000_000], tick_count=3600,
                 naive_poll_max=1_000_000, mem=1_000_000, reopen=1_000_000, reopen_repeats=3,
                 burst=100_000, late=[(0.1, 2000, 20.0), (1.0, 1000, 60.0)], peers=20_000,
                 repeats=5, cron_calls=20_000, sched_count=10_000, sched_history=20,
                 async_tasks=10_000, async_thread_tasks=10_000, async_latency=1000,
                 view_pending=300_000, view_repeats=3),
}

ORDER = ["delay", "naive", "tick", "memory", "memory_rss", "reopen", "burst", "lateness", "peers",
         "cron", "schedules", "async", "redis", "producer_view"]
TIMEOUT = {"smoke": 300, "quick": 1800, "full": 7200}


# --------------------------------------------------------------------------
# One figure, in a child interpreter
# --------------------------------------------------------------------------


def worker(name: str, mode: str, directory: str, repeats: int | None) -> int:
    sys.path.insert(0, HERE)
    import figures

    cfg = dict(MODES[mode])
    if repeats:
        cfg["repeats"] = repeats
        cfg["reopen_repeats"] = min(cfg["reopen_repeats"], repeats)
    rows = figures.FIGURES[name](cfg, figures.Scratch(directory))
    sys.stdout.write("\n@@RESULT@@" + json.dumps(rows) + "\n")
    return 0


def run_figure(name: str, mode: str, directory: str, repeats: int | None) -> tuple:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--mode", mode,
           "--dir", directory]
    if repeats:
        cmd += ["--repeats", str(repeats)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT[mode])
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % TIMEOUT[mode], time.perf_counter() - t
    took = time.perf_counter() - t
    marker = proc.stdout.rfind("@@RESULT@@")
    if proc.returncode != 0 or marker < 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return None, "exit %d\n    %s" % (proc.returncode, "\n    ".join(tail)), took
    return json.loads(proc.stdout[marker + len("@@RESULT@@"):]), None, took


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def fmt(value, unit):
    if value is None:
        return "-"
    if unit in ("delay/s",):
        return "{:,.0f}/s".format(value)
    if unit == "B":
        return "%.0f B" % value
    if unit == "us":
        return "%.2f us" % value if value < 1000 else "{:,.0f} us".format(value)
    if unit == "ms":
        return "%.1f ms" % value
    if unit == "s":
        return "%.3f s" % value if value < 10 else "%.1f s" % value
    if unit in ("tasks", "wakeups"):
        return "%d %s" % (value, unit)
    if unit == "x":
        return "%.2fx" % value
    return "%g %s" % (value, unit)


def fmt_ratio(r):
    if r is None:
        return "-"
    if r >= 100:
        return "{:,.0f}x".format(r)
    return "%.2fx" % r


def table(rows: list) -> str:
    head = ["figure", "measurement", "wheelq", "reference (same run)", "ref value", "ratio",
            "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        result = "" if r["ok"] is None else ("PASS" if r["ok"] else "MISS")
        label = r["label"]
        if r.get("note") and r["value"] is None:
            label += " (" + r["note"] + ")"
        lines.append("| " + " | ".join([
            r["figure"], label, fmt(r["value"], r["unit"]), r["ref_label"] or "-",
            fmt(r["ref_value"], r["ref_unit"]), fmt_ratio(r["ratio"]), r["target"] or "",
            result]) + " |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(), "date": datetime.datetime.now().astimezone()
            .strftime("%Y-%m-%d %H:%M %Z"), "load": _load(), "revision": _revision()}


def _load() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):
        return "unknown"


def _revision() -> str:
    """The git commit of wheelq.py, marked when the file differs from it."""
    root = os.path.dirname(HERE)
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "wheelq.py"], cwd=root,
                               timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not rev:
        return "unknown"
    return rev + (" (wheelq.py modified)" if dirty else "")


NOTES = """\
Notes
- Ratios are the median of the per-repeat ratios; each repeat measures wheelq
  and its reference back to back.  In figures 1 and 7 they run side by side:
  in alternating slices of the same task numbers (100 slices in figure 1, 20
  for the peers), each with its own file and state, so both see the same
  moments of a shared machine; the 8-thread row cannot run in slices, and
  its floor runs just before and just after it.  For delay/s rows and the peers, ratio =
  wheelq / reference (higher is better).  For reopen, ratio = wheelq time /
  reference time (lower is better).  For the burst, ratio = reference time /
  wheelq time.  For the idle tick, ratio = naive poll / wheelq tick.
- 1. The floor is what any JSON-lines journal must do per task: build the
  same record (same keys, `json.dumps`), one `write()` and a flush (an
  `fsync` too for the fsync floor).  wheelq's owner appends without a file
  lock; a producer takes `flock` and checks the inode around each append.
  The naive baseline keeps the list in memory and rewrites the whole JSON
  file on every add.
- 2. An unstarted in-memory `Wheel()` on a `ManualClock`, tasks due 10-34 h
  ahead, so every slot holds later rounds; the median over repeats of a full
  revolution (3600 ticks) of `wheel.tick(now)`.  The naive poll reads and
  parses the whole file.
- 3. tracemalloc counts the bytes Python asked for (not allocator rounding);
  the RSS row shows the process's real growth.  Each task has one int
  argument and a due time uniform over a day (about 12 tasks per tick).
- 4. The journal is written by wheelq itself: N pending tasks plus 0.45 N
  tasks added and done (interleaved), then the same after `compact()`.  The
  time is `Wheel(path).start()`: replay, ring build, threads, timed inside a
  fresh interpreter, as after a restart; the reference runs in a fresh
  interpreter too.  (Measured in the process that had just built the
  journal and its million records, both took longer, and start() the more:
  1.21x to 1.25x before compaction in two runs of 2026-12-02.)
- 6. Lateness = the time the task started minus its due time, on the real
  clock; tasks come due at random times.  The reference is a thread that
  sleeps with `Event.wait` to each due time in the same window.
- 7. Peers run with their defaults unless labelled.  SqliteHuey's default
  fsyncs on every enqueue (SQLite `synchronous=FULL`), wheelq's default
  (`fsync="batch"`) once per tick; the `fsync="always"` row compares the two
  at the same durability.
"""


def write_results(path: str, mode: str, info: dict, rows: list, errors: list, took: float) -> None:
    cfg = MODES[mode]
    with open(path, "w", encoding="utf-8") as f:
        f.write("# wheelq benchmark results\n\n")
        f.write("Generated by `python benchmarks/run.py%s` on %s.\n\n"
                % ({"quick": "", "full": " --full", "smoke": " --smoke"}[mode], info["date"]))
        f.write("- Machine: %s CPUs (%s), %s\n" % (info["cpus"], info["cpu"], info["platform"]))
        f.write("- Python: %s %s; wheelq at %s\n"
                % (info["implementation"], info["python"], info["revision"]))
        f.write("- Load average (1, 5, 15 min) at the start: %s; at the end: %s (other "
                "work shared the machine)\n" % (info["load"], _load()))
        f.write("- Mode: %s (delay() n=%s, fsync=\"always\" n=%s, repeats=%d); wall time %.0f s\n"
                % (mode, "{:,}".format(cfg["n"]), "{:,}".format(cfg["n_sync"]),
                   cfg["repeats"], took))
        f.write("- Figures are medians of the repeats; the machine is shared, so compare "
                "ratios, not absolute times.\n\n")
        f.write(table(rows) + "\n\n")
        if errors:
            f.write("Figures that did not run:\n\n")
            for name, err in errors:
                f.write("- %s: %s\n" % (name, err.splitlines()[0]))
            f.write("\n")
        f.write(NOTES)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="wheelq benchmark suite")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="run at a scale of 1,000,000 (slow)")
    g.add_argument("--smoke", action="store_true", help="CI mode: tiny sizes, checks it runs")
    p.add_argument("--only", help="comma-separated figures: " + ",".join(ORDER))
    p.add_argument("--repeats", type=int, help="repeats per figure (default per mode)")
    p.add_argument("--out", help="results file (default benchmarks/RESULTS.md; '-' for none)")
    p.add_argument("--dir", help="directory for scratch journals (default: a new temp dir)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        return worker(args.worker, args.mode, args.dir, args.repeats)

    mode = "full" if args.full else "smoke" if args.smoke else "quick"
    names = ORDER if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        p.error("unknown figure(s) %s; choose from %s" % (", ".join(unknown), ", ".join(ORDER)))
    out = args.out
    if out is None:
        out = "-" if mode == "smoke" or args.only else os.path.join(HERE, "RESULTS.md")
    directory = args.dir or tempfile.mkdtemp(prefix="wheelq-bench-")
    os.makedirs(directory, exist_ok=True)

    info = machine()
    print("wheelq benchmarks, %s mode: %s CPUs, Python %s, %s"
          % (mode, info["cpus"], info["python"], info["date"]), flush=True)
    rows, errors = [], []
    start = time.perf_counter()
    try:
        for name in names:
            print("  %-11s ..." % name, end="", flush=True)
            got, err, took = run_figure(name, mode, directory, args.repeats)
            if err:
                print(" FAILED (%.0f s): %s" % (took, err), flush=True)
                errors.append((name, err))
            else:
                print(" %.0f s" % took, flush=True)
                rows.extend(got)
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    took = time.perf_counter() - start
    print()
    print(table(rows))
    missed = [r for r in rows if r["ok"] is False]
    print("\n%d targets met, %d missed; %d figure(s) failed; %.0f s"
          % (sum(1 for r in rows if r["ok"]), len(missed), len(errors), took))
    if out != "-":
        write_results(out, mode, info, rows, errors, took)
        print("wrote %s" % out)
    if errors:
        return 1
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
