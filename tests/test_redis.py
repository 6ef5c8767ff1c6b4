"""The Redis store (wheelq_redis.py, DESIGN.md section 7) against real redis-server processes.

Every test starts its own ``redis-server`` (tests/redis_server.py) and stops it
when it ends; where redis-server or redis-py is missing the tests skip saying
why, and under CI=true they fail.  No mocks: faults are real (SIGKILL and
SIGSTOP of owners and of the server, a proxy that loses replies), and so are
the processes that share nothing but the URL (tests/redis_agent.py).
Multi-process tests run on real time, with every wait bounded; the others
drive a ManualClock and ``join(timeout=...)``.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import wheelq
from conftest import ROOT, python_env, run_python
from redis_server import ReplyDropper, redis_server_or_skip

try:
    import redis

    import wheelq_redis
except ImportError:  # redis_server_or_skip says what to install (and fails under CI)
    redis = wheelq_redis = None

AGENT = str(Path(__file__).resolve().parent / "redis_agent.py")
WAIT = 10  # seconds: the bound on a blocking wait in one process
SLOW = 120  # seconds: the bound on a wait for other processes doing bulk work
EARLY = 0.0005  # seconds: rounding (the owner offsets its clock by a lower bound: never early)


@pytest.fixture
def server(request):
    return redis_server_or_skip(request, appendfsync="always")


def queue_url(server, queue="q", **options) -> str:
    extra = "".join("&%s=%s" % kv for kv in options.items())
    return "%s?queue=%s%s" % (server.url, queue, extra)


def client(server):
    return redis.Redis.from_url(server.url)


def entries(server, queue="q", key="log") -> list:
    """``(id, fields)`` of every entry of the queue's stream ``key``, fields decoded."""
    out = []
    for eid, fields in client(server).xrange("wheelq:{%s}:%s" % (queue, key)):
        out.append((eid.decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return out


def records(server, queue="q", key="log") -> list:
    return [json.loads(f["r"]) for _, f in entries(server, queue, key)]


@pytest.fixture
def wheels(request):
    """Build wheels, each stopped at the end of the test before the servers started before it."""

    def make(url=None, **kw):
        w = wheelq.Wheel(url, **kw)

        def stop():
            assert w.stop(timeout=WAIT), "a wheel did not stop within %d s" % WAIT

        request.addfinalizer(stop)
        return w

    return make


class Agent:
    """A process of tests/redis_agent.py whose stdout lines are read with a timeout."""

    def __init__(self, tmp_path, *args):
        self.stderr_path = tmp_path / ("agent-%s-%d.err" % (args[0], time.monotonic_ns()))
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, AGENT, *args], stdout=subprocess.PIPE,
                                     stderr=self._err, env=python_env(), text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError("agent %s printed no %r within %.0f s; stderr: %s"
                                     % (self.proc.args[2], prefix, timeout, self.stderr()[-2000:]))
            if line is None:
                raise AssertionError("agent %s exited (%s) before printing %r; stderr: %s"
                                     % (self.proc.args[2], self.proc.wait(WAIT), prefix,
                                        self.stderr()[-2000:]))
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self._err.close()


@pytest.fixture
def agents(tmp_path):
    started = []

    def start(*args):
        a = Agent(tmp_path, *args)
        started.append(a)
        return a

    yield start
    for a in started:
        a.end()


def read_record(path) -> list:
    """The lines ``job`` appended: ``(what, key, due, at)``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    # A job may be writing its line as we read: only whole lines count.
    for line in text.split("\n")[:-1]:
        what, key, due, at = line.split(" ")
        out.append((what, key, float(due), float(at)))
    return out


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


class RoundTrips:
    """Counts the requests clients send the server: its read events (``total_reads_processed``).

    With one client at work, that is its round trips (a pipeline is one).
    """

    def __init__(self, server):
        self.client = client(server)
        self.last = self._reads()

    def _reads(self) -> int:
        return int(self.client.info("stats")["total_reads_processed"])

    def count(self) -> int:
        """Requests since the last count, this counter's own left out."""
        now = self._reads()
        n, self.last = now - self.last - 1, now
        return n

    def close(self):
        self.client.close()


# -- producers on many processes -----------------------------------------------------------


def test_four_producer_processes_of_10000_tasks_each_all_run_none_early(server, agents, tmp_path):
    url = queue_url(server)
    record = str(tmp_path / "ran")
    owner = agents("owner", url, record, "--tick", "0.05")
    owner.expect("OWNER")
    producers = [agents("produce", url, "p%d" % i, "10000", "--spread", "3") for i in range(4)]
    for p in producers:
        p.expect("ACKED", timeout=SLOW)
        assert p.wait(WAIT) == 0
    wait_until(lambda: sum(1 for r in read_record(record) if r[0] == "end") >= 40000, SLOW,
               "the owner to run all 40,000 tasks")
    starts = [r for r in read_record(record) if r[0] == "start"]
    keys = [r[1] for r in starts]
    assert len(keys) == 40000 and set(keys) == {"p%d-%d" % (p, i) for p in range(4)
                                                 for i in range(10000)}
    early = [r for r in starts if r[3] < r[2] - EARLY]
    assert early == [], "%d tasks ran before they were due, e.g. %r" % (len(early), early[:3])


def test_the_same_task_id_added_from_four_processes_at_once_gives_one_task(server, agents,
                                                                              wheels):
    url = queue_url(server)
    ids = ["order-%d" % i for i in range(50)]
    start_at = time.time() + 1.5
    adders = [agents("same", url, repr(start_at), *ids) for _ in range(4)]
    for a in adders:
        a.expect("ADDED", timeout=30)
        assert a.wait(WAIT) == 0
    adds = [r for r in records(server) if r["op"] == "add"]
    assert sorted(r["id"] for r in adds) == sorted(ids)  # deduplicated on the server: one add each
    live = client(server).hgetall("wheelq:{q}:live")
    assert sorted(k.decode() for k in live) == sorted(ids)
    wheel = wheels(url, clock=wheelq.ManualClock())
    wheel.task(name="job")(lambda key, due: None)
    wheel.start()
    pending = wheel.pending()
    assert sorted(t.id for t in pending) == sorted(ids)


# -- the owner: failover ------------------------------------------------------------------


def _ids_to_keys(server) -> dict:
    return {r["id"]: r["args"][0] for r in records(server) if r["op"] == "add"}


def test_owner_sigkill_mid_batch_a_standby_process_takes_over_and_reruns_only_the_unfinished(
        server, agents, wheels, tmp_path):
    lease, tick = 1.0, 0.05
    url = queue_url(server, lease=lease)
    record = str(tmp_path / "ran")
    a = agents("owner", url, record, "--tick", str(tick), "--sleep", "0.15")
    a.expect("OWNER")
    b = agents("owner", url, record, "--tick", str(tick), "--standby")
    producer = wheels(url)
    job = producer.task(name="job")(lambda key, due: None)
    for i in range(48):  # a few come due at each tick: batches one after another
        job.delay("k%d" % i, time.time() + i * 0.02, count_down=i * 0.02)
    wait_until(lambda: sum(1 for r in records(server) if r["op"] == "done") >= 8, WAIT,
               "the owner to finish a few tasks")
    a.signal(signal.SIGKILL)
    killed = time.time()
    assert a.wait(WAIT) == -signal.SIGKILL
    finished = {_ids_to_keys(server)[r["id"]] for r in records(server) if r["op"] == "done"}
    ran_before = {r[1] for r in read_record(record) if r[0] == "start"}
    assert finished and len(ran_before) < 48  # mid-batch: some done, some never started
    took_over = float(b.expect("OWNER", timeout=WAIT).split()[1]) - killed
    assert took_over <= lease + tick + 0.5, "the standby took %.2f s" % took_over
    wait_until(lambda: {r[1] for r in read_record(record) if r[0] == "end" and r[3] > killed}
               | finished >= {"k%d" % i for i in range(48)}, WAIT, "every unfinished task to run")
    again = {r[1] for r in read_record(record) if r[0] == "start" and r[3] > killed}
    assert again.isdisjoint(finished), "finished tasks ran again: %s" % sorted(again & finished)
    assert again | finished == {"k%d" % i for i in range(48)}


def _epoch_of(fields) -> int | None:
    """The owner epoch an entry's nonce names ("7o1f2e...:K"), or None for a producer's entry."""
    writer = fields.get("n", "").partition(":")[0]
    head, o, _ = writer.partition("o")
    return int(head) if o and head.isdigit() else None


def test_a_paused_owner_is_refused_stops_and_writes_nothing_after_the_new_owner(server, agents,
                                                                                 wheels, tmp_path):
    lease, tick = 1.0, 0.05
    url = queue_url(server, lease=lease)
    record = str(tmp_path / "ran")
    a = agents("owner", url, record, "--tick", str(tick), "--sleep", "1.0")
    a.expect("OWNER")
    b = agents("owner", url, record, "--tick", str(tick), "--standby")
    producer = wheels(url)
    job = producer.task(name="job")(lambda key, due: None)
    job.delay("long", time.time())
    wait_until(lambda: any(r[0] == "start" for r in read_record(record)), WAIT,
               "the owner to start the task")
    a.signal(signal.SIGSTOP)
    paused = time.time()
    took_over = float(b.expect("OWNER", timeout=WAIT).split()[1]) - paused
    assert took_over <= lease + tick + 0.5
    for i in range(5):  # the new owner's work, while the old one sleeps
        job.delay("new%d" % i, time.time())
    time.sleep(0.3)  # let the new owner write; then wake the old one
    a.signal(signal.SIGCONT)
    fault = a.expect("FAULT", timeout=WAIT)
    assert "lease" in fault
    assert a.wait(WAIT) == 1
    assert "ERROR" in a.stderr() and "stops taking tasks" in a.stderr()
    epochs = [_epoch_of(f) for _, f in entries(server)]
    old, new = min(e for e in epochs if e), max(e for e in epochs if e)
    assert new > old
    first_new = epochs.index(new)
    assert old not in epochs[first_new:], "the stale owner wrote after the new owner's first record"
    wait_until(lambda: {r[1] for r in read_record(record) if r[0] == "end"} >=
               {"long"} | {"new%d" % i for i in range(5)}, WAIT, "the new owner to run them")


def test_a_second_owner_is_refused_naming_host_and_pid_and_standby_waits(server, wheels):
    url = queue_url(server)
    first = wheels(url, clock=wheelq.ManualClock()).start()
    with pytest.raises(wheelq.JournalLocked, match=r"pid %d .*lease token 1:" % os.getpid()):
        wheels(url, clock=wheelq.ManualClock()).start()
    standby = wheels(url, clock=wheelq.ManualClock()).start(standby=True)
    assert first.is_owner and not standby.is_owner
    first.stop(timeout=WAIT)  # releases the lease: the standby takes over at once
    wait_until(lambda: standby.is_owner, WAIT, "the standby to take over")


# -- the server: restarts, durability, bad settings ------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_server_sigkill_and_restart_loses_no_acknowledged_delay_and_nobody_restarts(
        request, wheels, fsync):
    server = redis_server_or_skip(request, appendfsync=fsync)
    url = queue_url(server)
    owner = wheels(url, tick=0.05)
    ran = []
    owner.task(name="job")(lambda key: ran.append(key))
    owner.start()
    producer = wheels(url)
    job = producer.task(name="job")(lambda key: None)
    acked: list = []
    errors: list = []
    stop = threading.Event()

    def add(n):
        i = 0
        while not stop.is_set():
            try:
                acked.append(job.delay("t%d-%d" % (n, i), count_down=3600).id)
            except Exception as exc:  # noqa: BLE001 - the test reports it
                errors.append(exc)
                return
            i += 1

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) > 200, WAIT, "producers to add")
    server.kill()
    killed_at = len(acked)
    time.sleep(0.3)
    server.restart()
    wait_until(lambda: len(acked) > killed_at + 200, WAIT, "producers to add after the restart")
    stop.set()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    wait_until(lambda: set(acked) <= {t.id for t in owner.pending()}, WAIT,
               "the owner to hold every acknowledged task")
    assert set(acked) <= {t.id for t in wheels(url).pending()}  # and so does a fresh reader
    assert owner.is_owner and owner._fault is None
    job.delay("after")  # the owner runs tasks again, on the same connections it had
    wait_until(lambda: "after" in ran, WAIT, "the owner to run a task after the restart")


