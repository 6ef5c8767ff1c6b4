"""The journal (DESIGN.md section 4): format, durability settings, replay of torn and corrupt files, compaction."""
from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import stat
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wheelq
from conftest import FsyncSpy, create_journal, python_env, writes

WAIT = 10


def lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def records(path):
    return [json.loads(line) for line in lines(path)[1:]]


def owner(path, clock, **kw):
    """A wheel with one task, ``job`` (reached as ``wheel.job``), that does nothing."""
    w = wheelq.Wheel(path, clock=clock, **kw)
    w.job = w.task(name="job")(lambda *a, **k: None)
    return w


def test_json_lines_with_a_header_a_person_can_read(journal, clock):
    wheel = owner(journal, clock).start()
    job = wheel.job
    h = job.delay(42, "é", count_down=1800, note={"k": [1, 2]})
    clock.advance(1800)
    assert wheel.join(timeout=WAIT)
    assert wheel.stop(timeout=WAIT)
    raw = lines(journal)
    assert raw[0] == b'{"wheelq": 1}'
    add, start, done = records(journal)
    assert add == {"op": "add", "id": h.id, "task": "job", "due": 1_000_000.0 + 1800,
                   "args": [42, "é"], "kwargs": {"note": {"k": [1, 2]}}}
    assert start == {"op": "start", "ids": [h.id]}  # it began running (one line a batch)
    assert done == {"op": "done", "id": h.id}
    assert "é".encode() in raw[1]  # UTF-8 text, not escapes: readable and grep-able


def test_the_file_is_created_with_mode_0600(journal):
    old = os.umask(0)
    try:
        create_journal(journal)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    assert lines(journal) == [b'{"wheelq": 1}']


def test_replay_restores_pending_retrying_and_dead_tasks(journal, clock):
    wheel = owner(journal, clock, workers=1)
    calls = []

    @wheel.task(name="flaky", retries=5, retry_delay=100)
    def flaky(x):
        calls.append(x)
        raise RuntimeError("no")

    dead_task = wheel.task(name="dead")(lambda: 1 / 0)
    wheel.start()
    keep = wheel.job.delay(1, a="b", count_down=50)
    fl = flaky.delay("f")
    dead = dead_task.delay()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.stop(timeout=WAIT)

    again = wheelq.Wheel(journal, clock=clock).start()
    try:
        k, f = again.get(keep.id), again.get(fl.id)
        assert (k.args, k.kwargs, k.due, k.status) == ((1,), {"a": "b"}, 1_000_050.0, "pending")
        assert (f.tries, f.error, f.due) == (1, "RuntimeError: no", 1_000_101.0)
        d = again.get(dead.id)
        assert (d.status, d.tries, d.error) == ("failed", 1, "ZeroDivisionError: division by zero")
    finally:
        assert again.stop(timeout=WAIT)


def test_a_torn_last_line_is_cut_off_with_a_warning(journal, clock, caplog):
    wheel = owner(journal, clock).start()
    keep = wheel.job.delay(count_down=10)
    assert wheel.stop(timeout=WAIT)
    good = open(journal, "rb").read()
    with open(journal, "ab") as f:
        f.write(b'{"op":"add","id":"torn","task":"job","du')  # no newline: the write was cut
    with caplog.at_level(logging.WARNING, logger="wheelq"):
        again = wheelq.Wheel(journal, clock=clock).start()
    assert [t.id for t in again.pending()] == [keep.id]
    assert any("torn" in r.getMessage() and "line 3" in r.getMessage() for r in caplog.records)
    assert open(journal, "rb").read() == good
    assert again.stop(timeout=WAIT)


def test_partial_json_on_the_last_line_counts_as_torn(journal, clock):
    create_journal(journal)
    with open(journal, "ab") as f:
        f.write(b'{"op":"add","id":"a","task":"job","due":5000000.0,"args":[],"kwargs":{}}\n')
        f.write(b'{"op":"add","id":"b","ta\n')
    again = wheelq.Wheel(journal, clock=clock).start()
    try:
        assert [t.id for t in again.pending()] == ["a"]
        assert len(lines(journal)) == 2
    finally:
        again.stop(timeout=WAIT)


def test_a_torn_header_is_rewritten(journal, clock):
    with open(journal, "wb") as f:
        f.write(b'{"wheel')
    wheel = wheelq.Wheel(journal, clock=clock).start()
    assert wheel.stop(timeout=WAIT)
    assert lines(journal) == [b'{"wheelq": 1}']


TWO_VALUES = b'{"op":"add","id":"x","task":"job","due":1.0,"args":[],"kwargs":{}},{"op":"done","id":"x"}'


@pytest.mark.parametrize("bad", [b"not json at all", b'{"op":"add","id":"x"', b'{"op":"explode","id":"x"}',
                                 b'{"op":"add","id":5,"task":"t","due":1,"args":[],"kwargs":{}}',
                                 b'{"op":"add","id":"x","task":7,"due":1,"args":[],"kwargs":{}}',
                                 b'["a list"]', TWO_VALUES, b"", b"  "])
def test_a_bad_line_in_the_middle_raises_journal_corrupt_with_its_line_number(journal, clock, bad):
    create_journal(journal)
    add = b'{"op":"add","id":"%d","task":"job","due":1.0,"args":[],"kwargs":{}}\n'
    with open(journal, "ab") as f:
        f.write(add % 1 + add % 2 + bad + b"\n" + add % 3)
    before = open(journal, "rb").read()
    wheel = wheelq.Wheel(journal, clock=clock)
    with pytest.raises(wheelq.JournalCorrupt) as info:
        wheel.start()
    assert info.value.lineno == 4  # header is line 1, as `sed -n 4p` counts
    assert lines(journal)[info.value.lineno - 1] == bad
    assert info.value.path == journal
    assert "line 4" in str(info.value) and "repair" in str(info.value)
    assert open(journal, "rb").read() == before  # nothing cut, nothing lost
    assert not wheel.is_owner
    wheel.stop()
    # the owner lock was given back: once repaired, the journal opens
    with open(journal, "wb") as f:
        f.writelines(line + b"\n" for i, line in enumerate(before.split(b"\n")[:-1]) if i != 3)
    again = wheelq.Wheel(journal, clock=clock).start()
    assert again.stop(timeout=WAIT)


