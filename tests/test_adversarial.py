"""Adversarial tests: one for each finding of issue 14, with real processes, signals, files and users.

Each test is named after its finding (``test_fNN_...``) and checks the promise that
finding broke: every ``delay()`` that returned survives, bad input gets a clear error,
nothing stored is lost.  The processes are real interpreters (``tests/adv_agent.py``,
``tests/mp_agent.py``, ``python -m wheelq``); SIGKILL is real, and so is a torn write
(a process kills itself while the kernel copies its 32 MiB ``write()``); the power cut
of finding 3 is simulated from the system calls a real run made; the users of
findings 16 and 17 are made with ``useradd`` (the tests skip, saying why, where not
root).

Heavier variants, by environment variable (defaults in brackets): ``WHEELQ_ADV_TEARS``,
producers torn for finding 1 [10]; ``WHEELQ_ADV_OWNER_TEARS``, owners torn for finding 2
[6]; ``WHEELQ_ADV_FORK_ROUNDS`` and ``WHEELQ_ADV_FORK_COUNT``, rounds of 4 forked children
and tasks per child for finding 7 [12, 400]; ``WHEELQ_ADV_EXAMPLES``, hypothesis examples
for finding 4 [40]; ``WHEELQ_ADV_COMPACTIONS``, compactions recorded for finding 3 [6].
The races of findings 1, 2 and 7 are caught by chance on each torn write or round: the
defaults catch the old code nearly always; a soak raises them.
"""
from __future__ import annotations

import base64
import fcntl
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import wheelq
from adv_agent import SCRIPT as ADV_AGENT
from adv_agent import AdvAgent
from conftest import ROOT, WAIT, create_journal, python_env, run_python
from mp_agent import read_lines, wait_for

TEARS = int(os.environ.get("WHEELQ_ADV_TEARS", "10"))
OWNER_TEARS = int(os.environ.get("WHEELQ_ADV_OWNER_TEARS", "6"))
FORK_COUNT = int(os.environ.get("WHEELQ_ADV_FORK_COUNT", "400"))
FORK_ROUNDS = int(os.environ.get("WHEELQ_ADV_FORK_ROUNDS", "12"))
EXAMPLES = int(os.environ.get("WHEELQ_ADV_EXAMPLES", "40"))
COMPACTIONS = int(os.environ.get("WHEELQ_ADV_COMPACTIONS", "6"))
BIG_MIB = 32  # the size of the write a process is killed inside (the issue's 32 MiB)

# Characters no terminal or log line should receive raw from journal text (\t and \n aside).
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def agents(tmp_path):
    """Start adv_agent processes; whatever is still running at the end is killed."""
    started = []

    def start(role, *args, name=""):
        a = AdvAgent(role, *[str(x) for x in args], stderr_dir=str(tmp_path), name=name)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def replay(journal, clock=None):
    """What a new owner replays from ``journal``: (pending ids, dead letter ids).

    Its clock stands at 0, so nothing is due and the replay is all it does; start()
    raising is a failure of the calling test.
    """
    w = wheelq.Wheel(journal, clock=clock or wheelq.ManualClock(0.0))
    w.start()
    try:
        return {t.id for t in w.pending()}, {t.id for t in w.failed()}
    finally:
        assert w.stop(timeout=WAIT)


def errors_of(agent) -> list:
    return [ln for ln in agent.drain_lines() if ln.startswith("ERROR")]


def add_line(tid, task, due, args=(), kwargs=None, producer=True, **extra) -> bytes:
    record = {"op": "add", "id": tid, "task": task, "due": due, "args": list(args),
              "kwargs": kwargs or {}}
    record.update(extra)
    if producer:
        record = dict(p=1, **record)
    return (json.dumps(record) + "\n").encode()