def test_a_server_with_appendonly_no_is_refused_at_start(request, wheels):
    server = redis_server_or_skip(request, appendonly="no")
    url = queue_url(server)
    with pytest.raises(wheelq.WheelqError, match="appendonly no.*CONFIG SET appendonly yes"):
        wheels(url).start()
    wheels(url).task(name="x")(lambda: None).delay()  # a producer is not refused


def test_a_server_with_maxmemory_policy_allkeys_lru_is_refused_at_start(request, wheels):
    server = redis_server_or_skip(request, maxmemory_policy="allkeys-lru", maxmemory="100mb")
    with pytest.raises(wheelq.WheelqError, match="maxmemory-policy allkeys-lru.*noeviction"):
        wheels(queue_url(server)).start()


def test_the_durability_is_logged_and_where_config_is_not_allowed_a_warning(request, wheels,
                                                                              caplog):
    caplog.set_level(logging.INFO, logger="wheelq")
    server = redis_server_or_skip(request, appendfsync="everysec")
    wheels(queue_url(server), clock=wheelq.ManualClock()).start()
    assert "appendfsync everysec" in caplog.text
    caplog.clear()
    hidden = redis_server_or_skip(request, extra=['rename-command CONFIG ""'])
    w = wheels(queue_url(hidden), clock=wheelq.ManualClock()).start()
    assert w.is_owner
    assert any(r.levelno == logging.WARNING and "CONFIG is not allowed" in r.getMessage()
               for r in caplog.records)