@pytest.mark.parametrize("bad", [b"not json at all", TWO_VALUES, b'{"op":"add","id":"y","task":"job","due":1.0'])
def test_a_bad_line_far_into_a_long_journal_is_named_by_its_number(journal, clock, bad):
    """Replay reads thousands of lines at a time; an error still names the one line."""
    create_journal(journal)
    add = b'{"op":"add","id":"%d","task":"job","due":5000000.0,"args":[],"kwargs":{}}\n'
    with open(journal, "ab") as f:
        f.write(b"".join(add % i for i in range(10_000)) + bad + b"\n" + add % 10_000)
    with pytest.raises(wheelq.JournalCorrupt) as info:
        wheelq.Wheel(journal, clock=clock).start()
    assert info.value.lineno == 10_002
    assert lines(journal)[info.value.lineno - 1] == bad


def test_a_torn_last_line_of_a_long_journal_keeps_every_line_before_it(journal, clock):
    create_journal(journal)
    add = b'{"op":"add","id":"%d","task":"job","due":5000000.0,"args":[%d],"kwargs":{}}\n'
    with open(journal, "ab") as f:
        f.write(b"".join(add % (i, i) for i in range(9_000)) + b'{"op":"add","id":"torn","ta\n')
    wheel = owner(journal, clock).start()
    try:
        pending = wheel.pending()
        assert [t.id for t in pending] == [str(i) for i in range(9_000)]
        assert [t.args for t in pending[-2:]] == [(8_998,), (8_999,)]
        assert len(lines(journal)) == 9_001
    finally:
        assert wheel.stop(timeout=WAIT)


@pytest.mark.parametrize("content", [b"hello\n", b"hello", b'{"other": 1}\n{"op":"add"}\n'])
def test_a_file_that_is_not_a_journal_is_refused_and_never_modified(journal, clock, content):
    with open(journal, "wb") as f:
        f.write(content)
    wheel = wheelq.Wheel(journal, clock=clock)
    with pytest.raises(wheelq.JournalCorrupt, match="not a wheelq journal"):
        wheel.start()
    wheel.stop()
    assert open(journal, "rb").read() == content


def test_a_path_that_is_a_directory_gets_a_clear_error(tmp_path):
    wheel = wheelq.Wheel(str(tmp_path))  # building it touches nothing
    with pytest.raises(OSError, match="directory"):
        wheel.stats()


# -- fsync settings --------------------------------------------------------------------


def test_fsync_always_syncs_before_delay_returns(journal, clock, monkeypatch):
    create_journal(journal)  # create it first: creating syncs too
    spy = FsyncSpy(monkeypatch)
    wheel = owner(journal, clock, fsync="always").start()
    job = wheel.job
    for n in range(1, 4):
        job.delay(count_down=100)
        assert spy.calls == n
    assert wheel.stop(timeout=WAIT)


def test_fsync_always_shares_one_fsync_among_concurrent_writers(journal, clock, monkeypatch):
    create_journal(journal)  # create it first: creating syncs too
    gate = threading.Event()
    spy = FsyncSpy(monkeypatch, gate)
    wheel = owner(journal, clock, fsync="always").start()
    job = wheel.job
    first = threading.Thread(target=job.delay, kwargs={"count_down": 100})
    first.start()
    while spy.calls == 0 and first.is_alive():  # the first writer is inside fsync, held by the gate
        first.join(0.01)
    writers = [threading.Thread(target=job.delay, kwargs={"count_down": 100}) for _ in range(8)]
    for t in writers:
        t.start()
    while writes(wheel) < 9:  # all eight appended and now wait for a sync
        first.join(0.01)
    gate.set()
    for t in [first] + writers:
        t.join(WAIT)
        assert not t.is_alive()
    assert spy.calls == 2  # one for the first, one shared by the other eight
    assert len(wheel.pending()) == 9
    assert wheel.stop(timeout=WAIT)


def test_fsync_batch_syncs_once_per_tick_not_per_delay(journal, clock, monkeypatch):
    spy = FsyncSpy(monkeypatch)
    wheel = owner(journal, clock, fsync="batch").start()
    job = wheel.job
    assert wheel.join(timeout=WAIT)
    base = spy.calls
    for _ in range(50):
        job.delay(count_down=100)
    assert spy.calls == base  # delay() does not sync
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    deadline = threading.Event()
    for _ in range(200):  # the timer syncs right after the tick it processed
        if spy.calls > base:
            break
        deadline.wait(0.01)
    assert spy.calls == base + 1
    assert wheel.stop(timeout=WAIT)


def test_fsync_never_does_not_sync(journal, clock, monkeypatch):
    spy = FsyncSpy(monkeypatch)
    wheel = owner(journal, clock, fsync="never").start()
    job = wheel.job
    for _ in range(20):
        job.delay()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.stop(timeout=WAIT)
    assert spy.calls == 0
    assert [r["op"] for r in records(journal)].count("add") == 20
    assert [r["op"] for r in records(journal)].count("done") == 20


def test_a_failed_fsync_in_always_mode_takes_the_task_back(journal, clock, monkeypatch):
    wheel = owner(journal, clock, fsync="always").start()
    job = wheel.job

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(broken))
    with pytest.raises(OSError, match="fsync failed on journal .*tasks.json"):
        job.delay(count_down=5)
    assert wheel.pending() == []  # delay() raised, so the task will not run
    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(os.fsync))
    job.delay(count_down=5)  # and the wheel is still usable
    assert len(wheel.pending()) == 1
    assert wheel.stop(timeout=WAIT)
    again = wheelq.Wheel(journal, clock=clock).start()
    assert len(again.pending()) == 1
    assert again.stop(timeout=WAIT)


def test_a_short_write_leaves_nothing_behind(journal, clock, monkeypatch):
    wheel = owner(journal, clock).start()
    job = wheel.job
    job.delay(1, count_down=5)
    before = open(journal, "rb").read()
    real_write = os.write

    def half_write(fd, data):
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(wheelq.os, "write", half_write)
    with pytest.raises(OSError, match="nothing was written"):
        job.delay(2, count_down=5)
    monkeypatch.setattr(wheelq.os, "write", real_write)
    assert open(journal, "rb").read() == before
    job.delay(3, count_down=5)
    assert sorted(t.args for t in wheel.pending()) == [(1,), (3,)]
    assert wheel.stop(timeout=WAIT)
    assert [r["args"] for r in records(journal)] == [[1], [3]]


# -- compaction --------------------------------------------------------------------------


