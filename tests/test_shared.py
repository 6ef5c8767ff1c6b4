"""The behaviour every store keeps (DESIGN.md sections 1-6), on the file store and the Redis store.

Each test takes ``store_url``: a journal path, or the URL of a fresh queue on a
redis-server the module starts (tests/redis_server.py; the Redis half skips
where redis-server or redis-py is missing, and fails under CI=true).  Nothing
here depends on files: the task API, task ids, retries and dead letters,
cancel, requeue, purge, reschedule, results, owners and producers, restarts
and compaction.  Time is driven with ManualClock and ``join(timeout=...)``;
every blocking wait has a timeout.  (Schedules join this suite when
``wheel.periodic`` exists.)
"""
from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

import wheelq
from redis_server import redis_server_or_skip

WAIT = 10  # seconds: the bound on every blocking wait in these tests


@pytest.fixture(scope="module")
def redis_base(request):
    """One redis-server for the module (AOF on, as the store requires); each test has its own queue."""
    return redis_server_or_skip(request, appendfsync="everysec").url


@pytest.fixture(params=["file", "redis"])
def store_url(request, tmp_path):
    if request.param == "file":
        return str(tmp_path / "tasks.json")
    return "%s?queue=t%s" % (request.getfixturevalue("redis_base"), uuid.uuid4().hex[:12])


@pytest.fixture
def wheels(request, clock):
    """Wheels on the test's ManualClock, each stopped when the test ends."""

    def make(path, **kw):
        kw.setdefault("clock", clock)
        w = wheelq.Wheel(path, **kw)
        request.addfinalizer(lambda: _stop(w))
        return w

    return make


def _stop(w):
    assert w.stop(timeout=WAIT), "a wheel did not stop within %d s" % WAIT


def settle(wheel, clock, seconds=0.0, times=1):
    """Move the clock and wait until the owner has run what came due."""
    for _ in range(times):
        clock.advance(seconds)
        assert wheel.join(timeout=WAIT)


def wait_for(predicate, what, timeout=WAIT):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("timed out waiting for %s" % what)


# -- the task API -----------------------------------------------------------------------------


def test_delay_schedule_get_pending_and_a_handle_through_a_task_s_life(store_url, wheels, clock):
    wheel = wheels(store_url)
    gate, started = threading.Event(), threading.Event()
    seen = []

    @wheel.task(name="shop.job")
    def job(order, flag=False):
        seen.append((order, flag))
        started.set()
        assert gate.wait(WAIT)

    @wheel.task(name="shop.remind")
    def remind(user, count_down, task_id=None):
        seen.append((user, count_down, task_id))

    wheel.start()
    for cd in (30, 10, 20):
        job.delay(cd, flag=True, count_down=cd)
    infos = wheel.pending()
    assert [i.args for i in infos] == [(10,), (20,), (30,)]
    first = infos[0]
    assert (first.name, first.kwargs, first.status, first.tries, first.error) == \
        ("shop.job", {"flag": True}, "pending", 0, None)
    assert first.due == clock.time() + 10 and wheel.get(first.id) == first
    assert wheel.pending("shop.j*") == infos and wheel.pending("other") == []
    h = remind.schedule(args=("ada",), kwargs={"count_down": 3, "task_id": "inner"},
                        count_down=5, task_id="outer")
    assert h.id == "outer" and h.status() == "pending"
    settle(wheel, clock, 5)
    assert seen == [("ada", 3, "inner")] and h.status() == "done"
    clock.advance(5)
    assert started.wait(WAIT)
    handle = wheelq.TaskHandle(wheel, first.id)
    assert handle.status() == "running"
    gate.set()
    settle(wheel, clock, 20)
    assert handle.status() == "done" and wheel.get(first.id) is None
    assert wheel.stats()["done"] == 4
    assert wheelq.TaskHandle(wheel, "no-such-id").status() == "unknown"


def test_bad_arguments_are_refused_and_nothing_is_journaled(store_url, wheels):
    producer = wheels(store_url)
    job = producer.task(name="j")(lambda x: None)
    with pytest.raises(TypeError, match="JSON"):
        job.delay(object())
    with pytest.raises(ValueError):
        job.delay(1, count_down=-1)
    with pytest.raises(TypeError, match="countdown"):
        job.delay(1, countdown=5)
    assert producer.pending() == []