# -- time -------------------------------------------------------------------------------------


class AheadClock(wheelq.SystemClock):
    """This host's clock, 5 s ahead of the server's (the store measures the offset against it)."""

    def time(self):
        return time.time() + 5.0


def test_a_host_clock_5s_ahead_of_the_server_fires_nothing_early(server, wheels, caplog):
    url = queue_url(server)
    ran = {}
    owner = wheels(url, clock=AheadClock(), tick=0.02)

    @owner.task(name="job")
    def job(key, due):
        ran[key] = (time.time(), due)

    owner.start()
    assert -5.1 < owner._store.skew < -4.9
    assert "5.0 s ahead of the Redis server's" in caplog.text
    producer = wheels(url)
    pjob = producer.task(name="job")(lambda key, due: None)
    for i in range(20):
        cd = 0.2 + i * 0.03
        pjob.delay("p%d" % i, time.time() + cd, count_down=cd)
        job.delay("o%d" % i, time.time() + cd, count_down=cd)  # the owner's own adds too
    wait_until(lambda: len(ran) == 40, WAIT, "every task to run")
    early = {k: due - at for k, (at, due) in ran.items() if at < due - EARLY}
    assert early == {}, "ran early by (s): %r" % early


def test_a_task_due_in_two_days_by_manual_clock_is_neither_redelivered_nor_expired(server, wheels):
    url = queue_url(server)
    clock = wheelq.ManualClock()
    ran = []

    def owner():
        w = wheels(url, clock=clock)
        w.task(name="later")(lambda: ran.append(clock.time()))
        return w.start()

    w = owner()
    h = w.task(name="other")(lambda: None).delay(count_down=0)
    w.join(timeout=WAIT)
    later = wheels(url, clock=clock).task(name="later")(lambda: None).delay(count_down=2 * 86400)
    for _ in range(6):  # a day in steps of four hours, the owner restarted in between
        clock.advance(4 * 3600)
        assert w.join(timeout=WAIT)
    assert w.stop(timeout=WAIT)
    w = owner()
    clock.advance(86400 - 1)
    assert w.join(timeout=WAIT)
    assert ran == [] and w.get(later.id).status == "pending"
    assert client(server).ttl("wheelq:{q}:log") == -1  # no key of the queue expires
    clock.advance(1)
    assert w.join(timeout=WAIT)
    assert ran == [clock.time()] and later.status() == "done" and h.status() in ("done", "unknown")
    clock.advance(7 * 86400)
    assert w.join(timeout=WAIT)
    assert len(ran) == 1