def test_compaction_keeps_exactly_the_live_state(journal, clock, monkeypatch):
    create_journal(journal)  # create it first: creating syncs the directory too
    synced_dirs = []
    real = wheelq._fsync_dir
    monkeypatch.setattr(wheelq, "_fsync_dir", lambda p: (synced_dirs.append(p), real(p)))
    wheel = owner(journal, clock)

    @wheel.task(name="bad", retries=3, retry_delay=1000)
    def bad(x):
        raise RuntimeError(x)

    wheel.start()
    job = wheel.job
    for i in range(300):
        job.delay(i)
    live = job.delay("later", count_down=5000)
    retrying = bad.delay("r")
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    inode = os.stat(journal).st_ino
    assert wheel.compact() == 2
    assert os.stat(journal).st_ino != inode
    assert not os.path.exists(journal + ".tmp")
    assert synced_dirs == [journal]
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    recs = records(journal)
    assert sorted(r["id"] for r in recs) == sorted([live.id, retrying.id])
    job.delay("after", count_down=10)  # appends go to the new file
    assert wheel.stop(timeout=WAIT)
    again = wheelq.Wheel(journal, clock=clock).start()
    r = again.get(retrying.id)
    assert (r.tries, r.due, r.error) == (1, 1_000_001.0 + 1000, "RuntimeError: r")
    assert {t.args for t in again.pending()} == {("later",), ("r",), ("after",)}
    assert again.stop(timeout=WAIT)


def test_compaction_writes_dead_letters_with_their_error(journal, clock):
    wheel = owner(journal, clock)
    bad = wheel.task(name="bad")(lambda: 1 / 0)
    wheel.start()
    h = bad.delay()
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    assert wheel.compact() == 2  # an add and a fail
    assert wheel.stop(timeout=WAIT)
    again = wheelq.Wheel(journal, clock=clock).start()
    [dead] = again.failed()
    assert (dead.id, dead.tries, dead.error) == (h.id, 1, "ZeroDivisionError: division by zero")
    assert again.stop(timeout=WAIT)


def test_the_owner_compacts_by_itself_when_dead_records_outnumber_live_ones(journal, clock):
    wheel = owner(journal, clock, workers=2).start()
    job = wheel.job
    for i in range(10_050):
        job.delay(i)
    job.delay("live", count_down=999)
    inode = os.stat(journal).st_ino
    clock.advance(1)  # 10,050 run: soon over 20,000 records for one live task
    assert wheel.join(timeout=WAIT * 3)
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    for _ in range(500):  # the timer compacts at the end of a tick
        if os.stat(journal).st_ino != inode:
            break
        threading.Event().wait(0.01)
    assert os.stat(journal).st_ino != inode  # rewritten, by the owner alone
    assert len(lines(journal)) < 2_000  # what finished after the rewrite, at most
    assert wheel.stop(timeout=WAIT)
    again = owner(journal, clock).start()
    assert [t.args for t in again.pending()] == [("live",)]
    assert again.stop(timeout=WAIT)


def test_a_failed_compaction_leaves_the_journal_unchanged(journal, clock, monkeypatch):
    wheel = owner(journal, clock).start()
    wheel.job.delay(count_down=9)
    before = open(journal, "rb").read()

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(broken))
    with pytest.raises(OSError, match="cannot compact journal .*unchanged"):
        wheel.compact()
    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(os.fsync))
    assert open(journal, "rb").read() == before
    assert not os.path.exists(journal + ".tmp")
    wheel.job.delay(count_down=9)  # still appending to the real file
    assert wheel.stop(timeout=WAIT)
    assert len(records(journal)) == 2


def test_a_producer_never_glues_its_record_onto_a_torn_line(journal, clock, caplog):
    create_journal(journal)
    with open(journal, "ab") as f:
        f.write(b'{"op":"add","id":"a","task":"job","due":5000000.0,"args":[],"kwargs":{}}\n{"op":"do')
    producer = wheelq.Wheel(journal, clock=clock)
    job = producer.task(name="job")(lambda: None)
    with caplog.at_level(logging.WARNING, logger="wheelq"):
        job.delay(task_id="important", count_down=100)
        job.delay(task_id="second", count_down=100)
    assert any("torn" in r.getMessage() for r in caplog.records)
    producer.stop()
    assert [r["id"] for r in records(journal)] == ["a", "important", "second"]
    owner_ = wheelq.Wheel(journal, clock=clock).start()
    assert {t.id for t in owner_.pending()} == {"a", "important", "second"}
    assert owner_.stop(timeout=WAIT)


def test_a_producer_waits_for_an_append_in_flight_instead_of_cutting(journal, clock):
    owner_ = wheelq.Wheel(journal, clock=clock).start()
    assert owner_.join(timeout=WAIT)
    # Every append holds the journal's flock: here an append is in the middle of its write.
    holder = os.open(journal, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(holder, fcntl.LOCK_EX)
    os.write(holder, b'{"op":"add","id":"inflight","task":"job","due":5000000.0,')
    producer = wheelq.Wheel(journal, clock=clock)
    job = producer.task(name="job")(lambda: None)
    done = threading.Event()
    errors = []

    def add():
        try:
            job.delay(task_id="p1", count_down=100)
        except OSError as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=add).start()
    assert not done.wait(0.1)  # it waits rather than cutting the line being written
    os.write(holder, b'"args":[],"kwargs":{}}\n')
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert done.wait(WAIT) and errors == []
    producer.stop()
    assert [r["id"] for r in records(journal)] == ["inflight", "p1"]
    assert owner_.stop(timeout=WAIT)


def test_the_owner_fsyncs_producer_appends_in_batch_mode(journal, clock, monkeypatch):
    spy = FsyncSpy(monkeypatch)
    owner_ = owner(journal, clock, fsync="batch").start()
    assert owner_.join(timeout=WAIT)
    producer = wheelq.Wheel(journal, clock=clock, fsync="batch")
    producer.task(name="job")(lambda: None).delay(count_down=100)
    base = spy.calls
    clock.advance(1)
    assert owner_.join(timeout=WAIT)
    for _ in range(500):  # the timer syncs right after the tick that took the record in
        if spy.calls > base:
            break
        threading.Event().wait(0.01)
    assert spy.calls == base + 1
    assert len(owner_.pending()) == 1
    producer.stop()
    assert owner_.stop(timeout=WAIT)


def test_creating_a_journal_makes_its_directory_entry_durable(journal, monkeypatch):
    synced = []
    monkeypatch.setattr(wheelq, "_fsync_dir", lambda p: synced.append(p))
    create_journal(journal)
    assert synced == [journal]
    wheelq.Wheel(journal).stop()  # an existing journal: nothing to make durable
    assert synced == [journal]


