"""One owner, many producers: real processes on one journal.

Every process here is a real interpreter running ``tests/mp_agent.py``: an
owner (``start()``), a standby (``start(standby=True)``) or a producer (a
``Wheel(path)`` that is never started).  Tasks append ``token pid time`` to a
shared runs file; producers append a token to their ack file after
``delay()`` returned.  Waits are on that evidence, each with a deadline.
The last test tears the journal for real: a producer is SIGKILLed inside a
48 MiB ``write()``, which the kernel leaves half done.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

import wheelq
from conftest import journal_was_read, python_env, run_python
from mp_agent import Agent, read_lines, read_runs, run_counts, wait_for


@pytest.fixture
def agents(tmp_path):
    """Start agents; whatever is still running at the end is killed."""
    started = []

    def start(role, *args, name=""):
        a = Agent(role, *args, stderr_dir=str(tmp_path), name=name)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def _owner_args(journal, runs, *extra):
    return ("--journal", journal, "--runs", runs, *extra)


def test_four_producers_forty_thousand_tasks_each_run_exactly_once(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs, "--tick", "0.05", "--workers", "4"))
    owner.expect("OWNER", 30)
    producers = [
        agents("producer", "--journal", journal, "--ack", str(tmp_path / ("ack%d" % i)),
               "--count", "10000", "--prefix", "p%d" % i, name="producer%d" % i)
        for i in range(4)
    ]
    for p in producers:
        line = p.expect("DONE", 60)
        assert line.startswith("DONE 10000 "), line
        assert p.wait(20) == 0, p.diagnostics()
        # A producer that only adds never reads the journal.
        assert line.split()[5] == "no", "a producer's delay() read the journal: %s" % line
    expected = {"p%d.%d" % (i, n) for i in range(4) for n in range(10000)}
    acked = set()
    for i in range(4):
        acked.update(read_lines(str(tmp_path / ("ack%d" % i))))
    assert acked == expected
    wait_for(lambda: len(read_lines(runs)) >= 40000, 90, "40,000 runs")
    # Stop the owner, so no further run can happen, then count.
    assert owner.terminate() == 0, owner.diagnostics()
    stats = json.loads(owner.expect("STATS", 5)[6:])
    counts = run_counts(runs)
    assert set(counts) == expected
    dup = {t: c for t, c in counts.items() if c > 1}
    assert not dup, "tasks ran more than once: %s" % list(dup.items())[:10]
    assert stats["done"] == 40000 and stats["pending"] == 0, stats
    # The journal agrees: nothing is left pending after the owner stopped.
    w = wheelq.Wheel(journal)
    try:
        assert w.pending() == []
    finally:
        w.stop()
    # 40,000 finished tasks leave 80,000 dead records: the owner compacted on its own.
    assert any(ln.startswith("LOG INFO journal") and "compacted" in ln for ln in owner.drain_lines()), \
        owner.diagnostics()


def _producer_wheel(journal):
    """This test process as a producer: a Wheel(path) that is never started."""
    w = wheelq.Wheel(journal)
    record = w.task(name="mp.record")(lambda token: None)  # only the owner runs it
    return w, record


def test_producer_get_pending_and_cancel_against_a_running_owner(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs, "--tick", "0.05"))
    owner.expect("OWNER", 30)
    w, record = _producer_wheel(journal)
    try:
        x = record.delay("x", count_down=1.0)
        y = record.delay("y", count_down=1.0)  # the same tick as x, added after it
        z = record.delay("z")  # the next tick
        pending = [t.id for t in w.pending() if t.id in (x.id, y.id)]
        assert pending == [x.id, y.id]
        info = w.get(x.id)
        assert info is not None and info.status == "pending" and info.args == ("x",)
        assert info.name == "mp.record"
        assert x.cancel() is True
        assert x.status() == "cancelled"
        assert w.get(x.id) is None and x.id not in [t.id for t in w.pending()]
        assert w.cancel(x.id) is False  # already cancelled
        # y comes due at the same tick x would have: once it ran, x would have too.
        wait_for(lambda: "y" in run_counts(runs), 20, "task y to run")
        # The producer's view follows the owner's done records.
        wait_for(lambda: w.get(y.id) is None and w.get(z.id) is None, 20,
                 "the producer to see y and z done")
        assert y.status() == "done" and z.status() == "done"
        assert w.cancel(y.id) is False
        assert w.pending() == []
    finally:
        w.stop()
    assert owner.terminate() == 0, owner.diagnostics()
    counts = run_counts(runs)
    assert counts == Counter({"y": 1, "z": 1}), counts
    stats = json.loads(owner.expect("STATS", 5)[6:])
    assert stats["cancelled"] == 1 and stats["done"] == 2, stats


def test_producer_delay_never_reads_the_journal(journal):
    # A big journal that no reader could get through: a bad line in the middle.
    n = 50_000
    with open(journal, "wb") as f:
        f.write(b'{"wheelq": 1}\n')
        f.write(b"".join(b'{"op":"add","id":"old%d","task":"mp.record","due":1,"args":[],"kwargs":{}}\n'
                         % i for i in range(n)))
        f.write(b"this line is not JSON\n")
        f.write(b'{"op":"add","id":"after","task":"mp.record","due":1,"args":[],"kwargs":{}}\n')
    size = os.path.getsize(journal)
    w, record = _producer_wheel(journal)
    try:
        handles = [record.delay("t%d" % i, count_down=60) for i in range(100)]
        assert not journal_was_read(w)
        with open(journal, "rb") as f:
            f.seek(size)
            added = [json.loads(line) for line in f.read().splitlines()]
        assert [r["id"] for r in added] == [h.id for h in handles]
        assert all(r["p"] == 1 and r["op"] == "add" for r in added)
        # Reading is what fails, and only when asked to read.
        with pytest.raises(wheelq.JournalCorrupt) as e:
            w.pending()
        assert e.value.lineno == n + 2
    finally:
        w.stop()


def test_compaction_while_producers_append(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs, "--tick", "0.05", "--compact-every", "0.02"))
    owner.expect("OWNER", 30)
    per = 6000
    producers = [
        agents("producer", "--journal", journal, "--ack", str(tmp_path / ("ack%d" % i)),
               "--count", str(per), "--prefix", "c%d" % i, "--seed", str(i),
               "--count-down-max", "0.3", "--canary", "--wait-compaction-at", str(per // 2),
               name="producer%d" % i)
        for i in range(3)
    ]
    for p in producers:
        p.expect("REPLACED", 30)  # it held the old file while compaction replaced it
        line = p.expect("DONE", 60).split()
        assert p.wait(20) == 0, p.diagnostics()
        assert int(line[1]) == per
        # It noticed the new inode (at least the one it waited for) and reopened.
        assert int(line[3]) >= 1, line
        # Its view kept the canary through every compaction (checked every 500 adds).
        assert int(line[7]) == per // 500, line
    expected = {"c%d.%d" % (i, n) for i in range(3) for n in range(per)}
    wait_for(lambda: len(read_lines(runs)) >= len(expected), 60, "every task to run")
    assert owner.terminate() == 0, owner.diagnostics()
    assert int(owner.expect("COMPACTIONS", 5).split()[1]) >= 3
    counts = run_counts(runs)
    assert set(counts) == expected  # nothing lost, and the cancelled canaries never ran
    assert max(counts.values()) == 1, [t for t, c in counts.items() if c > 1][:10]
    w = wheelq.Wheel(journal)
    try:
        assert w.pending() == [] and w.failed() == []
    finally:
        w.stop()


def test_second_owner_is_refused_with_the_holders_pid(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs))
    owner.expect("OWNER", 30)
    w, record = _producer_wheel(journal)
    try:
        with pytest.raises(wheelq.JournalLocked) as e:
            w.start()
        assert e.value.pid == owner.pid
        assert str(owner.pid) in str(e.value) and journal in str(e.value)
        assert "standby" in str(e.value)  # it says what to do
        assert not w.is_owner
        # Refused, the wheel is still a working producer.
        record.delay("after-refusal")
        wait_for(lambda: "after-refusal" in run_counts(runs), 20, "the task to run")
    finally:
        w.stop()
    # The same from another process.
    r = run_python("import sys, wheelq\n"
                   "try:\n"
                   "    wheelq.Wheel(sys.argv[1]).start()\n"
                   "except wheelq.JournalLocked as e:\n"
                   "    print(e.pid)\n", journal, timeout=30)
    assert r.stdout.strip() == str(owner.pid), r.stderr
    assert owner.terminate() == 0


def test_standby_takes_over_within_two_ticks_of_a_sigkill(tmp_path, journal, agents):
    tick = 0.25
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs, "--tick", str(tick), "--workers", "1",
                                         "--block", "blocker"), name="owner")
    owner.expect("OWNER", 30)
    standby = agents("owner", *_owner_args(journal, runs, "--tick", str(tick), "--standby"),
                     name="standby")
    assert standby.expect("READY", 30).endswith("standby")
    w, record = _producer_wheel(journal)
    try:
        early = [record.delay("early%d" % i) for i in range(5)]
        # Run by the owner and journaled as done (the producer's view shows it).
        wait_for(lambda: all(w.get(h.id) is None for h in early), 20, "the early tasks to finish")
        record.delay("blocker")
        owner.expect("BLOCKED", 20)  # the owner's only worker is now stuck in it
        due = [record.delay("due%d" % i) for i in range(20)]
        later = [record.delay("later%d" % i, count_down=1.5) for i in range(10)]
        later_due = {w.get(h.id).args[0]: w.get(h.id).due for h in later}
        assert len(w.pending()) == 31  # blocker, 20 due, 10 later
    finally:
        w.stop()
    killed_at = wheelq.SystemClock().time()
    owner.kill()
    standby.expect("OWNER", 10)
    wait_for(lambda: len(read_runs(runs)) >= 5 + 1 + 1 + 20 + 10, 20, "the standby to run them all")
    assert standby.terminate() == 0, standby.diagnostics()
    runs_by = {}
    for token, pid, t in read_runs(runs):
        runs_by.setdefault(token, []).append((pid, t))
    for i in range(5):
        assert runs_by["early%d" % i] == [(owner.pid, runs_by["early%d" % i][0][1])]
    # The task running at the kill runs again: the one duplicate at-least-once allows.
    assert [pid for pid, _ in runs_by["blocker"]] == [owner.pid, standby.pid]
    for i in range(20):
        (pid, t), = runs_by["due%d" % i]
        assert pid == standby.pid
        assert t - killed_at <= 2 * tick, "due%d ran %.3f s after the kill" % (i, t - killed_at)
    for token, d in later_due.items():
        (pid, t), = runs_by[token]
        assert pid == standby.pid and d <= t <= max(d, killed_at) + 2 * tick, (token, t - d)
    assert set(runs_by) == {"early%d" % i for i in range(5)} | {"blocker"} | \
        {"due%d" % i for i in range(20)} | {"later%d" % i for i in range(10)}


def test_standby_takes_over_when_the_owner_stops(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs), name="owner")
    owner.expect("OWNER", 30)
    standby = agents("owner", *_owner_args(journal, runs, "--standby"), name="standby")
    assert standby.expect("READY", 30).endswith("standby")
    w, record = _producer_wheel(journal)
    try:
        handles = [record.delay("s%d" % i, count_down=1.0) for i in range(10)]
        assert owner.terminate() == 0, owner.diagnostics()  # SIGTERM: a graceful stop
        standby.expect("OWNER", 10)
        # The new owner's pid is the one a third owner is told about.
        r = run_python("import sys, wheelq\n"
                       "try:\n"
                       "    wheelq.Wheel(sys.argv[1]).start()\n"
                       "except wheelq.JournalLocked as e:\n"
                       "    print(e.pid)\n", journal, timeout=30)
        assert r.stdout.strip() == str(standby.pid), r.stderr
        wait_for(lambda: all(w.get(h.id) is None for h in handles), 20, "the standby to run them")
        assert all(h.status() == "done" for h in handles)
    finally:
        w.stop()
    assert standby.terminate() == 0
    assert [(t, pid) for t, pid, _ in read_runs(runs)] and \
        sorted(t for t, _, _ in read_runs(runs)) == sorted("s%d" % i for i in range(10))
    assert {pid for _, pid, _ in read_runs(runs)} == {standby.pid}


BIG_WRITER = r"""
import os, signal, sys, threading, wheelq
path = sys.argv[1]
w = wheelq.Wheel(path)
record = w.task(name="mp.record")(lambda token: None)
payload = "x" * (96 << 20)
start = os.stat(path).st_size