def append_as_a_producer(path, data: bytes) -> int:
    """Append ``data`` as a producer does (one write under flock); return its first line number."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(path, "rb") as f:
                lineno = f.read().count(b"\n") + 1
            os.write(fd, data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return lineno


def cli(*argv, timeout=60, cwd=None):
    return subprocess.run([sys.executable, "-m", "wheelq", *map(str, argv)], capture_output=True,
                          timeout=timeout, env=python_env(), cwd=cwd)


def tear_with_a_killed_producer(agents, journal, name="tearer"):
    """A producer SIGKILLed inside its 32 MiB write(): the journal ends with a line with no end."""
    for attempt in range(6):
        p = agents("producer", "--journal", journal, "--big-kill", BIG_MIB, name="%s%d" % (name, attempt))
        assert p.wait(60) == -signal.SIGKILL, p.diagnostics()
        if "KILLING" in p.drain_lines():
            with open(journal, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    return
    pytest.skip("the 32 MiB write finished (or was cut) before the test could look, six times")


# --------------------------------------------------------------------------
# 1, 2: torn glue, both ways
# --------------------------------------------------------------------------


def test_f01_owner_never_glues_onto_a_killed_producers_line(tmp_path, journal, agents):
    """A running owner appends as fast as it can, with a CPU-busy thread beside it (the GIL
    then falls between its look at the file's end and its write); a steady producer appends
    too; again and again a producer is SIGKILLed inside a 32 MiB write().  Afterwards every
    acknowledged add replays: start() does not raise and none is missing."""
    create_journal(journal)
    ack_owner, ack_steady = str(tmp_path / "ack-owner"), str(tmp_path / "ack-steady")
    # Its acks are written 64 at a time, so that most of the time between two of its appends
    # is the window between the look at the file's end and the write (the busy thread holds
    # the GIL there for a switch interval).
    owner = agents("owner", "--journal", journal, "--append", "--ack", ack_owner, "--prefix", "o",
                   "--ack-batch", "64", "--busy", "--tick", "0.05", name="owner")
    owner.expect("OWNER", 30)
    # A producer adding now and then: a busy one would make the owner take its locked path
    # (the file's end moved since its last line) nearly every time, never its unlocked one.
    steady = agents("producer", "--journal", journal, "--append", "--ack", ack_steady,
                    "--prefix", "s", "--pause", "0.05", name="steady")
    wait_for(lambda: len(read_lines(ack_owner)) > 200 and len(read_lines(ack_steady)) > 5, 30,
             "both appenders to be going")
    killed_inside = 0
    for i in range(TEARS):
        p = agents("producer", "--journal", journal, "--big-kill", BIG_MIB, name="big%d" % i)
        assert p.wait(60) == -signal.SIGKILL, p.diagnostics()
        killed_inside += "KILLING" in p.drain_lines()
        assert owner.alive() and steady.alive(), owner.diagnostics() + steady.diagnostics()
    assert killed_inside, "no producer was killed inside its write: nothing was torn"
    before = len(read_lines(ack_owner))
    wait_for(lambda: len(read_lines(ack_owner)) > before + 100, 20, "the owner to go on adding")
    steady.kill()
    assert owner.terminate() == 0, owner.diagnostics()
    assert errors_of(owner) == [] and errors_of(steady) == []
    acked = set(read_lines(ack_owner)) | set(read_lines(ack_steady))
    pending, _ = replay(journal)  # raises JournalCorrupt if an add was glued onto a torn line
    lost = acked - pending
    assert not lost, "%d of %d acknowledged adds did not replay, e.g. %s" % (
        len(lost), len(acked), sorted(lost)[:5])
    assert not os.path.exists(journal + ".corrupt")


def test_f02_producer_never_glues_onto_a_killed_owners_line(tmp_path, journal, agents):
    """Two producers append all along, each with a CPU-busy thread beside it (the GIL then
    falls between its look at the file's end and its write, where an owner's write can
    begin); one owner after another starts (replaying what the last one left), adds tasks,
    and is SIGKILLed inside a 32 MiB write() of its own, with 256 MiB of memory that the
    kernel frees before its descriptors (and its owner lock): a producer whose write queued
    behind the torn one finds the lock still held for a while.  Every owner's start()
    succeeds and every acknowledged add, the producers' and each owner's, replays."""
    create_journal(journal)
    steady_acks = [str(tmp_path / ("ack-steady%d" % k)) for k in range(2)]
    steady = [agents("producer", "--journal", journal, "--append", "--ack", ack, "--prefix", "s%d" % k,
                     "--pause", "0.0005", "--busy", name="steady%d" % k)
              for k, ack in enumerate(steady_acks)]
    wait_for(lambda: all(len(read_lines(ack)) > 100 for ack in steady_acks), 30,
             "the producers to be going")
    owner_acks = []
    killed_inside = 0
    for i in range(OWNER_TEARS):
        ack = str(tmp_path / ("ack-owner%d" % i))
        owner_acks.append(ack)
        o = agents("owner", "--journal", journal, "--append", "--ack", ack, "--prefix", "o%d" % i,
                   "--big-kill", BIG_MIB, "--big-after", "0.2", "--ballast", "256", name="owner%d" % i)
        o.expect("OWNER", 60)  # its start() replayed what the last owner's death left
        assert o.wait(60) == -signal.SIGKILL, o.diagnostics()
        lines = o.drain_lines()
        killed_inside += "KILLING" in lines
        assert not [ln for ln in lines if ln.startswith("ERROR")], o.diagnostics()
        assert all(p.alive() for p in steady), [p.diagnostics() for p in steady]
    assert killed_inside, "no owner was killed inside its write: nothing was torn"
    before = len(read_lines(steady_acks[0]))
    wait_for(lambda: len(read_lines(steady_acks[0])) > before + 50, 20, "the producers to go on adding")
    for p in steady:
        p.kill()
    acked = set()
    for ack in steady_acks + owner_acks:
        acked |= set(read_lines(ack))
    pending, _ = replay(journal)
    lost = acked - pending
    assert not lost, "%d of %d acknowledged adds did not replay, e.g. %s" % (
        len(lost), len(acked), sorted(lost)[:5])
    for p in steady:
        assert errors_of(p) == []


# --------------------------------------------------------------------------
# 3: a power cut between compaction's rename and its directory fsync
# --------------------------------------------------------------------------


class _PowerCut:
    """The states a power cut could leave, built from a log of system calls (tests/adv_agent.py).

    What an fsync made durable stays; of the writes after it, any prefix may have reached
    the disk (a torn one too).  Directory entries: what a directory fsync made durable,
    plus any prefix of the renames after it.  A check runs just before each event that
    makes something durable, and at the end: the moments with the most acknowledged and
    the least durable.
    """

    def __init__(self, entries, journal):
        self.J = os.path.abspath(journal)
        self.entries = entries
        self.losses: list = []
        self.checks = 0
        self.acks_before_the_name_was_durable = 0
        self.renames = 0
        self.samples: list = []  # states for a real replay: (acked, content)

    @staticmethod
    def _ids(data: bytes) -> set:
        ids = set()
        for line in data.split(b"\n")[:-1]:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("op") == "add":
                ids.add(r.get("id"))
        return ids

    def run(self):
        content, durable, durable_ids, since = {}, {}, {}, {}
        names: dict = {}
        history: list = []  # (index, names after the change at index)
        durable_names: dict = {}
        dir_ops: list = []  # (index, name, ino or None) since the last directory fsync
        acked: list = []

        def apply(data: bytes, ops: list) -> bytes:
            buf = bytearray(data)
            for op in ops:
                if op[0] == "w":
                    _, off, chunk = op
                    if off > len(buf):
                        buf.extend(b"\0" * (off - len(buf)))
                    buf[off:off + len(chunk)] = chunk
                else:
                    del buf[op[1]:]
            return bytes(buf)

        def check(index):
            self.checks += 1
            for j in range(len(dir_ops) + 1):
                mapping = dict(durable_names)
                for _, name, ino in dir_ops[:j]:
                    if ino is None:
                        mapping.pop(name, None)
                    else:
                        mapping[name] = ino
                ino = mapping.get(self.J)
                if ino is None:
                    if acked:
                        self.losses.append((index, j, "no journal at all", acked[:3]))
                    continue
                ops = since.get(ino, [])
                ks = range(len(ops) + 1) if any(op[0] == "t" for op in ops) else [0]
                for k in ks:
                    ids = durable_ids[ino] if k == 0 else self._ids(apply(durable[ino], ops[:k]))
                    missing = [t for t in acked if t not in ids]
                    if missing:
                        self.losses.append((index, j, k, missing[:3]))
                if j == 0 and ops and len(self.samples) < 6 and index % 7 == 0:
                    # a real replay of a torn state: durable bytes, the later writes, the last torn
                    data = apply(durable[ino], ops[:-1])
                    last = apply(data, ops[-1:])
                    cut = len(data) + max(1, (len(last) - len(data)) // 2)
                    self.samples.append((list(acked), last[:cut]))

        for index, e in enumerate(self.entries):
            kind = e[0]
            if kind == "init":
                _, ino, data = e
                data = base64.b64decode(data)
                content[ino], durable[ino], since[ino] = bytearray(data), data, []
                durable_ids[ino] = self._ids(data)
                names[self.J] = ino
                durable_names = dict(names)
                history.append((index, dict(names)))
            elif kind == "new":
                _, ino, path = e
                content[ino], durable[ino], since[ino], durable_ids[ino] = bytearray(), b"", [], set()
                names[path] = ino
                dir_ops.append((index, path, ino))
                history.append((index, dict(names)))
            elif kind == "write":
                _, ino, off, data = e
                data = base64.b64decode(data)
                buf = content[ino]
                if off > len(buf):
                    buf.extend(b"\0" * (off - len(buf)))
                buf[off:off + len(data)] = data
                since[ino].append(("w", off, data))
            elif kind == "trunc":
                _, ino, size = e
                del content[ino][size:]
                since[ino].append(("t", size))
            elif kind == "fsync":
                check(index)
                ino = e[1]
                new = bytes(content[ino])
                old = durable[ino]
                if new.startswith(old) and old.endswith(b"\n"):
                    durable_ids[ino] = durable_ids[ino] | self._ids(new[len(old):])
                else:
                    durable_ids[ino] = self._ids(new)
                durable[ino], since[ino] = new, []
            elif kind == "dirsync":
                check(index)
                begin = e[1]
                durable_names = dict(next(m for i, m in reversed(history) if i < begin)
                                     if any(i < begin for i, _ in history) else {})
                dir_ops = [op for op in dir_ops if op[0] >= begin]
            elif kind == "rename":
                _, src, dst, ino = e
                names.pop(src, None)
                names[dst] = ino
                self.renames += 1
                dir_ops.append((index, src, None))
                dir_ops.append((index, dst, ino))
                history.append((index, dict(names)))
            elif kind == "unlink":
                names.pop(e[1], None)
                dir_ops.append((index, e[1], None))
                history.append((index, dict(names)))
            elif kind == "ack":
                acked.append(e[1])
                if any(name == self.J for _, name, _ in dir_ops):
                    self.acks_before_the_name_was_durable += 1
        check(len(self.entries))
        return acked


def test_f03_power_cut_around_compaction_loses_no_acknowledged_add(tmp_path, journal):
    """Under fsync="always", an owner compacts again and again while a producer (two
    threads) and the owner add.  Every write, fsync, rename and directory fsync is logged
    (the directory's fsync slowed down, so the window after a rename stays open), and every
    state a power cut could leave is checked: no add whose delay() returned is missing
    from the file the directory names.  A few torn states are replayed for real."""
    create_journal(journal)
    os.sync()
    log = tmp_path / "syscalls.jsonl"
    r = subprocess.run([sys.executable, ADV_AGENT, "record-compaction", "--journal", journal,
                        "--out", str(log), "--compactions", str(COMPACTIONS),
                        "--compact-pause", "0.08", "--dir-delay", "0.03"],
                       capture_output=True, text=True, timeout=180, env=python_env(),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    done = [ln for ln in r.stdout.splitlines() if ln.startswith("DONE")][-1].split(None, 3)
    assert int(done[1]) == COMPACTIONS, r.stdout[-2000:]
    assert json.loads(done[3]) == [], "errors in the recorded run: %s" % done[3]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    cut = _PowerCut(entries, journal)
    acked = cut.run()
    assert len(acked) > 200 and cut.renames >= COMPACTIONS, (len(acked), cut.renames)
    assert not cut.losses, (
        "%d power-cut states lose acknowledged adds (%d adds were acknowledged while a rename "
        "onto the journal was not yet durable); first: %s" % (
            len(cut.losses), cut.acks_before_the_name_was_durable, cut.losses[:3]))
    for i, (acked_then, data) in enumerate(cut.samples):
        path = str(tmp_path / ("state%d.json" % i))
        with open(path, "wb") as f:
            f.write(data)
        pending, _ = replay(path)
        assert set(acked_then) <= pending, "state %d: a torn state loses %s" % (
            i, sorted(set(acked_then) - pending)[:3])


def test_f03_a_tick_that_finds_deferred_adds_delivers_every_producer_line_once(journal, file_store):
    """Found by the test above (about one run in four): under fsync="always" an owner add
    waits to be written with its group; a tick that reads the producers' new lines while one
    waits wrote it first, which delivered those lines and moved past them, and then
    delivered them again and moved past as many bytes once more.  The producer lines in
    those bytes were never taken in, and the next compaction dropped them: acknowledged
    adds lost without any crash.  Through the store's interface (defer, tail, deliver), as
    the owner's timer uses it."""
    create_journal(journal)
    store = file_store(journal, fsync="always")
    got = []
    store.deliver = lambda text, lineno, raws: got.extend(
        json.loads(line)["id"] for line in text.splitlines() if line)
    with store.lock:
        store.load(lambda text, lineno, raws, ends: None)  # replay, as an owner starts
        store.defer(add_line("own-1", "adv.t", 1.0, producer=False))  # waits for its group's write
    append_as_a_producer(journal, add_line("p-1", "adv.t", 1.0))
    with store.lock:
        store.tail()  # a tick
    append_as_a_producer(journal, add_line("p-2", "adv.t", 1.0))
    with store.lock:
        store.tail()  # the next tick
    assert got == ["p-1", "p-2"], "the owner took in %s" % got
    with open(journal, "rb") as f:
        ids = [json.loads(line)["id"] for line in f.read().splitlines()[1:]]
    assert sorted(ids) == ["own-1", "p-1", "p-2"]


# --------------------------------------------------------------------------
# 4: the live owner and replay agree
# --------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

_WHO = ("owner", "p1", "p2")


def _op_strategy():
    ids = st.integers(0, 40)
    who = st.sampled_from(_WHO)
    ops = [
        st.tuples(st.just("add"), who, st.sampled_from(["ok", "fail", "self_cancel", "stale_cancel"]),
                  st.sampled_from([0.0, 0.5, 2.0])),
        st.tuples(st.just("cancel"), who, ids),
        st.tuples(st.just("requeue"), who, ids, st.sampled_from([0.0, 1.0])),
        st.tuples(st.just("purge"), who, ids),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 2.0])),
    ]
    if hasattr(wheelq.Wheel, "reschedule"):
        ops.append(st.tuples(st.just("reschedule"), who, ids, st.sampled_from([0.0, 1.5])))
    return st.lists(st.one_of(*ops), min_size=1, max_size=30)