def test_a_standby_that_cannot_take_over_closes_instead_of_hanging(journal, clock, caplog):
    holder = wheelq.Wheel(journal, clock=clock).start()
    with open(journal, "ab") as f:  # a bad line in the middle: the takeover's replay refuses it
        f.write(b"garbage\n" + b'{"op":"done","id":"x"}\n')
    standby = wheelq.Wheel(journal, clock=clock).start(standby=True)
    with caplog.at_level(logging.ERROR, logger="wheelq"):
        assert holder.stop(timeout=WAIT)
        assert standby._closed.wait(WAIT)
    assert not standby.is_owner
    assert standby.stop(timeout=WAIT) is True
    assert any("failed to take over" in r.getMessage() for r in caplog.records)
    assert open(journal, "rb").read().count(b"garbage") == 1  # nothing cut
    fresh = wheelq.Wheel(journal, clock=clock)  # the owner lock was given back
    with pytest.raises(wheelq.JournalCorrupt):
        fresh.start()
    fresh.stop()


def test_a_producer_waiting_on_a_torn_line_lets_the_owner_cut_it(journal, clock):
    owner_ = wheelq.Wheel(journal, clock=clock).start()
    assert owner_.join(timeout=WAIT)
    with open(journal, "ab") as f:  # as if a producer had been killed inside its write
        f.write(b'{"p":1,"op":"add","id":"torn","ta')
    producer = wheelq.Wheel(journal, clock=clock)
    job = producer.task(name="job")(lambda: None)
    result = []
    t = threading.Thread(target=lambda: result.append(job.delay(task_id="after", count_down=100)))
    t.start()
    clock.advance(1)  # the owner's tick cuts the torn line, which it could not if the producer kept the flock
    t.join(WAIT)
    assert result and result[0].id == "after"
    producer.stop()
    assert owner_.join(timeout=WAIT)
    clock.advance(1)
    assert owner_.join(timeout=WAIT)
    assert [t.id for t in owner_.pending()] == ["after"]
    assert owner_.stop(timeout=WAIT)


def test_a_compaction_that_cannot_create_its_copy_leaves_the_journal_unchanged(journal, clock,
                                                                               monkeypatch):
    wheel = owner(journal, clock).start()
    job = wheel.job
    keep = job.delay(count_down=50)
    before = open(journal, "rb").read()

    def no_more_files(self, tmp, like):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(wheelq._FileStore, "_create_tmp", no_more_files)
    with pytest.raises(OSError, match="cannot compact journal .*ulimit -n.*unchanged"):
        wheel.compact()
    monkeypatch.undo()
    assert open(journal, "rb").read() == before
    after = job.delay(count_down=5)  # the wheel goes on, on the same file
    assert [r["id"] for r in records(journal)] == [keep.id, after.id]
    assert wheel.compact() == 2
    assert wheel.stop(timeout=WAIT)


def _replayed_owner(journal, clock, n):
    w = owner(journal, clock).start()
    job = w.job
    for i in range(n):
        job.delay(i, count_down=3600)
    assert w.stop(timeout=WAIT)
    return owner(journal, clock)


def test_replay_leaves_the_collector_as_it_found_it(journal, clock):
    again = _replayed_owner(journal, clock, 10)
    mine = [object()]  # e.g. frozen before fork, to keep pages shared
    gc.freeze()
    try:
        gc.disable()
        again.start()
        assert not gc.isenabled()  # it was off before: it stays off
        assert all(o is not mine for o in gc.get_objects())  # still frozen
        assert gc.get_freeze_count() > 0
    finally:
        gc.enable()
        gc.unfreeze()
        assert again.stop(timeout=WAIT)


@pytest.mark.parametrize("frozen_before", [False, True], ids=["nothing-frozen", "app-froze-some"])
def test_replay_puts_what_it_read_in_the_oldest_generation_and_freezes_nothing(journal, clock, frozen_before):
    # A replay keeps all it reads; left in the young generation, the first collection
    # after it would walk every record (then twice more as they age).  They go to the
    # oldest generation at once; what was frozen before stays frozen (Python 3.12
    # itself starts with some objects frozen), nothing else is, and garbage cycles
    # are still freed.
    import weakref

    again = _replayed_owner(journal, clock, 3000)

    class Cycle:
        pass

    before = Cycle()
    before.me = before
    freed = []
    weakref.finalize(before, freed.append, "before")
    del before
    gc.collect(0)  # it has aged once, as an application's objects do
    mine = [object()]
    if frozen_before:
        gc.freeze()  # e.g. before a fork, to keep pages shared
    frozen = gc.get_freeze_count()
    assert gc.isenabled() and (frozen > 0 or not frozen_before)
    try:
        again.start()
        assert gc.get_freeze_count() == frozen
        assert any(o is mine for o in gc.get_objects()) != frozen_before  # still frozen, or not
        young = {id(o) for o in gc.get_objects(generation=0) + gc.get_objects(generation=1)}
        recs = [r for r in again._table.tasks.values()]
        assert len(recs) == 3000
        assert not [r for r in recs if id(r) in young]
        assert sum(1 for o in gc.get_objects(generation=2) if type(o) is wheelq._Rec) >= 3000
        gc.collect()
        assert freed == ["before"]  # the cycle made before the replay is still collected
    finally:
        if frozen_before:
            gc.unfreeze()
        assert again.stop(timeout=WAIT)


