"""Journal robustness: random journals, truncated and corrupted at random points.

Each case writes a journal of random records (every op, owner and producer
lines, awkward ids and arguments), then damages the bytes: cuts the file at
a random byte, overwrites a byte with NUL or 0xFF, deletes or inserts a
newline, replaces a line with garbage, or several of these.  Every damage
used here makes the lines it touches unreadable, so the expected outcome can
be computed from the damaged bytes alone:

* every complete line (ending in a newline) before the first unreadable one
  is a record that must be recovered, and nothing else may appear;
* a cut last line (no newline), or an unreadable last complete line, is a torn
  tail: an owner cuts exactly those bytes, with a warning;
* an unreadable line anywhere else raises ``JournalCorrupt`` with its line
  number (the header is line 1), and the file is left as it was.

A producer's view (``Wheel(path)`` never started) reads the same file: it
never cuts anything, so it either shows the same records or raises
``JournalCorrupt`` for the first unreadable complete line (or, for a file that
is not a journal at all, for its first line).

The cases are seeded: ``WHEELQ_FUZZ_SEED`` and ``WHEELQ_FUZZ_CASES`` change
them, and a failure names the case's seed so it can be replayed alone.
"""
from __future__ import annotations

import json
import logging
import os
import random

import pytest

import wheelq

CASES = int(os.environ.get("WHEELQ_FUZZ_CASES", "600"))
SEED = int(os.environ.get("WHEELQ_FUZZ_SEED", "20240601"))
HEADER = b'{"wheelq": 1}\n'
NOW = 1_000_000.0  # the wheels' manual time: every generated task is due after it


def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return rng.randint(-10**12, 10**12)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return rng.choice(["", "plain", "é ünï 漢字", 'quote " and \\ back', "new\nline\ttab", "\u2028"])
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return "s%d" % rng.randrange(1000)
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {"k%d" % i: _value(rng, depth + 1) for i in range(rng.randrange(3))}


def make_journal(rng: random.Random) -> list:
    """Random records, in an order an owner and producers could have written them."""
    records = []
    live: dict = {}  # id -> "pending" | "failed"
    for n in range(rng.randrange(0, 40)):
        r = rng.random()
        pending = [i for i, s in live.items() if s == "pending"]
        failed = [i for i, s in live.items() if s == "failed"]
        if r < 0.45 or not live:
            tid = rng.choice(["t%d" % n, "é-%d" % n, 'q"%d' % n, "id with space %d" % n])
            rec = {"op": "add", "id": tid, "task": rng.choice(["a.b", "mod.func", "x"]),
                   "due": NOW + rng.uniform(1, 10**6),
                   "args": [_value(rng) for _ in range(rng.randrange(3))],
                   "kwargs": {"k%d" % i: _value(rng) for i in range(rng.randrange(2))}}
            if rng.random() < 0.1:
                rec["tries"] = rng.randint(1, 3)
                rec["error"] = "ValueError: earlier try"
            live[tid] = "pending"
        elif r < 0.6 and pending:
            rec = {"op": "done", "id": rng.choice(pending)}
            del live[rec["id"]]
        elif r < 0.68 and pending:
            rec = {"op": "cancel", "id": rng.choice(pending)}
            del live[rec["id"]]
        elif r < 0.76 and pending:
            rec = {"op": "retry", "id": rng.choice(pending), "due": NOW + rng.uniform(1, 10**6),
                   "tries": rng.randint(1, 3), "error": "OSError: try again"}
        elif r < 0.84 and pending:
            rec = {"op": "fail", "id": rng.choice(pending), "tries": rng.randint(1, 4),
                   "error": "KeyError: 'x'"}
            live[rec["id"]] = "failed"
        elif r < 0.9 and failed:
            rec = {"op": "requeue", "id": rng.choice(failed), "due": NOW + rng.uniform(1, 10**6)}
            live[rec["id"]] = "pending"
        elif r < 0.95 and failed:
            rec = {"op": "purge", "id": rng.choice(failed)}
            del live[rec["id"]]
        else:
            # Records about ids that are not live: replay ignores them.
            rec = {"op": rng.choice(["done", "cancel", "purge"]), "id": "gone%d" % n}
        if rng.random() < 0.3:
            rec = dict(p=1, **rec)
        records.append(rec)
    return records