def _state(wheel) -> dict:
    """id -> (dead letter?, tries, due) of every unfinished task and dead letter."""
    out = {t.id: (False, t.tries, t.due) for t in wheel.pending()}
    out.update({t.id: (True, t.tries, t.due) for t in wheel.failed()})
    return out


def _interleaving(ops) -> None:
    """Run ``ops`` on an owner and two producers of one journal; compare live and replayed."""
    d = tempfile.mkdtemp(prefix="wheelq-adv-f04-")
    path = os.path.join(d, "tasks.json")
    clock = wheelq.ManualClock()
    owner = wheelq.Wheel(path, clock=clock, workers=2)
    producers = {"p1": wheelq.Wheel(path, clock=clock), "p2": wheelq.Wheel(path, clock=clock)}
    wheels = {"owner": owner, **producers}
    tasks: dict = {}
    for who, w in wheels.items():
        tasks[who] = {
            "ok": w.task(name="adv.ok")(lambda token: None),
            "fail": w.task(name="adv.fail", retries=1, retry_delay=1.0)(_always_fails),
            # a producer cancels the task while it runs (a real producer's cancel, and the
            # line a producer whose view was a moment old would write), then it fails
            "self_cancel": w.task(name="adv.self_cancel", retries=1, retry_delay=1.0)(
                lambda tid: (producers["p1"].cancel(tid), _always_fails())),
            "stale_cancel": w.task(name="adv.stale_cancel", retries=1, retry_delay=1.0)(
                lambda tid: (append_as_a_producer(
                    path, (json.dumps({"p": 1, "op": "cancel", "id": tid}) + "\n").encode()),
                    _always_fails())),
        }
    ids: list = []
    try:
        owner.start()
        n = 0
        for op in ops:
            kind = op[0]
            if kind == "add":
                _, who, task, cd = op
                tid = "t%d" % n
                n += 1
                tasks[who][task].delay(tid, count_down=cd, task_id=tid)
                ids.append(tid)
            elif kind == "tick":
                clock.advance(op[1])
                assert owner.join(timeout=WAIT), "the owner did not settle"
            elif ids:
                tid = ids[op[2] % len(ids)]
                w = wheels[op[1]]
                if kind == "cancel":
                    w.cancel(tid)
                elif kind == "purge":
                    w.purge(tid)
                elif kind == "requeue":
                    try:
                        w.requeue(tid, count_down=op[3])
                    except wheelq.UnknownTask:
                        pass
                elif kind == "reschedule":
                    w.reschedule(tid, count_down=op[3])
        # The owner takes in what the producers appended since its last step (a tick does)...
        owner.tick(clock.time())
        assert owner.join(timeout=WAIT)
        live = _state(owner)  # ...and this is its state just before the stop
        assert owner.stop(timeout=WAIT)
        again = wheelq.Wheel(path, clock=wheelq.ManualClock(0.0))
        again.start()
        try:
            replayed = _state(again)
        finally:
            assert again.stop(timeout=WAIT)
        reader = wheelq.Wheel(path, clock=clock)
        wheels["reader"] = reader
        view = _state(reader)
    finally:
        for w in wheels.values():
            w.stop(timeout=WAIT)
        shutil.rmtree(d, ignore_errors=True)
    diff = {t: (live.get(t), replayed.get(t)) for t in set(live) | set(replayed)
            if live.get(t) != replayed.get(t)}
    assert not diff, "live owner != replay (id: (live, replayed)): %s" % diff
    assert view == replayed, "a producer's view differs from the replay"


def _always_fails(*args):
    raise RuntimeError("this task always fails")


if given is not None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_op_strategy())
    def test_f04_state_after_a_restart_equals_the_live_owners(ops):
        """Random interleavings of owner and producer ops on one journal (adds, cancels,
        requeues, purges, reschedules, ticks; tasks that fail into dead letters, and tasks a
        producer cancels while they run): the live owner's state just before stop() is the
        state a new owner replays (pending and dead ids, tries, due), and a producer's view."""
        _interleaving(ops)
else:  # pragma: no cover
    def test_f04_state_after_a_restart_equals_the_live_owners():
        pytest.skip("hypothesis is not installed")


def test_f04_known_interleavings_of_the_issue(tmp_path):
    """The three cases the issue names, as fixed sequences."""
    cases = [
        # a producer purges a dead letter that the owner then requeues, within one tick
        [("add", "owner", "fail", 0.0), ("tick", 0.5), ("tick", 1.0), ("purge", "p1", 0),
         ("requeue", "owner", 0, 0.0)],
        # the owner requeues a dead letter that a producer has just purged... the other way
        [("add", "p2", "fail", 0.0), ("tick", 0.5), ("tick", 1.0), ("requeue", "owner", 0, 1.0),
         ("purge", "p1", 0)],
        # a producer cancels a task while it runs: the retry the owner scheduled must survive
        [("add", "owner", "self_cancel", 0.0), ("tick", 0.5)],
        [("add", "p1", "stale_cancel", 0.0), ("tick", 0.5)],
    ]
    for ops in cases:
        _interleaving(ops)


# --------------------------------------------------------------------------
# 5: one bad line never erases the good ones
# --------------------------------------------------------------------------


def _nested(depth):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_f05_one_nesting_limit_for_every_writer_and_reader_on_every_python(journal, clock, make_wheel,
                                                                         caplog):
    """Arguments and results nest at most 100 levels (the args list is one), on every Python.

    The limit does not come from the parser's recursion limit, which differs
    between Pythons (3.13 reads 5,000 levels, 3.11 refuses 1,500) and with
    the depth of the caller's stack: a journal one Python wrote is one every
    other reads, and compaction never meets a record it cannot write.
    """
    caplog.set_level(logging.WARNING, logger="wheelq")
    ran = []
    owner = make_wheel(journal, workers=1)
    t = owner.task(name="adv.t")(lambda *a, **k: ran.append(a or k))
    deep_result = owner.task(name="adv.deep", result_ttl=60, retries=0)(lambda: _nested(101))
    kept_result = owner.task(name="adv.kept", result_ttl=60, retries=0)(lambda: _nested(100))
    owner.start()
    producer = make_wheel(journal)
    pt = producer.task(name="adv.t")(lambda *a, **k: None)
    size = os.path.getsize(journal)
    for task in (t, pt):
        for value in (_nested(100), _nested(5000)):
            with pytest.raises(TypeError, match="nest more than 100 levels"):
                task.delay(value)
            with pytest.raises(TypeError, match="nest more than 100 levels"):
                task.delay(x=value)
            with pytest.raises(TypeError, match="nest more than 100 levels"):
                task.delay([value], task_id="with-an-id")  # not the fast path
    assert os.path.getsize(journal) == size
    t.delay(_nested(99))
    pt.delay(x=_nested(98))
    # Hand-written lines one level too deep, and far too deep, are refused by the reader.
    now = clock.time()
    bad = [b'{"p":1,"op":"add","id":"deep-%d","task":"adv.t","due":%r,"args":[%s"x"%s],"kwargs":{}}\n'
           % (n, now, b"[" * n, b"]" * n) for n in (100, 5000)]
    first = append_as_a_producer(journal, b"".join(bad))
    failed = deep_result.delay()
    kept = kept_result.delay()
    clock.advance(1)
    assert owner.join(timeout=WAIT)
    assert sorted(map(repr, ran)) == sorted([repr((_nested(99),)), repr({"x": _nested(98)})])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for n in (first, first + 1):
        assert any(("line %d" % n) in m and "nested more than 100 levels deep" in m for m in warned), \
            "no WARNING names line %d and why: %s" % (n, warned)
    # A result too deep to keep is not kept (the task is done), and the log says why.
    assert failed.status() == "done"
    with pytest.raises(wheelq.ResultUnavailable):
        failed.result(timeout=WAIT)
    assert any("nest more than 100 levels" in m and "adv.deep" in m for m in warned)
    assert kept.result(timeout=WAIT) == _nested(100)
    owner.compact()
    assert owner.stop(timeout=WAIT)
    again = make_wheel(journal)
    again.start()
    assert again.get(kept.id).result == _nested(100)  # read back after compaction
    assert again.stop(timeout=WAIT)
    rows = wheelq._read_rows("".join(
        '{"op":"add","id":"a","task":"t","due":1.0,"args":%s,"kwargs":{}}\n' % ("[" * n + "]" * n)
        for n in (100, 101)))
    assert len(rows) == 1  # the 100-level line is read, the next is not
    assert (rows[0]["id"] if isinstance(rows[0], dict) else rows[0].id) == "a"