# -- compaction -----------------------------------------------------------------------------------


def _fill(url, clock, wheels, pending=30, done=40):
    w = wheels(url, clock=clock)
    job = w.task(name="job")(lambda key, due: None)
    w.start()
    for i in range(done):
        job.delay("d%d" % i, 0.0)
    for i in range(pending):
        job.delay("p%d" % i, 0.0, count_down=1000 + i)
    clock.advance(1)
    assert w.join(timeout=WAIT)
    assert w.stop(timeout=WAIT)
    return {"p%d" % i for i in range(pending)}


def test_compaction_snapshots_the_live_tasks_and_trims_the_log_exactly(server, wheels):
    url = queue_url(server)
    clock = wheelq.ManualClock()
    want = _fill(url, clock, wheels)
    w = wheels(url, clock=clock)
    w.task(name="job")(lambda key, due: None)
    w.start()
    before = entries(server)
    assert w.compact() == 30
    meta = {k.decode(): v.decode() for k, v in client(server).hgetall("wheelq:{q}:meta").items()}
    assert meta["cut"] == before[-1][0]  # the cut is the last entry the owner read
    assert entries(server) == []  # XTRIM MINID: exactly every entry up to the cut, none after
    assert sorted(r["args"][0] for r in records(server, key="base")) == sorted(want)
    producer = wheels(url, clock=clock)
    producer.task(name="job")(lambda key, due: None).delay("after", 0.0, count_down=5000)
    assert [r["args"][0] for r in records(server)] == ["after"]  # kept: it came after the cut
    assert w.stop(timeout=WAIT)
    again = wheels(url, clock=clock)
    again.task(name="job")(lambda key, due: None)
    again.start()
    assert {t.args[0] for t in again.pending()} == want | {"after"}