def test_task_id_makes_adding_idempotent_in_the_owner_and_in_a_producer(store_url, wheels, clock):
    owner = wheels(store_url)
    ran = []
    job = owner.task(name="j")(lambda x: ran.append(x))
    owner.start()
    producer = wheels(store_url)
    pjob = producer.task(name="j")(lambda x: None)
    assert job.delay(1, count_down=5, task_id="welcome-7").id == "welcome-7"
    assert pjob.delay(2, count_down=50, task_id="welcome-7").id == "welcome-7"
    assert job.delay(3, count_down=50, task_id="welcome-7").id == "welcome-7"
    settle(owner, clock, 0)
    assert [t.args for t in owner.pending()] == [(1,)]
    settle(owner, clock, 5)
    assert ran == [1]
    pjob.delay(4, task_id="welcome-7")  # finished: the id can be used again
    settle(owner, clock, 1)
    assert ran == [1, 4]


def test_tasks_added_by_a_producer_run_in_the_owner_and_it_sees_them(store_url, wheels, clock):
    owner = wheels(store_url)
    ran = []
    owner.task(name="j")(lambda x: ran.append(x))
    owner.start()
    producer = wheels(store_url)
    pjob = producer.task(name="j")(lambda x: None)
    handles = [pjob.delay(i, count_down=i) for i in range(1, 4)]
    assert [t.args for t in producer.pending()] == [(1,), (2,), (3,)]
    settle(owner, clock, 1, times=3)
    assert ran == [1, 2, 3]
    wait_for(lambda: [h.status() for h in handles] == ["done"] * 3, "the producer to see them done")
    assert producer.pending() == []


# -- cancel, reschedule ---------------------------------------------------------------------------


def test_cancel_from_the_owner_and_from_a_producer(store_url, wheels, clock):
    owner = wheels(store_url)
    ran = []
    job = owner.task(name="j")(lambda x: ran.append(x))
    owner.start()
    producer = wheels(store_url)
    a = job.delay("a", count_down=5)
    b = job.delay("b", count_down=5)
    c = job.delay("c", count_down=5)
    assert a.cancel() is True and a.status() == "cancelled" and a.cancel() is False
    assert producer.cancel(b.id) is True
    assert owner.cancel("nope") is False and producer.cancel("nope") is False
    settle(owner, clock, 10)
    assert ran == ["c"]
    assert owner.stats()["cancelled"] == 2
    assert producer.cancel(c.id) is False  # done: nothing left to cancel


def test_a_cancelled_task_id_can_be_added_again(store_url, wheels, clock):
    owner = wheels(store_url)
    ran = []
    owner.task(name="j")(lambda x: ran.append(x))
    owner.start()
    producer = wheels(store_url)
    pjob = producer.task(name="j")(lambda x: None)
    pjob.delay(1, count_down=5, task_id="order-9")
    assert producer.cancel("order-9") is True
    pjob.delay(2, count_down=5, task_id="order-9")  # a new task under the id
    settle(owner, clock, 5)
    assert ran == [2]


def test_reschedule_moves_a_pending_task_from_the_owner_and_from_a_producer(store_url, wheels,
                                                                            clock):
    owner = wheels(store_url)
    ran = []
    job = owner.task(name="j")(lambda x: ran.append((x, clock.time())))
    owner.start()
    producer = wheels(store_url)
    t0 = clock.time()
    a = job.delay("a", count_down=100)
    b = job.delay("b", count_down=100)
    assert a.reschedule(count_down=5) is True
    assert producer.reschedule(b.id, eta=t0 + 10) is True
    assert producer.reschedule("nope", count_down=1) is False
    with pytest.raises(TypeError):
        owner.reschedule(a.id)
    settle(owner, clock, 5)
    settle(owner, clock, 5)
    assert ran == [("a", t0 + 5), ("b", t0 + 10)]
    assert a.reschedule(count_down=1) is False  # done


# -- retries and dead letters ------------------------------------------------------------------------


def test_retries_back_off_exponentially_then_a_dead_letter(store_url, wheels, clock):
    wheel = wheels(store_url)
    runs = []

    @wheel.task(name="flaky", retries=2, retry_delay=2, retry_backoff=3)
    def flaky():
        runs.append(clock.time())
        raise RuntimeError("try %d failed" % len(runs))

    wheel.start()
    t0 = clock.time()
    h = flaky.delay(count_down=1)
    settle(wheel, clock, 1, times=12)
    assert [r - t0 for r in runs] == [1, 3, 9]
    assert h.status() == "failed"
    [dead] = wheel.failed()
    assert (dead.id, dead.tries, dead.error) == (h.id, 3, "RuntimeError: try 3 failed")
    assert wheel.stats()["retried"] == 2 and wheel.stats()["failed"] == 1
    with pytest.raises(wheelq.WheelqError, match="dead letter"):
        flaky.schedule(task_id=h.id)  # its id is held until it is requeued or purged