_tid = st.sampled_from(["a", "b", "c"])
_due = st.floats(0, 1e9, allow_nan=False)
_replayed = st.lists(st.one_of(
    st.builds(lambda i, d, a: {"op": "add", "id": i, "task": "job", "due": d, "args": a, "kwargs": {}},
              _tid, _due, st.lists(st.integers(), max_size=2)),
    st.builds(lambda i, d: {"op": "add", "id": i, "task": "job", "due": d, "args": [], "kwargs": {}},
              _tid, st.integers(0, 10**9)),  # a due that is an int
    st.builds(lambda i, d: {"op": "add", "id": i, "task": "job", "due": d, "args": [], "kwargs": {"k": 1}},
              _tid, _due),
    st.builds(lambda i, d: {"p": 1, "op": "add", "id": i, "task": "job", "due": d, "args": [1], "kwargs": {}},
              _tid, _due),
    st.builds(lambda i, d: {"op": "add", "id": i, "task": "job", "due": d, "args": [], "kwargs": {},
                            "tries": 2, "error": "boom"}, _tid, _due),
    st.builds(lambda i, d, k: {"op": "add", "id": "s@%s" % i, "task": "job", "due": d, "args": [1],
                               "kwargs": k, "sched": "s", "spec": "every 60", "tz": "UTC"},
              st.sampled_from(["2026-12-04T10:05:00Z", "2026-12-04T10:06:00Z", "x"]), _due,
              st.sampled_from([{}, {"a": 1}])),
    st.builds(lambda i: {"op": "done", "id": i}, _tid),
    st.builds(lambda i: {"op": "done", "id": i, "p": 1}, _tid),
    # compaction's record of a schedule's cursor (and of its last finished run)
    st.builds(lambda i, n: {"op": "done", "id": "s@%s" % i, "sched": n},
              st.sampled_from(["2026-12-04T10:04:00Z", "2026-12-04T10:05:00Z", "2026-12-04T10:05:00.5Z",
                               "x"]), st.sampled_from(["s", "t"])),
    st.builds(lambda i, l: {"op": "done", "id": "s@%s" % i, "sched": "s", "last": l},
              st.sampled_from(["2026-12-04T10:05:00Z", "x"]), _due),
    st.builds(lambda i: {"op": "cancel", "id": i}, _tid),
    st.builds(lambda i, d: {"op": "retry", "id": i, "due": d, "tries": 1, "error": "e"}, _tid, _due),
    st.builds(lambda i: {"op": "fail", "id": i, "tries": 3, "error": "e"}, _tid),
    st.builds(lambda i, d: {"op": "requeue", "id": i, "due": d}, _tid, _due),
    st.builds(lambda i: {"op": "purge", "id": i}, _tid),
), max_size=30)


def _replayed_state(table):
    tasks = {tid: (r.name, r.args, r.kwargs, r.due, r.tries, r.error, r.sched, table.state(r))
             for tid, r in table.tasks.items()}
    cursors = {name: (c.cursor, c.last, c.run, c.paused, c.spec, c.tz)
               for name, c in table.cursors.items()}
    return list(table.tasks), tasks, list(table.finished.items()), cursors


def _spelled(o, how):
    """One journal line for ``o``: as wheelq writes it, ASCII-escaped, or with spaces."""
    if how == 0:
        return json.dumps(o, ensure_ascii=False, separators=(",", ":"))
    if how == 1:
        return json.dumps(o, separators=(",", ":"))
    return json.dumps(o)


_odd_text = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ['a"b', "a\\b", "\t", "\u2028", "\ud83d\ude00", '"op":"add"', "}\n{"])
_odd_due = st.one_of(_due, st.integers(-10**20, 10**20), st.just(10**400), st.just(1e300),
                     st.floats(allow_nan=True, allow_infinity=True), st.just("5"), st.just(True))
_odd = st.one_of(
    st.builds(lambda i, n, d, a, k: {"op": "add", "id": i, "task": n, "due": d, "args": a, "kwargs": k},
              _tid | _odd_text, st.just("job") | _odd_text, _odd_due,
              st.lists(st.integers() | _odd_text | st.dictionaries(_odd_text, st.integers(), max_size=2),
                       max_size=3),
              st.just({}) | st.dictionaries(_odd_text, st.integers() | _odd_text, max_size=2)),
    st.builds(lambda i: {"op": "done", "id": i}, _tid | _odd_text),
    st.builds(lambda i, n: {"op": "done", "id": i, "sched": n}, _tid | _odd_text,
              _odd_text | st.integers() | st.none()),
)
_junk = st.sampled_from(["", "{", "[1]", '"done"', "null", '{"op":"add"}', "1 2", " ", "\r",
                         '{"op":"done","id":"a"} x', '{"op":"done","id":"a"}  ', "\x00",
                         '{"op":"done","id":"a\tb"}',  # a raw control character: not JSON
                         '{"op":"add","id":"a\x01","task":"job","due":1.0,"args":[],"kwargs":{}}',
                         '{"op":"add","id":"a","task":"job","due":01,"args":[],"kwargs":{}}',
                         '{"op":"add","id":"a","task":"job","due":1.,"args":[],"kwargs":{}}',
                         # args and kwargs that a greedy reading splits in the wrong place
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[1],"kwargs":{"b":[2],"kwargs":{}}}',
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[1],"kwargs":{}},"kwargs":{}}',
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[1]],"kwargs":{}}',
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":[1]}',
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":{},"x":1}',
                         '{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":{}}}',
                         # a schedule's run, with its fields out of order, missing, or extra
                         '{"op":"add","id":"s@x","task":"job","due":1.0,"args":[],"kwargs":{},'
                         '"sched":"s","spec":"every 1","tz":"UTC"}',
                         '{"op":"add","id":"s@x","task":"job","due":1.0,"args":[],"kwargs":{},'
                         '"spec":"every 1","sched":"s","tz":"UTC"}',
                         '{"op":"add","id":"s@x","task":"job","due":1.0,"args":[],"kwargs":{},'
                         '"sched":"s","spec":"every 1"}',
                         '{"op":"add","id":"s@x","task":"job","due":1.0,"args":[],"kwargs":{},'
                         '"sched":"s","spec":"every 1","tz":"UTC","x":1}',
                         '{"op":"add","id":"s@x","task":"job","due":1.0,"args":[],"kwargs":{},'
                         '"sched":7,"spec":"every 1","tz":"UTC"}'])


def _expected_replay(texts):
    """What replaying ``texts`` must give: json.loads and the table's apply, a line at a time."""
    table = wheelq._Table()
    for i, text in enumerate(texts):
        try:
            obj = json.loads(text)
        except ValueError:
            return table, ("unreadable", i)
        try:
            table.apply(obj)
        except (KeyError, TypeError, ValueError, AttributeError):
            return table, ("not a record", i)
    return table, None


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(st.one_of(st.tuples(_replayed.map(tuple), st.integers(0, 2)),
                                st.tuples(_odd.map(lambda o: (o,)), st.integers(0, 2)),
                                _junk.map(lambda j: (j, None))), max_size=12))
def test_replay_reads_every_line_as_json_and_apply_would(lines):
    """Replay reads the lines wheelq writes most with a regular expression and applies
    them inline; whatever the spelling, the state and the first bad line must be those
    of json.loads and _apply, a line at a time."""
    texts = []
    for what, how in lines:
        if how is None:
            texts.append(what)  # a junk line
        else:
            texts.extend(_spelled(o, how) for o in what)
    texts = [t for t in texts if "\n" not in t]
    expected, error = _expected_replay(texts)
    table = wheelq._Table()
    rows = wheelq._read_rows("".join(t + "\n" for t in texts))
    try:
        table.apply_rows(rows)
        got = ("unreadable", len(rows)) if len(rows) < len(texts) else None
    except wheelq._BadRecord as bad:
        got = ("not a record", bad.index)
    assert got == error
    if error is None:
        assert _replayed_state(table) == _replayed_state(expected)