def kill_inside_the_write():
    # The main thread releases the GIL inside write(): the first growth of the
    # file is seen within microseconds, and SIGKILL lands while pages are copied.
    while True:
        size = os.stat(path).st_size
        if size != start:
            break
    os.write(1, b"%d\n" % (size - start))  # bytes of the line that were already in the file
    os.kill(os.getpid(), signal.SIGKILL)


threading.Thread(target=kill_inside_the_write, daemon=True).start()
record.delay(payload, count_down=3600)  # one write() of 96 MiB
os.write(1, b"written\n")
"""


def _tear_the_journal_with_a_killed_producer(journal, tmp_path):
    """A real torn line: a producer is SIGKILLed inside a 96 MiB write().

    The kernel copies a write page by page and stops at a fatal signal, so the
    file keeps the part already copied: a line with no end.
    """
    for attempt in range(8):  # a loaded machine could still let the write finish first
        start = os.path.getsize(journal)
        p = subprocess.Popen([sys.executable, "-c", BIG_WRITER, journal], stdout=subprocess.PIPE,
                             env=python_env())
        try:
            out = p.communicate(timeout=60)[0]
        finally:
            p.kill()
        # The whole line is over 96 MiB.  If less than that was added, the kill
        # tore it (and a running owner may have cut it already).
        if p.returncode == -signal.SIGKILL and os.path.getsize(journal) - start < (96 << 20):
            return int(out.split()[0])
    pytest.skip("the 96 MiB write finished before SIGKILL landed, eight times")


def test_a_line_torn_by_a_killed_producer_is_cut_while_the_owner_runs(tmp_path, journal, agents):
    runs = str(tmp_path / "runs")
    owner = agents("owner", *_owner_args(journal, runs, "--tick", "0.05"))
    owner.expect("OWNER", 30)
    w, record = _producer_wheel(journal)
    try:
        before = record.delay("before", count_down=3600)
        torn = _tear_the_journal_with_a_killed_producer(journal, tmp_path)
        assert torn > 0
        # Producers cannot append after a torn line (theirs would be lost with it),
        # and only the owner may cut it: it does at its next tick, appending nothing.
        def whole():
            with open(journal, "rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1) == b"\n"
        wait_for(whole, 10, "the owner to cut the torn line")
        assert "spawn:child" not in run_counts(runs)
        after = record.delay("after")  # a producer goes on at once
        record.delay("spawn:child")  # a task that adds a task: the owner's own append
        child_id = owner.expect("SPAWNED child", 20).split()[2]
        wait_for(lambda: w.get(after.id) is None, 20, "the task added after the cut to run")
    finally:
        w.stop()
    assert owner.terminate() == 0, owner.diagnostics()
    assert any("cut a torn last line" in ln for ln in owner.drain_lines()), owner.diagnostics()
    # Every line of the file is whole, and a new owner finds every acknowledged task.
    with open(journal, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        json.loads(line)
    again = wheelq.Wheel(journal)
    again.task(name="mp.record")(lambda token: None)
    again.start()
    try:
        assert {t.id for t in again.pending()} == {before.id, child_id}
    finally:
        assert again.stop(timeout=30)
    assert run_counts(runs) == Counter({"after": 1, "spawn:child": 1})