def test_dead_letters_survive_a_restart_and_are_requeued_and_purged(store_url, wheels, clock):
    def build():
        w = wheels(store_url)
        state = {"ok": False, "runs": 0}

        @w.task(name="fragile")
        def fragile(x):
            state["runs"] += 1
            if not state["ok"]:
                raise ValueError("bad %s" % x)

        return w, fragile, state

    wheel, fragile, _ = build()
    wheel.start()
    a, b, c = fragile.delay("a"), fragile.delay("b"), fragile.delay("c")
    settle(wheel, clock, 1)
    _stop(wheel)
    wheel, fragile, state = build()
    wheel.start()
    producer = wheels(store_url)
    assert sorted(t.id for t in wheel.failed()) == sorted([a.id, b.id, c.id])
    assert sorted(t.id for t in producer.failed()) == sorted([a.id, b.id, c.id])
    assert wheel.get(a.id).error == "ValueError: bad a"
    state["ok"] = True
    h = wheel.requeue(a.id, count_down=5)
    assert h.status() == "pending" and wheel.get(a.id).tries == 0
    producer.requeue(c.id, count_down=5)
    settle(wheel, clock, 5)
    assert h.status() == "done" and state["runs"] == 2
    assert producer.purge(b.id) is True
    wait_for(lambda: wheel.failed() == [], "the owner to take in the purge")
    assert wheel.purge(b.id) is False
    with pytest.raises(wheelq.UnknownTask, match="dead letter"):
        wheel.requeue("nope")
    _stop(wheel)
    again = wheels(store_url).start()
    assert again.failed() == [] and again.pending() == []


def test_an_unregistered_task_becomes_a_dead_letter_and_never_runs(store_url, wheels, clock):
    producer = wheels(store_url)
    producer.task(name="only.here")(lambda: None).delay()
    owner = wheels(store_url)
    owner.start()
    settle(owner, clock, 1)
    [dead] = owner.failed()
    assert dead.name == "only.here" and "unknown task" in dead.error


def test_stats_count_events_since_the_wheel_was_built(store_url, wheels, clock):
    wheel = wheels(store_url)
    ok = wheel.task(name="ok")(lambda: None)
    bad = wheel.task(name="bad", retries=1, retry_delay=1)(lambda: 1 / 0)
    wheel.start()
    ok.delay()
    bad.delay()
    ok.delay(count_down=100).cancel()
    ok.delay(count_down=100)
    settle(wheel, clock, 1, times=3)
    assert wheel.stats() == {"pending": 1, "queued": 0, "running": 0, "done": 1, "failed": 1,
                             "retried": 1, "cancelled": 1}


# -- results --------------------------------------------------------------------------------------


def test_results_in_the_owner_and_in_a_producer_until_they_expire(store_url, wheels, clock):
    owner = wheels(store_url)
    owner.task(name="res.pair", result_ttl=60)(lambda a, b: {"sum": a + b, "pair": [a, b]})
    owner.task(name="res.none")(lambda: 5)
    owner.task(name="res.bad")(lambda: 1 / 0)
    owner.start()
    producer = wheels(store_url)
    pair = producer.task(name="res.pair", result_ttl=60)(lambda a, b: None)
    none = producer.task(name="res.none")(lambda: None)
    bad = producer.task(name="res.bad")(lambda: None)
    h = pair.delay(2, 3, count_down=1)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)
    settle(owner, clock, 1)
    assert h.result(timeout=WAIT) == {"sum": 5, "pair": [2, 3]}
    assert wheelq.TaskHandle(owner, h.id).result(timeout=WAIT) == {"sum": 5, "pair": [2, 3]}
    assert producer.get(h.id).result == {"sum": 5, "pair": [2, 3]}
    with pytest.raises(wheelq.ResultUnavailable, match="result_ttl"):
        none.delay().result(timeout=WAIT)
    f = bad.delay()
    settle(owner, clock, 1)
    with pytest.raises(wheelq.TaskFailed) as failed:
        f.result(timeout=WAIT)
    assert failed.value.id == f.id and "ZeroDivisionError" in failed.value.error
    c = pair.delay(1, 1, count_down=50)
    c.cancel()
    with pytest.raises(wheelq.ResultUnavailable, match="cancelled"):
        c.result(timeout=WAIT)
    with pytest.raises(wheelq.ResultUnavailable, match="no task"):
        wheelq.TaskHandle(owner, "nope").result(timeout=WAIT)
    _stop(owner)
    restarted = wheels(store_url)
    restarted.task(name="res.pair", result_ttl=60)(lambda a, b: None)
    restarted.start()  # a restart keeps the result, and does not extend it
    assert wheelq.TaskHandle(restarted, h.id).result(timeout=WAIT)["sum"] == 5
    settle(restarted, clock, 60)
    with pytest.raises(wheelq.ResultUnavailable, match="expired|not kept"):
        wheelq.TaskHandle(restarted, h.id).result(timeout=WAIT)