@pytest.mark.parametrize("step", ["begin", "chunk 1", "chunk 2", "commit"])
def test_a_crash_at_any_step_of_compaction_replays_to_the_same_tasks(server, wheels, agents,
                                                                     step):
    url = queue_url(server, lease=0.5)
    clock = wheelq.ManualClock()
    want = _fill(url, clock, wheels)
    crasher = agents("compact-crash", url, step)
    crasher.expect("STEP %s" % step)
    assert crasher.wait(WAIT) == 17
    producer = wheels(url, clock=clock)
    producer.task(name="job")(lambda key, due: None).delay("late", 0.0, count_down=5000)
    w = wheels(url, clock=clock)
    w.task(name="job")(lambda key, due: None)
    w.start(standby=True)  # the crashed owner's lease expires first
    wait_until(lambda: w.is_owner, WAIT, "the lease of the crashed owner to expire")
    assert sorted(t.args[0] for t in w.pending()) == sorted(want | {"late"})
    assert w.compact() == 31  # and the next compaction completes
    assert sorted(t.args[0] for t in w.pending()) == sorted(want | {"late"})


# -- round trips, retries ---------------------------------------------------------------------


def test_a_single_delay_is_one_round_trip_and_threads_share_round_trips(server, wheels,
                                                                          request):
    url = queue_url(server)
    producer = wheels(url)
    job = producer.task(name="job")(lambda i: None)
    job.delay(0)
    job.delay(0, task_id="warm")  # loads the scripts once
    trips = RoundTrips(server)
    request.addfinalizer(trips.close)
    producer.cancel("warm")  # (reads the queue for the producer's view first)
    trips.count()
    for call in (lambda: job.delay(1), lambda: job.delay(2, task_id="u2")):
        call()
        assert trips.count() == 1
    producer.cancel("u2")
    assert trips.count() == 2  # a read of what changed since, and the cancel
    go = threading.Barrier(8)

    def add(n):
        go.wait(WAIT)
        for i in range(200):
            job.delay(n * 1000 + i)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    used = trips.count()
    assert len([r for r in records(server) if r["op"] == "add"]) == 1600 + 4
    assert used < 1600 * 0.6, "8 threads' 1600 delay()s took %d round trips" % used


def test_a_lost_reply_is_sent_again_and_the_duplicate_is_dropped_by_every_reader(server, wheels):
    proxy = ReplyDropper(server.port)
    try:
        url = "%s?queue=q" % proxy.url
        producer = wheels(url)
        job = producer.task(name="job")(lambda i: None)
        job.delay(0)
        proxy.drop_next()
        h = job.delay(1, count_down=60)  # executed, its reply lost: sent again, same nonce
        assert proxy.dropped == 1
        adds = [r for r in records(server) if r["op"] == "add" and r["id"] == h.id]
        assert len(adds) == 2  # the stream holds both tries...
        owner = wheels(queue_url(server), clock=wheelq.ManualClock())
        owner.task(name="job")(lambda i: None)
        owner.start()
        assert [t.id for t in owner.pending()].count(h.id) == 1  # ...and readers take one
        assert [t.id for t in wheels(url).pending()].count(h.id) == 1
        assert len(owner.pending()) == 2
    finally:
        proxy.close()