def model(records: list) -> dict:
    """What replaying ``records`` leaves: id -> (name, args, kwargs, due, status, tries, error)."""
    tasks: dict = {}
    for o in records:
        op, tid = o["op"], o["id"]
        t = tasks.get(tid)
        if op == "add":
            if t is None:
                tasks[tid] = [o["task"], tuple(o["args"]), o["kwargs"], o["due"], "pending",
                              o.get("tries", 0), o.get("error")]
        elif t is None:
            continue
        elif op == "done":
            del tasks[tid]
        elif op == "cancel" and t[4] == "pending":
            del tasks[tid]
        elif op == "purge" and t[4] == "failed":
            del tasks[tid]
        elif op == "retry":
            t[3], t[5], t[6], t[4] = o["due"], o["tries"], o.get("error"), "pending"
        elif op == "fail":
            t[5], t[6], t[4] = o["tries"], o.get("error"), "failed"
        elif op == "requeue" and t[4] == "failed":
            t[3], t[5], t[6], t[4] = o["due"], 0, None, "pending"
    return {tid: tuple(t) for tid, t in tasks.items()}


def damage(rng: random.Random, data: bytes) -> tuple:
    """Damage ``data`` in one to three ways; return (bytes, what was done)."""
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["truncate", "truncate", "byte", "join", "split", "garbage"])
        if not data:
            break
        if kind == "truncate":
            cut = rng.randrange(len(data) + 1)
            data = data[:cut]
            done.append("truncate@%d" % cut)
            continue
        # A position inside a line (never the newline itself).
        inner = [i for i in range(len(data)) if data[i:i + 1] != b"\n"]
        if kind == "byte" and inner:
            i = rng.choice(inner)
            data = data[:i] + rng.choice([b"\x00", b"\xff"]) + data[i + 1:]
            done.append("byte@%d" % i)
        elif kind == "join":
            newlines = [i for i in range(len(data)) if data[i:i + 1] == b"\n"]
            if newlines:
                i = rng.choice(newlines)
                data = data[:i] + data[i + 1:]
                done.append("join@%d" % i)
        elif kind == "split" and inner:
            i = rng.choice(inner + [len(data)])
            data = data[:i] + b"\n" + data[i:]
            done.append("split@%d" % i)
        elif kind == "garbage":
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            lines[i] = rng.choice([b"garbage", b"{", b"", b'{"op":', b"\x00" * 5])
            data = b"\n".join(lines)
            done.append("garbage line %d" % (i + 1))
    return data, done


def expected(data: bytes) -> dict:
    """The outcome the contract demands for these bytes, for an owner and for a producer."""
    if b"\n" not in data:
        if HEADER.startswith(data):  # empty, or a torn header: a journal with no tasks
            return {"owner": ("ok", {}, HEADER), "producer": ("ok", {})}
        # Not a journal at all: every Wheel refuses it (DESIGN.md section 6) and changes nothing.
        return {"owner": ("corrupt", 1), "producer": ("corrupt", 1)}
    lines = data.split(b"\n")
    tail = lines.pop()
    try:
        head = json.loads(lines[0])
        head_ok = isinstance(head, dict) and head.get("wheelq") == 1
    except ValueError:
        head_ok = False
    if not head_ok:
        return {"owner": ("corrupt", 1), "producer": ("corrupt", 1)}
    records, first_bad = [], None
    for lineno in range(2, len(lines) + 1):
        try:
            obj = json.loads(lines[lineno - 1])
        except ValueError:
            first_bad = lineno
            break
        assert isinstance(obj, dict) and "op" in obj, "the damage made a new valid line: %r" % obj
        records.append(obj)
    if first_bad is None:
        keep = len(data) - len(tail)
        owner = ("ok", model(records), data[:keep])
        producer = ("ok", model(records))
    else:
        producer = ("corrupt", first_bad)
        if first_bad == len(lines) and not tail:
            keep = sum(len(line) + 1 for line in lines[:-1])
            owner = ("ok", model(records), data[:keep])
        else:
            owner = ("corrupt", first_bad)
    return {"owner": owner, "producer": producer}


def state(w: wheelq.Wheel) -> dict:
    return {t.id: (t.name, t.args, t.kwargs, t.due, t.status, t.tries, t.error)
            for t in w.pending() + w.failed()}


