"""What a new user hit (issue 18), items 1-11: one test or a few per item, named after it.

Each test failed on the code before the fix (bc2942a) and passes after it.  They use the
public API and the fixtures of conftest.py; logs are checked through ``caplog``, and the
command line runs as a user runs it, ``python -m wheelq ...`` in a subprocess.  Time moves
by ``ManualClock``; every blocking wait has a timeout, and no test sleeps.
"""
from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import wheelq
from conftest import WAIT, python_env, run_python
from test_cli import ok as wq_ok
from test_cli import wq


# -- helpers: children whose output is read with timeouts ----------------------------------------


def _sigint_as_in_a_terminal() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and the
    # child would inherit that: Ctrl-C must reach it as it does in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(argv, cwd=None, env=None) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env or python_env(), preexec_fn=_sigint_as_in_a_terminal)


class Lines:
    """The lines of a child's stream, read by a thread, so that every wait has a timeout."""

    def __init__(self, stream):
        self.seen: list = []
        self._q: queue.Queue = queue.Queue()
        self._ended = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._q.put(line)
        self._q.put(None)

    def _take(self, timeout) -> bool:
        """Move one line into ``seen``; False on timeout or at the end of the stream."""
        if self._ended:
            return False
        try:
            line = self._q.get(timeout=timeout) if timeout else self._q.get_nowait()
        except queue.Empty:
            return False
        if line is None:
            self._ended = True
            return False
        self.seen.append(line)
        return True

    def poll(self, pattern: str):
        """Without waiting: the first line so far that matches ``pattern``, or None."""
        while self._take(0):
            pass
        return next((ln for ln in self.seen if re.search(pattern, ln)), None)

    def expect(self, pattern: str, timeout: float = 20):
        """Wait until a line matches ``pattern``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((ln for ln in self.seen if re.search(pattern, ln)), None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (not self._take(left) and (self._ended or time.monotonic() >= deadline)):
                raise AssertionError("no line matching %r within %ss; got:\n%s"
                                     % (pattern, timeout, "".join(self.seen)))

    def text(self, timeout: float = 5) -> str:
        """Everything up to the end of the stream (or ``timeout`` seconds of silence)."""
        while self._take(timeout):
            pass
        return "".join(self.seen)


def stop_child(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15):
    """Send ``sig`` unless it has ended; return its exit status (killing it if it hangs)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def journal_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def wheelq_records(caplog, level=None) -> list:
    return [r for r in caplog.records if r.name == "wheelq" and (level is None or r.levelno == level)]


def write_journal(path, n, name="shop.close_order", due=None, prefix="big-") -> None:
    """A journal of ``n`` pending adds, written directly as a producer writes them (fast)."""
    due = time.time() + 86400.0 if due is None else due
    with open(path, "wb") as f:
        f.write(b'{"wheelq": 1}\n')
        chunk = []
        for i in range(n):
            chunk.append('{"p":1,"op":"add","id":"%s%d","task":"%s","due":%r,"args":[%d],"kwargs":{}}\n'
                         % (prefix, i, name, due + i * 0.001, i))
            if len(chunk) == 10000:
                f.write("".join(chunk).encode())
                chunk = []
        f.write("".join(chunk).encode())


def import_fresh(tmp_path, monkeypatch, name, source):
    """Write ``source`` as module ``name`` in ``tmp_path`` and import it."""
    (tmp_path / ("%s.py" % name)).write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # removed again when the test ends
    return module


# -- 1. the producer's first call ---------------------------------------------------------------

READER = r"""
import sys, time
import wheelq
w = wheelq.Wheel(sys.argv[1])
print("reading", flush=True)
t = time.monotonic()
n = w.stats()["pending"]
print("read %d in %.3f s" % (n, time.monotonic() - t), flush=True)
"""