def test_replay_reads_the_lines_it_knows_without_the_json_parser():
    """The fast rows must really be taken: an add is its record, a done the tuple of its id."""
    part = wheelq._add_part("job")
    lines = [wheelq._add_line(wheelq._OWNER_ADD, "a", part, "job", 5.0, (1, "x"), {}),
             wheelq._add_line(wheelq._PRODUCER_ADD, "b", part, "job", 6.0, (), {"k": [1]}),
             b'{"op":"done","id":"a"}\n',
             wheelq._line({"op": "add", "id": "s@2026-12-04T10:05:00Z", "task": "job", "due": 7.0,
                           "args": [], "kwargs": {}, "sched": "s", "spec": "every 60", "tz": "UTC"}),
             wheelq._line({"op": "done", "id": "s@2026-12-04T10:04:00Z", "sched": "s"})]
    rows = wheelq._read_rows(b"".join(lines).decode())
    assert [r.__class__ for r in rows] == [wheelq._Rec, wheelq._Rec, tuple, wheelq._Rec, tuple]
    assert rows[4] == ("s@2026-12-04T10:04:00Z", "s")  # a schedule's cursor, as compaction keeps it
    assert rows[3].sched == ("s", "every 60", "UTC")
    assert (rows[0].id, rows[0].args, rows[0].due) == ("a", [1, "x"], 5.0)
    assert (rows[1].id, rows[1].kwargs) == ("b", {"k": [1]})
    assert rows[2] == ("a",)


def test_replay_names_the_record_that_is_not_a_wheelq_record():
    good = {"op": "add", "id": "a", "task": "job", "due": 1.0, "args": [], "kwargs": {}}
    for bad in ({"op": "add", "id": 5, "task": "job", "due": 1.0, "args": [], "kwargs": {}},
                {"op": "done", "id": ["x"]}, ["a list"], {"op": "explode", "id": "x"}):
        with pytest.raises(wheelq._BadRecord) as info:
            wheelq._Table().apply_rows([good, dict(good, id="b"), bad, good])
        assert info.value.index == 2


@pytest.mark.parametrize("due", [b"1e400", b"-1e400", b"1" + b"0" * 400, b"Infinity", b"NaN", b'"5"'])
def test_a_due_that_is_not_a_finite_number_is_a_corrupt_line(journal, clock, due):
    create_journal(journal)
    with open(journal, "ab") as f:
        f.write(b'{"op":"add","id":"a","task":"job","due":%s,"args":[],"kwargs":{}}\n' % due)
        f.write(b'{"op":"add","id":"b","task":"job","due":1.0,"args":[],"kwargs":{}}\n')
    with pytest.raises(wheelq.JournalCorrupt, match="line 2: not a wheelq record"):
        owner(journal, clock).start()


def test_a_line_that_is_not_utf8_far_into_a_long_journal_is_named_by_its_number(journal, clock):
    create_journal(journal)
    add = b'{"op":"add","id":"%d","task":"job","due":5000000.0,"args":["\xc3\xa9"],"kwargs":{}}\n'
    with open(journal, "ab") as f:
        f.write(b"".join(add % i for i in range(10_000)) + b"\xff\xfe not utf-8\n" + add % 10_000)
    with pytest.raises(wheelq.JournalCorrupt) as info:
        wheelq.Wheel(journal, clock=clock).start()
    assert info.value.lineno == 10_002
    with open(journal, "rb") as f:  # and with the bad line gone, every other line replays
        data = f.read().replace(b"\xff\xfe not utf-8\n", b"")
    with open(journal, "wb") as f:
        f.write(data)
    wheel = owner(journal, clock).start()
    try:
        assert wheel.stats()["pending"] == 10_001
        assert wheel.get("9999").args == ("\u00e9",)
    finally:
        assert wheel.stop(timeout=WAIT)


# -- fsync="always": the committing thread writes the lines of its group -------------------


def _disk_full(fd, data):
    raise OSError(28, "No space left on device")


def _held_first_commit(journal, clock, monkeypatch, adders):
    """A wheel whose first add is held inside fsync while ``adders`` threads add behind it."""
    create_journal(journal)  # create it first: creating syncs too
    gate = threading.Event()
    spy = FsyncSpy(monkeypatch, gate)
    wheel = owner(journal, clock, fsync="always").start()
    job = wheel.job
    first = threading.Thread(target=job.delay, args=("first",), kwargs={"count_down": 100})
    first.start()
    while spy.calls == 0 and first.is_alive():
        first.join(0.01)
    results = []

    def add(i):
        try:
            job.delay(i, count_down=100)
            results.append(("ok", i))
        except OSError as exc:
            results.append(("error", i, exc))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(adders)]
    for t in threads:
        t.start()
    while writes(wheel) < 1 + adders:  # all of them deferred their line and wait
        first.join(0.01)
    return wheel, gate, [first] + threads, results


def test_concurrent_adds_in_always_mode_share_one_write(journal, clock, monkeypatch):
    real_write = os.write
    writes = []
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 8)
    monkeypatch.setattr(wheelq.os, "write", lambda fd, data: (writes.append(data), real_write(fd, data))[1])
    gate.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert sorted(r[1] for r in results if r[0] == "ok") == list(range(8))
    assert len(writes) == 1 and writes[0].count(b"\n") == 8  # one write() carried the eight lines
    assert wheel.stop(timeout=WAIT)
    assert sorted(map(str, (r["args"][0] for r in records(journal)))) == sorted(["first"] + list(map(str, range(8))))


def test_a_failed_write_in_always_mode_raises_in_every_add_it_carried(journal, clock, monkeypatch):
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 8)
    monkeypatch.setattr(wheelq.os, "write", _disk_full)
    gate.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert sorted(r[1] for r in results if r[0] == "error") == list(range(8))
    assert all("cannot append to journal" in str(r[2]) and r[2].errno == 28 for r in results)
    assert [t.args for t in wheel.pending()] == [("first",)]  # none of the eight will run
    monkeypatch.undo()
    wheel.job.delay("after", count_down=100)  # the disk is back: the wheel goes on
    assert wheel.stop(timeout=WAIT)
    assert [r["args"] for r in records(journal)] == [["first"], ["after"]]  # no line of the eight
    again = wheelq.Wheel(journal, clock=clock).start()
    assert sorted(t.args for t in again.pending()) == [("after",), ("first",)]
    assert again.stop(timeout=WAIT)