def test_f05_bad_lines_are_skipped_and_the_good_ones_after_them_run(journal, clock, make_wheel, caplog,
                                                                    tmp_path):
    caplog.set_level(logging.WARNING, logger="wheelq")
    ran = []
    owner = make_wheel(journal, workers=1)
    t = owner.task(name="adv.t")(lambda *a, **k: ran.append(a[0] if a else k))
    owner.start()
    producer = make_wheel(journal)
    pt = producer.task(name="adv.t")(lambda *a, **k: None)
    # delay() refuses what no reader could decode, saying why, and writes nothing.
    size = os.path.getsize(journal)
    for task in (t, pt):
        with pytest.raises((TypeError, ValueError), match="nest"):
            task.delay(_nested(990))
        with pytest.raises((TypeError, ValueError), match="nest"):
            task.delay(x=_nested(990))
    assert os.path.getsize(journal) == size
    # Lines no reader can decode, appended by hand while the owner runs.
    now = clock.time()
    bad = [
        add_line("bad-tries", "adv.t", now, ["x"]).replace(b'"kwargs": {}', b'"kwargs": {}, "tries": 1e999'),
        b'{"p":1,"op":"add","id":"bad-deep","task":"adv.t","due":%r,"args":%s,"kwargs":{}}\n'
        % (now, b"[" * 5000 + b"]" * 5000),
        b'{"p":1,"op":"add","id":"bad-due","task":"adv.t","due":1e999,"args":[],"kwargs":{}}\n',
        b'{"p":1,"op":"retry","id":"x","due":1,"tries":1e999}\n',
        b"not json at all\n",
        b"\xff\xfe not utf-8 \x80\n",
        b"[1, 2, 3]\n",
        add_line("bad-args", "adv.t", now).replace(b'"args": []', b'"args": "x"'),
    ]
    assert b'"tries": 1e999' in bad[0] and b'"args": "x"' in bad[-1]
    first = append_as_a_producer(journal, b"".join(bad))
    numbers = list(range(first, first + len(bad)))
    acked_now = pt.delay("after-now")  # acknowledged adds after the bad lines
    acked_later = pt.delay("after-later", count_down=100)
    own_now = t.delay("own-now")
    aside = str(tmp_path / "aside.json")
    shutil.copyfile(journal, aside)
    clock.advance(1)
    assert owner.join(timeout=WAIT)
    assert sorted(ran) == ["after-now", "own-now"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for n in numbers:
        assert any(("line %d" % n) in m for m in warned), "no WARNING names line %d: %s" % (n, warned)
    # The good lines survive a compaction, and a restart.
    owner.compact()
    assert owner.stop(timeout=WAIT)
    again = make_wheel(journal)
    again.task(name="adv.t")(ran.append)
    again.start()
    assert [i.id for i in again.pending()] == [acked_later.id]
    clock.advance(100)
    assert again.join(timeout=WAIT)
    assert sorted(ran) == ["after-later", "after-now", "own-now"]
    assert acked_now.status() in ("done", "unknown") and own_now.id
    # Read at start, the same lines are JournalCorrupt with the first one's number: never a
    # RecursionError or OverflowError, from an owner or from a producer's view.
    for read in (lambda w: w.start(), lambda w: w.pending()):
        w = make_wheel(aside)
        with pytest.raises(wheelq.JournalCorrupt) as e:
            read(w)
        assert e.value.lineno == numbers[0]


# --------------------------------------------------------------------------
# 6: wheelq writes only into its own journals
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,content", [
    ("config.json", b'{"debug": true, "workers": 4}\n'),
    ("notes.txt", b"a file without a final newline"),
    ("two-lines.txt", b"# notes\nthe last line has no newline"),
    ("v2.json", b'{"wheelq": 2}\n'
                b'{"op": "add", "id": "a", "task": "t", "due": 1, "args": [], "kwargs": {}}\n'),
    ("headerless.json", b'{"op": "add", "id": "a", "task": "t", "due": 1, "args": [], "kwargs": {}}\n'),
], ids=["config.json", "no-newline", "no-final-newline", "format-2", "no-header"])
def test_f06_every_wheel_refuses_a_file_that_is_not_a_journal_and_changes_nothing(tmp_path, clock,
                                                                                name, content):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(content)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = os.stat(path)

    def producer_delay(w):
        w.task(name="adv.t")(lambda: None).delay()

    attempts = {
        "producer delay()": producer_delay,
        "producer pending()": lambda w: w.pending(),
        "producer cancel()": lambda w: w.cancel("a"),
        "owner start()": lambda w: w.start(),
        "standby start()": lambda w: w.start(standby=True),
    }
    for what, attempt in attempts.items():
        w = wheelq.Wheel(path, clock=clock)
        try:
            with pytest.raises(wheelq.WheelqError) as e:
                attempt(w)
            assert path in str(e.value), "%s: the error does not name the file: %s" % (what, e.value)
        finally:
            w.stop(timeout=WAIT)
        with open(path, "rb") as f:
            assert f.read() == content, "%s changed the file" % what
        after = os.stat(path)
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == \
            (before.st_size, before.st_mtime_ns, before.st_ino), what


# --------------------------------------------------------------------------
# 7: fork
# --------------------------------------------------------------------------


def test_f07_a_wheel_used_across_fork_loses_nothing_across_compactions(tmp_path, journal, agents):
    """A producer Wheel, opened before fork(), adds from 4 children while the owner runs the
    tasks and compacts every 10 ms: every acknowledged add runs.  (Children that shared the
    parent's open file shared its flock, which then kept no sibling out, until the first
    compaction made each reopen the journal: so the parent forks again, round after round.)"""
    create_journal(journal)
    runs = str(tmp_path / "runs")
    owner = agents("owner", "--journal", journal, "--runs", runs, "--tick", "0.02",
                   "--workers", "2", "--compact-every", "0.01", name="owner")
    owner.expect("OWNER", 30)
    rounds, per = FORK_ROUNDS, FORK_COUNT
    r = subprocess.run([sys.executable, ADV_AGENT, "fork-producers", "--journal", journal,
                        "--ack-dir", str(tmp_path), "--children", "4", "--rounds", str(rounds),
                        "--count", str(per), "--prefix", "f"], capture_output=True, text=True,
                       timeout=300, env=python_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "DONE %d failed 0" % (4 * rounds) in r.stdout, \
        r.stdout[-2000:] + r.stderr[-2000:]
    acked = set()
    for name in os.listdir(tmp_path):
        if name.startswith("ack"):
            acked |= set(read_lines(str(tmp_path / name)))
    assert len(acked) == 4 * rounds * per

    def ran():
        return {ln.split()[0] for ln in read_lines(runs)}
    seen, still = -1, 0
    while not acked <= ran() and still < 20:  # until all ran, or nothing ran for 2 s
        time.sleep(0.1)
        n = len(read_lines(runs))
        still, seen = (still + 1, seen) if n == seen else (0, n)
    assert owner.terminate() == 0, owner.diagnostics()
    assert errors_of(owner) == []
    pending, _ = replay(journal)
    lost = acked - ran() - pending
    assert not lost, "%d of %d acknowledged adds were lost, e.g. %s" % (len(lost), len(acked),
                                                                       sorted(lost)[:5])
    compactions = [ln for ln in owner.drain_lines() if "compacted" in ln]
    assert len(compactions) >= 3, "the owner hardly compacted: %d" % len(compactions)


def test_f07_a_started_owners_child_is_a_producer_whose_adds_run(tmp_path, journal, agents):
    create_journal(journal)
    runs = str(tmp_path / "runs")
    owner = agents("owner", "--journal", journal, "--runs", runs, "--fork-delay", "from-child",
                   name="owner")
    owner.expect("OWNER", 30)
    child = owner.expect("CHILD", 20).split()
    assert child[4] == "producer", "the child of a started owner thinks it owns the journal"
    wait_for(lambda: "from-child" in {ln.split()[0] for ln in read_lines(runs)}, 10,
             "the owner to run the task its child added")
    ran_by = {ln.split()[0]: int(ln.split()[1]) for ln in read_lines(runs)}
    assert ran_by["from-child"] == owner.pid
    with open(journal, "rb") as f:
        line = [ln for ln in f.read().splitlines() if child[3].encode() in ln][0]
    assert json.loads(line).get("p") == 1, line
    assert owner.terminate() == 0, owner.diagnostics()


def test_f07_children_of_an_owner_do_not_keep_the_owner_lock(tmp_path, journal, agents):
    create_journal(journal)
    runs = str(tmp_path / "runs")
    owner = agents("owner", "--journal", journal, "--runs", runs, "--fork-child", name="owner")
    owner.expect("OWNER", 30)
    child = int(owner.expect("CHILD", 20).split()[1])
    try:
        standby = agents("owner", "--journal", journal, "--runs", runs, "--standby", name="standby")
        assert standby.expect("READY", 30).endswith("standby")
        owner.kill()
        os.kill(child, 0)  # the child lives on
        standby.expect("OWNER", 10)
        w = wheelq.Wheel(journal)
        try:
            w.task(name="adv.record")(lambda token: None).delay("after-takeover")
        finally:
            w.stop()
        wait_for(lambda: "after-takeover" in {ln.split()[0] for ln in read_lines(runs)}, 10,
                 "the standby to run a task")
        assert standby.terminate() == 0, standby.diagnostics()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------
# 8: the journal replaced or deleted under a running owner
# --------------------------------------------------------------------------

APP = r'''
import os, threading, time, wheelq
J, RUNS, FLAG = os.environ["ADV_JOURNAL"], os.environ["ADV_RUNS"], os.environ["ADV_FLAG"]
wheel = wheelq.Wheel(J, tick=0.05, workers=2)
forever = threading.Event()

@wheel.task(name="adv.record")
def record(token):
    with open(RUNS, "a") as f:
        f.write(token + "\n")
    if token.startswith("hang"):
        while not os.path.exists(FLAG) and not token.startswith("hang-forever"):
            time.sleep(0.01)
        if token.startswith("hang-forever"):
            forever.wait()
'''


def _run_app(tmp_path, journal):
    """`python -m wheelq run adv_app:wheel` in tmp_path, logging to a file: (proc, log, runs, flag)."""
    (tmp_path / "adv_app.py").write_text(APP)
    runs, flag, log = tmp_path / "runs", tmp_path / "flag", tmp_path / "owner.log"
    env = python_env()
    env.update(ADV_JOURNAL=journal, ADV_RUNS=str(runs), ADV_FLAG=str(flag))
    err = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "wheelq", "run", "adv_app:wheel", "--log-level", "INFO"],
                            cwd=str(tmp_path), env=env, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    err.close()
    return proc, log, runs, flag


