"""Task results: result_ttl, TaskHandle.result()/aresult(), TaskFailed and ResultUnavailable.

DESIGN.md section 3 (issue 16).  A result is journaled in the task's ``done`` record with
``expires`` (finished + result_ttl, by the wheel's clock; a restart does not extend it), read
back in the owner, in a producer and after a restart, and dropped at compaction once expired.
Each way a result can be missing raises its own error.  Time is driven with ManualClock;
every blocking wait has a timeout.
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

import wheelq
from conftest import WAIT, python_env
from test_cli import Output, spawn


def records(path, op=None) -> list:
    with open(path, "rb") as f:
        out = [json.loads(line) for line in f.read().splitlines()[1:]]
    return [r for r in out if op is None or r["op"] == op]


def unavailable(handle, timeout=WAIT) -> str:
    """result() must raise ResultUnavailable at once, even with no timeout: its message."""
    box: list = []

    def call():
        try:
            box.append(("value", handle.result(timeout=timeout)))
        except BaseException as exc:  # noqa: B902 - handed back to the test
            box.append(("raised", exc))

    t = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "result() hung instead of raising"
    assert time.monotonic() - started < 2.0, "result() waited before raising"
    kind, got = box[0]
    assert kind == "raised" and isinstance(got, wheelq.ResultUnavailable), (kind, got)
    assert isinstance(got, wheelq.WheelqError)
    return str(got)


def run_due(wheel, clock, seconds=1):
    clock.advance(seconds)
    assert wheel.join(timeout=WAIT)


# -- the value comes back ---------------------------------------------------------------------


def test_the_result_comes_back_in_the_same_process(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.pair", result_ttl=60)
    def pair(a, b):
        return (a, {"b": b, 2: "two"})  # JSON gives back a list, and a str key

    @wheel.task(name="res.rate", result_ttl=timedelta(hours=1))
    async def rate(currency):
        await asyncio.sleep(0)
        return {"currency": currency, "rate": 1.25}

    @wheel.task(name="res.nothing", result_ttl=60)
    async def nothing():
        return None

    wheel.start()
    p, r, n = pair.delay(1, "x"), rate.delay("EUR"), nothing.delay()
    run_due(wheel, clock)
    assert p.result(timeout=WAIT) == [1, {"b": "x", "2": "two"}]  # as a producer reads it
    assert r.result(timeout=WAIT) == {"currency": "EUR", "rate": 1.25}
    assert n.result(timeout=WAIT) is None  # None is a result, not a missing one
    assert p.result(timeout=0) == [1, {"b": "x", "2": "two"}]  # as often as asked
    assert wheel.stats()["done"] == 3


def test_result_waits_until_the_task_has_run(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.later", result_ttl=60)
    async def later(x):
        return x * 3

    wheel.start()
    h = later.delay(5, count_down=30)
    box = []
    waiter = threading.Thread(target=lambda: box.append(h.result(timeout=WAIT)), daemon=True)
    waiter.start()
    clock.advance(29)
    assert wheel.join(timeout=WAIT)
    assert box == []
    clock.advance(1)
    waiter.join(WAIT)
    assert box == [15]


def test_result_in_the_owner_wakes_when_the_task_finishes_not_at_the_next_tick(make_wheel, clock):
    wheel = make_wheel(tick=5.0)  # a poll once a tick would take up to 5 s
    returned = []

    @wheel.task(name="res.now", result_ttl=60)
    async def now():
        returned.append(time.monotonic())
        return "ok"

    wheel.start()
    h = now.delay()
    box = []
    waiter = threading.Thread(target=lambda: box.append((h.result(timeout=WAIT),
                                                          time.monotonic())), daemon=True)
    waiter.start()
    clock.advance(5)
    waiter.join(WAIT)
    assert box and box[0][0] == "ok"
    assert box[0][1] - returned[0] < 1.0


PRODUCER = r"""
import asyncio, json, sys, wheelq
path, now = sys.argv[1], float(sys.argv[2])
wheel = wheelq.Wheel(path, clock=wheelq.ManualClock(start=now))  # a producer: never started

@wheel.task(name="res.square", result_ttl=3600)
async def square(x):
    return x * x