def test_i01_a_producers_delay_completes_while_another_producer_builds_its_view(tmp_path):
    """A producer's view of a big journal is read without the lock another producer's delay() needs."""
    path = str(tmp_path / "big.json")
    n = 200_000
    write_journal(path, n)
    writer = wheelq.Wheel(path)
    close = writer.task(name="shop.close_order")(lambda order: None)
    close.delay(-1, count_down=3600)  # the journal is open: what follows is the append alone
    reader = subprocess.Popen([sys.executable, "-c", READER, path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=python_env())
    out = Lines(reader.stdout)
    latencies = []
    try:
        out.expect(r"^reading$", timeout=60)
        deadline = time.monotonic() + 120
        while out.poll(r"^read \d+") is None:
            assert time.monotonic() < deadline, "the reader did not finish within 120 s"
            assert reader.poll() is None or out.poll(r"^read \d+"), \
                "the reader died: %s" % reader.stderr.read()
            t = time.monotonic()
            close.delay(len(latencies), count_down=3600)
            latencies.append(time.monotonic() - t)
        done = re.search(r"^read (\d+) in ([\d.]+) s", out.poll(r"^read \d+"))
    finally:
        stop_child(reader)
        writer.stop()
    seen, elapsed = int(done.group(1)), float(done.group(2))
    assert seen >= n + 1
    assert latencies, "no delay() completed while the other producer read the journal"
    # Before the fix the reader held the journal's flock for its whole replay: the first
    # delay() after it took the lock waited for all of it.
    limit = max(0.25, elapsed / 4)
    assert max(latencies) < limit, (
        "a delay() took %.3f s while another producer read its view (%.3f s): it waited for it"
        % (max(latencies), elapsed))
    # Every add made it, and the file is whole.
    check = wheelq.Wheel(path)
    assert check.stats()["pending"] == n + 1 + len(latencies)
    check.stop()


def test_i01_c_a_thread_delays_while_another_thread_of_the_same_producer_builds_the_view(tmp_path):
    """A gunicorn worker with threads: one request's stats() must not stall another's delay()."""
    path = str(tmp_path / "big.json")
    n = 200_000
    write_journal(path, n)
    producer = wheelq.Wheel(path)
    close = producer.task(name="shop.close_order")(lambda order: None)
    close.delay(-1, count_down=3600)
    began, took, failed = threading.Event(), [], []

    def look():
        began.set()
        t = time.monotonic()
        try:
            producer.stats()
        except BaseException as exc:  # noqa: B902 - reported below
            failed.append(exc)
        took.append(time.monotonic() - t)

    reader = threading.Thread(target=look, daemon=True)
    reader.start()
    assert began.wait(WAIT)
    latencies = []
    deadline = time.monotonic() + 120
    try:
        while reader.is_alive():
            assert time.monotonic() < deadline, "stats() did not finish within 120 s"
            t = time.monotonic()
            close.delay(len(latencies), count_down=3600)
            latencies.append(time.monotonic() - t)
        reader.join(WAIT)
    finally:
        producer.stop()
    assert not failed, failed
    assert latencies, "no delay() completed while the view was built"
    limit = max(0.25, took[0] / 4)
    assert max(latencies) < limit, (
        "a delay() took %.3f s while another thread built the view (%.3f s): it waited for it"
        % (max(latencies), took[0]))


def test_i01_b_a_producers_delay_with_task_id_reads_none_of_the_journal(tmp_path, monkeypatch,
                                                                       make_wheel):
    path = str(tmp_path / "big.json")
    n = 20_000
    write_journal(path, n, prefix="order-")
    size = os.path.getsize(path)

    read = [0]
    real_read, real_pread = os.read, os.pread

    def counting_read(fd, k):
        data = real_read(fd, k)
        read[0] += len(data)
        return data

    def counting_pread(fd, k, offset):
        data = real_pread(fd, k, offset)
        read[0] += len(data)
        return data

    producer = wheelq.Wheel(path)
    close = producer.task(name="shop.close_order")(lambda order: None)
    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "pread", counting_pread)
    try:
        h = close.delay(7000, task_id="order-7", count_down=60)  # order-7 is pending already
        h2 = close.delay(1, task_id="fresh-1", count_down=60)
        other = wheelq.Wheel(path)
        other.task(name="shop.close_order")(lambda order: None).delay(2, task_id="fresh-1",
                                                                      count_down=60)
    finally:
        monkeypatch.undo()
    assert (h.id, h2.id) == ("order-7", "fresh-1")
    assert read[0] < 64 * 1024, "delay(task_id=...) read %d bytes of a %d-byte journal" % (read[0], size)
    producer.stop()
    other.stop()

    # The owner applies the first add of a live id and ignores later ones.
    owner = make_wheel(path)
    owner.task(name="shop.close_order")(lambda order: None)
    owner.start()
    assert tuple(owner.get("order-7").args) == (7,)
    assert tuple(owner.get("fresh-1").args) == (1,)
    assert owner.stats()["pending"] == n + 1


def _every_kind_of_task(path, clock):
    """A journal whose tasks end in every state, written by an owner on a manual clock.

    Returns the ids to look up, the owner (stopped) and the event a running task waits on.
    """
    owner = wheelq.Wheel(path, clock=clock, workers=2)
    release = threading.Event()
    plain = owner.task(name="k.plain")(lambda *a, **k: None)
    kept = owner.task(name="k.kept", result_ttl=600)(lambda x: {"x": x})
    tries = [0]

    def flaky(x):
        tries[0] += 1
        raise ValueError("try %d" % tries[0])

    flaky = owner.task(name="k.flaky", retries=1, retry_delay=30)(flaky)
    hang = owner.task(name="k.hang")(lambda: release.wait(WAIT))
    owner.periodic("k.beat", every=600)(lambda: None)
    owner.start()
    ids = {
        "pending": plain.delay(1, count_down=3600).id,
        "pending-kw": plain.delay(2, count_down=3600, task_id="order-2", note="x").id,
        "kept": kept.delay(3).id,
        "plain-done": plain.delay(4).id,
        "retrying": flaky.delay(5).id,
        "dead": flaky.delay(6, task_id="dead-6").id,
        "requeued": flaky.delay(7).id,
        "purged": flaky.delay(8).id,
        "cancelled": plain.delay(9, count_down=3600).id,
        "moved": plain.delay(10, count_down=3600).id,
    }
    # A task whose arguments hold another task's id: the search finds its line too.
    ids["named-in-args"] = plain.delay(ids["pending"], count_down=3600).id
    clock.advance(1)
    assert owner.join(timeout=WAIT)
    clock.advance(31)  # the second tries: "retrying" and the rest fail for good
    assert owner.join(timeout=WAIT)
    ids["retrying"] = flaky.delay(11).id  # fails once, then waits 30 s for its retry
    clock.advance(1)
    assert owner.join(timeout=WAIT)
    owner.requeue(ids["requeued"], count_down=600)
    owner.purge(ids["purged"])
    owner.cancel(ids["cancelled"])
    owner.reschedule(ids["moved"], count_down=7200)
    runs = [t.id for t in owner.pending("k.beat")]
    assert len(runs) == 1
    ids["beat-paused"] = runs[0]
    owner.pause_schedule("k.beat")  # its waiting run is cancelled: no line names the run
    ids["running"] = hang.delay().id
    clock.advance(1)
    deadline = time.monotonic() + WAIT
    while owner.get(ids["running"]).status != "running":
        assert time.monotonic() < deadline, "the task never started"
        owner.join(timeout=0.05)
    ids["unknown"] = "never-added"
    return ids, owner, release


