"""Real processes on one journal: an agent script, and the test-side handle that drives it.

Run as a script, this file is one process of a multi-process test:

    python tests/mp_agent.py owner    --journal J --runs R [--standby] ...
    python tests/mp_agent.py producer --journal J --ack A --count N ...

Both register the same task, ``mp.record(token)``, which appends one line
``token pid time`` to the shared runs file with a single ``O_APPEND`` write
(whole lines from several processes never interleave, and a SIGKILL does not
lose what reached the page cache).  A producer appends ``token`` to its ack
file only after ``delay()`` returned: that line is the acknowledgement.

The agent reports on stdout, one line per event (``READY``, ``OWNER``,
``LOG ...``, ``DONE ...``, ``STATS ...``), and exits when its stdin closes, so
an agent never outlives the test that started it.

Imported, it gives the tests ``Agent`` (a subprocess whose stdout lines can be
awaited with a deadline) and small readers for the runs and ack files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AGENT = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# Test side
# --------------------------------------------------------------------------


def agent_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Agent:
    """One agent subprocess; ``expect()`` waits for a stdout line with a deadline."""

    def __init__(self, role: str, *args: str, stderr_dir: str, name: str = ""):
        self.name = name or role
        self.stderr_path = os.path.join(stderr_dir, "%s-%d.err" % (self.name, time.monotonic_ns()))
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, AGENT, role, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, env=agent_env(), text=True, bufsize=1)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="mp-reader-%d" % self.pid, daemon=True)
        self._reader.start()
        self._seen = 0

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line (from where the last expect stopped) starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._seen, len(self.lines)):
                if self.lines[i] is not None and self.lines[i].startswith(prefix):
                    self._seen = i + 1
                    return self.lines[i]
            self._seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s (pid %d): no %r line within %.0f s\n%s"
                                     % (self.name, self.pid, prefix, timeout, self.diagnostics()))
            try:
                line = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.lines.append(None)
                raise AssertionError("%s (pid %d) exited (rc %s) before printing %r\n%s"
                                     % (self.name, self.pid, self.proc.wait(5), prefix, self.diagnostics()))
            self.lines.append(line)

    def drain_lines(self) -> list:
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            self.lines.append(line)
        return [ln for ln in self.lines if ln is not None]

    def diagnostics(self) -> str:
        self._err.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                err = f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            err = ""
        return "stdout: %s\nstderr tail: %s" % (self.drain_lines()[-20:], err)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM (a graceful stop) and wait; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("%s (pid %d) did not stop within %.0f s of SIGTERM\n%s"
                                 % (self.name, self.pid, timeout, self.diagnostics()))

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s (pid %d) did not exit within %.0f s\n%s"
                                 % (self.name, self.pid, timeout, self.diagnostics())) from None

    def close(self) -> None:
        """Kill if still running and release the pipes."""
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self._err.close()


def read_lines(path: str) -> list:
    """The complete lines of a file (a last line without newline was cut by a kill)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data[:data.rfind(b"\n") + 1].decode().splitlines()


def read_runs(path: str) -> list:
    """[(token, pid, time)] from a runs file, in the order they were written."""
    out = []
    for line in read_lines(path):
        if line.startswith("!"):
            continue
        token, pid, t = line.split()
        out.append((token, int(pid), float(t)))
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        pause.wait(interval)


def read_done_traces(path: str) -> set:
    """{(token, pid)} whose done record the owner ``pid`` had journaled (``--trace-done``)."""
    out = set()
    for line in read_lines(path):
        if line.startswith("!done "):
            _, pid, *tokens = line.split()
            out.update((t, int(pid)) for t in tokens)
    return out


def run_counts(path: str) -> Counter:
    return Counter(token for token, _, _ in read_runs(path))


# --------------------------------------------------------------------------
# Agent side
# --------------------------------------------------------------------------


def _say(*parts) -> None:
    os.write(1, (" ".join(str(p) for p in parts) + "\n").encode())


def _exit_on_eof() -> None:
    """Stop this agent (SIGTERM: a graceful stop) when the test closes our stdin."""
    def watch():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="mp-stdin-watch", daemon=True).start()