def _add(journal, token, **kw):
    w = wheelq.Wheel(journal)
    try:
        return w.task(name="adv.record")(lambda token: None).delay(token, **kw)
    finally:
        w.stop()


def _tokens(runs):
    try:
        return runs.read_text().split()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("how", ["sed -i", "editor", "rm -r"])
def test_f08_an_owner_whose_journal_is_replaced_stops_taking_tasks_and_exits_1(tmp_path, how):
    jdir = tmp_path / "jdir"
    jdir.mkdir()
    journal = str(jdir / "tasks.json")
    create_journal(journal)
    proc, log, runs, flag = _run_app(tmp_path, journal)
    try:
        _add(journal, "before")
        wait_for(lambda: "before" in _tokens(runs), 20, "the owner to run a task")
        _add(journal, "hang-1")  # runs until the flag file exists: the owner waits for it
        wait_for(lambda: "hang-1" in _tokens(runs), 20, "the hanging task to start")
        if how == "sed -i":
            subprocess.run(["sed", "-i", "s/zzz-never-there/x/", journal], check=True)
        elif how == "editor":
            with open(journal, "rb") as f:
                data = f.read()
            with open(journal + ".swp", "wb") as f:
                f.write(data)
            os.rename(journal + ".swp", journal)
        else:
            shutil.rmtree(jdir)
        wait_for(lambda: b"ERROR" in log.read_bytes(), 5, "the owner to log an ERROR")
        text = log.read_bytes().decode("utf-8", "replace")
        assert journal in text and ("replaced" in text or "deleted" in text), text[-2000:]
        if how != "rm -r":
            # It keeps the owner lock: no second owner starts beside it...
            with pytest.raises(wheelq.JournalLocked):
                wheelq.Wheel(journal).start()
            # ...and takes no task from the new file at the path.
            _add(journal, "after")
            time.sleep(0.3)
            assert "after" not in _tokens(runs)
        flag.write_bytes(b"go")
        assert proc.wait(timeout=20) == 1, log.read_bytes()[-2000:]
    finally:
        flag.write_bytes(b"go")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_bytes().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-3000:]
    assert "after" not in _tokens(runs)


# --------------------------------------------------------------------------
# 9, 10: retries and clocks
# --------------------------------------------------------------------------


def test_f09_two_thousand_retries_with_backoff_two_never_overflow(journal, clock, make_wheel):
    """A task near the end of 2,000 retries (the journal says it failed 1,998 times):
    2.0 ** 1998 seconds is no float, so the wait is capped; the worker survives, and the
    task goes on to its last try and becomes a dead letter."""
    with open(journal, "wb") as f:
        f.write(b'{"wheelq": 1}\n')
        # due a second from now: nothing runs before the test moves the clock
        f.write(add_line("f9", "adv.always_fails", clock.time() + 1, producer=False, tries=1998))
    ran = []
    w = make_wheel(journal, workers=1)
    w.task(name="adv.always_fails", retries=2000, retry_delay=1.0, retry_backoff=2.0)(_always_fails)
    ok = w.task(name="adv.ok")(ran.append)
    w.start()
    for tries in (1999, 2000):
        clock.advance(max(1.0, w.get("f9").due - clock.time() + 1))
        assert w.join(timeout=5), "the worker died inside the retry arithmetic"
        info = w.get("f9")
        assert info is not None and info.status == "pending" and info.tries == tries, info
        wait = info.due - clock.time()
        assert math.isfinite(info.due) and 0 < wait <= 366 * 86400, wait
        ok.delay("alive-%d" % tries)  # the one worker still runs tasks
        clock.advance(1)
        assert w.join(timeout=5)
    assert ran == ["alive-1999", "alive-2000"]
    clock.advance(w.get("f9").due - clock.time() + 1)
    assert w.join(timeout=5)
    (dead,) = w.failed()
    assert dead.id == "f9" and dead.tries == 2001


class SteppingClock:
    """Real time plus an offset the test can step, as an NTP correction or an admin would."""

    def __init__(self):
        self.offset = 0.0

    def time(self):
        return time.time() + self.offset

    def wait(self, event, timeout):
        event.wait(None if timeout is None else max(0.0, timeout))


def test_f10_a_backward_clock_step_does_not_make_new_tasks_late():
    clock = SteppingClock()
    runs = []
    w = wheelq.Wheel(tick=0.05, clock=clock)
    t = w.task(name="adv.t")(lambda token: runs.append((token, time.monotonic())))
    w.start()
    try:
        t.delay("before")
        wait_for(lambda: runs, 5, "the first task to run")
        clock.offset -= 3600  # the wall clock steps back an hour
        time.sleep(0.1)
        added = time.monotonic()
        t.delay("after", count_down=0.2)
        wait_for(lambda: len(runs) >= 2, 3, "a task added after the step to run")
        token, at = runs[1]
        assert token == "after"
        assert 0.2 - 0.01 <= at - added <= 0.2 + 0.5, at - added  # never early, at most a tick late
        time.sleep(0.2)
        assert [r[0] for r in runs] == ["before", "after"]  # nothing ran twice
    finally:
        assert w.stop(timeout=WAIT)


# --------------------------------------------------------------------------
# 11: SIGTERM while a task hangs
# --------------------------------------------------------------------------


def test_f11_sigterm_while_a_task_hangs_says_which_and_a_second_signal_quits(tmp_path):
    journal = str(tmp_path / "tasks.json")
    create_journal(journal)
    proc, log, runs, flag = _run_app(tmp_path, journal)
    try:
        _add(journal, "hang-forever", task_id="hang-forever-1")
        wait_for(lambda: "hang-forever" in _tokens(runs), 20, "the hanging task to start")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: b"press Ctrl-C again" in log.read_bytes(), 5,
                 "the first signal to say what it waits for")
        line = [ln for ln in log.read_bytes().decode().splitlines() if "press Ctrl-C again" in ln][0]
        assert "1 running task" in line and "hang-forever-1" in line and "adv.record" in line, line
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal did not wait for the running task"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
            pytest.fail("a second SIGTERM did not stop the owner within 5 s")
    text = log.read_bytes().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-3000:]
    # The owner lock was let go, and the task that was running runs again after a restart.
    w = wheelq.Wheel(journal, clock=wheelq.ManualClock(0.0))
    w.start()
    try:
        info = w.get("hang-forever-1")
        assert info is not None and info.status == "pending", info
    finally:
        assert w.stop(timeout=WAIT)


