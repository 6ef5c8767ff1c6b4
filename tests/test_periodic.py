"""Periodic tasks (DESIGN.md section 4): schedules on a wheel, their runs in the journal,
the misfire policies after downtime, pauses, spec changes, and several processes.

The schedule arithmetic itself (cron dialect, DST, next-time against a brute-force
reference) is in test_cron.py.  Time is ManualClock and tick()/join(); nothing sleeps.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta

import pytest

import wheelq
from conftest import WAIT, python_env

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a ManualClock start off the five-minute grid


def records(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()[1:]]


def owner(path, clock, ran, name="stats.fix", tick=1.0, **spec):
    """A wheel declaring one schedule whose runs append (id, nominal, clock time) to ``ran``."""
    w = wheelq.Wheel(path, clock=clock, tick=tick)
    spec.setdefault("every", 300)

    @w.periodic(name=name, **spec)
    def fix():
        info = wheelq.current()
        ran.append((info.id, info.due, clock.time()))

    return w


def drive(wheel, clock, seconds, step=60):
    """Advance the clock in steps, letting the owner run what comes due at each."""
    for _ in range(int(seconds // step)):
        clock.advance(step)
        assert wheel.join(timeout=WAIT)


# -- runs are ordinary tasks ----------------------------------------------------------


def test_each_run_is_an_ordinary_task_named_by_its_nominal_time(journal):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran).start()
    try:
        drive(w, clock, 900)
    finally:
        assert w.stop(timeout=WAIT)
    nominal = [T0 + 300 * i for i in (1, 2, 3)]
    assert [r[1] for r in ran] == nominal  # current().due is the nominal time
    assert all(r[2] >= r[1] for r in ran)  # never early
    assert [r[0] for r in ran] == ["stats.fix@%s" % wheelq._iso_utc(t) for t in nominal]
    adds = [r for r in records(journal) if r["op"] == "add"]
    assert adds[0] == {"op": "add", "id": ran[0][0], "task": "stats.fix", "due": T0 + 300,
                       "args": [], "kwargs": {}, "sched": "stats.fix", "spec": "every 300", "tz": "UTC"}
    assert ran[0][0] == "stats.fix@2023-11-14T22:18:20Z"


def test_the_next_run_is_written_in_the_same_write_as_the_outcome(journal, monkeypatch):
    clock = wheelq.ManualClock(T0)
    writes = []
    real = os.write

    def spy(fd, data):
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(wheelq.os, "write", spy)
    ran = []
    w = owner(journal, clock, ran).start()
    try:
        drive(w, clock, 600)
    finally:
        assert w.stop(timeout=WAIT)
    first, second = ran[0][0], ran[1][0]
    both = [d for d in writes if b'"op":"done","id":"%s"' % first.encode() in d]
    assert len(both) == 1 and b'"id":"%s"' % second.encode() in both[0]
    assert both[0].index(b'"op":"done"') < both[0].index(b'"op":"add"')  # the outcome, then the next run


def test_a_failed_run_is_a_dead_letter_and_the_schedule_goes_on(make_wheel, clock):
    wheel = make_wheel()
    runs = []

    @wheel.periodic(every=60, name="flaky")
    def flaky():
        runs.append(wheelq.current().id)
        raise RuntimeError("no")

    wheel.start()
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    assert len(runs) == 2 and [t.id for t in wheel.failed()] == runs[:1] + runs[1:2]
    assert wheel.schedules()[0].next_due is not None


def test_jitter_moves_the_due_time_but_not_the_id(make_wheel, clock):
    wheel = make_wheel()
    wheel.periodic(every=3600, jitter=60, name="jit")(lambda: None)
    wheel.start()
    [run] = wheel.pending()
    nominal = wheelq._parse_iso_utc(run.id.split("@")[1])
    assert nominal == clock.time() + 3600
    assert nominal <= run.due <= nominal + 60


def test_a_cron_schedule_in_a_zone(make_wheel):
    clock = wheelq.ManualClock(1709856000.0)  # 2024-03-08T00:00:00Z
    wheel = wheelq.Wheel(clock=clock)
    seen = []
    wheel.periodic(cron="30 2 * * *", tz="America/New_York", name="nightly")(
        lambda: seen.append(wheelq.current().id))
    for _ in range(4 * 24):
        clock.advance(3600)
        wheel.tick()
    # 02:30 New York; on 2024-03-10 02:30 does not exist: the run is at 03:00 EDT (07:00Z).
    assert seen == ["nightly@2024-03-08T07:30:00Z", "nightly@2024-03-09T07:30:00Z",
                    "nightly@2024-03-10T07:00:00Z", "nightly@2024-03-11T06:30:00Z"]


def test_periodic_checks_its_arguments():
    wheel = wheelq.Wheel()
    with pytest.raises(TypeError, match="cron= or every="):
        wheel.periodic(name="x")
    with pytest.raises(TypeError, match="cron= or every="):
        wheel.periodic(name="x", cron="* * * * *", every=5)
    with pytest.raises(ValueError, match="every=30"):
        wheel.periodic(name="x", cron="*/30 * * * * *")
    with pytest.raises(ValueError, match="misfire"):
        wheel.periodic(name="x", every=5, misfire="sometimes")
    with pytest.raises(ValueError, match="Europe/Berlin"):
        wheel.periodic(name="x", every=5, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="every="):
        wheel.periodic(name="x", every=0)
    with pytest.raises(TypeError, match="JSON"):
        wheel.periodic(name="x", every=5, args=(object(),))
    with pytest.raises(TypeError, match="argument"):
        wheel.periodic(name="x", every=5, args=(1, 2))(lambda: None)


# -- restarts and misfire ---------------------------------------------------------------


@pytest.mark.parametrize("misfire,expected", [
    ("coalesce", ["pending", "latest"]),  # the journaled run, then one for the latest missed
    ("skip", ["pending"]),  # the journaled run; the missed ones are skipped
    ("all", ["pending"] + ["missed"] * 575),  # and every one missed, oldest first
])
def test_misfire_after_two_days_of_downtime(journal, misfire, expected):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran, every=300, misfire=misfire).start()
    drive(w, clock, 600)
    assert w.stop(timeout=WAIT)
    assert len(ran) == 2
    last = ran[-1][1]
    clock.advance(2 * 86400)  # two days down: 576 nominal times passed, the first of them journaled
    ran.clear()
    again = owner(journal, clock, ran, every=300, misfire=misfire, tick=0.01).start()
    try:
        for _ in range(700):
            clock.advance(0.01)  # overdue runs go one a tick, one after another
            assert again.join(timeout=WAIT)
            if len(ran) >= len(expected) or not again.pending() or again.pending()[0].due > clock.time():
                break
        assert len(ran) == len(expected), ran[:5]
        assert ran[0][1] == last + 300  # the run the journal held
        if misfire == "coalesce":
            assert ran[1][1] == clock.time() - (clock.time() - last) % 300  # the latest missed
        if misfire == "all":
            assert [r[1] for r in ran] == [last + 300 * (i + 1) for i in range(576)]
        next_due = again.schedules()[0].next_due
        assert clock.time() < next_due <= clock.time() + 300  # back on the grid, in the future
    finally:
        assert again.stop(timeout=WAIT)


def test_all_coalesces_beyond_a_thousand_missed_runs(make_wheel, clock, caplog):
    wheel = make_wheel()
    ran = []
    wheel.periodic(every=1, misfire="all", name="busy")(lambda: ran.append(wheelq.current().due))
    wheel.start()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    with caplog.at_level(logging.WARNING, logger="wheelq"):
        clock.advance(5000)
        for _ in range(5):
            assert wheel.join(timeout=WAIT)
            clock.advance(0)
    assert any("more than 1000" in r.getMessage() for r in caplog.records)
    assert len(ran) < 10


def test_a_run_that_outlasts_its_period_does_not_overlap_the_next(make_wheel, clock):
    wheel = make_wheel(workers=4)
    gate = threading.Event()
    active = []
    most = [0]

    @wheel.periodic(every=60, misfire="all", name="slow")
    def slow():
        active.append(1)
        most[0] = max(most[0], len(active))
        assert gate.wait(WAIT)
        active.pop()

    wheel.start()
    clock.advance(60)
    for _ in range(5):  # four more periods pass while the first run blocks
        clock.advance(60)
        assert wheel.join(timeout=0.05) is False
    assert len(wheel.pending()) == 1 and wheel.pending()[0].status == "running"
    gate.set()
    assert wheel.join(timeout=WAIT)
    assert most[0] == 1


def test_a_spec_change_replaces_the_journaled_run(journal, caplog):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran, every=300).start()
    drive(w, clock, 300)
    assert w.stop(timeout=WAIT)
    [old] = [r for r in records(journal) if r["op"] == "add"][-1:]
    with caplog.at_level(logging.INFO, logger="wheelq"):
        again = owner(journal, clock, ran, every=600).start()
    try:
        [run] = again.pending()
        assert run.id != old["id"]
        assert run.due == old["due"] + 600  # from the cursor (the cancelled run), under the new spec
        assert any("replaced" in r.getMessage() and "every 300" in r.getMessage() for r in caplog.records)
        assert {"op": "cancel", "id": old["id"]} in records(journal)
    finally:
        assert again.stop(timeout=WAIT)


def test_a_pause_survives_a_restart_and_resume_skips_the_paused_window(journal):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran).start()
    drive(w, clock, 300)
    assert w.pause_schedule("stats.fix") is True
    assert w.pause_schedule("stats.fix") is False
    assert w.pending() == []  # the pending run was cancelled
    assert w.stop(timeout=WAIT)
    clock.advance(3600)
    again = owner(journal, clock, ran).start()
    try:
        assert again.schedules()[0].paused and again.pending() == []
        drive(again, clock, 600)
        assert len(ran) == 1  # nothing while paused
        resumed_at = clock.time()
        assert again.resume_schedule("stats.fix") is True
        [run] = again.pending()
        assert resumed_at < run.due <= resumed_at + 300  # the first nominal time after now
        assert (run.due - ran[0][1]) % 300 == 0  # on the same grid
        drive(again, clock, 300)
        assert len(ran) == 2
    finally:
        assert again.stop(timeout=WAIT)


def test_pause_and_resume_from_a_producer(journal):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran).start()
    producer = owner(journal, clock, [])  # declares the schedule too, never starts
    try:
        assert producer.pause_schedule("stats.fix") is True
        clock.advance(0)
        for _ in range(200):
            if w.schedules()[0].paused:
                break
            threading.Event().wait(0.01)
        assert w.schedules()[0].paused and w.pending() == []
        assert producer.resume_schedule("stats.fix") is True
        for _ in range(200):
            if w.pending():
                break
            threading.Event().wait(0.01)
        assert len(w.pending()) == 1
        drive(w, clock, 300)
        assert len(ran) == 1
    finally:
        producer.stop()
        assert w.stop(timeout=WAIT)


def test_compaction_keeps_the_cursor_and_the_pause(journal):
    clock = wheelq.ManualClock(T0)
    ran = []
    w = owner(journal, clock, ran).start()
    w.periodic(every=120, name="other")(lambda: None)
    drive(w, clock, 600)
    assert w.pause_schedule("other")
    before = {s.name: (s.next_due, s.last_due, s.paused) for s in w.schedules()}
    assert w.compact() >= 2
    assert w.stop(timeout=WAIT)
    again = owner(journal, clock, ran).start()
    again.periodic(every=120, name="other")(lambda: None)
    try:
        after = {s.name: (s.next_due, s.last_due, s.paused) for s in again.schedules()}
        assert after == before
        drive(again, clock, 300)
        assert ran[-1][1] == before["stats.fix"][0]  # it resumes exactly where it left off
    finally:
        assert again.stop(timeout=WAIT)


def test_reschedule_moves_a_run_and_keeps_its_id_and_nominal_time(make_wheel, clock):
    wheel = make_wheel()
    seen = []
    wheel.periodic(every=600, name="mv")(lambda: seen.append(wheelq.current()))
    wheel.start()
    [run] = wheel.pending()
    h = wheelq.TaskHandle(wheel, run.id)
    assert h.reschedule(count_down=60) is True
    assert wheel.get(run.id).due == clock.time() + 60
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    assert [s.id for s in seen] == [run.id] and seen[0].due == run.due  # nominal, not the new due
    assert h.reschedule(count_down=5) is False  # done: nothing to move


def test_reschedule_from_a_producer(journal, clock):
    w = wheelq.Wheel(journal, clock=clock)
    job = w.task(name="job")(lambda: None)
    w.start()
    try:
        h = job.delay(count_down=100)
        producer = wheelq.Wheel(journal, clock=clock)
        assert producer.reschedule(h.id, eta=clock.time() + 500) is True
        for _ in range(200):
            if w.get(h.id).due == clock.time() + 500:
                break
            threading.Event().wait(0.01)
        assert w.get(h.id).due == clock.time() + 500
        with pytest.raises(TypeError, match="count_down or eta"):
            producer.reschedule(h.id)
        producer.stop()
    finally:
        assert w.stop(timeout=WAIT)


# -- several processes -------------------------------------------------------------------

DECLARER = r"""
import os, sys, threading, time, wheelq
path, runs, role = sys.argv[1], sys.argv[2], sys.argv[3]
w = wheelq.Wheel(path, tick=0.05)
fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