def test_i01_d_a_producer_looks_up_one_task_without_a_view_and_sees_what_the_view_sees(tmp_path):
    """get(), status(), result() and cancel() of one id in a producer with no view read only the
    lines that name it (nothing of any other task is kept), and answer as the full view does."""
    path = str(tmp_path / "tasks.json")
    clock = wheelq.ManualClock()
    ids, owner, release = _every_kind_of_task(path, clock)
    try:
        viewer = wheelq.Wheel(path, clock=clock)
        viewer.stats()  # builds the view: the reference
        for what, tid in ids.items():
            looker = wheelq.Wheel(path, clock=clock)
            got, want = looker.get(tid), viewer.get(tid)
            assert got == want, (what, got, want)
            assert looker.task(name="k.any")(lambda: None) is not None
            assert wheelq.TaskHandle(looker, tid).status() == wheelq.TaskHandle(viewer, tid).status(), what
            assert looker._viewed is False and looker._table.tasks.keys() <= {tid}, what
            looker.stop()
        assert wheelq.TaskHandle(wheelq.Wheel(path, clock=clock), ids["kept"]).result(timeout=1) == {"x": 3}
        with pytest.raises(wheelq.TaskFailed):
            wheelq.TaskHandle(wheelq.Wheel(path, clock=clock), ids["dead"]).result(timeout=1)
        # cancel() from a producer decides on the same look, and the owner applies it.
        canceller = wheelq.Wheel(path, clock=clock)
        assert canceller.cancel(ids["pending"]) is True
        assert canceller.cancel(ids["plain-done"]) is False
        assert canceller.cancel(ids["running"]) is False
        assert canceller._viewed is False
        canceller.stop()
        clock.advance(1)
        owner.join(timeout=0.2)
        assert owner.get(ids["pending"]) is None
    finally:
        release.set()
        owner.stop(timeout=WAIT)


def test_i01_e_looking_up_one_task_again_reads_only_what_was_appended(tmp_path, monkeypatch):
    """A producer polling one task (result(), status() in a loop) reads each line once; a
    compacted journal is read again from its start."""
    path = str(tmp_path / "big.json")
    write_journal(path, 20_000)
    size = os.path.getsize(path)
    read = [0]
    real_pread = os.pread

    def counting_pread(fd, k, offset):
        data = real_pread(fd, k, offset)
        read[0] += len(data)
        return data

    producer = wheelq.Wheel(path)
    other = wheelq.Wheel(path)
    close = other.task(name="shop.close_order")(lambda order: None)
    monkeypatch.setattr(os, "pread", counting_pread)
    assert producer.get("big-7").status == "pending"
    assert size <= read[0] < size + 65536
    close.delay(1, count_down=60, task_id="big-late")
    read[0] = 0
    assert producer.get("big-7").status == "pending"
    assert read[0] < 1024, "the second look read %d bytes" % read[0]
    monkeypatch.undo()
    # A torn last line (a writer mid-line) is not read until its newline is in.
    with open(path, "ab") as f:
        f.write(b'{"p":1,"op":"cancel","id":"big-7"')
    assert producer.get("big-7").status == "pending"
    with open(path, "ab") as f:
        f.write(b'}\n')
    assert producer.get("big-7") is None
    # A compaction replaces the file: the look starts again from the new file's start.
    owner = wheelq.Wheel(path)
    owner.start()
    owner.compact()
    owner.stop()
    assert producer.get("big-7") is None
    assert producer.get("big-8").status == "pending"
    producer.stop()
    other.stop()


# -- 2. app factories and tests -----------------------------------------------------------------


