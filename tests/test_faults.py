"""Fault injection: a full disk, a file size limit, read-only places, failing fsync.

Each fault must give an error naming the journal and what to do, leave no
half-written record behind (the bytes of the file are checked right after
the failure), lose no task whose ``delay()`` returned, and, where that makes
sense, leave the wheel usable once the cause is gone.

The faults are real: ``RLIMIT_FSIZE`` in a subprocess (Python ignores
SIGXFSZ, so writes come back short or fail with EFBIG), a tiny tmpfs mounted
in a private mount namespace for ENOSPC (and remounted read-only for EROFS),
a subprocess that drops to the user ``nobody`` for EACCES (root ignores
permission bits), ``chattr +i`` for a directory even root cannot write, and
the journal store's fsync seam (the ``failing_fsync`` fixture) for EIO.  The tmpfs, ``nobody`` and ``chattr``
tests skip, saying why, where they cannot run (not root, no unshare or
chattr, a filesystem without attributes).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import wheelq
from conftest import create_journal, python_env
from mp_agent import wait_for

FAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp_faults.py")


def run_fault(*args, wrapper=(), timeout=60):
    r = subprocess.run([*wrapper, sys.executable, FAULTS, *args], capture_output=True, text=True,
                       timeout=timeout, env=python_env())
    return r


def result(r) -> dict:
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def journal_bytes_ok(path) -> list:
    """Every line of the file is complete JSON; returns the records after the header."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n"), "a partial line was left behind: %r" % data[-80:]
    lines = data.splitlines()
    assert lines[0] == b'{"wheelq": 1}'
    return [json.loads(line) for line in lines[1:]]


# -- the file cannot grow ------------------------------------------------------


def advice(msg: str, path: str) -> str:
    """The words of an error message after the path it names (the path may contain anything)."""
    assert path in msg, msg
    return msg.split(path, 1)[1]


def check_fill(out: dict, journal: str) -> None:
    assert out["acked"] >= 10 and out["n_errors"] > 0, out
    # Right after every failed delay() the file ended in a complete line...
    assert out["torn_after_error"] == 0, out
    assert out["complete"] and out["complete_after_run"], out
    # ...and holds exactly the acknowledged adds, in order: nothing lost, nothing extra.
    assert out["file_ids_equal_acked"], out
    for e in out["errors"]:
        assert journal in e["msg"] and "nothing was written" in e["msg"], e
        assert e["who"] in ("owner", "producer")
    assert {e["who"] for e in out["errors"]} == {"owner", "producer"}
    # Compaction could not write its copy: a clear error, the journal untouched.
    assert out["compact_error"] and journal in out["compact_error"], out
    assert "unchanged" in out["compact_error"]
    assert out["compact_unchanged"] and not out["compact_tmp_left"], out
    # Tasks that ran while their done records could not be written...
    assert out["joined_while_full"] and out["ran_while_full"] == out["acked"], out
    assert out["done_records_while_full"] == 0, out
    # ...are pending again for the next owner (at least once), as is every
    # acknowledged task, including the two added after space came back.
    assert out["stopped"]
    assert out["all_acked_pending"] and out["extra_pending"] == 0, out
    assert out["pending_after_restart"] == out["acked"] + 2, out


def test_file_size_limit_while_appending(journal):
    out = result(run_fault("fill", journal, "fsize"))
    check_fill(out, journal)
    # Writes that crossed the limit came back short and were cut back...
    assert out["short_writes"] > 0 and errno.ENOSPC in out["errnos"], out
    # ...and at the limit exactly, write() failed with EFBIG, for both.
    assert errno.EFBIG in out["errnos"], out
    efbig = [e for e in out["errors"] if e["errno"] == errno.EFBIG]
    assert {e["who"] for e in efbig} == {"owner", "producer"}
    assert all("limit" in advice(e["msg"], journal) for e in efbig), efbig
    assert "limit" in advice(out["compact_error"], journal), out


def _can_mount_tmpfs() -> str | None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare(1) to mount a tmpfs in a private mount namespace"
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return "cannot mount a tmpfs here: %s" % r.stderr.strip()
    return None