def test_urls_name_the_queue_the_lease_and_pass_options_to_redis_py(request, tmp_path, wheels):
    if wheelq_redis is None:
        redis_server_or_skip(request)
    p = wheelq_redis.parse_url("redis://u:secret@h.example:6380/2?queue=shop&lease=3&socket_timeout=5")
    assert (p.queue, p.lease) == ("shop", 3.0)
    assert p.client == "redis://u:secret@h.example:6380/2?socket_timeout=5"
    assert "secret" not in p.display
    assert wheelq_redis.parse_url("rediss://h/0").queue == "default"
    for url, words in {"http://h/0": "not a Redis URL", "redis:///0": "names no host",
                       "redis://h/shop": "database after the port",
                       "redis://h/0?queue={x}": "queue name", "redis://h/0?lease=0": "lease=",
                       "redis://h/0?queue=a&queue=b": "twice"}.items():
        with pytest.raises(ValueError, match=words):
            wheelq_redis.parse_url(url)
    sock = str(tmp_path / "r.sock")
    server = redis_server_or_skip(request, extra=["unixsocket %s" % sock, "unixsocketperm 700"])
    w = wheels("unix://%s?queue=s" % sock)
    w.task(name="j")(lambda: None).delay(count_down=9)
    assert [r["op"] for r in records(server, "s")] == ["add"]
    with pytest.raises(ConnectionError, match="cannot reach Redis"):
        wheels("redis://127.0.0.1:1/0?queue=none").stats()


def test_a_password_in_the_url_never_reaches_a_message_a_log_or_the_cli(request, wheels, caplog):
    server = redis_server_or_skip(request, extra=["user wq on >s3cret-pw ~* &* +@all"])
    good = "redis://wq:s3cret-pw@127.0.0.1:%d/0?queue=pw" % server.port
    caplog.set_level(logging.DEBUG, logger="wheelq")
    w = wheels(good, clock=wheelq.ManualClock())
    w.task(name="j")(lambda: None).delay(count_down=9)
    w.start()
    assert "127.0.0.1:%d" % server.port in repr(w) and "s3cret" not in repr(w)
    assert "owner" in caplog.text and "s3cret" not in caplog.text
    with pytest.raises(Exception) as refused:
        wheels(good.replace("s3cret-pw", "wrong-pw-77")).stats()
    assert "wrong-pw-77" not in str(refused.value) and "***" in str(refused.value)
    def cli_stats(url):
        return subprocess.run([sys.executable, "-m", "wheelq", "status", url], capture_output=True,
                              text=True, timeout=60, env=python_env(), cwd=str(ROOT))

    cli = cli_stats(good.replace("s3cret-pw", "wrong-pw-77"))
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert "wrong-pw-77" not in cli.stdout + cli.stderr and "***" in cli.stderr
    cli = cli_stats(good)
    assert cli.returncode == 0 and "pending" in cli.stdout
    assert "s3cret" not in cli.stdout + cli.stderr


def test_keys_that_are_not_a_wheelq_queue_are_refused_and_left_alone(server, wheels):
    client(server).set("wheelq:{other}:log", "mine")
    with pytest.raises(wheelq.WheelqError, match="is a string, not the stream"):
        wheels(queue_url(server, "other")).stats()
    assert client(server).get("wheelq:{other}:log") == b"mine"
    client(server).xadd("wheelq:{bad}:log", {"r": "not json\n"})
    with pytest.raises(wheelq.JournalCorrupt, match="XDEL"):
        wheels(queue_url(server, "bad")).start()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_is_a_producer_with_its_own_connection(server, wheels, tmp_path):
    url = queue_url(server)
    clock = wheelq.ManualClock()
    owner = wheels(url, clock=clock)
    job = owner.task(name="job")(lambda i: None)
    owner.start()
    job.delay(1, count_down=100)
    pid = os.fork()
    if pid == 0:  # the child: a producer of its own (the parent stays the owner)
        code = 1
        try:
            job.delay(2, count_down=100)
            code = 0 if not owner.is_owner else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    clock.advance(0)
    wait_until(lambda: sorted(t.args[0] for t in owner.pending()) == [1, 2], WAIT,
               "the owner to take in the child's task")