class _Echo(logging.Handler):
    """Copies wheelq's log records to stdout as ``LOG LEVEL message`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say("LOG", record.levelname, record.getMessage().replace("\n", " "))
        except OSError:
            pass


def _register(wheel, runs: str | None, block: str | None, work_ms: float = 0):
    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if runs else None
    never = threading.Event()
    pid = os.getpid()
    rng = random.Random()

    @wheel.task(name="mp.record")
    def record(token):
        os.write(fd, ("%s %d %.6f\n" % (token, pid, time.time())).encode())
        if token == block:
            _say("BLOCKED", token)
            never.wait()
        if token.startswith("spawn:"):
            # A task that adds a task: in an owner this is the owner's own append.
            child = token[len("spawn:"):]
            handle = record.delay(child, count_down=3600)
            _say("SPAWNED", child, handle.id)
        if work_ms:
            never.wait(rng.uniform(0, work_ms) / 1000)  # the task's "work": widens the in-flight window

    return record


def _owner(a) -> int:
    import wheelq

    wheel = wheelq.Wheel(a.journal, tick=a.tick, workers=a.workers, fsync=a.fsync)
    _register(wheel, a.runs, a.block, a.work_ms)
    compactions = [0]
    stop = threading.Event()

    def compactor():
        while not stop.wait(a.compact_every):
            if wheel.is_owner:
                try:
                    wheel.compact()
                    compactions[0] += 1
                except wheelq.WheelqError:
                    pass

    if a.compact_every:
        threading.Thread(target=compactor, name="mp-compactor", daemon=True).start()
    if a.trace_done:
        # After the outcomes of a batch are journaled, note which tasks they were,
        # so a test can tell "ran, done not yet journaled" from "journaled done".
        report = wheel._report
        fd = os.open(a.runs, os.O_WRONLY | os.O_APPEND)
        pid = os.getpid()

        def traced(outcomes, now=None):
            report(outcomes, now)
            recs = [getattr(o, "rec", o) for o in outcomes]  # (a plain success is its record)
            os.write(fd, ("!done %d %s\n" % (pid, " ".join(r.args[0] for r in recs))).encode())

        wheel._report = traced
    wheel.start(standby=a.standby)
    _say("READY", os.getpid(), "owner" if wheel.is_owner else "standby")
    if wheel.is_owner:
        _say("OWNER", os.getpid())
    else:
        def announce():
            while not stop.wait(0.005):
                if wheel.is_owner:
                    _say("OWNER", os.getpid())
                    return
        threading.Thread(target=announce, name="mp-announce", daemon=True).start()
    wheel.run_forever()
    stop.set()
    _say("COMPACTIONS", compactions[0])
    _say("STATS", json.dumps(wheel.stats()))
    return 0


def _producer(a) -> int:
    import wheelq

    wheel = wheelq.Wheel(a.journal)
    record = _register(wheel, None, None)
    ack = os.open(a.ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(a.seed)
    pause = threading.Event()
    canary = None
    if a.canary:
        canary = record.delay("canary-%s" % a.prefix, count_down=3600).id
    n = 0
    checks = 0
    while a.count is None or n < a.count:
        if a.stop_file and n % 20 == 0:
            if os.path.exists(a.stop_file):
                break
            pause.wait(a.pause)
        if a.wait_compaction_at is not None and n == a.wait_compaction_at:
            # Hold an fd to the current file until compaction replaces it, so
            # the next delay() must notice the new inode and reopen.
            inode = os.fstat(wheel._store.fd).st_ino  # the file this producer appends to
            deadline = time.monotonic() + 20
            while os.stat(a.journal).st_ino == inode:
                if time.monotonic() > deadline:
                    _say("ERROR no compaction within 20 s")
                    return 1
                pause.wait(0.005)
            _say("REPLACED", inode)
        token = "%s.%d" % (a.prefix, n)
        cd = rng.uniform(0, a.count_down_max) if a.count_down_max else 0
        record.delay(token, count_down=cd)
        os.write(ack, (token + "\n").encode())
        n += 1
        if canary is not None and n % 500 == 0:
            # The producer's view must still see the canary, whatever compaction did.
            info = wheel.get(canary)
            ids = {t.id for t in wheel.pending()}
            if info is None or info.status != "pending" or canary not in ids:
                _say("ERROR canary lost from the producer's view at", n, info)
                return 1
            checks += 1
    if canary is not None:
        if not wheel.cancel(canary):
            _say("ERROR could not cancel the canary")
            return 1
    store = wheel._store  # None if it never added a task
    _say("DONE", n, "reopened", store.reopened if store else 0,
         "read", "no" if store is None or store._view is None else "yes", "checks", checks)
    wheel.stop()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["owner", "producer"])
    p.add_argument("--journal", required=True)
    p.add_argument("--runs")
    p.add_argument("--tick", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fsync", default="batch")
    p.add_argument("--standby", action="store_true")
    p.add_argument("--compact-every", type=float, default=0)
    p.add_argument("--block")
    p.add_argument("--work-ms", type=float, default=0)
    p.add_argument("--trace-done", action="store_true")
    p.add_argument("--ack")
    p.add_argument("--count", type=int)
    p.add_argument("--prefix", default="t")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count-down-max", type=float, default=0)
    p.add_argument("--stop-file")
    p.add_argument("--pause", type=float, default=0.01)
    p.add_argument("--canary", action="store_true")
    p.add_argument("--wait-compaction-at", type=int)
    a = p.parse_args(argv)
    log = logging.getLogger("wheelq")
    log.setLevel(logging.INFO)
    log.addHandler(_Echo())
    _exit_on_eof()
    return _owner(a) if a.role == "owner" else _producer(a)


if __name__ == "__main__":
    sys.exit(main())