def test_a_sync_by_someone_else_does_not_swallow_a_failed_deferred_write(journal, monkeypatch,
                                                                        file_store):
    j = file_store(journal)
    with j.lock:
        mine = j.defer(b'{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":{}}\n')
    monkeypatch.setattr(wheelq.os, "write", _disk_full)
    j.sync()  # e.g. close(): it writes the deferred line, which fails, and syncs
    monkeypatch.undo()
    with pytest.raises(OSError, match="cannot append to journal") as info:
        j.commit(mine)  # the add's own commit still learns of it
    assert info.value.unwritten
    j.commit(mine)  # reported once
    j.close()
    assert lines(journal) == [b'{"wheelq": 1}']


def test_a_task_whose_deferred_add_is_not_written_yet_does_not_run(journal, clock, monkeypatch):
    """A deferred add waits outside the ring until its line is in the file and durable."""
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 0)
    job = wheel.job
    adders = [threading.Thread(target=job.delay, args=(i,)) for i in range(6)]  # due now
    for t in adders:
        t.start()
    while writes(wheel) < 7:
        adders[0].join(0.01)
    clock.advance(1)  # their tick comes while their lines wait for the held fsync
    assert wheel.join(timeout=WAIT)
    assert wheel.stats()["done"] == 0 and len(wheel.pending()) == 7
    gate.set()
    for t in threads + adders:
        t.join(WAIT)
        assert not t.is_alive()
    clock.advance(1)  # now they are in the ring, and run at the next tick
    assert wheel.join(timeout=WAIT)
    assert wheel.stats()["done"] == 6
    assert wheel.stop(timeout=WAIT)
    seen = set()
    for r in records(journal):
        if r["op"] == "done":
            assert r["id"] in seen
        elif r["op"] == "add":
            seen.add(r["id"])
    assert sum(r["op"] == "done" for r in records(journal)) == 6


def test_a_deferred_add_whose_write_fails_never_runs_and_is_forgotten(journal, clock, monkeypatch):
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 0)
    job = wheel.job
    failed = []

    def add():
        try:
            job.delay("due now")
        except OSError as exc:
            failed.append(exc)

    adder = threading.Thread(target=add)
    adder.start()
    while writes(wheel) < 2:
        adder.join(0.01)
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    monkeypatch.setattr(wheelq.os, "write", _disk_full)
    gate.set()
    for t in threads + [adder]:
        t.join(WAIT)
        assert not t.is_alive()
    monkeypatch.undo()
    assert len(failed) == 1 and failed[0].errno == 28
    clock.advance(1)
    assert wheel.join(timeout=WAIT)
    stats = wheel.stats()
    assert (stats["done"], stats["cancelled"], stats["pending"]) == (0, 0, 1)  # only "first" is left
    assert [t.args for t in wheel.pending()] == [("first",)]
    assert wheel.stop(timeout=WAIT)
    assert [r["args"] for r in records(journal)] == [["first"]]


def test_delay_with_a_task_id_that_another_delay_holds_returns_once_it_is_durable(journal, clock, monkeypatch):
    """The second delay(task_id=X) returns X's handle only after X's add is on disk."""
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 0)
    job = wheel.job
    handles = []
    first = threading.Thread(target=lambda: handles.append(job.delay(task_id="x", count_down=100)))
    second = threading.Thread(target=lambda: handles.append(job.delay(task_id="x", count_down=100)))
    first.start()
    while writes(wheel) < 2:
        first.join(0.01)
    assert lines(journal)[-1].startswith(b'{"op":"add","id":"x"')  # a task_id is written at once
    second.start()
    second.join(0.2)
    assert second.is_alive() and not handles  # both wait for the held fsync
    gate.set()
    for t in threads + [first, second]:
        t.join(WAIT)
        assert not t.is_alive()
    assert [h.id for h in handles] == ["x", "x"]
    assert [r["id"] for r in records(journal)].count("x") == 1
    assert wheel.stop(timeout=WAIT)


def test_a_write_that_close_could_not_make_durable_raises(journal, clock, monkeypatch, file_store):
    j = file_store(journal)
    with j.lock:
        mine = j.defer(b'{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":{}}\n')

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(broken))
    with pytest.raises(OSError, match="fsync failed"):
        with j.lock:
            j.close()
    with pytest.raises(OSError, match="closed before this write was made durable"):
        j.commit(mine)


def test_stopping_while_threads_add_in_always_mode_keeps_every_acknowledged_add(journal, clock):
    """stop() writes and syncs the deferred lines; no add that returned is lost, none hangs."""
    wheel = owner(journal, clock, fsync="always").start()
    job = wheel.job
    acked = [[] for _ in range(8)]
    started = threading.Barrier(9, timeout=WAIT)

    def add(mine, k):
        started.wait()
        for i in range(10_000):
            try:
                job.delay(k * 100_000 + i, count_down=100)
            except wheelq.WheelClosed:
                return
            mine.append(k * 100_000 + i)

    threads = [threading.Thread(target=add, args=(acked[k], k)) for k in range(8)]
    for t in threads:
        t.start()
    started.wait()
    while sum(map(len, acked)) < 200 and threads[0].is_alive():
        threads[0].join(0.01)
    assert wheel.stop(timeout=WAIT)
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    again = wheelq.Wheel(journal, clock=clock).start()
    pending = {t.args[0] for t in again.pending()}
    assert again.stop(timeout=WAIT)
    assert set().union(*map(set, acked)) <= pending


def test_compaction_never_writes_back_a_task_whose_deferred_write_failed(journal, clock, monkeypatch):
    wheel, gate, threads, results = _held_first_commit(journal, clock, monkeypatch, 1)
    monkeypatch.setattr(wheelq.os, "write", _disk_full)
    with pytest.raises(OSError, match="cannot compact journal .* a write to it just failed"):
        wheel.compact()
    monkeypatch.undo()
    gate.set()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()
    assert [r[0] for r in results] == ["error"]
    assert [t.args for t in wheel.pending()] == [("first",)]
    wheel.compact()  # and once the failed add has been taken back, compaction goes on
    assert wheel.stop(timeout=WAIT)
    assert [r["args"] for r in records(journal)] == [["first"]]