def test_i02_a_building_a_wheel_touches_no_file(tmp_path):
    path = tmp_path / "tasks.json"
    w = wheelq.Wheel(str(path))
    t = w.task(name="shop.close_order")(lambda order: None)
    assert os.listdir(tmp_path) == []
    w2 = wheelq.Wheel(str(tmp_path / "not-yet" / "tasks.json"))  # its directory comes later
    assert os.listdir(tmp_path) == []
    t.delay(1, count_down=60)  # the first use opens it
    assert os.listdir(tmp_path) == ["tasks.json"]
    assert journal_bytes(path).startswith(b'{"wheelq": 1}\n')
    w.stop()
    w2.stop()  # never used: nothing to close
    assert sorted(os.listdir(tmp_path)) == ["tasks.json"]


def test_i02_b_configure_before_first_use_and_not_after(tmp_path, clock):
    # An app factory's pattern: the wheel is built at import time, configured later.
    wheel = wheelq.Wheel(str(tmp_path / "default.json"))
    send = wheel.task(name="app.send")(lambda to: None)
    configured = str(tmp_path / "configured.json")
    assert wheel.configure(path=configured, workers=2, fsync="never", clock=clock) is wheel
    h = send.delay("ada", count_down=60)
    assert sorted(os.listdir(tmp_path)) == ["configured.json"]
    reader = wheelq.Wheel(configured)
    assert tuple(reader.get(h.id).args) == ("ada",)
    with pytest.raises(wheelq.WheelqError, match="configure"):
        wheel.configure(path=str(tmp_path / "late.json"))
    with pytest.raises(wheelq.WheelqError):
        wheel.configure(workers=8)
    send.delay("lin", count_down=60)
    assert sorted(os.listdir(tmp_path)) == ["configured.json"]
    assert len(reader.pending()) == 2
    reader.stop()
    wheel.stop()

    # Wheel() with no path at import, a journal from the configuration.
    app_wheel = wheelq.Wheel()
    app_wheel.task(name="app.send")(lambda to: None)
    with pytest.raises(TypeError, match="worker"):
        app_wheel.configure(worker=3)  # a misspelt option is refused, and nothing changes
    app_wheel.configure(path=str(tmp_path / "app.json"), clock=clock)
    app_wheel.start()
    try:
        assert app_wheel.is_owner
        with pytest.raises(wheelq.WheelqError):
            app_wheel.configure(tick=0.5)
    finally:
        assert app_wheel.stop(timeout=WAIT)
    assert os.path.exists(tmp_path / "app.json")


SHOP_APP = '''
    import os
    import wheelq

    wheel = wheelq.Wheel(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks.json"))
    ran = []

    @wheel.task(name="shop.close_order")
    def close_order(order_id):
        ran.append(("close", order_id))

    @wheel.task(name="shop.fetch_rate")
    async def fetch_rate(currency):
        ran.append(("rate", currency))
        return 1.25
'''


def test_i02_c_testing_leaves_the_journal_byte_identical_and_runs_tasks_on_tick(tmp_path,
                                                                                monkeypatch):
    path = tmp_path / "tasks.json"
    old = wheelq.Wheel(str(path))  # what production left: two tasks, due already
    t = old.task(name="shop.close_order")(lambda order: None)
    t.delay(100, count_down=0, task_id="prod-100")
    t.delay(101, count_down=0, task_id="prod-101")
    old.stop()
    before, st = journal_bytes(path), os.stat(path)
    files = sorted(os.listdir(tmp_path))

    app = import_fresh(tmp_path, monkeypatch, "shopapp_i02", SHOP_APP)
    with app.wheel.testing() as clock:
        assert isinstance(clock, wheelq.ManualClock)
        t0 = clock.time()
        later = app.close_order.delay(1, count_down=60)
        now = app.close_order.delay(2)
        rate = app.fetch_rate.delay("EUR")
        assert app.wheel.tick() == 2
        assert sorted(app.ran) == [("close", 2), ("rate", "EUR")]
        assert clock.time() == t0
        assert (now.status(), rate.status(), later.status()) == ("done", "done", "pending")
        assert [i.id for i in app.wheel.pending()] == [later.id]  # not the journal's tasks
        clock.advance(60)
        assert app.wheel.tick() == 1
        assert app.ran[-1] == ("close", 1) and later.status() == "done"
    after = os.stat(path)
    assert journal_bytes(path) == before
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert [f for f in sorted(os.listdir(tmp_path)) if f not in ("shopapp_i02.py", "__pycache__")] \
        == files
    # After the block, the wheel is on its journal again (reading it changes nothing).
    assert sorted(i.id for i in app.wheel.pending()) == ["prod-100", "prod-101"]
    app.wheel.stop()
    assert journal_bytes(path) == before


FACTORY_APP = '''
    import os
    import wheelq

    wheel = wheelq.Wheel(tick=0.05)  # configured by the factory


    @wheel.task(name="app.hello")
    def hello(who):
        print("hello", who, flush=True)


    class App:
        """What a web framework's app factory returns (Flask keeps extensions in a dict)."""

        def __init__(self):
            self.config = {"WHEELQ_JOURNAL": os.environ["APP_JOURNAL"]}
            self.extensions = {}


    def create_wheel():
        return wheel.configure(path=os.environ["APP_JOURNAL"])


    def create_app():
        app = App()
        wheel.configure(path=app.config["WHEELQ_JOURNAL"])
        app.extensions["wheelq"] = wheel
        return app


    def make_app():
        app = App()
        app.wheel = wheel.configure(path=app.config["WHEELQ_JOURNAL"])
        return app
'''


