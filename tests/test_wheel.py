"""The Wheel's API, its timing rules and its running of tasks (DESIGN.md sections 1-3).

Time is driven with ManualClock and join(timeout=...); nothing sleeps.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wheelq
from conftest import all_synced, journal_is_open, python_env

WAIT = 10  # seconds: the bound on every blocking wait in these tests


def read(path):
    with open(path, "rb") as f:
        return f.read()


# -- the API surface ------------------------------------------------------------------


def test_public_names_exist():
    for name in ["Wheel", "Task", "TaskHandle", "TaskInfo", "ManualClock", "WheelqError",
                 "JournalLocked", "JournalCorrupt", "UnknownTask", "WheelClosed"]:
        assert name in wheelq.__all__
    for exc in [wheelq.JournalLocked, wheelq.JournalCorrupt, wheelq.UnknownTask, wheelq.WheelClosed]:
        assert issubclass(exc, wheelq.WheelqError)
    assert isinstance(wheelq.__version__, str)


def test_task_registration_names_and_plain_call(make_wheel):
    wheel = make_wheel()

    @wheel.task()
    def add(a, b):
        return a + b

    @wheel.task(name="sms.send", retries=3, retry_delay=5, retry_backoff=2.0)
    def send(phone, text):
        return phone

    assert add.name == "%s.%s" % (__name__, add.func.__qualname__)
    assert send.name == "sms.send"
    assert add(2, 3) == 5  # a plain call runs the function now
    assert add.__name__ == "add"
    with pytest.raises(ValueError, match="already registered"):
        wheel.task(name="sms.send")(lambda: None)


def test_bad_wheel_and_task_arguments_are_rejected_clearly(journal):
    with pytest.raises(ValueError, match="workers"):
        wheelq.Wheel(workers=0)
    with pytest.raises(ValueError, match="tick"):
        wheelq.Wheel(tick=0)
    with pytest.raises(ValueError, match="fsync"):
        wheelq.Wheel(fsync="sometimes")
    with pytest.raises(ValueError, match="slots"):
        wheelq.Wheel(slots=0)
    wheel = wheelq.Wheel()
    with pytest.raises(ValueError, match="retries"):
        wheel.task(retries=-1)
    with pytest.raises(ValueError, match="retry_backoff"):
        wheel.task(retry_backoff=0.5)
    assert not os.path.exists(journal)


# -- time ----------------------------------------------------------------------------


def test_count_down_runs_at_the_first_tick_at_or_after_due(make_wheel, clock):
    wheel = make_wheel(tick=1.0)
    ran = []

    @wheel.task()
    def job(x):
        ran.append((x, clock.time()))

    wheel.start()
    job.delay("a", count_down=10)
    clock.advance(9.999)
    assert wheel.join(timeout=WAIT)
    assert ran == []
    clock.advance(0.001)
    assert wheel.join(timeout=WAIT)
    assert [x for x, _ in ran] == ["a"]
    assert ran[0][1] >= 1_000_010.0


@pytest.mark.parametrize("start,tick", [(1_000_000.37, 1.0), (1_000_000.05, 0.1), (12.345, 0.25),
                                        (1_000_000.999999, 0.3)])
def test_never_early_with_a_fractional_start(start, tick):
    clock = wheelq.ManualClock(start)
    wheel = wheelq.Wheel(clock=clock, tick=tick, slots=16)
    ran = {}

    @wheel.task()
    def job(i):
        ran[i] = clock.time()

    wheel.start()
    try:
        dues = {}
        for i, cd in enumerate([0, 0.01, 0.1, 0.3, 0.33, 0.5, 0.7, 1.0, 1.3, 2.9, 7.77]):
            h = job.delay(i, count_down=cd)
            dues[i] = wheel.get(h.id).due
        for _ in range(math.ceil(9.0 / (tick / 3))):
            clock.advance(tick / 3)
            assert wheel.join(timeout=WAIT)
            for i, when in ran.items():
                assert when >= dues[i], "task %d ran early" % i
                k = math.ceil(dues[i] / tick - 1e-9)
                assert when < (k + 2) * tick  # and no later than the tick after its own
        assert sorted(ran) == sorted(dues)
    finally:
        assert wheel.stop(timeout=WAIT)


@settings(max_examples=500, deadline=None)
@given(t=st.floats(min_value=-1e15, max_value=1e15))
def test_one_second_ticks_take_a_fast_path_that_agrees_with_the_general_rule(t):
    wheel = wheelq.Wheel(tick=1.0)
    assert wheel._tick_ceil(t) == wheelq.Wheel._tick_ceil(wheel, t)
    assert wheel._tick_floor(t) == wheelq.Wheel._tick_floor(wheel, t)
    k = wheel._tick_ceil(t)
    assert k * 1.0 >= t and (k - 1) * 1.0 < t  # the first tick at or after t


def test_no_count_down_nor_eta_runs_at_the_next_tick(make_wheel, clock):
    wheel = make_wheel(tick=1.0)
    ran = []
    job = wheel.task()(lambda: ran.append(clock.time()))
    wheel.start()
    job.delay()
    assert wheel.join(timeout=WAIT)
    assert ran == []  # the tick of "now" has passed already
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert len(ran) == 1


def test_eta_forms_and_timedelta_count_down(make_wheel, clock):
    wheel = make_wheel()
    job = wheel.task()(lambda: None)
    aware = datetime(2030, 1, 1, tzinfo=timezone.utc)
    naive = datetime(2030, 1, 1, 12, 0, 0)
    assert wheel.get(job.delay(eta=aware).id).due == aware.timestamp()
    assert wheel.get(job.delay(eta=naive).id).due == naive.timestamp()  # local time
    assert wheel.get(job.delay(eta=1_234_567.5).id).due == 1_234_567.5
    assert wheel.get(job.delay(count_down=timedelta(minutes=30)).id).due == clock.time() + 1800
    assert wheel.get(job.delay(count_down=2.5).id).due == clock.time() + 2.5


def test_an_eta_in_the_past_runs_at_the_next_tick(make_wheel, clock):
    wheel = make_wheel()
    ran = []
    job = wheel.task()(lambda: ran.append(1))
    wheel.start()
    job.delay(eta=clock.time() - 3600)
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert ran == [1]


@pytest.mark.parametrize("kw,exc,words", [
    ({"count_down": -1}, ValueError, "count_down"),
    ({"count_down": float("nan")}, ValueError, "count_down"),
    ({"count_down": float("inf")}, ValueError, "count_down"),
    ({"count_down": "10"}, TypeError, "count_down"),
    ({"count_down": True}, TypeError, "count_down"),
    ({"count_down": 1, "eta": 5.0}, TypeError, "not both"),
    ({"eta": float("nan")}, ValueError, "eta"),
    ({"eta": "tomorrow"}, TypeError, "eta"),
    ({"task_id": 7}, TypeError, "task_id"),
    ({"task_id": ""}, TypeError, "task_id"),
])
def test_bad_times_are_rejected_and_nothing_is_journaled(make_wheel, journal, kw, exc, words):
    wheel = make_wheel(journal)
    job = wheel.task()(lambda: None)
    wheel.start()
    before = read(journal)
    with pytest.raises(exc, match=words):
        job.delay(**kw)
    assert read(journal) == before
    assert wheel.pending() == []


def test_arguments_must_be_json_and_nothing_is_written(make_wheel, journal):
    wheel = make_wheel(journal)
    job = wheel.task()(lambda *a, **k: None)
    wheel.start()
    before = read(journal)
    with pytest.raises(TypeError, match="datetime"):
        job.delay(datetime.now())
    with pytest.raises(TypeError, match="set"):
        job.delay(x={1, 2})
    with pytest.raises(TypeError, match="JSON"):
        job.delay(float("nan"))
    assert read(journal) == before
    assert wheel.stats()["pending"] == 0


def test_catch_up_after_the_timer_slept_past_several_revolutions(make_wheel, clock):
    wheel = make_wheel(tick=1.0, slots=8)
    ran = []
    job = wheel.task()(lambda i: ran.append(i))
    wheel.start()
    for i, cd in enumerate([1, 5, 9, 17, 30, 100, 500]):
        job.delay(i, count_down=cd)
    clock.advance(40)  # five revolutions of an 8-slot wheel at once
    assert wheel.join(timeout=WAIT)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert [t.args for t in wheel.pending()] == [(5,), (6,)]
    clock.advance(500)
    assert wheel.join(timeout=WAIT)
    assert sorted(ran) == [0, 1, 2, 3, 4, 5, 6]


def test_a_clock_that_jumps_backwards_runs_nothing_twice_and_follows_the_new_time():
    clock = wheelq.ManualClock(1000.0)
    wheel = wheelq.Wheel(clock=clock)  # never started: tick() runs tasks here
    ran = []
    job = wheel.task()(lambda i: ran.append(i))
    job.delay(1, count_down=5)
    assert wheel.tick(1010.0) == 1
    assert ran == [1]
    assert wheel.tick(1003.0) == 0  # the wall clock went back: nothing runs again
    assert ran == [1]
    job.delay(2, eta=1004.5)  # due after the new time, before the old one
    assert wheel.tick(1004.0) == 0  # never early
    assert wheel.tick(1005.0) == 1  # by the clock now in force, not at 1011
    assert ran == [1, 2]
    assert wheel.tick(1011.0) == 0 and ran == [1, 2]


def test_eager_mode_runs_due_tasks_in_the_calling_thread(clock):
    wheel = wheelq.Wheel(clock=clock)
    threads = []
    job = wheel.task()(lambda: threads.append(threading.current_thread()))
    job.delay(count_down=3)
    assert wheel.tick() == 0
    clock.advance(3)
    assert wheel.tick() == 1
    assert threads == [threading.current_thread()]
    assert wheel.stats()["done"] == 1


# -- handles, ids, cancel, inspection --------------------------------------------------


def test_handle_status_through_a_life(make_wheel, clock):
    wheel = make_wheel()
    gate = threading.Event()
    started = threading.Event()

    @wheel.task()
    def job():
        started.set()
        assert gate.wait(WAIT)

    wheel.start()
    h = job.delay(count_down=2)
    assert isinstance(h.id, str) and h.status() == "pending"
    clock.advance(2)
    assert started.wait(WAIT)
    assert h.status() == "running"
    gate.set()
    assert wheel.join(timeout=WAIT)
    assert h.status() == "done"
    assert wheel.get(h.id) is None
    assert wheel.stats()["done"] == 1
    assert wheelq.TaskHandle(wheel, "no-such-id").status() == "unknown"



def test_finished_ids_are_remembered_for_a_while_then_forgotten(monkeypatch):
    monkeypatch.setattr(wheelq, "_FINISHED_MEMORY", 4)
    wheel = wheelq.Wheel()
    job = wheel.task()(lambda: None)
    handles = [job.delay() for _ in range(20)]
    for h in handles:
        assert h.cancel()
    assert [h.status() for h in handles[-4:]] == ["cancelled"] * 4  # the last 4 at least
    assert handles[0].status() == "unknown"  # the oldest are forgotten
    assert sum(h.status() != "unknown" for h in handles) <= 8  # never more than twice as many


def test_task_id_makes_adding_idempotent(make_wheel, journal, clock):
    wheel = make_wheel(journal)
    ran = []
    job = wheel.task()(lambda x: ran.append(x))
    wheel.start()
    h1 = job.delay(1, count_down=5, task_id="welcome-7")
    h2 = job.delay(2, count_down=50, task_id="welcome-7")
    assert h1.id == h2.id == "welcome-7"
    assert read(journal).count(b"welcome-7") == 1
    assert wheel.get("welcome-7").args == (1,)
    clock.advance(5)
    assert wheel.join(timeout=WAIT)
    assert ran == [1]
    job.delay(3, task_id="welcome-7")  # finished: the id can be used again
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert ran == [1, 3]


def test_cancel_pending_task_never_runs(make_wheel, journal, clock):
    wheel = make_wheel(journal)
    ran = []
    job = wheel.task()(lambda: ran.append(1))
    wheel.start()
    h = job.delay(count_down=5)
    assert h.cancel() is True
    assert h.status() == "cancelled"
    assert h.cancel() is False
    assert wheel.cancel("nope") is False
    clock.advance(10)
    assert wheel.join(timeout=WAIT)
    assert ran == []
    assert wheel.stats()["cancelled"] == 1
    assert b'"op":"cancel"' in read(journal)


def test_schedule_for_functions_with_their_own_count_down(make_wheel, clock):
    wheel = make_wheel()
    seen = []

    @wheel.task()
    def remind(user, count_down, eta=None, task_id=None):
        seen.append((user, count_down, eta, task_id))

    wheel.start()
    h = remind.schedule(args=("ada",), kwargs={"count_down": 3, "task_id": "inner"}, count_down=10,
                        task_id="outer")
    assert h.id == "outer"
    clock.advance(10)
    assert wheel.join(timeout=WAIT)
    assert seen == [("ada", 3, None, "inner")]
    with pytest.raises(TypeError, match="kwargs"):
        remind.schedule(kwargs=[1])


def test_pending_is_sorted_by_due_and_get_returns_taskinfo(make_wheel, clock):
    wheel = make_wheel()
    job = wheel.task(name="j")(lambda *a, **k: None)
    for cd in [30, 10, 20]:
        job.delay(cd, flag=True, count_down=cd)
    infos = wheel.pending()
    assert [i.args for i in infos] == [(10,), (20,), (30,)]
    info = infos[0]
    assert isinstance(info, wheelq.TaskInfo)
    assert (info.name, info.kwargs, info.status, info.tries, info.error) == ("j", {"flag": True}, "pending", 0, None)
    assert info.due == clock.time() + 10
    with pytest.raises(Exception):
        info.status = "done"  # frozen
    assert wheel.get(info.id) == info


# -- running: retries, dead letters, failures ------------------------------------------


def test_retries_back_off_exponentially_then_dead_letter(make_wheel, journal, clock):
    wheel = make_wheel(journal)
    runs = []

    @wheel.task(retries=2, retry_delay=2, retry_backoff=3)
    def flaky():
        runs.append(clock.time())
        raise RuntimeError("try %d failed" % len(runs))

    wheel.start()
    t0 = clock.time()
    h = flaky.delay(count_down=1)
    for _ in range(12):
        clock.advance(1)
        assert wheel.join(timeout=WAIT)
    assert [r - t0 for r in runs] == [1, 3, 9]  # waits of 2 and 2*3
    assert h.status() == "failed"
    [dead] = wheel.failed()
    assert dead.id == h.id and dead.tries == 3 and dead.error == "RuntimeError: try 3 failed"
    assert wheel.stats()["retried"] == 2 and wheel.stats()["failed"] == 1


def test_dead_letters_survive_a_restart_and_can_be_requeued_and_purged(journal, clock):
    def build():
        w = wheelq.Wheel(journal, clock=clock)
        state = {"ok": False, "runs": 0}

        @w.task(name="fragile")
        def fragile(x):
            state["runs"] += 1
            if not state["ok"]:
                raise ValueError("bad %s" % x)

        return w, fragile, state

    wheel, fragile, _ = build()
    wheel.start()
    a = fragile.delay("a")
    b = fragile.delay("b")
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.stop(timeout=WAIT)

    wheel, fragile, state = build()
    wheel.start()
    try:
        assert sorted(t.id for t in wheel.failed()) == sorted([a.id, b.id])
        assert wheel.get(a.id).error == "ValueError: bad a"
        state["ok"] = True
        h = wheel.requeue(a.id, count_down=5)
        assert h.status() == "pending" and wheel.get(a.id).tries == 0
        clock.advance(5)
        assert wheel.join(timeout=WAIT)
        assert h.status() == "done" and state["runs"] == 1
        assert wheel.purge(b.id) is True
        assert wheel.purge(b.id) is False
        assert wheel.failed() == []
        with pytest.raises(wheelq.UnknownTask, match="dead letter"):
            wheel.requeue("nope")
    finally:
        assert wheel.stop(timeout=WAIT)
    wheel = wheelq.Wheel(journal, clock=clock).start()
    assert wheel.failed() == [] and wheel.pending() == []
    assert wheel.stop(timeout=WAIT)


def test_delay_with_the_id_of_a_dead_letter_is_refused(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task()
    def bad():
        raise RuntimeError("x")

    wheel.start()
    bad.delay(task_id="order-1")
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    with pytest.raises(wheelq.WheelqError, match="dead letter"):
        bad.delay(task_id="order-1")


def test_unregistered_task_becomes_a_dead_letter_and_never_runs(journal, clock):
    a = wheelq.Wheel(journal, clock=clock)
    only_in_a = a.task(name="only.in.a")(lambda: None)
    a.task(name="both")(lambda: None)
    only_in_a.delay(count_down=5)
    a.stop()

    b = wheelq.Wheel(journal, clock=clock)
    ran = []
    b.task(name="both")(lambda: ran.append(1))
    b.start()
    try:
        assert [t.name for t in b.pending()] == ["only.in.a"]  # not decided at load
        late = []
        b.task(name="late.registered")(lambda: late.append(1))
        clock.advance(5)
        assert b.join(timeout=WAIT)
        [dead] = b.failed()
        assert dead.name == "only.in.a" and dead.error == "unknown task 'only.in.a'"
        assert ran == [] and late == []
    finally:
        assert b.stop(timeout=WAIT)


def test_tasks_registered_after_the_wheel_is_built_run(journal, clock):
    a = wheelq.Wheel(journal, clock=clock)
    a.task(name="later")(lambda: None).delay(count_down=2)
    a.stop()
    b = wheelq.Wheel(journal, clock=clock).start()
    ran = []
    b.task(name="later")(lambda: ran.append(1))
    clock.advance(2)
    assert b.join(timeout=WAIT)
    assert ran == [1]
    assert b.stop(timeout=WAIT)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, ValueError])
def test_a_raising_task_is_logged_with_traceback_and_the_worker_survives(make_wheel, clock, caplog, exc):
    wheel = make_wheel(workers=1)
    ran = []

    @wheel.task(name="boom")
    def boom():
        raise exc("kaboom")

    @wheel.task(name="after")
    def after():
        ran.append(threading.current_thread().name)

    wheel.start()
    with caplog.at_level(logging.ERROR, logger="wheelq"):
        boom.delay()
        clock.advance(1)
        assert wheel.join(timeout=WAIT)
        after.delay()
        clock.advance(1)
        assert wheel.join(timeout=WAIT)
    assert ran == ["wheelq-worker-1"]
    [record] = [r for r in caplog.records if "boom" in r.getMessage()]
    assert record.exc_info and record.exc_info[0] is exc
    assert wheel.failed()[0].error.startswith(exc.__name__)


# -- the pool: backpressure, join, stop --------------------------------------------------


def test_backpressure_delay_keeps_answering_and_nothing_is_lost(make_wheel, journal, clock):
    wheel = make_wheel(journal, workers=1, queue_size=1)
    gate = threading.Event()
    ran = []

    @wheel.task()
    def slow(i):
        assert gate.wait(WAIT)
        ran.append(i)

    wheel.start()
    for i in range(200):
        slow.delay(i)
    clock.advance(1)  # 200 due at once: one batch runs, one waits in the queue, the timer waits
    assert wheel.join(timeout=0.2) is False
    for i in range(200, 300):  # the timer is blocked, yet delay() answers
        slow.delay(i, count_down=1)
    assert wheel.stats()["pending"] + wheel.stats()["queued"] + wheel.stats()["running"] == 300
    gate.set()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert sorted(ran) == list(range(300))


def test_join_times_out_while_a_task_runs(make_wheel, clock):
    wheel = make_wheel()
    gate = threading.Event()
    job = wheel.task()(lambda: gate.wait(WAIT))
    wheel.start()
    job.delay()
    clock.advance(1)
    assert wheel.join(timeout=0.05) is False
    gate.set()
    assert wheel.join(timeout=WAIT) is True


def test_stop_lets_running_tasks_finish_and_keeps_queued_ones_pending(journal, clock):
    wheel = wheelq.Wheel(journal, clock=clock, workers=1, queue_size=4)
    gate = threading.Event()
    started = threading.Event()
    ran = []

    @wheel.task(name="job")
    def job(i):
        started.set()
        assert gate.wait(WAIT)
        ran.append(i)

    wheel.start()
    for i in range(5):
        job.delay(i)
    clock.advance(1)
    assert started.wait(WAIT)
    assert wheel.stop(wait=False) is False
    gate.set()
    assert wheel.stop(timeout=WAIT) is True
    assert wheel.stop() is True  # twice is harmless
    assert ran == [0]  # the running one finished; the rest never started
    again = wheelq.Wheel(journal, clock=clock)
    again.task(name="job")(lambda i: ran.append(i))
    assert sorted(t.args[0] for t in again.pending()) == [1, 2, 3, 4]  # read as a producer
    again.start()  # they are overdue: the new owner runs them at once

    assert again.join(timeout=WAIT)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert again.stop(timeout=WAIT)


def test_stopped_wheel_refuses_work_and_the_path_can_be_reopened(journal, clock):
    wheel = wheelq.Wheel(journal, clock=clock)
    job = wheel.task(name="j")(lambda: None)
    wheel.start()
    assert wheel.is_owner
    job.delay(count_down=100)
    assert wheel.stop(timeout=WAIT)
    assert not wheel.is_owner
    with pytest.raises(wheelq.WheelClosed):
        job.delay()
    with pytest.raises(wheelq.WheelClosed):
        wheel.start()
    again = wheelq.Wheel(journal, clock=clock).start()
    assert len(again.pending()) == 1
    assert again.stop(timeout=WAIT)


def test_stop_on_a_wheel_never_started_closes_its_journal(journal):
    wheel = wheelq.Wheel(journal)
    assert not journal_is_open(wheel)  # building it touches nothing
    wheel.stats()
    assert journal_is_open(wheel)
    assert wheel.stop(timeout=WAIT) is True
    assert not journal_is_open(wheel)
    assert wheel.stop() is True


def test_a_second_owner_gets_journal_locked_naming_the_pid(journal, clock):
    first = wheelq.Wheel(journal, clock=clock).start()
    second = wheelq.Wheel(journal, clock=clock)
    with pytest.raises(wheelq.JournalLocked) as info:
        second.start()
    assert info.value.pid == os.getpid()
    assert str(os.getpid()) in str(info.value) and "standby" in str(info.value)
    assert not second.is_owner
    assert first.stop(timeout=WAIT)
    assert second.stop(timeout=WAIT)
    third = wheelq.Wheel(journal, clock=clock).start()  # the lock went with the owner
    assert third.is_owner
    assert third.stop(timeout=WAIT)


def test_context_manager_starts_and_stops(journal, clock):
    ran = []
    with wheelq.Wheel(journal, clock=clock) as wheel:
        job = wheel.task()(lambda: ran.append(1))
        assert wheel.is_owner
        job.delay()
        clock.advance(1)
        assert wheel.join(timeout=WAIT)
    assert ran == [1] and not wheel.is_owner


def test_stats_counts(make_wheel, clock):
    wheel = make_wheel()
    ok = wheel.task(name="ok")(lambda: None)

    @wheel.task(name="bad", retries=1, retry_delay=1)
    def bad():
        raise RuntimeError()

    wheel.start()
    assert wheel.stats() == dict(pending=0, queued=0, running=0, done=0, failed=0, retried=0, cancelled=0)
    ok.delay()
    ok.delay(count_down=100).cancel()
    bad.delay()
    ok.delay(count_down=50)
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.stats() == dict(pending=1, queued=0, running=0, done=1, failed=1, retried=1, cancelled=1)


def test_worker_threads_are_named(make_wheel, clock):
    wheel = make_wheel(workers=3)
    names = set()
    gate = threading.Barrier(3, timeout=WAIT)

    @wheel.task()
    def job():
        names.add(threading.current_thread().name)
        gate.wait()

    wheel.start()
    for _ in range(3):
        job.delay()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert names == {"wheelq-worker-1", "wheelq-worker-2", "wheelq-worker-3"}
    assert any(t.name == "wheelq-timer" for t in threading.enumerate())


RUN_FOREVER = r"""
import signal, sys, threading, wheelq
wheel = wheelq.Wheel(sys.argv[1], tick=0.05)
hello = wheel.task(name="hello")(lambda: print("ran", flush=True))

