"""Shared fixtures: a ManualClock, a journal path, wheels that stop themselves, and the seams
fault-injection tests need (fsync, the journal's write count), so that tests use the public
API and these fixtures instead of private names."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wheelq  # noqa: E402

WAIT = 10  # seconds: the bound on every blocking wait in the tests


@pytest.fixture
def clock() -> wheelq.ManualClock:
    return wheelq.ManualClock()


@pytest.fixture
def journal(tmp_path: Path) -> str:
    return str(tmp_path / "tasks.json")


@pytest.fixture
def make_wheel(clock):
    """Build wheels on the manual clock and stop them all at the end of the test."""
    made = []

    def make(path=None, **kw):
        kw.setdefault("clock", clock)
        w = wheelq.Wheel(path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        assert w.stop(timeout=WAIT), "a wheel did not stop within %d s" % WAIT


def create_journal(path) -> None:
    """An empty journal at ``path``, created as any first use of a Wheel creates it."""
    w = wheelq.Wheel(path)
    w.stats()
    w.stop()


def writes(wheel: wheelq.Wheel) -> int:
    """How many appends (and deferred appends) the wheel's journal has handed out so far.

    Tests of group commit wait on it until the writers they started are in.
    """
    return wheel._store._written


def all_synced(wheel: wheelq.Wheel) -> bool:
    """Whether every write of the wheel's journal so far (others' lines it read included) is fsynced."""
    store = wheel._store
    return store._synced >= store._written


def journal_was_read(wheel: wheelq.Wheel) -> bool:
    """Whether this (producer's) wheel ever read the journal, for a view of its tasks."""
    store = wheel._store
    return store is not None and getattr(store, "_view", None) is not None


def journal_is_open(wheel: wheelq.Wheel) -> bool:
    store = wheel._store
    return store is not None and getattr(store, "fd", None) is not None


class FsyncSpy:
    """Counts fsync calls on journals; can hold them (``gate``) or make them fail (``fail``)."""

    def __init__(self, monkeypatch, gate=None):
        self.calls = 0
        self.failed = 0
        self.gate = gate
        self.fail = False
        self.fds: list = []
        real = os.fsync

        def fsync(fd):
            self.calls += 1
            self.fds.append(fd)
            if self.gate is not None and not self.gate.wait(WAIT):
                raise AssertionError("an fsync held by the test was never let go")
            if self.fail:
                self.failed += 1
                raise OSError(errno.EIO, "Input/output error")
            real(fd)

        monkeypatch.setattr(wheelq._FileStore, "_fsync", staticmethod(fsync))

    def hold(self) -> threading.Event:
        """Hold every fsync until the returned event is set."""
        self.gate = threading.Event()
        return self.gate


@pytest.fixture
def fsync_spy(monkeypatch) -> FsyncSpy:
    return FsyncSpy(monkeypatch)


@pytest.fixture
def failing_fsync(monkeypatch) -> FsyncSpy:
    """The journal's fsync fails with EIO while ``.fail`` is true (it starts true)."""
    spy = FsyncSpy(monkeypatch)
    spy.fail = True
    return spy


@pytest.fixture
def dir_syncs(monkeypatch) -> list:
    """The paths whose directory was fsynced (the call still happens)."""
    synced = []
    real = wheelq._fsync_dir
    monkeypatch.setattr(wheelq, "_fsync_dir", lambda p: (synced.append(p), real(p)))
    return synced


@pytest.fixture
def file_store():
    """Open a journal's store directly, as an owner holds it (for tests of group commit)."""
    opened = []

    def make(path, fsync="always"):
        store = wheelq._FileStore(str(path), fsync)
        store.open()
        store.deliver = lambda text, lineno, raws: None  # an owner's: others' lines go nowhere
        opened.append(store)
        return store

    yield make
    for store in opened:
        try:
            with store.lock:
                store.close()
        except OSError:
            pass


def python_env() -> dict:
    """Environment for subprocesses that import wheelq from the repository."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(code: str, *args: str, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Run a snippet of Python in a fresh interpreter and capture its output."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=python_env(), cwd=cwd)