@pytest.mark.parametrize("factory", ["create_wheel()", "create_app()", "make_app()"])
def test_i02_d_run_calls_a_factory_that_returns_the_wheel_or_an_app(tmp_path, factory):
    (tmp_path / "factoryapp.py").write_text(textwrap.dedent(FACTORY_APP))
    path = str(tmp_path / "app.json")
    producer = wheelq.Wheel(path)
    producer.task(name="app.hello")(lambda who: None).delay("world", task_id="hello-1")
    producer.stop()
    env = python_env()
    env["APP_JOURNAL"] = path
    target = "factoryapp:%s" % factory
    proc = spawn([sys.executable, "-m", "wheelq", "run", target], cwd=tmp_path, env=env)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        out.expect(r"^hello world$")
        err.expect(r"running %s \(pid %d\)" % (re.escape(target), proc.pid))
    finally:
        status = stop_child(proc)
    assert status == 0, err.text()
    assert "Traceback" not in err.text()
    assert json.loads(wq_ok("list", path, "--json").stdout) == []


# -- 3. typos run at the wrong time -------------------------------------------------------------


def close_order(order_id):
    pass


def close_any(order_id, **options):
    pass


def _wheel_for(role, journal, make_wheel):
    if role == "memory":
        return make_wheel()
    w = make_wheel(journal)
    if role == "owner":
        w.start()
    return w


def _journaled(role, wheel, journal):
    """What the wheel holds: the journal's bytes, or (in memory) its pending ids."""
    if role == "memory":
        return [i.id for i in wheel.pending()]
    return journal_bytes(journal)


@pytest.mark.parametrize("role", ["producer", "owner", "memory"])
@pytest.mark.parametrize("func", [close_order, close_any], ids=["plain", "kwargs"])
@pytest.mark.parametrize("word,meant", [("countdown", "count_down"), ("count_down_s", "count_down"),
                                        ("delay", "count_down"), ("eta_s", "eta")])
def test_i03_a_misspelt_option_is_refused_and_nothing_is_journaled(journal, make_wheel, role, func,
                                                                   word, meant):
    w = _wheel_for(role, journal, make_wheel)
    task = w.task(name="shop.close_order")(func)
    if role != "memory":
        task.delay(0, count_down=60)  # open (and, for a producer, create) the journal first
    before = _journaled(role, w, journal)
    with pytest.raises(TypeError) as e:
        task.delay(42, **{word: 1800})
    message = str(e.value)
    assert repr(word) in message or word in message
    assert "%s=" % meant in message, message
    assert _journaled(role, w, journal) == before


def test_i03_b_a_parameter_of_that_very_name_is_an_argument_and_schedule_passes_any(make_wheel,
                                                                                    clock):
    w = make_wheel()
    got = []

    @w.task(name="shop.wait_then")
    def wait_then(order_id, delay=0):
        got.append((order_id, delay))

    @w.task(name="shop.any")
    def anything(order_id, **options):
        got.append((order_id, options))

    with pytest.raises(TypeError, match="count_down="):
        anything.delay(2, countdown=5)  # **options does not make a misspelt option an argument
    wait_then.delay(1, delay=5)  # declared by the function: an argument, due now
    anything.schedule(args=(2,), kwargs={"countdown": 5})  # schedule() passes any keyword on
    clock.advance(1)
    w.tick()
    assert got == [(1, 5), (2, {"countdown": 5})]


@pytest.mark.parametrize("role", ["producer", "owner", "memory"])
def test_i03_c_an_unknown_keyword_or_a_missing_argument_fails_at_delay(journal, make_wheel, role):
    w = _wheel_for(role, journal, make_wheel)

    @w.task(name="shop.charge")
    def charge(order_id, amount, *, currency="EUR"):
        pass

    charge.delay(0, 1, count_down=60)
    before = _journaled(role, w, journal)
    with pytest.raises(TypeError, match="colour"):
        charge.delay(1, 10, colour="red")
    with pytest.raises(TypeError, match="amount"):
        charge.delay(1)
    with pytest.raises(TypeError, match="order_id"):
        charge.delay(amount=10, count_down=60)
    with pytest.raises(TypeError):
        charge.delay(1, 10, "USD")  # currency is keyword-only
    assert _journaled(role, w, journal) == before
    charge.delay(1, amount=10, currency="USD", count_down=60)  # a good call still goes in
    assert _journaled(role, w, journal) != before


# -- 4. task names from __main__ ----------------------------------------------------------------

JOBS_SCRIPT = '''
    import wheelq

    wheel = wheelq.Wheel()


    @wheel.task()
    def send_email(to):
        pass


    @wheel.task(name="jobs.send_sms")
    def send_sms(to):
        pass


    print("registered", send_email.name, send_sms.name, flush=True)
'''