def in_tmpfs(tmp_path, size: str, *args: str, setup: str = "true") -> dict:
    """Run a scenario of mp_faults.py in a tmpfs of ``size`` mounted in a private mount
    namespace ($1 in ``args`` and ``setup`` is the mount point)."""
    why = _can_mount_tmpfs()
    if why:
        pytest.skip(why)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=%s tmpfs "$1" && %s && exec "$2" "$3" "$@"' % (size, setup)
    cmd = ["unshare", "-m", "sh", "-c", script.replace('"$@"', " ".join('"%s"' % a for a in args)),
           "sh", str(mnt), sys.executable, FAULTS]
    return result(subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=python_env()))


def test_disk_full_while_appending(tmp_path):
    # 96 KiB of tmpfs, 64 KiB of it taken by a filler the scenario deletes to free space.
    out = in_tmpfs(tmp_path, "96k", "fill", "$1/j.json", "diskfull", "$1/filler",
                   setup='head -c 65536 /dev/zero > "$1/filler"')
    journal = str(tmp_path / "mnt" / "j.json")
    check_fill(out, journal)
    assert out["errnos"] == [errno.ENOSPC], out
    assert all("free" in advice(e["msg"], journal) for e in out["errors"]), out
    assert "free disk space" in advice(out["compact_error"], journal), out


def test_owner_starts_on_a_full_disk(tmp_path):
    out = in_tmpfs(tmp_path, "64k", "start-on-full-disk", "$1/j.json")
    journal = str(tmp_path / "mnt" / "j.json")
    # No room for its pid in the lock file: it owns the journal all the same...
    assert "start_error" not in out, out
    assert out["owner"] and out["pending"], out
    # ...a second owner is refused, without a pid to name...
    assert "owned by another process" in out["second_owner"], out
    # ...an append fails plainly, and works once there is room.
    assert "free" in advice(out["delay_error"], journal), out
    assert out["after_freeing"] and out["stopped"], out


def test_journal_on_a_read_only_filesystem(tmp_path):
    out = in_tmpfs(tmp_path, "64k", "read-only-fs", "$1/j.json")
    journal = str(tmp_path / "mnt" / "j.json")
    for what, path in (("owner", journal), ("producer", journal), ("new", journal + ".new")):
        assert out[what]["errno"] == errno.EROFS, out
        assert "read-only" in advice(out[what]["msg"], path), out


# -- permissions -----------------------------------------------------------------