_atom = st.one_of(st.integers(), st.text(), st.floats(allow_nan=False, allow_infinity=False),
                  st.booleans(), st.none())
_value = st.recursive(_atom, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@settings(max_examples=500, deadline=None)
@given(name=st.text(min_size=1), tid=st.text(min_size=1),
       due=st.floats(-1e12, 1e18, allow_nan=False, allow_infinity=False),
       args=st.one_of(st.tuples(st.integers()), st.tuples(st.text()), st.tuples(_atom),
                      st.lists(_value, max_size=4).map(tuple)),
       kwargs=st.dictionaries(st.text(max_size=5), _value, max_size=3))
def test_an_add_line_built_from_parts_is_the_line_json_gives(name, tid, due, args, kwargs):
    """delay() builds its add line from per-task formats and shortcuts; it must be _line's bytes."""
    record = {"op": "add", "id": tid, "task": name, "due": due, "args": args, "kwargs": kwargs}
    part = wheelq._add_part(name)
    assert wheelq._add_line(wheelq._OWNER_ADD, tid, part, name, due, args, kwargs) == wheelq._line(record)
    assert wheelq._add_line(wheelq._PRODUCER_ADD, tid, part, name, due, args, kwargs) \
        == wheelq._line(dict(p=1, **record))


@pytest.mark.parametrize("args", [(object(),), (1, {2, 3}), (b"x",), (float("nan"),),
                                  (float("inf"),), ([1, {"k": object()}],)])
def test_an_add_line_names_a_value_that_is_not_json(args):
    part = wheelq._add_part("job")
    for head in (wheelq._OWNER_ADD, wheelq._PRODUCER_ADD):
        with pytest.raises(TypeError, match="must be JSON"):
            wheelq._add_line(head, "a", part, "job", 1.0, args, {})


@pytest.mark.parametrize("line", [
    b'\xef\xbb\xbf{"op":"add","id":"bom","task":"job","due":1.0,"args":[],"kwargs":{}}',  # a BOM
    b'{"op":"add","id":"\xed\xa0\x80","task":"job","due":1.0,"args":[],"kwargs":{}}',  # a surrogate
    '{"op":"add","id":"u16","task":"job","due":1.0,"args":[],"kwargs":{}}'.encode("utf-16-le"),
])
def test_every_reader_takes_a_line_that_is_not_utf8_as_unreadable(journal, clock, line):
    """The journal is UTF-8: the owner, a producer's view and `check` agree on a line that is not."""
    create_journal(journal)
    producer = owner(journal, clock)  # a view that has read the file so far
    producer.pending()
    good = b'{"op":"add","id":"good","task":"job","due":1.0,"args":[],"kwargs":{}}\n'
    with open(journal, "ab") as f:
        f.write(line + b"\n" + good)
    with pytest.raises(wheelq.JournalCorrupt) as info:
        owner(journal, clock).start()
    assert info.value.lineno == 2
    with pytest.raises(wheelq.JournalCorrupt) as info:
        producer.pending()
    assert info.value.lineno == 2
    producer.stop()
    with open(journal, "rb") as f:
        data = f.read()
    r = subprocess.run([sys.executable, "-m", "wheelq", "--json", "check", journal],
                       capture_output=True, text=True, env=python_env(), timeout=60)
    assert [b["line"] for b in json.loads(r.stdout)["bad"]] == [2]


def test_a_deferred_write_and_its_fsync_both_failing_report_the_write_once(journal, monkeypatch,
                                                                           file_store):
    j = file_store(journal)
    with j.lock:
        mine = j.defer(b'{"op":"add","id":"a","task":"job","due":1.0,"args":[],"kwargs":{}}\n')

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wheelq.os, "write", _disk_full)
    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(broken))
    with pytest.raises(OSError, match="cannot append to journal") as info:
        j.commit(mine)  # the line never reached the file: that, not the fsync, is the news
    assert info.value.unwritten and j._lost == {}  # nothing left over to block a compaction
    monkeypatch.undo()
    j.close()


def test_compaction_waits_for_an_fsync_in_flight_before_closing_the_old_file(journal, clock, monkeypatch):
    create_journal(journal)
    real, gate, held = os.fsync, threading.Event(), threading.Event()
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 1:  # the first, a delay()'s commit: held, with the old file's fd
            held.set()
            assert gate.wait(WAIT)
        real(fd)

    monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(fsync))
    wheel = owner(journal, clock, fsync="always").start()
    errors = []

    def add():
        try:
            wheel.job.delay(count_down=100)
        except Exception as exc:
            errors.append(exc)

    adder = threading.Thread(target=add)
    adder.start()
    assert held.wait(WAIT)
    compactor = threading.Thread(target=wheel.compact)
    compactor.start()
    compactor.join(0.3)
    assert compactor.is_alive()  # it waits for the fsync that uses the old file
    gate.set()
    for t in (adder, compactor):
        t.join(WAIT)
        assert not t.is_alive()
    assert errors == []
    assert len(wheel.pending()) == 1
    assert wheel.stop(timeout=WAIT)


def test_a_producer_waiting_out_an_owners_torn_line_writes_to_the_file_that_replaced_it(tmp_path):
    """A producer finds the owner's line half-written (the owner lock held: the owner lives),
    and while it waits the owner finishes and compacts: the producer's line goes into the new
    file, through a descriptor it opened there, not the one it had before."""
    path = str(tmp_path / "tasks.json")
    create_journal(path)
    producer = wheelq.Wheel(path)
    job = producer.task(name="job")(lambda i: None)
    job.delay(0, count_down=60)  # the producer's journal is open
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the owner runs
    with open(path, "a") as f:
        f.write('{"op":"done","ids":["x')  # the owner's line, half-written
    whole = open(path).read().rsplit("\n", 1)[0] + "\n"
    done, errors = threading.Event(), []

    def add():
        try:
            job.delay(1, count_down=60)
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)
        done.set()

    t = threading.Thread(target=add)
    t.start()
    assert not done.wait(0.3), "delay() went past an owner's torn line"
    tmp = path + ".new"  # the owner compacts: a new file, renamed over the old one
    with open(tmp, "w") as f:
        f.write(whole)
    os.rename(tmp, path)
    assert done.wait(10), "delay() never came back"
    t.join(10)
    fcntl.flock(lock, fcntl.LOCK_UN)
    os.close(lock)
    producer.stop()
    assert errors == []
    lines = [json.loads(ln) for ln in open(path).read().splitlines()[1:]]
    assert [ln["args"] for ln in lines if ln.get("op") == "add"] == [[0], [1]]