a = square.delay(12)
b = square.delay(5)
print("ids", a.id, b.id, flush=True)
print("result", json.dumps(a.result(timeout=30)), flush=True)
print("aresult", json.dumps(asyncio.run(b.aresult(timeout=30))), flush=True)
"""


def test_the_result_comes_back_in_a_producer_process(make_wheel, clock, journal):
    owner = make_wheel(journal)

    @owner.task(name="res.square", result_ttl=3600)
    async def square(x):
        return x * x

    owner.start()
    proc = spawn([sys.executable, "-c", PRODUCER, journal, repr(clock.time())])
    out = Output(proc.stdout)
    try:
        a, b = out.expect(r"^ids ").split()[1:]
        for _ in range(WAIT):  # the owner takes the producer's adds in at its next tick
            clock.advance(1)
            assert owner.join(timeout=WAIT)
            if owner.get(a) is not None and owner.get(b) is not None and \
                    owner.get(a).status == owner.get(b).status == "done":
                break
        assert json.loads(out.expect(r"^result ", timeout=30).split(" ", 1)[1]) == 144
        assert json.loads(out.expect(r"^aresult ", timeout=30).split(" ", 1)[1]) == 25
        assert proc.wait(WAIT) == 0
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert "Traceback" not in proc.stderr.read()


def test_the_result_survives_a_restart_and_is_journaled_with_its_expiry(make_wheel, clock,
                                                                        journal):
    wheel = make_wheel(journal)

    @wheel.task(name="res.total", result_ttl=600)
    async def total(xs):
        return sum(xs)

    wheel.start()
    h = total.delay([1, 2, 3])
    run_due(wheel, clock)
    finished = clock.time()
    assert h.result(timeout=WAIT) == 6
    assert wheel.stop(timeout=WAIT)
    [done] = records(journal, "done")
    assert done == {"op": "done", "id": h.id, "result": 6, "expires": finished + 600}

    reader = make_wheel(journal)  # a producer reading the journal
    assert wheelq.TaskHandle(reader, h.id).result(timeout=0) == 6
    again = make_wheel(journal)
    again.task(name="res.total", result_ttl=600)(total.func)
    again.start()
    assert wheelq.TaskHandle(again, h.id).result(timeout=0) == 6
    assert again.get(h.id).result == 6 and again.get(h.id).status == "done"


# -- expiry -------------------------------------------------------------------------------


def test_a_result_expires_at_finished_plus_ttl_and_a_restart_does_not_extend_it(
        make_wheel, clock, journal):
    wheel = make_wheel(journal)

    @wheel.task(name="res.token", result_ttl=100)
    async def token():
        return "abc"

    wheel.start()
    h = token.delay(count_down=10)
    clock.advance(10)
    assert wheel.join(timeout=WAIT)
    finished = clock.time()
    assert h.result(timeout=WAIT) == "abc"
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    assert wheel.stop(timeout=WAIT)

    again = make_wheel(journal)  # restarted 60 s after the run: 40 s are left, not 100
    again.task(name="res.token", result_ttl=100)(token.func)
    again.start()
    handle = wheelq.TaskHandle(again, h.id)
    clock.set(finished + 99.5)
    assert again.join(timeout=WAIT)
    assert handle.result(timeout=0) == "abc"
    assert again.get(h.id).result == "abc"
    clock.set(finished + 100)
    assert again.join(timeout=WAIT)
    message = unavailable(handle)
    assert "expired" in message and "not kept" not in message, message
    assert again.get(h.id) is None
    assert handle.status() == "done"


def test_get_returns_the_result_until_it_expires(make_wheel, clock, journal):
    wheel = make_wheel(journal)

    @wheel.task(name="res.info", result_ttl=30)
    def info(x):
        return {"x": x}

    wheel.start()
    h = info.delay(7)
    run_due(wheel, clock)
    reader = make_wheel(journal)
    for w in (wheel, reader):
        got = w.get(h.id)
        assert isinstance(got, wheelq.TaskInfo)
        assert (got.id, got.name, got.args, got.status, got.result) == (
            h.id, "res.info", (7,), "done", {"x": 7})
    clock.advance(29)
    assert wheel.join(timeout=WAIT)
    assert wheel.get(h.id).result == {"x": 7} and reader.get(h.id).result == {"x": 7}
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.get(h.id) is None
    assert reader.get(h.id) is None


# -- each error of its own --------------------------------------------------------------


def test_task_failed_carries_the_id_the_error_and_the_tries(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.broken", retries=1, retry_delay=1, result_ttl=60)
    async def broken():
        raise KeyError("sku-9")

    wheel.start()
    h = broken.delay()
    run_due(wheel, clock)
    run_due(wheel, clock)
    with pytest.raises(wheelq.TaskFailed) as err:
        h.result(timeout=WAIT)
    exc = err.value
    assert isinstance(exc, wheelq.WheelqError)
    assert (exc.id, exc.error, exc.tries) == (h.id, "KeyError: 'sku-9'", 2)
    assert h.id in str(exc) and "dead letter" in str(exc) and "requeue" in str(exc)


def test_result_of_a_task_whose_results_are_not_kept_raises_at_once(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.fire_and_forget")
    async def fire(x):
        return x

    wheel.start()
    h = fire.delay(1, count_down=60)
    message = unavailable(h, timeout=None)  # pending: it says so now, it does not hang
    assert "not kept" in message and "result_ttl" in message and "expired" not in message
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    assert h.status() == "done"
    message = unavailable(h, timeout=None)  # and once it has run
    assert "not kept" in message and "result_ttl" in message and "expired" not in message, \
        message


def test_result_of_an_expired_result_says_it_expired(make_wheel, clock, journal):
    wheel = make_wheel(journal)

    @wheel.task(name="res.brief", result_ttl=5)
    async def brief():
        return 1

    wheel.start()
    h = brief.delay()
    run_due(wheel, clock)
    assert h.result(timeout=WAIT) == 1
    reader = make_wheel(journal)
    clock.advance(5)
    assert wheel.join(timeout=WAIT)
    for handle in (h, wheelq.TaskHandle(reader, h.id)):  # in the owner and in a producer
        message = unavailable(handle, timeout=None)
        assert "expired" in message and "result_ttl" in message, message
        assert "not kept" not in message, message


def test_a_new_run_under_the_same_task_id_waits_for_its_own_result(make_wheel, clock):
    wheel = make_wheel()
    runs = []

    @wheel.task(name="res.report", result_ttl=3600)
    async def report(day):
        runs.append(day)
        return "report of %s" % day

    wheel.start()
    first = report.delay("mon", task_id="report-7")
    run_due(wheel, clock)
    assert first.result(timeout=WAIT) == "report of mon"
    second = report.delay("tue", task_id="report-7", count_down=60)  # the id is free again
    assert second.status() == "pending"
    with pytest.raises(TimeoutError):
        second.result(timeout=0.1)  # not the earlier run's value
    clock.advance(60)
    assert wheel.join(timeout=WAIT)
    assert second.result(timeout=WAIT) == "report of tue"
    assert runs == ["mon", "tue"]


def test_result_of_a_cancelled_task_raises(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.cancelled", result_ttl=60)
    async def job():
        return 1

    wheel.start()
    h = job.delay(count_down=60)
    assert h.cancel()
    message = unavailable(h, timeout=None)
    assert "cancelled" in message and h.id in message


def test_result_of_an_unknown_id_raises_instead_of_reading_as_pending(make_wheel, clock, journal):
    owner = make_wheel(journal)
    owner.task(name="res.any", result_ttl=60)(lambda: 1)
    owner.start()
    producer = make_wheel(journal)
    for w in (owner, producer):
        message = unavailable(wheelq.TaskHandle(w, "no-such-task"), timeout=None)
        assert "no-such-task" in message and "no task" in message, message
        assert wheelq.TaskHandle(w, "no-such-task").status() == "unknown"


def test_a_value_that_is_not_json_is_not_kept_the_task_still_counts_done_and_a_warning_is_logged(
        make_wheel, clock, journal, caplog):
    caplog.set_level(logging.WARNING, logger="wheelq")
    wheel = make_wheel(journal)

    @wheel.task(name="res.opaque", result_ttl=60)
    async def opaque():
        return {1, 2}  # a set is no JSON value

    @wheel.task(name="res.nan", result_ttl=60)
    def nan():
        return float("nan")  # nor is NaN

    wheel.start()
    handles = [opaque.delay(), nan.delay()]
    run_due(wheel, clock)
    for h in handles:
        assert h.status() == "done"
        message = unavailable(h, timeout=None)
        assert "not JSON" in message and h.id in message, message
    assert wheel.stats()["done"] == 2 and wheel.stats()["failed"] == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name, h in (("res.opaque", handles[0]), ("res.nan", handles[1])):
        assert any(("task %s [%s]" % (name, h.id)) in m and "not JSON" in m for m in warned), warned
    assert {r["id"] for r in records(journal, "done")} == {h.id for h in handles}
    assert wheel.stop(timeout=WAIT)
    again = make_wheel(journal)  # the journal still reads, and says the same after a restart
    assert "not JSON" in unavailable(wheelq.TaskHandle(again, handles[0].id), timeout=None)


def test_result_timeout_on_a_pending_task_raises_timeout_error_within_the_timeout(make_wheel,
                                                                                  clock, journal):
    owner = make_wheel(journal)

    @owner.task(name="res.waits", result_ttl=60)
    async def waits():
        return 1

    owner.start()
    h = waits.delay(count_down=3600)
    producer = make_wheel(journal)
    for handle in (h, wheelq.TaskHandle(producer, h.id)):
        started = time.monotonic()
        with pytest.raises(TimeoutError) as err:
            handle.result(timeout=0.1)
        took = time.monotonic() - started
        assert 0.1 <= took < 0.6, took
        assert h.id in str(err.value)
        assert not isinstance(err.value, wheelq.WheelqError)

        async def awaited():
            t = time.monotonic()
            with pytest.raises(TimeoutError):
                await handle.aresult(timeout=0.1)
            return time.monotonic() - t

        took = asyncio.run(awaited())
        assert 0.1 <= took < 0.6, took
    assert h.status() == "pending"


# -- compaction ---------------------------------------------------------------------------


def test_compaction_keeps_unexpired_results_and_drops_expired_ones(make_wheel, clock, journal):
    wheel = make_wheel(journal)

    @wheel.task(name="res.short", result_ttl=10)
    def short(x):
        return "short-%d" % x

    @wheel.task(name="res.long", result_ttl=1000)
    async def long(x):
        return "long-%d" % x

    @wheel.task(name="res.unkept")
    def unkept():
        return "gone"

    wheel.start()
    s, lg, u = short.delay(1), long.delay(2), unkept.delay()
    pending = long.delay(3, count_down=5000)
    run_due(wheel, clock)
    clock.advance(10)  # short's result expires now; long's is kept 990 s more
    assert wheel.join(timeout=WAIT)
    wheel.compact()
    kept = records(journal)
    assert [r for r in kept if r["op"] == "done"] == [
        {"op": "done", "id": lg.id, "result": "long-2", "expires": clock.time() - 10 + 1000}]
    ids = {r["id"] for r in kept if r["op"] == "add"}
    assert ids == {lg.id, pending.id}
    assert lg.result(timeout=0) == "long-2"
    assert wheel.stop(timeout=WAIT)

    again = make_wheel(journal)
    again.task(name="res.long", result_ttl=1000)(long.func)
    again.start()
    assert wheelq.TaskHandle(again, lg.id).result(timeout=0) == "long-2"
    assert again.get(s.id) is None and again.get(u.id) is None
    with pytest.raises(wheelq.ResultUnavailable):
        wheelq.TaskHandle(again, s.id).result(timeout=0)
    assert [i.id for i in again.pending()] == [pending.id]
    clock.advance(990)
    assert again.join(timeout=WAIT)
    again.compact()
    assert not records(journal, "done")  # expired now: dropped at this compaction
    assert again.get(lg.id) is None


# -- the command line ----------------------------------------------------------------------


def wq(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "wheelq", *map(str, args)], capture_output=True,
                       text=True, timeout=60, env=python_env())
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def test_cli_list_done_shows_finished_tasks_with_their_results(make_wheel, journal):
    # The command line reads the real clock: run the owner on a manual clock two hours
    # behind, so a result kept an hour has expired for it and one kept a day has not.
    clock = wheelq.ManualClock(start=time.time() - 7200)
    wheel = make_wheel(journal, clock=clock)

    @wheel.task(name="shop.quote", result_ttl=86400)
    async def quote(sku):
        return {"sku": sku, "price": 9.5}

    @wheel.task(name="shop.old", result_ttl=3600)
    def old():
        return "expired by now"

    @wheel.task(name="shop.plain")
    def plain():
        return "not kept"

    @wheel.task(name="shop.fails")
    def fails():
        raise RuntimeError("boom")

    wheel.start()
    q, o, p, f = quote.delay("A-1"), old.delay(), plain.delay(), fails.delay()
    waiting = plain.delay(count_down=10 ** 6)
    run_due(wheel, clock)
    assert q.result(timeout=WAIT) == {"sku": "A-1", "price": 9.5}
    assert wheel.stop(timeout=WAIT)

    shown = json.loads(wq("list", journal, "--done", "--json").stdout)
    assert [(t["id"], t["name"], t["status"], t["args"], t["result"]) for t in shown] == [
        (q.id, "shop.quote", "done", ["A-1"], {"sku": "A-1", "price": 9.5})]
    text = wq("list", journal, "--done").stdout
    assert q.id in text and "RESULT" in text and '"price": 9.5' in text
    for other in (o, p, f, waiting):
        assert other.id not in text
    plain_list = wq("list", journal).stdout
    assert q.id not in plain_list  # finished: not in the ordinary list
    assert waiting.id in plain_list and f.id in plain_list


def test_cli_compact_drops_expired_results_and_keeps_unexpired_ones(make_wheel, journal):
    clock = wheelq.ManualClock(start=time.time() - 7200)  # as above: the CLI reads real time
    wheel = make_wheel(journal, clock=clock)

    @wheel.task(name="shop.quote", result_ttl=86400)
    async def quote(sku):
        return {"sku": sku}

    @wheel.task(name="shop.old", result_ttl=3600)
    def old():
        return "expired by now"

    wheel.start()
    q, o = quote.delay("B-2"), old.delay()
    run_due(wheel, clock)
    assert q.result(timeout=WAIT) == {"sku": "B-2"} and o.result(timeout=WAIT) == "expired by now"
    assert wheel.stop(timeout=WAIT)
    assert {r["id"] for r in records(journal, "done")} == {q.id, o.id}

    wq("compact", journal)
    assert records(journal, "done") == [
        {"op": "done", "id": q.id, "result": {"sku": "B-2"}, "expires": clock.time() + 86400}]
    assert {r["id"] for r in records(journal, "add")} == {q.id}
    reader = make_wheel(journal)  # on the real clock, as the CLI
    assert wheelq.TaskHandle(reader, q.id).result(timeout=0) == {"sku": "B-2"}


# -- aresult() -----------------------------------------------------------------------------


def test_aresult_awaits_without_a_thread_per_waiter(make_wheel, clock):
    wheel = make_wheel(async_workers=50)

    @wheel.task(name="res.many", result_ttl=60)
    async def many(i):
        await asyncio.sleep(0)
        return i

    wheel.start()
    handles = [many.delay(i) for i in range(200)]

    async def main():
        before = threading.active_count()
        waiters = [asyncio.ensure_future(h.aresult(timeout=WAIT)) for h in handles]
        for _ in range(3):
            await asyncio.sleep(0)  # every waiter is waiting now
        during = threading.active_count()
        clock.advance(1)
        values = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
        return before, during, values

    before, during, values = asyncio.run(main())
    assert values == list(range(200))
    assert during <= before, "%d waiters took %d threads" % (len(handles), during - before)


def test_aresult_in_a_producer_reads_the_journal_without_threads(make_wheel, clock, journal):
    owner = make_wheel(journal)

    @owner.task(name="res.remote", result_ttl=60)
    async def remote(i):
        return -i

    owner.start()
    producer = make_wheel(journal)
    handles = [wheelq.TaskHandle(producer, owner_h.id)
               for owner_h in [remote.delay(i) for i in range(50)]]

    async def main():
        before = threading.active_count()
        waiters = [asyncio.ensure_future(h.aresult(timeout=WAIT)) for h in handles]
        for _ in range(3):
            await asyncio.sleep(0)
        during = threading.active_count()
        clock.advance(1)
        values = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
        return before, during, values

    before, during, values = asyncio.run(main())
    assert values == [-i for i in range(50)]
    assert during <= before


def test_aresult_raises_what_result_raises(make_wheel, clock):
    wheel = make_wheel()

    @wheel.task(name="res.bad", result_ttl=60)
    async def bad():
        raise ValueError("nope")

    @wheel.task(name="res.unkept")
    async def unkept():
        return 1

    wheel.start()
    b, u = bad.delay(), unkept.delay()
    run_due(wheel, clock)

    async def main():
        with pytest.raises(wheelq.TaskFailed):
            await b.aresult(timeout=WAIT)
        with pytest.raises(wheelq.ResultUnavailable):
            await u.aresult(timeout=WAIT)
        with pytest.raises(wheelq.ResultUnavailable):
            await wheelq.TaskHandle(wheel, "nope").aresult()

    asyncio.run(asyncio.wait_for(main(), WAIT))