def test_async_tasks_adelay_and_aresult(store_url, wheels, clock):
    owner = wheels(store_url)

    @owner.task(name="aio.rate", result_ttl=60)
    async def rate(currency):
        await asyncio.sleep(0)
        return {"currency": currency, "rate": 1.25}

    owner.start()

    async def main():
        h = await rate.adelay("EUR")
        clock.advance(1)
        return await h.aresult(timeout=WAIT)

    assert asyncio.run(main()) == {"currency": "EUR", "rate": 1.25}


# -- restarts and compaction ---------------------------------------------------------------------


def test_a_stopped_owner_leaves_its_tasks_pending_and_a_new_owner_runs_them(store_url, wheels,
                                                                            clock):
    first = wheels(store_url)
    j = first.task(name="j")(lambda x: None)
    first.start()
    handles = [j.delay(i, count_down=10 + i) for i in range(5)]
    _stop(first)
    ran = []
    second = wheels(store_url)
    second.task(name="j")(lambda x: ran.append(x))
    second.start()
    assert [t.id for t in second.pending()] == [h.id for h in handles]
    settle(second, clock, 20)
    assert sorted(ran) == [0, 1, 2, 3, 4]


def test_compaction_keeps_pending_tasks_dead_letters_and_kept_results(store_url, wheels, clock):
    wheel = wheels(store_url)
    job = wheel.task(name="j", result_ttl=100)(lambda x: x * 2)
    bad = wheel.task(name="bad")(lambda: 1 / 0)
    wheel.start()
    done = [job.delay(i) for i in range(50)]
    later = job.delay(99, count_down=500)
    dead = bad.delay()
    settle(wheel, clock, 1)
    assert wheel.compact() > 0
    producer = wheels(store_url)
    assert [t.id for t in producer.pending()] == [later.id]
    assert [t.id for t in producer.failed()] == [dead.id]
    assert producer.get(done[7].id).result == 14
    _stop(wheel)
    again = wheels(store_url)
    again.task(name="j", result_ttl=100)(lambda x: x * 2)
    again.start()
    assert [t.id for t in again.pending()] == [later.id]
    assert [t.id for t in again.failed()] == [dead.id]
    assert wheelq.TaskHandle(again, done[7].id).result(timeout=WAIT) == 14
    settle(again, clock, 100)  # expired: the next compaction drops them
    again.compact()
    assert wheels(store_url).get(done[7].id) is None


def test_a_second_owner_is_refused_and_a_standby_takes_over_when_it_stops(store_url, wheels, clock):
    first = wheels(store_url).start()
    with pytest.raises(wheelq.JournalLocked):
        wheels(store_url).start()
    standby = wheels(store_url).start(standby=True)
    assert not standby.is_owner
    _stop(first)
    wait_for(lambda: standby.is_owner, "the standby to take over")


# -- schedules ------------------------------------------------------------------------------------


def test_a_schedule_runs_on_its_grid_only_in_the_owner_and_a_pause_from_a_producer_holds(
        store_url, wheels, clock):
    def build():
        w = wheels(store_url)
        ran = []
        w.periodic(every=300, name="stats.fix")(lambda: ran.append(wheelq.current().due))
        return w, ran

    owner, ran = build()
    owner.start()
    producer, not_here = build()  # declares it too, and never runs it
    [run] = owner.pending()
    assert run.id.startswith("stats.fix@") and run.due == clock.time() + 300
    settle(owner, clock, 300, times=3)
    assert len(ran) == 3 and ran[1] - ran[0] == 300 and not_here == []
    assert producer.pause_schedule("stats.fix") is True
    wait_for(lambda: owner.schedules()[0].paused and owner.pending() == [],
             "the owner to take in the pause")
    _stop(owner)
    again, ran_again = build()
    again.start()  # the pause survives the restart
    settle(again, clock, 300, times=2)
    assert again.schedules()[0].paused and ran_again == []
    assert again.resume_schedule("stats.fix") is True
    settle(again, clock, 300)
    assert len(ran_again) == 1 and (ran_again[0] - ran[0]) % 300 == 0  # on the same grid
