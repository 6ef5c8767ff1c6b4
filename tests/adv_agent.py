"""Processes for tests/test_adversarial.py: owners, producers and recorders on one journal.

Run as a script, this file is one process of an adversarial test:

    python tests/adv_agent.py owner    --journal J [--append --ack A --prefix P] [--busy] ...
    python tests/adv_agent.py producer --journal J [--append --ack A --prefix P] [--big-kill MIB]
    python tests/adv_agent.py fork-producers --journal J --ack-dir D --children N --count N
    python tests/adv_agent.py standby-emfile --journal J --runs R
    python tests/adv_agent.py record-compaction --journal J --out LOG ...

Every process registers ``adv.record(token)``, which appends ``token pid`` to
the runs file with one ``O_APPEND`` write, and (owners) ``adv.poison``, a
task that kills its own process.  An appender (``--append``) calls
``delay()`` in a loop and writes each returned handle's id to its ack file
only after ``delay()`` returned: that line is the acknowledgement, and an
``O_APPEND`` write in the page cache survives the SIGKILL of its writer.

``--big-kill MIB`` makes one ``delay()`` of a MIB-mebibyte argument, with a
thread that SIGKILLs the process the moment the tail of the journal shows
the payload: the kernel stops the copy at a page boundary and the file keeps
a line with no end (tests/test_multiprocess.py tears a journal the same way).

Reports go to stdout, one line per event (``READY``, ``OWNER``, ``LOG ...``,
``KILLING``, ``ERROR ...``); an agent exits when its stdin closes.

Imported, it gives the tests ``AdvAgent`` (mp_agent's ``Agent`` for this script).
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import stat
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import mp_agent  # noqa: E402
from mp_agent import _Echo, _exit_on_eof, _say  # noqa: E402

SCRIPT = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# Test side
# --------------------------------------------------------------------------


class AdvAgent(mp_agent.Agent):
    """mp_agent's Agent, running this script."""

    def __init__(self, role: str, *args: str, stderr_dir: str, name: str = ""):
        saved = mp_agent.AGENT
        mp_agent.AGENT = SCRIPT  # Agent.__init__ reads it when it starts the process
        try:
            super().__init__(role, *args, stderr_dir=stderr_dir, name=name)
        finally:
            mp_agent.AGENT = saved

    def log_lines(self, level: str = "") -> list:
        return [ln for ln in self.drain_lines() if ln.startswith("LOG " + level)]


# --------------------------------------------------------------------------
# Agent side
# --------------------------------------------------------------------------


def _register(wheel, a):
    runs = os.open(a.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if a.runs else None
    never = threading.Event()
    pid = os.getpid()
    done = {"token": None, "event": threading.Event()}

    @wheel.task(name="adv.record")
    def record(token):
        if runs is not None:
            os.write(runs, ("%s %d\n" % (token, pid)).encode())
        if a.block and token == a.block:
            _say("BLOCKED", token)
            never.wait()
        if a.exit_after and token == a.exit_after:
            done["event"].set()

    @wheel.task(name="adv.poison", retries=a.poison_retries)
    def poison(token):
        if runs is not None:
            os.write(runs, ("%s %d\n" % (token, pid)).encode())
        if a.poison_mode == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)

    return record, done