# --------------------------------------------------------------------------
# 12, 13: a torn line never makes a producer wait for (or blame) the owner
# --------------------------------------------------------------------------


def _timed_delay(journal, token):
    w = wheelq.Wheel(journal)
    task = w.task(name="adv.record")(lambda token: None)
    try:
        started = time.monotonic()
        h = task.delay(token, count_down=3600)
        return h, time.monotonic() - started
    finally:
        w.stop()


@pytest.mark.parametrize("owner_is", ["ticking every 5 s", "blocked in backpressure"])
def test_f12_a_torn_line_does_not_make_producers_wait_for_the_owners_tick(tmp_path, journal, agents,
                                                                          owner_is):
    create_journal(journal)
    runs = str(tmp_path / "runs")
    if owner_is == "ticking every 5 s":
        owner = agents("owner", "--journal", journal, "--runs", runs, "--tick", "5", name="owner")
        owner.expect("OWNER", 30)
        # Its ticks fall on multiples of 5 s of the clock: tear just after one, so that the
        # next is 3 s or more after the other producer's delay() begins.
        while not 0.2 <= time.time() % 5 <= 1.5:
            time.sleep(0.05)
    else:
        owner = agents("owner", "--journal", journal, "--runs", runs, "--tick", "0.05",
                       "--workers", "1", "--queue-size", "1", "--block", "hang", name="owner")
        owner.expect("OWNER", 30)
        _add(journal, "hang")
        owner.expect("BLOCKED", 20)  # the one worker is stuck in it
        for i in range(1, 4):  # one batch a tick: the second fills the queue, the third waits
            _add(journal, "q%d" % i, count_down=0.1 * i)
        time.sleep(0.6)  # the timer now waits for room in the queue
    tear_with_a_killed_producer(agents, journal)
    h, took = _timed_delay(journal, "after-tear")
    assert took < 1.0, "a producer's delay() took %.2f s after another producer's torn write" % took
    h2, took2 = _timed_delay(journal, "after-tear-2")
    assert took2 < 1.0
    owner.kill()
    pending, _ = replay(journal)
    assert {h.id, h2.id} <= pending


def test_f13_a_producer_never_blames_an_owner_that_died(tmp_path, journal, agents):
    """The owner forked a worker process (which lives on) and was SIGKILLed inside its own
    32 MiB write: the journal ends with the owner's torn line, and no owner runs.  A
    producer's delay() cuts it and goes on at once; it does not wait for, or blame, an
    owner "that runs"."""
    create_journal(journal)
    owner = agents("owner", "--journal", journal, "--fork-child", "--big-kill", BIG_MIB,
                   "--big-after", "0.1", name="owner")
    owner.expect("OWNER", 30)
    child = int(owner.expect("CHILD", 20).split()[1])
    try:
        assert owner.wait(60) == -signal.SIGKILL, owner.diagnostics()
        if "KILLING" not in owner.drain_lines():
            pytest.skip("the owner's 32 MiB write finished before it was killed")
        with open(journal, "rb") as f:
            data = f.read()
        assert not data.endswith(b"\n") and data[data.rfind(b"\n") + 1:].startswith(b'{"op"')
        os.kill(child, 0)  # the owner's child lives on
        try:
            h, took = _timed_delay(journal, "after-owner-death")
        except Exception as exc:
            pytest.fail("a producer's delay() raised after the owner died: %s: %s"
                        % (type(exc).__name__, exc))
        assert took < 1.0, "a producer waited %.2f s for an owner that died" % took
        pending, _ = replay(journal)
        assert h.id in pending
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------
# 14: a standby outlives a transient EMFILE
# --------------------------------------------------------------------------


def test_f14_a_standby_retries_after_emfile_with_a_logged_backoff_and_takes_over(tmp_path, journal, agents):
    create_journal(journal)
    runs = str(tmp_path / "runs")
    owner = agents("owner", "--journal", journal, "--runs", runs, name="owner")
    owner.expect("OWNER", 30)
    standby = agents("standby-emfile", "--journal", journal, "--runs", runs, "--tick", "0.05",
                     "--emfile-for", "1.5", name="standby")
    standby.expect("READY", 30)
    filled = standby.expect("FILLED", 10).split()
    assert int(filled[1]) == 24, filled  # EMFILE
    standby.expect("FREED", 10)
    warnings = [ln for ln in standby.drain_lines() if ln.startswith("LOG WARNING") and "standby" in ln]
    assert len(warnings) >= 2, "the standby did not retry, logging a backoff: %s" % standby.diagnostics()
    assert all("open files" in ln and "trying again in" in ln for ln in warnings), warnings
    waits = [float(re.search(r"trying again in ([0-9.]+)s", ln).group(1)) for ln in warnings]
    assert waits == sorted(waits) and waits[-1] > waits[0], waits  # it backs off
    assert not any(ln.startswith("LOG ERROR") for ln in standby.drain_lines()), standby.diagnostics()
    assert owner.terminate() == 0
    standby.expect("OWNER", 40)  # the cause is gone: it takes over
    _add(journal, "after-takeover")
    wait_for(lambda: "after-takeover" in {ln.split()[0] for ln in read_lines(runs)}, 10,
             "the new owner to run a task")
    assert standby.terminate() == 0, standby.diagnostics()


# --------------------------------------------------------------------------
# 15: a poison task
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode,retries", [("exit", 0), ("kill", 4)])
def test_f15_a_task_that_kills_its_process_becomes_a_dead_letter(tmp_path, journal, agents, mode, retries):
    """Each owner in turn runs the poison task, which kills the process (os._exit or
    SIGKILL), and dies.  One or two such deaths never make it a dead letter (a floor of
    three: an owner killed for another reason must not dead-letter the task it ran); after
    max(retries + 1, 3) it is one, with the error "the process died while running it N
    times", and the task due after it runs."""
    limit = max(retries + 1, 3)
    create_journal(journal)
    runs = str(tmp_path / "runs")
    w = wheelq.Wheel(journal)
    poison = w.task(name="adv.poison", retries=retries)(lambda token: None).delay("poison")
    record = w.task(name="adv.record")(lambda token: None)
    after = None

    def owner(i):
        return agents("owner", "--journal", journal, "--runs", runs, "--tick", "0.05",
                      "--poison-mode", mode, "--poison-retries", retries, "--exit-after", "after-1",
                      name="owner%d" % i)

    for death in range(1, limit + 1):
        o = owner(death)
        rc = o.wait(30)
        assert rc == (3 if mode == "exit" else -signal.SIGKILL), \
            "owner %d did not die running the poison (rc %s)\n%s" % (death, rc, o.diagnostics())
        view = wheelq.Wheel(journal)
        try:
            assert view.failed() == [], "a dead letter after %d death(s) (limit %d)" % (death, limit)
            assert view.get(poison.id) is not None
        finally:
            view.stop()
        tokens = [ln.split()[0] for ln in read_lines(runs)]
        assert tokens.count("poison") == death and "after-1" not in tokens, tokens
        if after is None:  # a task due after the poison, which no owner that runs the poison reaches
            after = record.delay("after-1", count_down=0.2)
    w.stop()
    last = owner(limit + 1)
    assert last.wait(30) == 0, "the owner after %d deaths did not live: %s" % (limit, last.diagnostics())
    assert any("the process died while running it %d times" % limit in ln for ln in last.drain_lines())
    tokens = [ln.split()[0] for ln in read_lines(runs)]
    assert tokens.count("after-1") == 1
    assert tokens.count("poison") == limit, tokens
    view = wheelq.Wheel(journal)
    try:
        (dead,) = view.failed()
        assert dead.id == poison.id
        assert dead.error == "the process died while running it %d times" % limit
        assert view.get(after.id) is None
    finally:
        view.stop()


# --------------------------------------------------------------------------
# 16, 17: other users, shared directories
# --------------------------------------------------------------------------

AS_USER = r"""
import json, os, sys
uid, gid, root, drop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "drop"
sys.path.insert(0, root)
import argparse, contextlib, errno, fcntl, gettext, io, locale, wheelq
if drop:  # this interpreter's files are root's: everything is imported first
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
os.umask(0o002)
out = {"uid": os.getuid()}
args = sys.argv[6:]
try:
    exec(sys.argv[5])
except Exception as exc:
    out["raised"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


def _reachable_by_all(path) -> bool:
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        if d == os.path.dirname(d):
            return True
        d = os.path.dirname(d)


def _run(cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def two_users():
    """Two real users (``useradd``) in one group of their own; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating two users with useradd needs root")
    if not shutil.which("useradd") or not shutil.which("groupadd"):
        pytest.skip("useradd/groupadd are not installed")
    tag = "%05d" % (os.getpid() % 100000)
    group, victim, other = "advg" + tag, "advv" + tag, "adva" + tag
    made = []
    try:
        _run(["groupadd", group])
        made.append(("groupdel", group))
        for user in (victim, other):
            _run(["useradd", "-M", "-N", "-g", group, "-s", "/usr/sbin/nologin", user])
            made.append(("userdel", user))
        import grp
        import pwd
        gid = grp.getgrnam(group).gr_gid
        yield {"gid": gid, "victim": pwd.getpwnam(victim).pw_uid, "other": pwd.getpwnam(other).pw_uid}
    finally:
        for cmd, name in reversed(made):
            subprocess.run([cmd, name], capture_output=True)


