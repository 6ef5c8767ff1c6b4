"""Figure: the cost of one "next nominal time after t" of a cron schedule.

wheelq's ``_cron_next`` beside croniter's ``get_next`` (started from a
zoneinfo-aware datetime), on ``*/5 * * * *`` and ``30 2 * * 1-5`` in
Europe/Berlin.  croniter is a bench-extra peer (``pip install croniter``); it
is never imported by wheelq, and without it the rows are skipped.

Each timed pass walks ``cron_calls`` successive next times, in blocks of 250
from starting points spread over 2024 (so both libraries cross the DST
changes), and both do the same walk.  wheelq's zone offsets are cached after
its first pass, as in a running wheel, so an untimed pass of each comes
first.  Repeats alternate which library goes first; the row quotes medians
and the median of the per-repeat ratios (croniter time / wheelq time: bigger
is better for wheelq).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from figures import median, perf, row  # noqa: E402

import wheelq as S  # the schedule math is section 5 of wheelq.py

FIGURE = "8. cron"
ZONE = "Europe/Berlin"
CASES = ["*/5 * * * *", "30 2 * * 1-5"]
BLOCK = 250
YEAR = (datetime(2024, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp(),
        datetime(2025, 1, 1, tzinfo=ZoneInfo(ZONE)).timestamp())


def _starts(n):
    blocks = max(1, n // BLOCK)
    lo, hi = YEAR
    return [lo + (hi - lo) * i / blocks for i in range(blocks)]


def _wheelq_time(expr, starts):
    """Seconds per call of _cron_next over the walk."""
    cron = S._parse_cron(expr)
    zone = S._resolve_tz(ZONE)[0]
    nxt = S._cron_next
    t0 = perf()
    for t in starts:
        for _ in range(BLOCK):
            t = nxt(cron, zone, t)[0]
    return (perf() - t0) / (len(starts) * BLOCK)


def _croniter_time(expr, starts):
    """Seconds per call of croniter's get_next(float) over the same walk."""
    from croniter import croniter

    zone = ZoneInfo(ZONE)
    iters = [croniter(expr, datetime.fromtimestamp(t, zone)) for t in starts]  # untimed
    t0 = perf()
    for it in iters:
        get = it.get_next
        for _ in range(BLOCK):
            get(float)
    return (perf() - t0) / (len(starts) * BLOCK)


def _same_answers(expr):
    """Both libraries give the same times over a January walk (no DST change in it)."""
    from croniter import croniter

    zone = ZoneInfo(ZONE)
    start = YEAR[0] + 3600.0
    it = croniter(expr, datetime.fromtimestamp(start, zone))
    theirs = [it.get_next(float) for _ in range(50)]
    ours = [t for t, _ in S._cron_times(S._parse_cron(expr), zone, start, 50)]
    if ours != theirs:
        raise AssertionError("wheelq and croniter disagree on %r: %r vs %r"
                             % (expr, ours[:3], theirs[:3]))


def fig_cron(cfg, scratch):
    n = cfg.get("cron_calls", 20000)
    repeats = cfg["repeats"]
    try:
        import croniter  # noqa: F401
    except ImportError:
        return [row(FIGURE, "next after t: %r in %s" % (expr, ZONE), None, "us",
                    "croniter get_next", None, target=">= 1x", note="croniter not installed")
                for expr in CASES]
    rows = []
    starts = _starts(n)
    for expr in CASES:
        _same_answers(expr)
        _wheelq_time(expr, starts)    # untimed: fills wheelq's cache of zone offsets
        _croniter_time(expr, starts)  # untimed, for symmetry
        ours, theirs, ratios = [], [], []
        for r in range(repeats):
            if r % 2:
                b = _croniter_time(expr, starts)
                a = _wheelq_time(expr, starts)
            else:
                a = _wheelq_time(expr, starts)
                b = _croniter_time(expr, starts)
            ours.append(a * 1e6)
            theirs.append(b * 1e6)
            ratios.append(b / a)
        q = median(ratios)
        rows.append(row(FIGURE, "next after t: %r in %s (%d calls)" % (expr, ZONE, len(starts) * BLOCK),
                        median(ours), "us", "croniter get_next, zoneinfo start", median(theirs),
                        ratio=q, target=">= 1x (no slower than croniter)", ok=q >= 1))
    return rows


if __name__ == "__main__":
    import json

    for r in fig_cron({"repeats": 5, "cron_calls": int(sys.argv[1]) if len(sys.argv) > 1 else 20000},
                      None):
        print(json.dumps(r))