@w.periodic(every=0.2, name="shared.tick")
def tick():
    os.write(fd, ("%s %d\n" % (wheelq.current().id, os.getpid())).encode())

if role == "owner":
    w.start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
w.stop(timeout=10)
"""


def test_only_the_owner_makes_runs_when_five_processes_declare_the_schedule(tmp_path):
    journal, runs = str(tmp_path / "tasks.json"), str(tmp_path / "runs")
    procs = []
    try:
        for role in ["owner"] + ["producer"] * 4:
            p = subprocess.Popen([sys.executable, "-c", DECLARER, journal, runs, role],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=python_env())
            assert p.stdout.readline().strip() == "ready"
            procs.append(p)
        deadline = threading.Event()
        for _ in range(500):
            if os.path.exists(runs) and len(open(runs).read().splitlines()) >= 10:
                break
            deadline.wait(0.02)
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(20)
    lines = [line.split() for line in open(runs).read().splitlines()]
    assert len(lines) >= 10
    assert {pid for _, pid in lines} == {str(procs[0].pid)}  # the owner's runs only
    assert max(Counter(i for i, _ in lines).values()) == 1  # each nominal time once
    adds = [r for r in records(journal) if r["op"] == "add"]
    assert all("p" not in r for r in adds)  # producers wrote nothing about the schedule


KILLED = r"""
import os, sys, wheelq
path, runs = sys.argv[1], sys.argv[2]
w = wheelq.Wheel(path, tick=0.02)
fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