def _appender(record, a, stop: threading.Event, count_down: float = 3600.0):
    """delay() in a loop; the ids of those that returned go to the ack file, ``--ack-batch``
    at a time (an id not written yet is simply not acknowledged: a kill loses no promise)."""
    ack = os.open(a.ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    done: list = []
    import wheelq
    try:
        while not stop.is_set():
            try:
                h = record.delay("%s.%d" % (a.prefix, n), count_down=count_down)
            except wheelq.WheelClosed:
                return
            except Exception as exc:  # reported: a test fails on any ERROR line
                _say("ERROR delay() raised %s: %s" % (type(exc).__name__, str(exc).replace("\n", " ")))
                stop.wait(0.01)
                continue
            done.append(h.id + "\n")
            n += 1
            if len(done) >= a.ack_batch:
                os.write(ack, "".join(done).encode())
                done.clear()
            if a.pause:
                stop.wait(a.pause)
    finally:
        if done:
            os.write(ack, "".join(done).encode())


def _busy(stop: threading.Event):
    x = 0
    while not stop.is_set():
        x += 1


def _big_kill(record, path: str, mib: int):
    """One delay() of ``mib`` MiB; SIGKILL this process while the kernel copies it."""
    payload = "x" * (mib << 20)
    marker = b"x" * 64

    def killer():
        fd, ino = None, None
        while True:
            try:
                st = os.stat(path)
                if st.st_ino != ino:
                    if fd is not None:
                        os.close(fd)
                    fd, ino = os.open(path, os.O_RDONLY), st.st_ino
                if st.st_size > 64 and os.pread(fd, 64, st.st_size - 64) == marker:
                    break  # the file ends inside our payload: the write is being copied
            except OSError:
                pass
        os.write(1, b"KILLING\n")
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()
    record.delay(payload, count_down=3600)
    os.write(1, b"WRITTEN\n")  # the write finished first: the test retries
    os.kill(os.getpid(), signal.SIGKILL)


def _owner(a) -> int:
    import wheelq

    kw = {}
    if a.queue_size:
        kw["queue_size"] = a.queue_size
    wheel = wheelq.Wheel(a.journal, tick=a.tick, workers=a.workers, fsync=a.fsync, **kw)
    record, done = _register(wheel, a)
    stop = threading.Event()
    try:
        wheel.start(standby=a.standby)
    except Exception as exc:
        _say("ERROR start() raised %s: %s" % (type(exc).__name__, str(exc).replace("\n", " ")))
        return 1
    _say("READY", os.getpid(), "owner" if wheel.is_owner else "standby")
    if wheel.is_owner:
        _say("OWNER", os.getpid())
    else:
        def announce():
            while not stop.wait(0.005):
                if wheel.is_owner:
                    _say("OWNER", os.getpid())
                    return
        threading.Thread(target=announce, daemon=True).start()
    if a.compact_every:
        def compactor():
            while not stop.wait(a.compact_every):
                try:
                    wheel.compact()
                except wheelq.WheelqError:
                    pass
                except Exception as exc:
                    _say("ERROR compact() raised %s: %s" % (type(exc).__name__, exc))
        threading.Thread(target=compactor, daemon=True).start()
    if a.busy:
        threading.Thread(target=_busy, args=(stop,), daemon=True).start()
    if a.fork_child or a.fork_delay:
        pid = os.fork()
        if pid == 0:  # the child: an app's worker process, forked after start()
            try:
                if a.fork_delay:
                    h = record.delay(a.fork_delay)
                    _say("CHILD", os.getpid(), "added", h.id, "owner" if wheel.is_owner else "producer")
                else:
                    _say("CHILD", os.getpid(), "sleeping")
                    threading.Event().wait(60)
            except BaseException as exc:
                _say("ERROR in the child: %s: %s" % (type(exc).__name__, exc))
                os._exit(1)
            os._exit(0)
    if a.append:
        threading.Thread(target=_appender, args=(record, a, stop), daemon=True).start()
    if a.big_kill:
        stop.wait(a.big_after)
        # Memory the kernel frees before the descriptors of a killed process (and with them
        # its owner lock): the moments when it is dead in all but its lock last longer.
        ballast = bytearray(a.ballast << 20) if a.ballast else None
        if ballast is not None:
            for i in range(0, len(ballast), 4096):
                ballast[i] = 1
        _big_kill(record, a.journal, a.big_kill)
    if a.exit_after:
        def exiter():
            # stop(), not a SIGTERM: a task that is due at start runs before run_forever()
            # has put its signal handlers in place, and the signal would kill the process.
            if done["event"].wait(30):
                wheel.stop()
        threading.Thread(target=exiter, daemon=True).start()
    wheel.run_forever()
    stop.set()
    _say("STATS", json.dumps(wheel.stats()))
    return 0


def _producer(a) -> int:
    import wheelq

    wheel = wheelq.Wheel(a.journal)
    record, _ = _register(wheel, a)
    stop = threading.Event()
    _say("READY", os.getpid(), "producer")
    if a.busy:
        threading.Thread(target=_busy, args=(stop,), daemon=True).start()
    if a.append:
        t = threading.Thread(target=_appender, args=(record, a, stop), daemon=True)
        t.start()
    if a.big_kill:
        _big_kill(record, a.journal, a.big_kill)
    threading.Event().wait()  # until stdin closes (SIGTERM) or SIGKILL
    return 0


def _fork_producers(a) -> int:
    """A producer Wheel built (and used) before fork(), then used in every child.

    ``--rounds``: the parent adds a task (so its descriptor is open: after a compaction it
    reopens the journal first), forks ``--children`` that each add ``--count`` tasks, waits
    for them, and does it again.  Each child acknowledges in ``ack<round>-<child>``.
    """
    import wheelq

    wheel = wheelq.Wheel(a.journal)
    record, _ = _register(wheel, a)
    bad = forked = 0
    for r in range(a.rounds):
        record.delay("%s.parent.%d" % (a.prefix, r))  # the children inherit its descriptor
        pids = []
        for i in range(a.children):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    ack = os.open(os.path.join(a.ack_dir, "ack%d-%d" % (r, i)),
                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    for n in range(a.count):
                        token = "%s.%d.%d.%d" % (a.prefix, r, i, n)
                        record.delay(token)
                        os.write(ack, (token + "\n").encode())
                except BaseException as exc:
                    _say("ERROR child %d: %s: %s" % (i, type(exc).__name__, exc))
                    code = 1
                os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            bad += status != 0
        forked += len(pids)
    _say("DONE", forked, "failed", bad)
    return 0


def _standby_emfile(a) -> int:
    """A standby that meets EMFILE for a while (its fd table full), then has files again."""
    import resource
    import wheelq

    wheel = wheelq.Wheel(a.journal, tick=a.tick)
    _register(wheel, a)
    wheel.start(standby=True)
    _say("READY", os.getpid(), "standby")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    fds = []

    def fill():
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            return exc.errno

    filled = fill()
    _say("FILLED", filled, len(fds))
    # Keep the table full: a slot the standby's own descriptor held a moment ago (it opens
    # the lock file, finds it taken, and closes it) is taken again at once.
    until = time.monotonic() + a.emfile_for
    while time.monotonic() < until:
        fill()
        time.sleep(0.002)
    for fd in fds:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    _say("FREED")
    stop = threading.Event()

    def announce():
        while not stop.wait(0.005):
            if wheel.is_owner:
                _say("OWNER", os.getpid())
                return
    threading.Thread(target=announce, daemon=True).start()
    wheel.run_forever()
    stop.set()
    _say("CLOSED", "owner" if wheel.is_owner else "not-owner")
    return 0


# -- a recorder of the system calls that make a journal durable ------------------------------


def _record_compaction(a) -> int:
    """Log every write, truncate, fsync, rename and directory fsync that touches the journal
    (and its ``.tmp``), in order, with each ``delay()`` that returned, while an owner compacts
    and a producer adds under fsync="always".  tests/test_adversarial.py builds the states a
    power cut could leave from that log.

    The wrappers are installed before wheelq is imported, so wheelq's own references to
    ``os.fsync`` and the rest are the wrappers.  A write and the log entry that records it
    are made under one lock, so the log's order is the file's.  A directory fsync is slowed
    down (outside that lock): the window between a rename and its fsync stays open.
    """
    J = os.path.abspath(a.journal)
    TMP = J + ".tmp"
    D = os.path.dirname(J)
    dir_ino = os.stat(D).st_ino
    log: list = []
    glock = threading.Lock()
    real = {n: getattr(os, n) for n in ("open", "write", "pwrite", "fsync", "ftruncate", "replace",
                                        "rename", "unlink")}
    tracked: set = set()

    def tracked_ino(fd):
        st = os.fstat(fd)
        return st.st_ino if st.st_ino in tracked and stat.S_ISREG(st.st_mode) else None

    with open(J, "rb") as f:
        data = f.read()
    ino0 = os.stat(J).st_ino
    tracked.add(ino0)
    log.append(["init", ino0, base64.b64encode(data).decode()])

    def w_open(path, flags, mode=0o777, *args, **kw):
        fd = real["open"](path, flags, mode, *args, **kw)
        if isinstance(path, str) and os.path.abspath(path) in (J, TMP):
            with glock:
                ino = os.fstat(fd).st_ino
                if ino not in tracked:
                    tracked.add(ino)
                    log.append(["new", ino, os.path.abspath(path)])
        return fd

    def w_write(fd, data):
        ino = tracked_ino(fd)
        if ino is None:
            return real["write"](fd, data)
        with glock:
            n = real["write"](fd, data)
            offset = os.lseek(fd, 0, os.SEEK_CUR) - n  # O_APPEND: where this write landed
            log.append(["write", ino, offset, base64.b64encode(bytes(data[:n])).decode()])
        return n

    def w_pwrite(fd, data, offset):
        ino = tracked_ino(fd)
        if ino is None:
            return real["pwrite"](fd, data, offset)
        with glock:
            n = real["pwrite"](fd, data, offset)
            log.append(["write", ino, offset, base64.b64encode(bytes(data[:n])).decode()])
        return n

    def w_ftruncate(fd, size):
        ino = tracked_ino(fd)
        if ino is None:
            return real["ftruncate"](fd, size)
        with glock:
            real["ftruncate"](fd, size)
            log.append(["trunc", ino, size])

    def w_fsync(fd):
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if st.st_ino != dir_ino:
                return real["fsync"](fd)
            with glock:
                begin = len(log)  # the names as of here are durable once it returns
            time.sleep(a.dir_delay)
            real["fsync"](fd)
            with glock:
                log.append(["dirsync", begin])
            return None
        if st.st_ino not in tracked:
            return real["fsync"](fd)
        with glock:  # nothing written to the file while it is synced: its content is exact
            real["fsync"](fd)
            log.append(["fsync", st.st_ino])

    def w_replace(src, dst, *args, **kw):
        s, d = os.path.abspath(src), os.path.abspath(dst)
        if d != J and s != J:
            return real["replace"](src, dst, *args, **kw)
        with glock:
            ino = os.lstat(src).st_ino
            real["replace"](src, dst, *args, **kw)
            log.append(["rename", s, d, ino])

    def w_rename(src, dst, *args, **kw):
        s, d = os.path.abspath(src), os.path.abspath(dst)
        if d != J and s != J:
            return real["rename"](src, dst, *args, **kw)
        with glock:
            ino = os.lstat(src).st_ino
            real["rename"](src, dst, *args, **kw)
            log.append(["rename", s, d, ino])

    def w_unlink(path, *args, **kw):
        p = os.path.abspath(path)
        if p != J:
            return real["unlink"](path, *args, **kw)
        with glock:
            real["unlink"](path, *args, **kw)
            log.append(["unlink", p])

    os.open, os.write, os.pwrite, os.fsync = w_open, w_write, w_pwrite, w_fsync
    os.ftruncate, os.replace, os.rename, os.unlink = w_ftruncate, w_replace, w_rename, w_unlink

    import wheelq

    def ack(tid):
        with glock:
            log.append(["ack", tid])

    owner = wheelq.Wheel(J, fsync="always", tick=0.05, workers=1)
    own = owner.task(name="adv.record")(lambda token: None)
    owner.start()
    producer = wheelq.Wheel(J, fsync="always")
    prod = producer.task(name="adv.record")(lambda token: None)
    stop = threading.Event()
    errors = []

    def adder(task, prefix, pause):
        n = 0
        while not stop.is_set():
            try:
                h = task.delay("%s%d" % (prefix, n), count_down=3600)
            except Exception as exc:
                errors.append("%s: %s" % (type(exc).__name__, exc))
                return
            ack(h.id)
            n += 1
            if pause:
                stop.wait(pause)

    threads = [threading.Thread(target=adder, args=(prod, "p", 0)),
               threading.Thread(target=adder, args=(prod, "q", 0)),
               threading.Thread(target=adder, args=(own, "o", 0.002))]
    for t in threads:
        t.start()
    compactions = 0
    for _ in range(a.compactions):
        stop.wait(a.compact_pause)
        try:
            owner.compact()
            compactions += 1
        except Exception as exc:
            errors.append("compact: %s: %s" % (type(exc).__name__, exc))
    stop.set()
    for t in threads:
        t.join(30)
    producer.stop()
    owner.stop(timeout=30)
    with open(a.out, "w") as f:
        for entry in log:
            f.write(json.dumps(entry) + "\n")
    _say("DONE", compactions, len(log), json.dumps(errors[:5]))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["owner", "producer", "fork-producers", "standby-emfile",
                                    "record-compaction"])
    p.add_argument("--journal", required=True)
    p.add_argument("--runs")
    p.add_argument("--ack")
    p.add_argument("--ack-dir")
    p.add_argument("--prefix", default="t")
    p.add_argument("--append", action="store_true")
    p.add_argument("--pause", type=float, default=0)
    p.add_argument("--ack-batch", type=int, default=1)
    p.add_argument("--busy", action="store_true")
    p.add_argument("--switch", type=float, default=0.001)
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue-size", type=int, default=0)
    p.add_argument("--fsync", default="batch")
    p.add_argument("--standby", action="store_true")
    p.add_argument("--block")
    p.add_argument("--exit-after")
    p.add_argument("--compact-every", type=float, default=0)
    p.add_argument("--big-kill", type=int, default=0)
    p.add_argument("--big-after", type=float, default=0.0)
    p.add_argument("--ballast", type=int, default=0)
    p.add_argument("--fork-child", action="store_true")
    p.add_argument("--fork-delay")
    p.add_argument("--poison-retries", type=int, default=0)
    p.add_argument("--poison-mode", default="kill", choices=["kill", "exit"])
    p.add_argument("--children", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--emfile-for", type=float, default=1.5)
    p.add_argument("--out")
    p.add_argument("--compactions", type=int, default=5)
    p.add_argument("--compact-pause", type=float, default=0.1)
    p.add_argument("--dir-delay", type=float, default=0.02)
    a = p.parse_args(argv)
    log = logging.getLogger("wheelq")
    log.setLevel(logging.INFO)
    log.addHandler(_Echo())
    if a.role in ("owner", "producer", "standby-emfile"):
        _exit_on_eof()  # the others end by themselves
    role = {"owner": _owner, "producer": _producer, "fork-producers": _fork_producers,
            "standby-emfile": _standby_emfile, "record-compaction": _record_compaction}[a.role]
    return role(a)


if __name__ == "__main__":
    sys.exit(main())