@pytest.fixture
def public_dir():
    """A root-owned 0755 directory outside pytest's 0700 tree, so `nobody` can reach it."""
    if os.geteuid() != 0:
        pytest.skip("dropping to the user nobody needs root")
    d = tempfile.mkdtemp(prefix="wheelq-faults-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(scenario, path):
    return result(run_fault("as-nobody", scenario, path))


def test_journal_in_a_read_only_directory(public_dir):
    path = os.path.join(public_dir, "tasks.json")
    out = _as_nobody("create-in-readonly-dir", path)
    assert out["uid"] == 65534
    assert out["error"] == "PermissionError" and out["errno"] == errno.EACCES, out
    assert "permissions" in advice(out["msg"], path), out
    assert not out["created"]


def test_permission_denied_on_the_journal_file(public_dir):
    path = os.path.join(public_dir, "tasks.json")
    create_journal(path)  # root's journal, mode 0600
    assert os.stat(path).st_mode & 0o777 == 0o600
    out = _as_nobody("open-unreadable-file", path)
    assert out["error"] == "PermissionError" and out["errno"] == errno.EACCES, out
    assert "permissions" in advice(out["msg"], path), out


def test_writable_journal_in_a_read_only_directory(public_dir):
    """The file is nobody's, the directory is not: adding works, owning does not."""
    path = os.path.join(public_dir, "tasks.json")
    create_journal(path)
    os.chown(path, 65534, 65534)
    out = _as_nobody("existing-journal-readonly-dir", path)
    # The owner lock cannot be created: the error names the lock and the fix...
    assert out["start_error"] == "PermissionError", out
    assert "directory must be writable" in advice(out["start_msg"], path + ".lock")
    # ...and the refused wheel still adds tasks as a producer.
    records = journal_bytes_ok(path)
    assert [r["id"] for r in records if r["op"] == "add"] == [out["producer_added"], out["still_producer"]]
    # With the lock file present it can own the journal, but not compact it.
    with open(path + ".lock", "w"):
        pass
    os.chown(path + ".lock", 65534, 65534)
    out = _as_nobody("compact-readonly-dir", path)
    assert out["compact_error"] == "PermissionError", out
    words = advice(out["compact_msg"], path)
    assert "unchanged" in words and "permission denied" in words.lower(), out
    # The advice, not only strerror, is about permissions.
    assert "permissions" in words.split(";", 1)[1], out
    assert out["unchanged"] and not out["tmp_left"] and out["usable"] and out["stopped"], out
    journal_bytes_ok(path)


def test_immutable_directory_even_for_root(tmp_path, journal, clock):
    """``chattr +i``: a directory that root cannot write either."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr(1)")
    w = wheelq.Wheel(journal, clock=clock)
    t = w.task(name="fault.t")(lambda: None)
    w.start()
    h = t.delay(count_down=100)
    r = subprocess.run(["chattr", "+i", str(tmp_path)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        w.stop()
        pytest.skip("chattr +i does not work here: %s" % r.stderr.strip())
    try:
        new = str(tmp_path / "new.json")
        with pytest.raises(PermissionError) as e:
            wheelq.Wheel(new).stats()
        assert "permissions" in advice(str(e.value), new)
        before = open(journal, "rb").read()
        with pytest.raises(PermissionError) as e:
            w.compact()
        assert "unchanged" in advice(str(e.value), journal)
        assert "permissions" in advice(str(e.value), journal).split(";", 1)[1]
        assert open(journal, "rb").read() == before
        h2 = t.delay(count_down=100)  # appending to the file itself still works
        assert {i.id for i in w.pending()} == {h.id, h2.id}
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path)], check=True, timeout=30)
        assert w.stop(timeout=10)
    assert not os.path.exists(journal + ".tmp")


def test_journal_path_is_a_directory_or_missing(tmp_path):
    with pytest.raises(IsADirectoryError) as e:
        wheelq.Wheel(tmp_path).stats()
    assert "give a file path" in advice(str(e.value), str(tmp_path))
    missing = str(tmp_path / "no" / "such" / "dir" / "tasks.json")
    with pytest.raises(FileNotFoundError) as e:
        wheelq.Wheel(missing).stats()  # the first use opens it
    assert "directory exists" in advice(str(e.value), missing)


# -- fsync fails -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "producer"])
def test_fsync_failure_with_fsync_always(make_wheel, journal, clock, failing_fsync, role):
    ran = []
    owner = make_wheel(journal, fsync="always" if role == "owner" else "batch")
    run = owner.task(name="fault.t")(ran.append)
    owner.start()
    if role == "owner":
        w, t = owner, run
    else:
        w = make_wheel(journal, fsync="always")
        t = w.task(name="fault.t")(ran.append)
    failing_fsync.fail = False
    t.delay("ok", count_down=100)
    failing_fsync.fail = True
    with pytest.raises(OSError) as e:
        t.delay("bad", count_down=100)
    assert e.value.errno == errno.EIO
    assert "fsync failed" in str(e.value) and "disk" in advice(str(e.value), journal)
    records = journal_bytes_ok(journal)
    bad = [r["id"] for r in records if r["op"] == "add" and r["args"] == ["bad"]]
    # The add reached the file but was taken back: a cancel follows it.
    assert len(bad) == 1 and {"op": "cancel", "id": bad[0]} in [
        {k: v for k, v in r.items() if k != "p"} for r in records]
    assert [i.args for i in w.pending()] == [("ok",)]
    # Usable again once fsync works.
    failing_fsync.fail = False
    t.delay("after", count_down=100)
    clock.advance(100)
    assert owner.join(timeout=10)
    assert sorted(ran) == ["after", "ok"]  # never "bad"


def test_fsync_failure_in_batch_mode_is_logged_and_the_wheel_goes_on(make_wheel, journal, clock,
                                                                     failing_fsync, caplog):
    ran = []
    w = make_wheel(journal, fsync="batch")
    t = w.task(name="fault.t")(ran.append)
    w.start()
    with caplog.at_level(logging.ERROR, logger="wheelq"):
        for i in range(5):
            t.delay(i)  # batch mode: delay() does not fsync
        clock.advance(1)
        assert w.join(timeout=10)
        wait_for(lambda: failing_fsync.failed > 0, 10, "the timer's fsync")
        wait_for(lambda: any("fsync failed" in r.getMessage() or "fsync failed" in str(r.exc_info)
                             for r in caplog.records), 10, "the failure to be logged")
    assert sorted(ran) == list(range(5))
    failing_fsync.fail = False
    calls = failing_fsync.calls
    t.delay(5)
    clock.advance(1)
    assert w.join(timeout=10)
    wait_for(lambda: failing_fsync.calls > calls, 10, "a successful fsync")
    assert sorted(ran) == list(range(6))
    journal_bytes_ok(journal)


def test_fsync_failure_during_compaction_leaves_the_journal_unchanged(make_wheel, journal, clock,
                                                                      failing_fsync):
    failing_fsync.fail = False
    w = make_wheel(journal)
    t = w.task(name="fault.t")(lambda i: None)
    w.start()
    for i in range(50):
        t.delay(i)
    keep = [t.delay(i, count_down=100).id for i in range(5)]
    clock.advance(1)
    assert w.join(timeout=10)
    before = open(journal, "rb").read()
    inode = os.stat(journal).st_ino
    failing_fsync.fail = True
    with pytest.raises(OSError) as e:
        w.compact()
    assert "unchanged" in advice(str(e.value), journal)
    assert open(journal, "rb").read() == before and os.stat(journal).st_ino == inode
    assert not os.path.exists(journal + ".tmp")
    # Still usable, and compaction works once fsync does.
    extra = t.delay("x", count_down=100).id
    failing_fsync.fail = False
    assert w.compact() == 6
    assert os.stat(journal).st_ino != inode
    assert sorted(r["id"] for r in journal_bytes_ok(journal)) == sorted(keep + [extra])
    assert sorted(i.id for i in w.pending()) == sorted(keep + [extra])


def test_fsync_failure_on_stop_still_releases_the_journal(make_wheel, journal, clock, failing_fsync,
                                                         caplog):
    w = make_wheel(journal)
    t = w.task(name="fault.t")(lambda: None)
    w.start()
    h = t.delay(count_down=100)
    with caplog.at_level(logging.ERROR, logger="wheelq"):
        assert w.stop(timeout=10)
    assert any("closing journal" in r.getMessage() for r in caplog.records)
    failing_fsync.fail = False
    again = make_wheel(journal)
    again.start()  # the owner lock was released
    assert [i.id for i in again.pending()] == [h.id]


# -- a producer killed inside its write() ------------------------------------------


def test_owner_cuts_a_torn_producer_line_before_its_own_append(make_wheel, journal, clock, caplog):
    """The bytes a producer killed mid-write leaves (tests/test_multiprocess.py tears a
    journal that way for real); here they are written directly, so the test is exact."""
    ran = []
    w = make_wheel(journal)
    t = w.task(name="fault.t")(ran.append)
    w.start()
    before = t.delay("before", count_down=100)
    torn = b'{"p":1,"op":"add","id":"torn","task":"fault.t","due":1000100.0,"args":["x'
    with open(journal, "ab") as f:
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="wheelq"):
        acked = t.delay("acked", count_down=100)  # the owner's own append
    assert any("torn" in r.getMessage() for r in caplog.records)
    records = journal_bytes_ok(journal)  # whole lines only: nothing was glued on
    assert [r["id"] for r in records] == [before.id, acked.id]
    # A producer appends cleanly after it, and a new owner finds all three.
    p = make_wheel(journal)
    pt = p.task(name="fault.t")(lambda x: None)
    added = pt.delay("producer", count_down=100)
    assert w.stop(timeout=10)
    again = make_wheel(journal)
    again.task(name="fault.t")(ran.append)
    again.start()
    assert {i.id for i in again.pending()} == {before.id, acked.id, added.id}
    clock.advance(100)
    assert again.join(timeout=10)
    assert sorted(ran) == ["acked", "before", "producer"]