def test_fuzz_torn_and_corrupt_journals(tmp_path, caplog):
    counts = {"owner ok": 0, "owner corrupt": 0, "cut": 0, "producer corrupt": 0}
    path = str(tmp_path / "tasks.json")
    for case in range(CASES):
        seed = SEED + case
        rng = random.Random(seed)
        original = HEADER + b"".join(_dumps(r) for r in make_journal(rng))
        data, how = damage(rng, original)
        want = expected(data)
        where = "case seed %d (WHEELQ_FUZZ_SEED=%d WHEELQ_FUZZ_CASES=1), damage %s" % (seed, seed, how)
        for name in (path, path + ".lock"):
            if os.path.exists(name):
                os.unlink(name)
        with open(path, "wb") as f:
            f.write(data)

        # A producer's view: never cuts, never changes the file.
        p = wheelq.Wheel(path, clock=wheelq.ManualClock(NOW), slots=16)
        try:
            if want["producer"][0] == "ok":
                assert state(p) == want["producer"][1], where
            else:
                with pytest.raises(wheelq.JournalCorrupt) as e:
                    p.pending()
                assert (e.value.lineno, e.value.path) == (want["producer"][1], path), where
                counts["producer corrupt"] += 1
        finally:
            p.stop()
        if data:  # (opening an empty file writes the header)
            assert open(path, "rb").read() == data, where

        # An owner: recovers every complete record or says which line is bad.
        caplog.clear()
        w = wheelq.Wheel(path, clock=wheelq.ManualClock(NOW), workers=1, slots=16)
        if want["owner"][0] == "corrupt":
            with pytest.raises(wheelq.JournalCorrupt) as e:
                w.start()
            assert (e.value.lineno, e.value.path) == (want["owner"][1], path), where
            assert "line %d" % want["owner"][1] in str(e.value), where
            assert not w.is_owner
            w.stop()
            assert open(path, "rb").read() == data, where  # left as it was
            counts["owner corrupt"] += 1
            continue
        with caplog.at_level(logging.WARNING, logger="wheelq"):
            w.start()
        try:
            assert state(w) == want["owner"][1], where
        finally:
            assert w.stop(timeout=10), where
        after = open(path, "rb").read()
        assert after == want["owner"][2], where
        if len(data) > len(after) and after != HEADER:
            # Bytes were cut: only a torn tail, and never silently.
            assert any("torn" in r.getMessage() for r in caplog.records), where
            counts["cut"] += 1
        counts["owner ok"] += 1
        if case % 10 == 0:
            # Opening again finds the same records and cuts nothing more.
            w = wheelq.Wheel(path, clock=wheelq.ManualClock(NOW), workers=1, slots=16)
            w.start()
            try:
                assert state(w) == want["owner"][1], where
            finally:
                assert w.stop(timeout=10)
            assert open(path, "rb").read() == after, where
    # The damage reached every outcome, so each branch was really exercised.
    assert all(counts[k] >= CASES // 20 for k in counts), counts


def bad_lines(data: bytes) -> list:
    """[(lineno, raw)] of every line an owner could not read, the torn tail included."""
    lines = data.split(b"\n")
    tail = lines.pop()
    bad = []
    for lineno in range(2, len(lines) + 1):
        try:
            json.loads(lines[lineno - 1])
        except ValueError:
            bad.append((lineno, lines[lineno - 1]))
    if tail:
        bad.append((len(lines) + 1, tail))
    return bad


def test_fuzz_check_and_repair_keep_every_good_line(tmp_path, capsys):
    """``wheelq check`` names every bad line; ``repair`` sets them aside and keeps all the rest."""
    path = str(tmp_path / "tasks.json")
    repaired = 0
    for case in range(0, CASES, 8):
        seed = SEED + case
        rng = random.Random(seed)
        records = make_journal(rng)
        data, how = damage(rng, HEADER + b"".join(_dumps(r) for r in records))
        where = "case seed %d (WHEELQ_FUZZ_SEED=%d WHEELQ_FUZZ_CASES=1), damage %s" % (seed, seed, how)
        if not data.startswith(HEADER):
            continue  # not a journal any more: nothing for repair to keep
        for name in (path, path + ".corrupt"):
            if os.path.exists(name):
                os.unlink(name)
        with open(path, "wb") as f:
            f.write(data)
        bad = bad_lines(data)
        capsys.readouterr()
        rc = wheelq.main(["--json", "check", path])
        report = json.loads(capsys.readouterr().out)
        assert rc == (1 if bad else 0), where
        assert [b["line"] for b in report["bad"]] == [n for n, _ in bad], where
        if not bad:
            continue
        assert wheelq.main(["--json", "repair", path]) == 0, where
        capsys.readouterr()
        with open(path + ".corrupt", "rb") as f:
            assert f.read() == b"".join(raw + b"\n" for _, raw in bad), where
        good = [json.loads(line) for line in data.split(b"\n")[1:-1] if line not in {r for _, r in bad}]
        w = wheelq.Wheel(path, clock=wheelq.ManualClock(NOW), workers=1, slots=16)
        w.start()
        try:
            assert state(w) == model(good), where
        finally:
            assert w.stop(timeout=10)
        repaired += 1
    assert repaired >= CASES // 20