def test_i04_a_a_task_registered_from_main_without_a_name_warns(tmp_path):
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS_SCRIPT))
    r = subprocess.run([sys.executable, "jobs.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env=python_env())
    assert r.returncode == 0, r.stderr
    assert "registered __main__.send_email jobs.send_sms" in r.stdout
    warnings = [ln for ln in r.stderr.splitlines() if "__main__" in ln]
    assert len(warnings) == 1, r.stderr
    assert "__main__.send_email" in warnings[0] and "name=" in warnings[0]
    assert "send_sms" not in r.stderr
    # Imported under its own name, as `wheelq run jobs:wheel` does: no warning.
    r = run_python("import jobs", cwd=tmp_path)
    assert r.returncode == 0 and "__main__" not in r.stderr, r.stderr


def test_i04_b_an_owner_warns_once_about_tasks_no_registered_task_has(journal, make_wheel, caplog):
    producer = make_wheel(journal)
    sent = producer.task(name="__main__.send_email")(lambda to: None)
    gone = producer.task(name="shop.gone")(lambda x: None)
    kept = producer.task(name="shop.close_order")(lambda x: None)
    for i in range(3):
        sent.delay("u%d@example.com" % i, count_down=60)
    for i in range(2):
        gone.delay(i, count_down=60)
    kept.delay(1, count_down=60)
    producer.stop()

    caplog.set_level(logging.INFO, logger="wheelq")
    owner = make_wheel(journal)
    owner.task(name="shop.close_order")(lambda x: None)
    owner.start()
    about = [r for r in wheelq_records(caplog) if r.levelno >= logging.WARNING
             and ("send_email" in r.getMessage() or "shop.gone" in r.getMessage())]
    assert len(about) == 1, [r.getMessage() for r in about]
    record = about[0]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert re.search(r"__main__\.send_email\W+3\b", message), message
    assert re.search(r"shop\.gone\W+2\b", message), message
    assert "shop.close_order" not in message
    assert "regist" in message and "name=" in message  # says what to do
    assert owner.stats()["pending"] == 6  # nothing is dropped at load


# -- 5. logs ------------------------------------------------------------------------------------


def test_i05_a_a_retry_is_one_warning_and_the_last_failure_one_error(journal, make_wheel, clock,
                                                                    caplog):
    caplog.set_level(logging.DEBUG, logger="wheelq")
    w = make_wheel(journal)

    @w.task(name="sms.send", retries=3, retry_delay=10, retry_backoff=1)
    def send(phone):
        raise ConnectionError("the gateway refused %s" % phone)

    w.start()
    h = send.delay("+100")
    clock.advance(1)
    assert w.join(timeout=WAIT)
    for _ in range(3):
        clock.advance(10)
        assert w.join(timeout=WAIT)
    assert w.get(h.id).status == "failed"
    mine = [r for r in wheelq_records(caplog) if h.id in r.getMessage()]
    warnings = [r for r in mine if r.levelno == logging.WARNING]
    errors = [r for r in mine if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in warnings] == [
        "task sms.send [%s] failed (try %d of 4): ConnectionError: the gateway refused +100; "
        "retrying in 10s" % (h.id, n) for n in (1, 2, 3)]
    assert all(r.exc_info is None and not r.exc_text for r in warnings), "a retry has no traceback"
    assert len(errors) == 1
    assert errors[0].getMessage() == ("task sms.send [%s] failed (try 4 of 4): ConnectionError: the "
                                      "gateway refused +100; it is now a dead letter" % h.id)
    assert errors[0].exc_info and errors[0].exc_info[0] is ConnectionError
    assert caplog.text.count("Traceback") == 1
    assert len(mine) == 4


def test_i05_b_a_success_is_one_debug_line_with_its_run_time(journal, make_wheel, clock, caplog):
    caplog.set_level(logging.DEBUG, logger="wheelq")
    w = make_wheel(journal)
    ok = w.task(name="sms.ok")(lambda phone: None)
    w.start()
    h = ok.delay("+100")
    clock.advance(1)
    assert w.join(timeout=WAIT)
    assert h.status() == "done"
    mine = [r for r in wheelq_records(caplog) if h.id in r.getMessage()]
    assert len(mine) == 1, [r.getMessage() for r in mine]
    assert mine[0].levelno == logging.DEBUG
    assert re.fullmatch(r"task sms\.ok \[%s\] done in \d+\.\d+ ?m?s" % re.escape(h.id),
                        mine[0].getMessage()), mine[0].getMessage()


# -- 6. Ctrl-C -----------------------------------------------------------------------------------

HANGING_JOBS = '''
    import threading
    import wheelq

    wheel = wheelq.Wheel("tasks.json", tick=0.05)
    never = threading.Event()


    @wheel.task(name="jobs.hang")
    def hang(n):
        print("hanging", n, flush=True)
        never.wait()
'''


def test_i06_the_first_ctrl_c_names_the_running_task_and_the_second_quits(tmp_path, make_wheel):
    (tmp_path / "hangjobs.py").write_text(textwrap.dedent(HANGING_JOBS))
    path = str(tmp_path / "tasks.json")
    producer = wheelq.Wheel(path)
    producer.task(name="jobs.hang")(lambda n: None).delay(1, task_id="hang-1")
    producer.stop()
    proc = spawn([sys.executable, "-m", "wheelq", "run", "hangjobs:wheel"], cwd=tmp_path)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        out.expect(r"^hanging 1$")
        proc.send_signal(signal.SIGINT)
        line = err.expect(r"stopping: waiting for 1 running task\(s\)", timeout=10)
        assert "jobs.hang" in line and "hang-1" in line, line
        assert "press Ctrl-C again" in line, line
        assert proc.poll() is None  # it waits for the task
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second Ctrl-C did not stop it within 5 s:\n" + err.text(1)) from None
        took = time.monotonic() - t
    finally:
        stop_child(proc, signal.SIGKILL)
    assert took < 5
    assert "Traceback" not in err.text(), err.text()
    # The owner lock is free, and the task that was cut short runs again after a restart.
    owner = make_wheel(path)
    owner.task(name="jobs.hang")(lambda n: None)
    owner.start()
    assert owner.is_owner
    assert owner.get("hang-1").status == "pending"


AGAIN_AS_THE_LINE_APPEARS = r'''
import logging, os, signal, threading
import wheelq


class CtrlCAgain(logging.Handler):
    """A user who presses Ctrl-C again the moment the stopping line appears."""

    def emit(self, record):
        if record.getMessage().startswith("stopping: waiting"):
            os.kill(os.getpid(), signal.SIGINT)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
logging.getLogger("wheelq").addHandler(CtrlCAgain())
wheel = wheelq.Wheel(tick=0.05)
started, never = threading.Event(), threading.Event()


@wheel.task(name="jobs.hang")
def hang():
    started.set()
    never.wait()


def first_ctrl_c():
    if started.wait(30):
        os.kill(os.getpid(), signal.SIGINT)


hang.delay()
threading.Thread(target=first_ctrl_c, daemon=True).start()
wheel.run_forever()
print("run_forever returned", flush=True)
'''


def test_i06_b_a_second_ctrl_c_that_comes_as_the_stopping_line_is_written_still_quits(tmp_path):
    script = tmp_path / "again.py"
    script.write_text(AGAIN_AS_THE_LINE_APPEARS)
    proc = spawn([sys.executable, str(script)])
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        err.expect(r"stopping: waiting for 1 running task\(s\)", timeout=20)
        out.expect(r"^run_forever returned$", timeout=10)
    finally:
        stop_child(proc, signal.SIGKILL)
    assert "quitting now" in err.text()


# -- 7. a garbage line appended by hand --------------------------------------------------------


def test_i07_a_garbage_line_read_by_a_running_owner_is_a_warning_with_its_line_number(
        journal, make_wheel, clock, caplog):
    caplog.set_level(logging.INFO, logger="wheelq")
    owner = make_wheel(journal)
    ran = []
    close = owner.task(name="shop.close_order")(ran.append)
    owner.start()
    close.delay(1)
    clock.advance(1)
    assert owner.join(timeout=WAIT) and ran == [1]
    lineno = journal_bytes(journal).count(b"\n") + 1
    with open(journal, "ab") as f:
        f.write(b"this line was typed by hand\n")
    producer = make_wheel(journal)
    producer.task(name="shop.close_order")(lambda n: None).delay(2)
    clock.advance(1)
    assert owner.join(timeout=WAIT)
    assert ran == [1, 2], "the good line after the bad one did not run"
    bad = [r for r in wheelq_records(caplog, logging.WARNING) if "typed by hand" in r.getMessage()]
    assert len(bad) == 1, [r.getMessage() for r in wheelq_records(caplog)]
    assert re.search(r"\bline %d\b" % lineno, bad[0].getMessage()), bad[0].getMessage()


# -- 8. eager mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [1_000_000.0, 1_000_000.4])
def test_i08_eager_mode_runs_a_task_added_now_at_the_next_tick(make_wheel, start):
    clock = wheelq.ManualClock(start)
    w = make_wheel(clock=clock)
    ran = []
    t = w.task(name="shop.close_order")(ran.append)
    h = t.delay("x")
    later = t.delay("later", count_down=5)
    assert w.tick() == 1
    assert ran == ["x"] and clock.time() == start
    assert (h.status(), later.status()) == ("done", "pending")
    assert w.tick() == 0
    clock.advance(5)
    assert w.tick() == 1 and ran == ["x", "later"]


# -- 9. pending(name=...) ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["memory", "producer"])
def test_i09_pending_takes_a_task_name_or_a_pattern(journal, make_wheel, role):
    w = make_wheel() if role == "memory" else make_wheel(journal)
    close = w.task(name="shop.close_order")(lambda n: None)
    charge = w.task(name="shop.charge")(lambda n: None)
    mail = w.task(name="mail.send")(lambda n: None)
    a = close.delay(1, count_down=30)
    b = charge.delay(2, count_down=10)
    c = mail.delay(3, count_down=20)
    d = close.delay(4, count_down=40)
    ids = lambda infos: [i.id for i in infos]  # noqa: E731
    assert ids(w.pending()) == [b.id, c.id, a.id, d.id]
    assert ids(w.pending(name="shop.close_order")) == [a.id, d.id]
    assert ids(w.pending("shop.close_order")) == [a.id, d.id]
    assert ids(w.pending(name="shop.*")) == [b.id, a.id, d.id]
    assert ids(w.pending(name="*.send")) == [c.id]
    assert ids(w.pending(name="shop.c[lh]*")) == [b.id, a.id, d.id]
    assert ids(w.pending(name="mail.sen?")) == [c.id]
    assert w.pending(name="shop") == [] and w.pending(name="nothing.*") == []
    with pytest.raises(TypeError):
        w.pending(name=3)


# -- 10. naive datetimes -----------------------------------------------------------------------


def test_i10_a_naive_eta_more_than_an_hour_past_logs_a_warning(make_wheel, caplog):
    caplog.set_level(logging.INFO, logger="wheelq")
    now = float(int(time.time()))
    clock = wheelq.ManualClock(now)
    w = make_wheel(clock=clock)
    ran = []
    t = w.task(name="shop.close_order")(ran.append)

    t.delay("aware", eta=datetime.fromtimestamp(now - 7200, timezone.utc))
    t.delay("naive-recent", eta=datetime.fromtimestamp(now - 30))
    assert wheelq_records(caplog, logging.WARNING) == []
    t.delay("naive-old", eta=datetime.fromtimestamp(now - 7200))
    warnings = wheelq_records(caplog, logging.WARNING)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "naive" in message and "local time" in message
    assert "aware" in message and "timezone.utc" in message, message
    assert w.tick() == 3 and sorted(ran) == ["aware", "naive-old", "naive-recent"]
    assert "local time" in wheelq.Task.delay.__doc__.lower()


UTCNOW_ETA = r"""
import logging, time, wheelq
from datetime import datetime, timedelta, timezone
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
w = wheelq.Wheel(clock=wheelq.ManualClock(time.time()))
t = w.task(name="x")(lambda: None)
utcnow = datetime.now(timezone.utc).replace(tzinfo=None)  # what datetime.utcnow() returns
t.delay(eta=utcnow + timedelta(seconds=0.3))
"""


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo"])
def test_i10_b_utcnow_east_of_greenwich_logs_the_warning(tz):
    """The issue's own case: TZ=Europe/Berlin, eta=datetime.utcnow() + 0.3 s (an hour early in winter)."""
    env = python_env()
    env["TZ"] = tz
    r = subprocess.run([sys.executable, "-c", UTCNOW_ETA], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^WARNING eta .* naive datetime", r.stderr, re.M), r.stderr


# -- 11. small things ----------------------------------------------------------------------------


def test_i11_a_status_rows_start_on_the_clock_minute_and_hour(tmp_path):
    path = str(tmp_path / "clock.json")
    now = time.time()
    minute_due = now - now % 60 + 120  # on a minute's first second, two clock minutes on
    hour0 = datetime.fromtimestamp(now).replace(minute=0, second=0, microsecond=0)
    hour_due = (hour0 + timedelta(hours=2)).timestamp()  # on a clock hour, one to two hours on
    producer = wheelq.Wheel(path)
    t = producer.task(name="shop.close_order")(lambda n: None)
    t.delay("m", eta=minute_due)
    t.delay("h", eta=hour_due)
    producer.stop()
    minute_label = datetime.fromtimestamp(minute_due).strftime("%H:%M")
    hour_label = datetime.fromtimestamp(hour_due).strftime("%H:%M")
    for _ in range(8):  # whatever the fraction of a second the command starts at
        out = wq_ok("status", path).stdout
        minutes, hours = out.split("\n\n")[1:3]
        assert re.search(r"^  %s \+\d+m +1 #$" % minute_label, minutes, re.M), out
        assert re.search(r"^  %s \+\d+h +1 #$" % hour_label, hours, re.M), out


def test_i11_b_the_demo_leaves_no_temporary_directory(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = python_env()
    env["TMPDIR"] = str(tmp)  # where the demo makes its journal
    proc = spawn([sys.executable, "-m", "wheelq", "demo", "--tick", "0.1", "--max-delay", "1"],
                 env=env)
    err = Lines(proc.stderr)
    try:
        err.expect(r"demo journal: ")
        assert len(glob.glob(str(tmp / "wheelq-demo-*"))) == 1
        err.expect(r"finished ")
    finally:
        status = stop_child(proc, signal.SIGINT)
    assert status == 0, err.text()
    assert "stopped cleanly" in err.text()
    assert glob.glob(str(tmp / "wheelq-demo-*")) == [], os.listdir(tmp)


@pytest.mark.parametrize("option", ["workers", "queue_size", "async_workers", "slots"])
def test_i11_c_a_wheel_option_of_the_wrong_type_is_a_type_error(option):
    with pytest.raises(TypeError, match=option):
        wheelq.Wheel(**{option: "4"})
    with pytest.raises(TypeError, match=option):
        wheelq.Wheel(**{option: 4.0})
    with pytest.raises(ValueError, match=option):
        wheelq.Wheel(**{option: 0})
