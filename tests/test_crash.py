"""At least once across SIGKILL: a real subprocess is killed at random moments and restarted.

The child appends each task's tag to `acked` only after `delay()` returned, and each
task appends its tag to `ran` when it runs (O_APPEND writes reach the page cache, which
a SIGKILL does not lose).  After the kills, one last run drains the journal.  Every
acknowledged tag must have run at least once.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

from conftest import python_env

CHILD = r"""
import os, random, sys, threading, wheelq
path, outdir, run, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def out(name):
    return os.open(os.path.join(outdir, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
ran, acked = out("ran"), out("acked")
wheel = wheelq.Wheel(path, tick=0.02, workers=2)

@wheel.task(name="crash.work")
def work(tag):
    os.write(ran, (tag + "\n").encode())

wheel.start()
os.write(1, b"started\n")
for i in range(n):
    tag = "%d-%d" % (run, i)
    work.delay(tag, count_down=random.uniform(0, 0.3))
    os.write(acked, (tag + "\n").encode())
idle = threading.Event()
while True:
    s = wheel.stats()
    if s["pending"] + s["queued"] + s["running"] == 0:
        break
    wheel.join(timeout=0.1)
    idle.wait(0.01)
os.write(1, b"drained\n")
wheel.stop(timeout=10)
"""


def start(path, outdir, run, n):
    return subprocess.Popen([sys.executable, "-c", CHILD, path, str(outdir), str(run), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=python_env())


def tags(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def test_every_acknowledged_task_runs_at_least_once_across_sigkills(journal, tmp_path):
    rng = random.Random(os.environ.get("WHEELQ_CRASH_SEED", "wheelq"))
    kills = int(os.environ.get("WHEELQ_CRASH_KILLS", "25"))
    killed_while_running = 0
    for run in range(kills):
        proc = start(journal, tmp_path, run, rng.randint(50, 1500))
        try:
            assert proc.stdout.readline() == b"started\n", proc.stderr.read().decode()
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                killed_while_running += 1
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            proc.kill()
            proc.stdout.close()
            proc.stderr.close()
    assert killed_while_running >= kills // 2  # most kills really hit a busy process

    final = start(journal, tmp_path, kills, 0)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    assert out.endswith(b"drained\n")

    acked = tags(tmp_path / "acked")
    ran = tags(tmp_path / "ran")
    lost = set(acked) - set(ran)
    assert len(acked) > kills * 20
    assert not lost, "%d acknowledged tasks never ran, e.g. %s" % (len(lost), sorted(lost)[:5])
    duplicates = len(ran) - len(set(ran))
    print("kills=%d acked=%d ran=%d duplicates=%d" % (kills, len(acked), len(ran), duplicates))