def as_user(uid, gid, code, *args, timeout=60):
    """Run ``code`` as the user ``uid``: an interpreter exec'd as that user where one is
    reachable by every user (else this one, dropping to the user after its imports)."""
    python = next((p for p in (sys.executable, "/usr/bin/python3")
                   if os.path.exists(p) and _reachable_by_all(p)), None)
    kw = {}
    if python is not None:
        kw = dict(user=uid, group=gid, extra_groups=[gid])
    argv = [python or sys.executable, "-c", AS_USER, str(uid), str(gid), str(ROOT),
            "exec" if python else "drop", code, *map(str, args)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=python_env(),
                       stdin=subprocess.DEVNULL, cwd="/", **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["uid"] == uid
    return out


def as_user_ok(uid, gid, code, *args):
    out = as_user(uid, gid, code, *args)
    assert "raised" not in out, out["raised"]
    return out


@pytest.fixture
def shared_dirs(two_users):
    """A /tmp-like directory (sticky, world-writable) and a group's directory (setgid 2770)."""
    base = tempfile.mkdtemp(prefix="wheelq-adv-users-")
    os.chmod(base, 0o755)
    gid = two_users["gid"]
    dirs = {}
    for name, mode, group in (("sticky", 0o1777, 0), ("group", 0o2770, gid)):
        d = os.path.join(base, name)
        os.mkdir(d)
        os.chown(d, 0, group)
        os.chmod(d, mode)
        dirs[name] = d
    for who in ("victim", "other"):
        d = os.path.join(base, who)
        os.mkdir(d)
        os.chown(d, two_users[who], gid)
        os.chmod(d, 0o700 if who == "victim" else 0o755)
        dirs[who] = d
    try:
        yield dirs
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fingerprint(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_size, st.st_mtime_ns, st.st_ino, stat.S_IMODE(st.st_mode)


PLANT = "os.symlink(args[0], args[1]); out['planted'] = os.readlink(args[1])"

VICTIM_START = r"""
w = wheelq.Wheel(args[0])
t = w.task(name="adv.t")(lambda s: None)
t.delay("secret-A", count_down=3600)
try:
    w.start()
    out["start"] = "started"
except Exception as exc:
    out["start"] = "%s: %s" % (type(exc).__name__, exc)
w.stop()
"""

VICTIM_COMPACT = r"""
w = wheelq.Wheel(args[0])
t = w.task(name="adv.t")(lambda s: None)
w.start()
ids = [t.delay("secret-B-%d" % i, count_down=3600).id for i in range(3)]
try:
    w.compact()
    out["compact"] = "compacted"
except Exception as exc:
    out["compact"] = "%s: %s" % (type(exc).__name__, exc)
w.stop()
again = wheelq.Wheel(args[0])
out["still_pending"] = sorted(set(ids) & {i.id for i in again.pending()}) == sorted(ids)
again.stop()
"""

VICTIM_REPAIR = r"""
w = wheelq.Wheel(args[0])
t = w.task(name="adv.t")(lambda s: None)
t.delay("secret-C-1", count_down=3600)
w.stop()
with open(args[0], "ab") as f:
    f.write(b"this line is not json\n")
w = wheelq.Wheel(args[0])
w.task(name="adv.t")(lambda s: None).delay("secret-C-2", count_down=3600)
w.stop()
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    out["rc"] = wheelq.main(["repair", args[0]])
out["stderr"] = err.getvalue()
"""

VICTIM_THROUGH_A_LINK = r"""
w = wheelq.Wheel(args[0])
t = w.task(name="adv.t")(lambda s: None)
try:
    t.delay("secret-D", count_down=3600)
    out["delay"] = "added"
except Exception as exc:
    out["delay"] = "%s: %s" % (type(exc).__name__, exc)
w.stop()
"""


@pytest.mark.parametrize("where", ["sticky", "group"])
def test_f16_planted_symlinks_never_make_a_victim_write_elsewhere(two_users, shared_dirs, where):
    """Another user plants symlinks at <journal>.lock, .tmp and .corrupt, and a journal path
    that is a symlink to a file of theirs, in a shared directory (a /tmp-like sticky one,
    and a group's).  The victim's start(), compaction and repair never truncate, write into
    or append to the files they point at, and the link as a journal is refused, saying why."""
    victim, other, gid = two_users["victim"], two_users["other"], two_users["gid"]
    shared = shared_dirs[where]
    precious = {}
    for name in ("lock-target", "corrupt-target"):
        p = os.path.join(shared_dirs["victim"], name)
        with open(p, "wb") as f:
            f.write(b"the victim's own file: precious\n")
        os.chown(p, victim, gid)
        os.chmod(p, 0o600)
        precious[name] = p
    loot = os.path.join(shared_dirs["other"], "loot")
    theirs = os.path.join(shared_dirs["other"], "their-journal.json")
    for p, data in ((loot, b""), (theirs, b'{"wheelq": 1}\n')):
        with open(p, "wb") as f:
            f.write(data)
        os.chown(p, other, gid)
        os.chmod(p, 0o666)
    targets = list(precious.values()) + [loot, theirs]
    before = {p: _fingerprint(p) for p in targets}
    j = {k: os.path.join(shared, "%s.json" % k) for k in ("lock", "tmp", "corrupt", "link")}
    for target, link in ((precious["lock-target"], j["lock"] + ".lock"), (loot, j["tmp"] + ".tmp"),
                         (precious["corrupt-target"], j["corrupt"] + ".corrupt"), (theirs, j["link"])):
        assert as_user_ok(other, gid, PLANT, target, link)["planted"] == target
        assert os.lstat(link).st_uid == other
    outcome = {
        "start": as_user(victim, gid, VICTIM_START, j["lock"]),
        "compact": as_user(victim, gid, VICTIM_COMPACT, j["tmp"]),
        "repair": as_user(victim, gid, VICTIM_REPAIR, j["corrupt"]),
        "link": as_user(victim, gid, VICTIM_THROUGH_A_LINK, j["link"]),
    }
    for p in targets:
        assert _fingerprint(p) == before[p], "%s was changed through a planted symlink: %s" % (p, outcome)
    with open(loot, "rb") as f:
        assert b"secret" not in f.read()
    # Where it refused, it said why; the journals themselves are whole and in place.
    problems = ["%s raised %s" % (what, o["raised"]) for what, o in outcome.items() if "raised" in o]
    start = outcome["start"].get("start", "")
    if not (start == "started" or "symlink" in start):
        problems.append("start() with a planted .lock: %s" % start)
    if not outcome["compact"].get("still_pending"):
        problems.append("compaction lost tasks: %s" % outcome["compact"])
    if not stat.S_ISREG(os.lstat(j["tmp"]).st_mode):
        problems.append("the journal is no longer a regular file after compaction")
    compact = outcome["compact"].get("compact", "")
    if not (compact == "compacted" or "symlink" in compact or "another user" in compact):
        problems.append("compact() with a planted .tmp: %s" % compact)
    repair = outcome["repair"]
    if not (repair.get("rc") == 0 or "symlink" in repair.get("stderr", "")):
        problems.append("repair with a planted .corrupt: rc %s, %s"
                        % (repair.get("rc"), repair.get("stderr")))
    link = outcome["link"].get("delay", "")
    if not (link.startswith("WheelqError") and "symlink" in link and "another user" in link):
        problems.append("a journal path that is another user's symlink: %s" % link)
    assert not problems, "\n".join(problems)


def _compact_as(uid, gid, journal):
    code = r"""
w = wheelq.Wheel(args[0])
t = w.task(name="adv.t")(lambda s: None)
w.start()
t.delay("x", count_down=3600)
for i in range(3):
    t.delay("done-%d" % i)
out["records"] = w.compact()
w.stop()
"""
    return as_user_ok(uid, gid, code, journal)


def test_f17_compaction_keeps_the_journals_owner_group_and_mode(two_users, shared_dirs, tmp_path):
    victim, other, gid = two_users["victim"], two_users["other"], two_users["gid"]
    # Root compacts a journal that belongs to a user and a group, mode 0660: all three stay.
    journal = str(tmp_path / "tasks.json")
    create_journal(journal)
    os.chown(journal, victim, gid)
    os.chmod(journal, 0o660)
    w = wheelq.Wheel(journal)
    t = w.task(name="adv.t")(lambda s: None)
    w.start()
    try:
        t.delay("x", count_down=3600)
        ino = os.stat(journal).st_ino
        w.compact()
    finally:
        assert w.stop(timeout=WAIT)
    st = os.stat(journal)
    assert st.st_ino != ino  # it was rewritten
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (victim, gid, 0o660)
    # A member of the group compacts the group's journal (another user's file): the group and
    # 0660 stay, so the other members can still use it.
    shared = str(os.path.join(shared_dirs["group"], "shared.json"))
    as_user_ok(victim, gid, "wheelq.Wheel(args[0]).stats(); os.chmod(args[0], 0o660)", shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o660
    ino = os.stat(shared).st_ino
    _compact_as(other, gid, shared)
    st = os.stat(shared)
    assert st.st_ino != ino
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o660), (st.st_gid, oct(st.st_mode))
    # ...and the first user can still add to it.
    added = as_user_ok(victim, gid, "w = wheelq.Wheel(args[0]); out['id'] = "
                    "w.task(name='adv.t')(lambda s: None).delay('y', count_down=60).id; w.stop()", shared)
    pending, _ = replay(shared)
    assert added["id"] in pending


# --------------------------------------------------------------------------
# 18: escape sequences never reach a terminal or a log raw
# --------------------------------------------------------------------------

HOSTILE_ID = "id\x1b]0;pwned\x07\r\nFORGED 2026 INFO wheelq: all good"
HOSTILE_NAME = "adv.\x1b[2Jevil"
HOSTILE_ARGS = ["\x1b[2J\x1b[H", "bell\x07", "\x9b31m"]
HOSTILE_ERROR = "boom\x1b[31m\r\nWARNING forged"

OWNER_WITH_LOGS = r"""
import logging, sys, threading, wheelq
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
w = wheelq.Wheel(sys.argv[1], tick=0.05)
@w.task(name="adv.fail", retries=1, retry_delay=0.05)
def fail(*args):
    raise ValueError("bad input: %s" % "".join(args))
w.start()
pause = threading.Event()
for _ in range(200):
    if len(w.failed()) >= 3:
        break
    pause.wait(0.05)
print(len(w.failed()))
w.stop()
"""


def test_f18_control_characters_are_escaped_in_listings_and_logs_and_refused_in_ids(tmp_path, clock,
                                                                                   make_wheel):
    journal = str(tmp_path / "tasks.json")
    now = time.time()
    with open(journal, "wb") as f:
        f.write(b'{"wheelq": 1}\n')
        f.write(add_line(HOSTILE_ID, HOSTILE_NAME, now + 3600, HOSTILE_ARGS, {"k\x1b": "\x1b[1m"},
                         producer=False))
        f.write(add_line("dead\x1b[1m", "adv.fail", now - 60, HOSTILE_ARGS, producer=False))
        f.write((json.dumps({"op": "fail", "id": "dead\x1b[1m", "tries": 2, "error": HOSTILE_ERROR})
                 + "\n").encode())
    for argv in (["list", journal], ["list", journal, "--failed"], ["status", journal],
                 ["check", journal]):
        r = cli(*argv)
        text = (r.stdout + r.stderr).decode("utf-8")
        assert r.returncode == 0, text
        raw = _RAW_CONTROL.findall(text)
        assert not raw, "`wheelq %s` printed raw control characters %r:\n%s" % (argv[0], raw, text)
        if argv[0] == "list":
            assert "\\x1b" in text, text  # the task is listed, escaped
    # The owner's log: tasks with such names, ids, args and errors come due and fail.
    with open(journal, "ab") as f:
        f.write(add_line("run\x1b[5m\x07", HOSTILE_NAME, now - 1, HOSTILE_ARGS, producer=False))
        f.write(add_line("fail\x1b[5m\r\n", "adv.fail", now - 1, HOSTILE_ARGS, producer=False))
    r = run_python(OWNER_WITH_LOGS, journal, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr[-3000:]
    raw = sorted(set(_RAW_CONTROL.findall(r.stderr)))
    assert not raw, "the owner's log holds raw control characters %r:\n%s" % (raw, r.stderr[-3000:])
    assert "\\x1b" in r.stderr
    # delay() refuses a task_id with a control character, from an owner and a producer alike.
    owner = make_wheel(str(tmp_path / "other.json"))
    ot = owner.task(name="adv.t")(lambda: None)
    owner.start()
    producer = make_wheel(str(tmp_path / "other.json"))
    pt = producer.task(name="adv.t")(lambda: None)
    size = os.path.getsize(str(tmp_path / "other.json"))
    for task in (ot, pt):
        for bad in ("a\nb", "x\x1b[31m", "tab\there", "del\x7f"):
            with pytest.raises(ValueError, match="control character"):
                task.delay(task_id=bad)
    assert os.path.getsize(str(tmp_path / "other.json")) == size


# --------------------------------------------------------------------------
# 19, 20: clear errors
# --------------------------------------------------------------------------


def _no_traceback(r):
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out + err, out + err
    return err


def test_f19_bad_values_in_a_journal_give_clear_errors_not_tracebacks(tmp_path, clock, make_wheel):
    now = clock.time()
    cases = {
        "tries-not-a-number": add_line("a", "adv.fails", now, producer=False, tries="x"),
        "error-a-number": add_line("b", "adv.fails", now, producer=False)
        + b'{"op": "fail", "id": "b", "tries": 1, "error": 42}\n',
    }
    for name, body in cases.items():
        path = str(tmp_path / (name + ".json"))
        with open(path, "wb") as f:
            f.write(b'{"wheelq": 1}\n' + body)
        with pytest.raises(wheelq.JournalCorrupt) as e:
            wheelq.Wheel(path, clock=clock).start()
        assert e.value.lineno in (2, 3) and path in str(e.value)
        for argv in (["list", path], ["list", path, "--failed"], ["status", path], ["check", path]):
            r = cli(*argv)
            err = _no_traceback(r)
            assert r.returncode != 0 and len(err.strip().splitlines()) <= 2, (argv, err)
    # Appended while an owner runs: the line is skipped, and the worker goes on.
    journal = str(tmp_path / "live.json")
    ran = []
    owner = make_wheel(journal, workers=1)
    owner.task(name="adv.fails", retries=1, retry_delay=0.5)(_always_fails)
    ok = owner.task(name="adv.ok")(ran.append)
    owner.start()
    append_as_a_producer(journal, add_line("bad", "adv.fails", now, tries="x"))
    clock.advance(1)
    assert owner.join(timeout=5)
    ok.delay("after")
    clock.advance(1)
    assert owner.join(timeout=5) and ran == ["after"]
    info = owner.get("bad")
    assert info is None or info.status == "pending", info
    # /proc/version is not a journal: say so, not "free disk space" (nor any disk advice).
    for attempt in ("delay", "pending", "start"):
        w = wheelq.Wheel("/proc/version", clock=clock)
        t = w.task(name="adv.t")(lambda: None)
        try:
            with pytest.raises((wheelq.WheelqError, OSError)) as e:
                t.delay() if attempt == "delay" else w.pending() if attempt == "pending" else w.start()
        finally:
            w.stop()
        msg = str(e.value)
        assert "/proc/version" in msg and "disk" not in msg and "journal" in msg, (attempt, msg)
    for argv in (["list", "/proc/version"], ["status", "/proc/version"], ["check", "/proc/version"],
                 ["repair", "/proc/version"], ["cancel", "/proc/version", "x"]):
        r = cli(*argv)
        err = _no_traceback(r)
        assert r.returncode != 0 and "disk" not in err and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.parametrize("tick", [1e-9, 1e-300, 0.0005])
def test_f20_a_tick_finer_than_a_millisecond_is_refused_with_a_message(tick):
    with pytest.raises(ValueError) as e:
        wheelq.Wheel(tick=tick)
    assert "tick" in str(e.value) and "millisecond" in str(e.value), e.value
    w = wheelq.Wheel(tick=0.001)  # a millisecond is fine
    w.stop()


# --------------------------------------------------------------------------
# 21: memory stays flat across many wheels
# --------------------------------------------------------------------------

CYCLES = r"""
import os, sys, wheelq
path = sys.argv[1]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
sizes = []
for i in range(100):
    w = wheelq.Wheel(path, clock=wheelq.ManualClock(0.0))
    w.task(name="adv.t")(lambda token: None)
    w.start()
    assert w.stats()["pending"] == 15000
    w.stop()
    sizes.append(rss())
print(sizes[9], sizes[-1], max(sizes))
"""


def test_f21_starting_and_stopping_a_hundred_wheels_keeps_memory_flat(tmp_path):
    journal = str(tmp_path / "tasks.json")
    with open(journal, "wb") as f:
        f.write(b'{"wheelq": 1}\n')
        f.write("".join('{"op":"add","id":"t%d","task":"adv.t","due":%r,"args":["payload %d"],'
                        '"kwargs":{}}\n' % (i, 2e9 + i, i) for i in range(15000)).encode())
    r = run_python(CYCLES, journal, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    tenth, last, peak = map(int, r.stdout.split())
    assert peak <= 1.5 * tenth, "RSS grew from %.1f MiB (10th cycle) to %.1f MiB (peak), %.1f at the end" % (
        tenth / 2**20, peak / 2**20, last / 2**20)
