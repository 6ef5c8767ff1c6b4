"""Shared fixtures: a ManualClock, a journal path, and a helper to run Python in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wheelq  # noqa: E402


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
        assert w.stop(timeout=10), "a wheel did not stop within 10 s"


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