def add_once_run_forever_handles_signals():
    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        threading.Event().wait(0.01)
    hello.delay()

threading.Thread(target=add_once_run_forever_handles_signals, daemon=True).start()
wheel.run_forever()
print("stopped", wheel.stats()["done"], flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_forever_stops_gracefully_on_a_signal(journal, sig):
    proc = subprocess.Popen([sys.executable, "-c", RUN_FOREVER, journal], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        lines = []
        for line in proc.stdout:  # the child runs its task on the real clock, then waits
            lines.append(line.strip())
            if line.startswith("ran"):
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped 1" in out
    assert "Traceback" not in err


def test_a_task_may_stop_its_own_wheel_without_hanging(make_wheel, clock):
    wheel = make_wheel()
    answers = []
    asked = threading.Event()
    job = wheel.task()(lambda: (answers.append(wheel.stop()), asked.set()))
    wheel.start()
    job.delay()
    clock.advance(1)
    assert asked.wait(WAIT)
    assert wheel.stop(timeout=WAIT) is True  # the stop the task asked for completes
    assert answers == [False]  # it returned at once instead of waiting for itself


# -- tick(now) is the whole step, and the clock may go back --------------------------


def test_tick_now_is_the_time_of_the_whole_step(clock):
    """A retry filed during tick(now=T+100) waits from T+100, not from the clock's T."""
    wheel = wheelq.Wheel(clock=clock)  # never started: tick() runs the due tasks here
    t = clock.time()

    @wheel.task(name="flaky", retries=1, retry_delay=10)
    def flaky():
        raise ConnectionError("down")

    h = flaky.delay(count_down=50)
    assert wheel.tick(now=t + 100) == 1
    info = wheel.get(h.id)
    assert (info.status, info.tries, info.due) == ("pending", 1, t + 100 + 10)
    assert wheel.tick(now=t + 109) == 0  # not overdue when filed: due 10 s after the step's now
    assert wheel.tick(now=t + 110) == 1
    assert h.status() == "failed"


def test_a_clock_stepped_back_an_hour_leaves_the_owner_running(journal, clock, fsync_spy):
    """After set(now - 3600): producers' records are still taken in and synced within a tick
    of real time, and a task added after the step runs by the new clock."""
    tick = 0.25
    owner = wheelq.Wheel(journal, clock=clock, tick=tick)
    ran = {}
    seen = threading.Condition()

    def job(tag):
        with seen:
            ran[tag] = clock.time()
            seen.notify_all()

    owner.task(name="job")(job)
    owner.start()
    try:
        assert owner.join(timeout=WAIT)
        before = clock.time()
        clock.set(before - 3600)  # NTP, or a restored VM
        own = owner.task(name="own")(lambda: job("own")).delay(count_down=0)  # before any tick
        producer = wheelq.Wheel(journal, clock=clock)
        synced = fsync_spy.calls
        remote = producer.task(name="job")(job).delay("from-producer", count_down=0)
        deadline = threading.Event()
        for _ in range(int(4 * tick / 0.01)):  # within a tick or two of real time, not an hour
            if owner.get(remote.id) is not None and fsync_spy.calls > synced and all_synced(owner):
                break
            deadline.wait(0.01)
        assert owner.get(remote.id) is not None, "the owner did not take the producer's record in"
        assert fsync_spy.calls > synced and all_synced(owner), "the owner did not sync the producer's record"
        clock.advance(tick)
        with seen:
            assert seen.wait_for(lambda: "from-producer" in ran and "own" in ran, WAIT)
        assert owner.join(timeout=WAIT)
        assert own.status() == "done"
        later = owner.task(name="later")(lambda: job("later"))
        added_at = clock.time()
        later.delay(count_down=300)
        clock.advance(299)
        assert owner.join(timeout=WAIT)
        assert "later" not in ran  # not at once
        clock.advance(1)
        with seen:
            assert seen.wait_for(lambda: "later" in ran, WAIT)
        assert added_at + 300 <= ran["later"] < before  # by the new clock, not an hour late
        producer.stop()
    finally:
        assert owner.stop(timeout=WAIT)


def test_a_plain_function_that_returns_a_coroutine_is_a_failed_try(make_wheel, clock):
    wheel = make_wheel()

    async def work():
        return "never awaited"

    @wheel.task(name="looks.async", retries=1, retry_delay=1)
    def looks_async():
        return work()  # a coroutine: this function is not `async def`

    wheel.start()
    h = looks_async.delay()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    info = wheel.get(h.id)
    assert (info.status, info.tries) == ("pending", 1)
    assert info.error == "TypeError: task 'looks.async' returned a coroutine; declare it with async def"
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert h.status() == "failed"  # a dead letter, never done
    assert wheel.stats()["done"] == 0