# -- without redis-py, and wheelq.py stays stdlib-only ---------------------------------------------


def test_import_wheelq_works_without_redis_py_and_a_redis_url_says_how_to_install_it():
    code = r"""
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "redis" or name.startswith("redis."):
            raise ImportError("No module named 'redis'", name="redis")
sys.meta_path.insert(0, Hide())
import wheelq
w = wheelq.Wheel("redis://127.0.0.1:6379/0?queue=x")   # touches nothing yet
try:
    w.stats()
except wheelq.WheelqError as exc:
    print(exc)
assert "redis" not in sys.modules
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'pip install "wheelq[redis]"' in out.stdout


def _in_stdlib(name: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    if names is not None:
        return name in names
    if name in sys.builtin_module_names or name == "__future__":
        return True
    import importlib.util
    import sysconfig

    spec = importlib.util.find_spec(name)
    origin = getattr(spec, "origin", None) or ""
    stdlib = sysconfig.get_paths()["stdlib"]
    return origin.startswith(stdlib) and "site-packages" not in origin


def test_wheelq_py_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "wheelq.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    optional = {"wheelq_redis"}  # imported lazily, for a Redis URL only
    assert {name for name in found - optional if not _in_stdlib(name)} == set()
    lazy = [n for n in ast.walk(tree) if isinstance(n, ast.Import)
            and any(a.name == "wheelq_redis" for a in n.names)]
    assert lazy and all(n.col_offset > 0 for n in lazy)  # never at module level


# -- the command line ------------------------------------------------------------------------------


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "wheelq", *args], capture_output=True, text=True,
                          timeout=timeout, env=python_env(), cwd=str(ROOT))


def test_the_cli_takes_a_url_wherever_it_takes_a_path(server, wheels):
    url = queue_url(server)
    producer = wheels(url)
    job = producer.task(name="shop.job")(lambda i: None)
    a = job.delay(1, count_down=600)
    b = job.delay(2, count_down=1200)
    out = cli("status", url)
    assert out.returncode == 0, out.stderr
    assert "pending   2" in out.stdout
    out = cli("--json", "list", url)
    assert out.returncode == 0, out.stderr
    assert [t["id"] for t in json.loads(out.stdout)] == [a.id, b.id]
    out = cli("reschedule", url, a.id, "--count-down", "5000")
    assert out.returncode == 0, out.stderr
    out = cli("cancel", url, b.id)
    assert out.returncode == 0 and "cancelled" in out.stdout, out.stderr
    tasks = {t["id"]: t for t in json.loads(cli("--json", "list", url).stdout)}
    assert list(tasks) == [a.id] and tasks[a.id]["due"] > time.time() + 4000
    # dead letters: requeue and purge, with and without a running owner
    owner = wheels(url, tick=0.05)
    owner.task(name="shop.job")(lambda i: 1 / 0)
    owner.start()
    c = job.delay(3)
    d = job.delay(4)
    wait_until(lambda: len(owner.failed()) == 2, WAIT, "two dead letters")
    out = cli("purge", url, d.id)
    assert out.returncode == 0 and "sent purge" in out.stdout, out.stderr
    out = cli("requeue", url, c.id, "--count-down", "3000")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: owner.failed() == [] and owner.get(c.id) is not None, WAIT,
               "the owner to take in the CLI's requeue and purge")
    out = cli("compact", url)
    assert out.returncode == 1 and "owned by" in out.stderr
    assert owner.stop(timeout=WAIT)
    out = cli("compact", url)
    assert out.returncode == 0, out.stderr
    assert "compacted" in out.stdout
    assert sorted(r["id"] for r in records(server, key="base")) == sorted([a.id, c.id])
    for command in ("check", "repair"):
        out = cli(command, url)
        assert out.returncode == 2 and "for journal files" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


# -- docs and example -------------------------------------------------------------------------------


def test_the_three_hosts_example_runs_and_the_standby_takes_over(request):
    redis_server_or_skip(request)  # the example starts its own server; this skips where none is
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "three_hosts.py")],
                         capture_output=True, text=True, timeout=60, env=python_env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert "took over" in out.stdout
    assert time.monotonic() - started < 30