@w.periodic(every=0.05, name="killed.tick")
def tick():
    os.write(fd, ("%s %r %r\n" % (wheelq.current().id, wheelq.current().due,
                                   wheelq.SystemClock().time())).encode())

w.start()
print("started", flush=True)
w.run_forever()
"""


def test_runs_across_restarts_and_kills_are_each_once_and_never_early(tmp_path):
    """Ten restarts, half of them by SIGKILL at a random moment: a nominal time runs
    once, unless a kill caught its run in flight (at least once), and never early."""
    import random
    import signal

    rng = random.Random(15)
    journal, runs = str(tmp_path / "tasks.json"), str(tmp_path / "runs")
    killed_in_flight = 0
    for i in range(10):
        p = subprocess.Popen([sys.executable, "-c", KILLED, journal, runs], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=python_env())
        try:
            assert p.stdout.readline() == b"started\n", p.stderr.read()
            try:
                p.wait(timeout=rng.uniform(0.2, 0.6))
            except subprocess.TimeoutExpired:
                pass
            p.send_signal(signal.SIGKILL if i % 2 else signal.SIGTERM)
            assert p.wait(10) in (-signal.SIGKILL, 0)
        finally:
            p.kill()
            p.stdout.close()
            p.stderr.close()
        killed_in_flight += 1 if i % 2 else 0
    lines = [line.split() for line in open(runs).read().splitlines() if line.count(" ") == 2]
    assert len(lines) > 20
    counts = Counter(i for i, _, _ in lines)
    for tid, nominal, ran in lines:
        assert float(ran) >= float(nominal)  # never early
    twice = [t for t, c in counts.items() if c > 1]
    assert len(twice) <= killed_in_flight  # only a run a SIGKILL caught in flight
    nominals = sorted({float(n) for _, n, _ in lines})
    gaps = [b - a for a, b in zip(nominals, nominals[1:])]
    assert all(abs(g - round(g / 0.05) * 0.05) < 1e-6 for g in gaps)  # always on the one grid


# -- the command line -----------------------------------------------------------------


def wq(*args):
    return subprocess.run([sys.executable, "-m", "wheelq", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=python_env())


def test_the_cron_command_marks_a_run_moved_by_dst():
    r = wq("cron", "30 2 * * *", "--tz", "America/New_York", "--from", "2024-03-09", "--count", "3",
           "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[1] == {"utc": "2024-03-10T07:00:00Z", "local": "2024-03-10T03:00:00-04:00",
                       "epoch": 1710054000.0, "dst": "moved"}
    text = wq("cron", "30 2 * * *", "--tz", "America/New_York", "--from", "2024-03-09").stdout
    assert "2024-03-10T03:00:00-04:00" in text and "moved" in text
    bad = wq("cron", "*/30 * * * * *")
    assert bad.returncode == 2 and bad.stderr.startswith("wheelq: error:") and "every=30" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_schedules_pause_resume_and_status_on_the_command_line(journal):
    clock = wheelq.ManualClock()  # the real time is irrelevant here: the journal holds the runs
    ran = []
    w = owner(journal, clock, ran, every=3600)
    w.start()
    assert w.stop(timeout=WAIT)
    rows = json.loads(wq("schedules", journal, "--json").stdout)
    assert [(r["name"], r["spec"], r["tz"], r["paused"]) for r in rows] == \
        [("stats.fix", "every 3600", "UTC", False)]
    assert "stats.fix" in wq("schedules", journal).stdout
    assert "schedules 1" in wq("status", journal).stdout
    r = wq("pause", journal, "stats.fix")
    assert r.returncode == 0 and "paused stats.fix" in r.stdout, r.stderr
    assert json.loads(wq("schedules", journal, "--json").stdout)[0]["paused"] is True
    r = wq("pause", journal, "stats.fix")
    assert r.returncode != 0 and "paused already" in r.stderr
    r = wq("resume", journal, "stats.fix")
    assert r.returncode == 0 and "resumed stats.fix" in r.stdout, r.stderr
    row = json.loads(wq("schedules", journal, "--json").stdout)[0]
    assert row["paused"] is False and row["next_due"] is not None
    r = wq("reschedule", journal, row["next_id"], "--count-down", "30")
    assert r.returncode == 0, r.stderr
    r = wq("pause", journal, "no.such")
    assert r.returncode != 0 and "no schedule named" in r.stderr
