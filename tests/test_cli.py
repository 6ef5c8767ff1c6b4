"""The command line, run as a user runs it: `python -m wheelq ...` in a subprocess."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

import wheelq
from conftest import python_env


def wq(*args, cwd=None, timeout=30, env=None) -> subprocess.CompletedProcess:
    """Run `python -m wheelq ARGS...` and capture its output."""
    return subprocess.run([sys.executable, "-m", "wheelq", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or python_env(), cwd=cwd)


def ok(*args, **kw) -> subprocess.CompletedProcess:
    r = wq(*args, **kw)
    assert r.returncode == 0, "wheelq %s exited %d\nstdout: %s\nstderr: %s" % (
        " ".join(map(str, args)), r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def data(*args, **kw):
    """Run a command with --json and return what it printed, parsed."""
    return json.loads(ok(*args, "--json", **kw).stdout)


def error(*args, words=(), code=None, **kw) -> str:
    """Run a command that must fail with one line on stderr; return that line."""
    r = wq(*args, **kw)
    assert r.returncode != 0, "wheelq %s should have failed: %s" % (args, r.stdout)
    if code is not None:
        assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, "want one line on stderr, got:\n" + r.stderr
    assert lines[0].startswith("wheelq: error: "), lines[0]
    for w in words:
        assert w in lines[0], "%r not in %r" % (w, lines[0])
    return lines[0]


class Output:
    """Lines of a child's stream, read by a thread, so every wait can have a timeout."""

    def __init__(self, stream):
        self.seen: list = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, pattern: str, timeout: float = 20, count: int = 1) -> str:
        """Wait until ``count`` lines so far match ``pattern``; fail after ``timeout`` seconds.

        Returns the last matching line.  Lines seen earlier count too, so the
        order of several expected lines does not matter.
        """
        deadline = time.monotonic() + timeout
        found = [line for line in self.seen if re.search(pattern, line)]
        while len(found) < count:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError("no line matching %r within %ss; got:\n%s"
                                     % (pattern, timeout, "".join(self.seen))) from None
            if line is None:
                self._lines.put(None)  # later calls see the end too
                raise AssertionError("the stream ended before a line matching %r; got:\n%s"
                                     % (pattern, "".join(self.seen)))
            self.seen.append(line)
            if re.search(pattern, line):
                found.append(line)
        return found[count - 1]

    def rest(self, timeout: float = 10) -> str:
        """Everything up to the end of the stream."""
        try:
            while True:
                line = self._lines.get(timeout=timeout)
                if line is None:
                    self._lines.put(None)
                    break
                self.seen.append(line)
        except queue.Empty:
            pass
        return "".join(self.seen)


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and
    # the child would inherit that; Ctrl-C must reach it as it does in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(args, cwd=None, env=None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env or python_env(), preexec_fn=_default_sigint)


def finish(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 15) -> int:
    """Send ``sig`` and return the exit status (killing the child if it hangs)."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("the process did not stop within %ss of %s" % (timeout, sig))


# -- journals to work on ---------------------------------------------------------------


def failing(x):
    raise RuntimeError("card declined for %s" % x)


def make_dead_letters(path, ids, now):
    """Run an owner on a manual clock until tasks ``ids`` are dead letters."""
    clock = wheelq.ManualClock(start=now)
    w = wheelq.Wheel(path, clock=clock)
    charge = w.task(name="shop.charge")(failing)
    w.start()
    try:
        for tid in ids:
            charge.delay(tid, task_id=tid)
        clock.advance(1)
        assert w.join(timeout=10)
        assert [t.id for t in w.failed()] == sorted(ids)
    finally:
        assert w.stop(timeout=10)


def add_tasks(path, now, dues: dict, name="shop.close_order"):
    """Append tasks as a producer: {task_id: seconds from now}."""
    w = wheelq.Wheel(path, clock=wheelq.ManualClock(start=now))
    t = w.task(name=name)(lambda order: None)
    for tid, offset in dues.items():
        t.delay(tid, count_down=offset, task_id=tid) if offset >= 0 else \
            t.delay(tid, eta=now + offset, task_id=tid)
    w.stop()


SHOP_DUES = {"close-1": 90, "close-2": 95, "close-3": 100, "late-1": 30 * 60 + 30,
             "big-1": 2.5 * 3600, "big-2": 2.5 * 3600, "big-3": 2.5 * 3600,
             "big-4": 2.5 * 3600, "big-5": 2.5 * 3600, "far-1": 3 * 86400,
             "far-2": 3 * 86400, "old-1": -100}


@pytest.fixture
def shop(tmp_path):
    """A journal with two dead letters and twelve pending tasks at known times from now."""
    path = str(tmp_path / "shop.json")
    now = time.time()
    make_dead_letters(path, ["dead-0", "dead-1"], now)
    add_tasks(path, now, SHOP_DUES)
    return path


def lines_of(path) -> list:
    with open(path, "rb") as f:
        return f.read().split(b"\n")


# -- status ----------------------------------------------------------------------------


def clock_rows(dues, now, unit, count):
    """Tasks per row, row 0 starting on the clock minute (unit 60) or hour (3600) of ``now``."""
    local = datetime.fromtimestamp(now)
    start = now - (local.second + local.microsecond / 1e6) if unit == 60 else \
        now - (local.minute * 60 + local.second + local.microsecond / 1e6)
    rows = [0] * count
    for due in dues:
        i = int((due - start) // unit)
        if due >= now and i < count:
            rows[i] += 1
    return rows


def test_status_json_counts_and_histogram(shop):
    s = data("status", shop)
    assert (s["pending"], s["overdue"], s["failed"]) == (12, 1, 2)
    assert s["next_due"] < s["now"]  # old-1 is overdue
    assert len(s["per_minute"]) == 60 and len(s["per_hour"]) == 24
    dues = [t["due"] for t in data("list", shop) if t["status"] == "pending"]
    assert s["per_minute"] == clock_rows(dues, s["now"], 60, 60)
    assert s["per_hour"] == clock_rows(dues, s["now"], 3600, 24)
    assert sum(s["per_minute"]) == 4 and sum(s["per_hour"]) == 9
    assert sum(s["per_minute"][1:3]) == 3  # close-1..3, 90 to 100 s away: the next or the one after
    assert s["later"] == 2


def test_status_rows_start_on_the_clock_minute(tmp_path):
    """A task due at 12:34:34 is on the row labelled 12:34, whatever the time of the call."""
    path = str(tmp_path / "clock.json")
    now = time.time()
    due = now - now % 60 + 60 * 5 + 34  # 34 s past a minute, 4 to 5 minutes from now
    add_tasks(path, now, {"x": due - now})
    out = ok("status", path).stdout
    label = datetime.fromtimestamp(due).strftime("%H:%M")
    assert re.search(r"^  %s \+\d+m +1 #$" % label, out, re.M), out


def test_status_text(shop):
    out = ok("status", shop).stdout
    assert re.search(r"^pending\s+12 \(1 overdue\)$", out, re.M), out
    assert re.search(r"^failed\s+2\b", out, re.M), out
    assert re.search(r"^next due\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(1m \d+s ago\)$", out, re.M), out
    minutes, hours = out.split("\n\n")[1:3]
    assert minutes.startswith("Due in the next hour, per minute (each # is 1 task)")
    assert hours.startswith("Due in the next day, per hour (each # is 1 task)")
    assert re.search(r"^  \d\d:\d\d \+[12]m +[123] #+$", minutes, re.M), minutes
    assert re.search(r"^  \d\d:\d\d \+3[01]m +1 #$", minutes, re.M), minutes
    assert re.search(r"^  \d\d:\d\d \+[23]h +5 #####$", hours, re.M), hours
    assert re.search(r"^  later: 2$", hours, re.M), hours
    # Runs of empty rows fold into one, so the hour fits on a screen.
    assert re.search(r"\+[234]m\.\.\+(29|30)m +0$", minutes, re.M), minutes
    for block in (minutes, hours):
        rows = [r for r in block.splitlines()[1:] if r.startswith("  ") and "later" not in r]
        assert len({len(r.split("#")[0]) for r in rows if "#" in r}) == 1, "bars not aligned:\n" + block
        assert len({r.index(":") for r in rows}) == 1


def test_status_scale_stays_readable(tmp_path):
    path = str(tmp_path / "busy.json")
    now = time.time()
    add_tasks(path, now, {"a%d" % i: 150 for i in range(200)})
    add_tasks(path, now, {"b%d" % i: 400 for i in range(7)})
    out = ok("status", path).stdout
    assert "per minute (each # is 5 tasks)" in out
    assert re.search(r"\+[23]m +200 #{40}$", out, re.M), out
    assert re.search(r"\+[67]m +7 ##$", out, re.M), out  # 7 tasks round up to two marks
    assert max(data("status", path)["per_minute"]) == 200


def test_status_of_an_empty_journal(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text('{"wheelq": 1}\n')
    out = ok("status", path).stdout
    assert re.search(r"^pending\s+0 \(0 overdue\)$", out, re.M)
    assert re.search(r"^next due\s+-$", out, re.M)
    assert data("status", path)["next_due"] is None


# -- list ------------------------------------------------------------------------------


def test_list(shop):
    tasks = data("list", shop)
    assert len(tasks) == 14
    assert [t["due"] for t in tasks] == sorted(t["due"] for t in tasks)
    assert tasks[0]["id"] == "old-1"
    by_id = {t["id"]: t for t in tasks}
    assert by_id["close-1"] == {"id": "close-1", "name": "shop.close_order", "args": ["close-1"],
                                "kwargs": {}, "due": by_id["close-1"]["due"], "status": "pending",
                                "tries": 0, "error": None, "result": None, "schedule": None}
    dead = data("list", shop, "--failed")
    assert [t["id"] for t in dead] == ["dead-0", "dead-1"]
    assert all(t["status"] == "failed" and t["tries"] == 1 for t in dead)
    assert "RuntimeError: card declined for dead-0" == dead[0]["error"]
    assert [t["id"] for t in data("list", shop, "--task", "shop.charge")] == ["dead-0", "dead-1"]
    assert len(data("list", shop, "--task", "shop.*")) == 14
    assert data("list", shop, "--task", "nothing") == []

    r = ok("list", shop, "--limit", "3")
    assert "showing 3 of 14" in r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split()[:2] == ["ID", "TASK"] and len(rows) == 4
    assert rows[1].split()[0] == "old-1" and "overdue" in rows[1]
    text = ok("list", shop, "--failed").stdout
    assert "RuntimeError: card declined for dead-1" in text and "close-1" not in text
    error("list", shop, "--limit", "0", code=2)


# -- read-only commands change nothing --------------------------------------------------


def test_read_only_commands_do_not_touch_the_file(shop):
    with open(shop, "ab") as f:
        f.write(b'{"op":"done","id":"clo')  # a torn tail: an owner would cut it
    before = open(shop, "rb").read()
    st = os.stat(shop)
    for lock in (shop + ".lock",):
        if os.path.exists(lock):
            os.unlink(lock)
    assert data("status", shop)["pending"] == 12
    assert len(data("list", shop)) == 14
    assert wq("check", shop).returncode == 1  # the torn line is reported
    after = os.stat(shop)
    assert open(shop, "rb").read() == before
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
    assert not os.path.exists(shop + ".lock") and not os.path.exists(shop + ".corrupt")


# -- errors: one line, no traceback -------------------------------------------------------


def test_unknown_command():
    error("frobnicate", words=["invalid choice: 'frobnicate'"], code=2)
    error("status", words=["required: PATH"], code=2)


@pytest.mark.parametrize("argv", [["status"], ["list"], ["check"], ["cancel", "x"],
                                  ["requeue", "--failed"], ["purge", "--failed"],
                                  ["compact"], ["repair"]])
def test_missing_journal(tmp_path, argv):
    path = tmp_path / "nope.json"
    error(argv[0], path, *argv[1:], words=["no journal at %s" % path])
    assert os.listdir(tmp_path) == []  # not created, no lock file either


def test_path_is_a_directory(tmp_path):
    for cmd in ("status", "list", "check", "compact", "repair"):
        error(cmd, tmp_path, words=["is a directory"])
    error("cancel", tmp_path, "x", words=["is a directory"])


def test_not_a_journal(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("shopping list\nmilk\n")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    for cmd in ("status", "list", "check", "compact", "repair"):
        error(cmd, other, words=["not a wheelq journal"])
        error(cmd, empty, words=["empty, not a wheelq journal"])
    error("cancel", other, "x", words=["not a wheelq journal"])
    assert other.read_text() == "shopping list\nmilk\n" and empty.read_bytes() == b""


def test_corrupt_journal_names_the_line(shop):
    lines = lines_of(shop)
    lines[4] = b'{"op":"add",oops'
    with open(shop, "wb") as f:
        f.write(b"\n".join(lines))
    for cmd in ("status", "list", "compact"):
        error(cmd, shop, words=["line 5", "wheelq repair"])
    error("cancel", shop, "close-1", words=["line 5"])


def test_bad_ids(shop):
    error("cancel", shop, "no-such-id", words=["no task with id 'no-such-id'", "wheelq list"])
    error("cancel", shop, "dead-0", words=["dead letter"])
    error("requeue", shop, "close-1", words=["not a dead letter"])
    error("purge", shop, "no-such-id", words=["no task with id"])
    error("requeue", shop, words=["either a task id or --failed"], code=2)
    error("purge", shop, "dead-0", "--failed", words=["not both"], code=2)
    error("requeue", shop, "dead-0", "--count-down", "-1", words=["count-down"])


# -- changing tasks with no owner running ----------------------------------------------------


def test_cancel_requeue_purge_without_owner(shop):
    assert ok("cancel", shop, "close-1").stdout == "cancelled close-1\n"
    assert lines_of(shop)[-2] == b'{"op":"cancel","id":"close-1"}'
    assert "close-1" not in {t["id"] for t in data("list", shop)}

    assert data("requeue", shop, "dead-0") == {"path": shop, "op": "requeue", "ids": ["dead-0"],
                                               "owner_pid": None}
    assert [t["id"] for t in data("list", shop, "--failed")] == ["dead-1"]
    info = {t["id"]: t for t in data("list", shop)}["dead-0"]
    assert (info["status"], info["tries"], info["error"]) == ("pending", 0, None)

    assert ok("purge", shop, "--failed").stdout == "purged dead-1\n"
    assert data("list", shop, "--failed") == []
    assert ok("purge", shop, "--failed").stdout == "no dead letters in %s\n" % shop
    assert data("status", shop)["pending"] == 12  # 12 - close-1 + dead-0


def test_requeue_all_dead_letters(tmp_path):
    path = str(tmp_path / "j.json")
    make_dead_letters(path, ["a", "b", "c"], time.time())
    r = ok("requeue", path, "--failed", "--count-down", "5400")
    assert r.stdout.splitlines() == ["requeued a", "requeued b", "requeued c"]
    s = data("status", path)
    assert (s["pending"], s["failed"]) == (3, 0)
    assert sum(s["per_hour"][1:3]) == 3  # 90 minutes away: the next clock hour or the one after


def test_change_cuts_a_torn_tail_as_the_owner_would(shop):
    with open(shop, "ab") as f:
        f.write(b'{"op":"can')
    r = ok("cancel", shop, "close-2")
    assert "torn last line" in r.stderr
    assert lines_of(shop)[-2:] == [b'{"op":"cancel","id":"close-2"}', b""]
    assert ok("check", shop).returncode == 0


# -- while an owner runs ---------------------------------------------------------------------


def test_commands_while_an_owner_runs(tmp_path, make_wheel, clock):
    path = str(tmp_path / "owned.json")
    w = make_wheel(path, tick=1.0)
    ran = []
    close = w.task(name="shop.close_order")(ran.append)
    charge = w.task(name="shop.charge")(failing)
    h = close.delay(7, count_down=60)
    charge.delay(1, task_id="dead-a")
    charge.delay(2, task_id="dead-b")
    w.start()
    clock.advance(1)
    assert w.join(timeout=10)
    assert [t.id for t in w.failed()] == ["dead-a", "dead-b"]
    inode = os.stat(path).st_ino

    # Reading works while it runs.
    assert data("status", path)["failed"] == 2
    assert {t["id"] for t in data("list", path)} == {h.id, "dead-a", "dead-b"}

    # cancel goes through the journal, marked as a producer's record.
    r = ok("cancel", path, h.id)
    assert r.stdout.splitlines() == [
        "sent cancel %s" % h.id,
        "process %d owns %s: it takes this in at its next tick (a task it has already started "
        "runs to the end)" % (os.getpid(), path)]
    assert lines_of(path)[-2] == b'{"p":1,"op":"cancel","id":"%s"}' % h.id.encode()
    clock.advance(1)
    assert w.join(timeout=10)
    assert h.status() == "cancelled" and w.get(h.id) is None
    clock.advance(120)
    assert w.join(timeout=10)
    assert ran == []

    assert data("requeue", path, "dead-a")["owner_pid"] == os.getpid()
    assert data("purge", path, "dead-b")["ids"] == ["dead-b"]
    clock.advance(1)
    assert w.join(timeout=10)
    assert w.get("dead-a").status == "pending" and w.get("dead-a").tries == 0
    assert w.get("dead-b") is None and w.failed() == []

    # compact and repair rewrite the file: they refuse, and change nothing.
    with open(path, "ab") as f:
        f.write(b"garbage\n")  # something for repair to want to move
    before = open(path, "rb").read()
    for cmd in ("compact", "repair"):
        error(cmd, path, words=["owned by process %d" % os.getpid(), "stop the owner first"])
    assert open(path, "rb").read() == before and os.stat(path).st_ino == inode
    assert not os.path.exists(path + ".corrupt")
    assert w.is_owner


# -- check and repair -------------------------------------------------------------------------


def test_check(shop):
    lines = lines_of(shop)
    n = len(lines) - 1
    r = ok("check", shop)
    assert r.stdout == "%s: all %d lines readable; 12 pending, 2 dead letters\n" % (shop, n)
    lines[2] = b'{"op":"add","id":"x",'  # unreadable JSON
    lines[6] = b'{"op":"explode","id":"close-1"}'  # JSON, but not a record
    with open(shop, "wb") as f:
        f.write(b"\n".join(lines) + b'{"op":"do')  # and a torn tail
    r = wq("check", shop)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "wheelq: error: 3 unreadable line(s) in %s; `wheelq repair %s` moves them to %s.corrupt "
        "and keeps every good line" % (shop, shop, shop)]
    assert re.findall(r"^line (\d+):", r.stdout, re.M) == ["3", "7", str(n + 1)]
    assert "unknown op 'explode'" in r.stdout and "torn last line" in r.stdout
    bad = json.loads(wq("check", shop, "--json").stdout)
    assert not bad["ok"] and bad["lines"] == n + 1
    assert [(b["line"], b["text"]) for b in bad["bad"]] == [
        (3, '{"op":"add","id":"x",'), (7, '{"op":"explode","id":"close-1"}'), (n + 1, '{"op":"do')]
    # The numbers are those `sed -n Np` counts, the header being line 1.
    for b in bad["bad"]:
        sed = subprocess.run(["sed", "-n", "%dp" % b["line"], shop], capture_output=True, text=True)
        assert sed.stdout.rstrip("\n") == b["text"]


def test_repair_keeps_every_good_line(shop):
    good = lines_of(shop)[:-1]
    bad_lines = {3: b'{"op":"add","id":"x",', 8: b"", 12: b"\xff\xfe not utf-8"}
    lines = list(good)
    for n in sorted(bad_lines):
        lines.insert(n - 1, bad_lines[n])
    with open(shop, "wb") as f:
        f.write(b"\n".join(lines) + b"\n" + b'{"op":"do')
    r = ok("repair", shop)
    assert "moving 4 bad line(s)" in r.stderr
    assert re.findall(r"^moved line (\d+)", r.stdout, re.M) == ["3", "8", "12", str(len(lines) + 1)]
    assert open(shop, "rb").read() == b"\n".join(good) + b"\n"
    assert open(shop + ".corrupt", "rb").read() == b"".join(
        [bad_lines[n] + b"\n" for n in sorted(bad_lines)] + [b'{"op":"do\n'])
    assert os.stat(shop).st_mode & 0o777 == 0o600
    assert os.stat(shop + ".corrupt").st_mode & 0o777 == 0o600
    assert ok("check", shop).returncode == 0
    assert data("status", shop)["pending"] == 12

    # A second repair appends to PATH.corrupt; a clean journal is left alone.
    with open(shop, "ab") as f:
        f.write(b"second bad line\n" + lines_of(shop)[1] + b"\n")
    assert data("repair", shop)["moved"] == [
        {"line": len(good) + 1, "reason": "unreadable JSON", "text": "second bad line"}]
    assert open(shop + ".corrupt", "rb").read().endswith(b'{"op":"do\nsecond bad line\n')
    inode = os.stat(shop).st_ino
    assert "nothing to repair" in ok("repair", shop).stdout
    assert os.stat(shop).st_ino == inode


# -- compact ----------------------------------------------------------------------------------


def test_compact(tmp_path, make_wheel, clock):
    path = str(tmp_path / "busy.json")
    w = make_wheel(path)
    t = w.task(name="t")(lambda i: None)
    for i in range(50):
        t.delay(i)
    keep = [t.delay(i, count_down=3600).id for i in range(3)]
    w.start()
    clock.advance(1)
    assert w.join(timeout=10)
    assert w.stop(timeout=10)
    starts = sum(line.startswith(b'{"op":"start"') for line in lines_of(path))  # one a batch
    assert 1 <= starts <= 50
    assert len(lines_of(path)) - 1 == 1 + 53 + starts + 50
    total = 104 + starts

    r = ok("compact", path)
    assert "compacting %s (%d lines" % (path, total) in r.stderr
    assert re.match(r"compacted .*: %d lines -> 4, " % total, r.stdout)
    assert sorted(t["id"] for t in data("list", path)) == sorted(keep)
    assert len(lines_of(path)) - 1 == 4
    c = data("compact", path)
    assert (c["lines_before"], c["lines_after"]) == (4, 4)


def test_compact_of_a_big_journal_says_what_it_does(tmp_path):
    path = tmp_path / "big.json"
    filler = "x" * 200
    with open(path, "w") as f:
        f.write('{"wheelq": 1}\n')
        for i in range(5000):
            f.write('{"op":"add","id":"t%d","task":"t","due":1.0,"args":["%s"],"kwargs":{}}\n'
                    % (i, filler))
            f.write('{"op":"done","id":"t%d"}\n' % i)
    broken = tmp_path / "broken.json"
    broken.write_bytes(path.read_bytes() + b"not json\n" + b'{"op":"done","id":"t1"}\n')
    r = ok("compact", path)
    assert re.search(r"reading %s \(1\.\d MiB\)\.\.\." % re.escape(str(path)), r.stderr), r.stderr
    assert "compacting" in r.stderr
    assert path.read_bytes() == b'{"wheelq": 1}\n'
    r = ok("repair", broken)
    assert re.search(r"checking %s \(1\.\d MiB\)\.\.\." % re.escape(str(broken)), r.stderr)
    assert "moving 1 bad line(s) of %s" % broken in r.stderr
    assert len(lines_of(broken)) - 1 == 1 + 10000 + 1


# -- --json on every command that prints data ---------------------------------------------------


def test_json_before_the_command(shop):
    r = ok("--json", "status", shop)
    assert json.loads(r.stdout)["pending"] == 12
    assert json.loads(ok("--json", "check", shop).stdout)["ok"] is True


# -- run and demo ---------------------------------------------------------------------------------


TASKS_MODULE = '''
import wheelq

wheel = wheelq.Wheel("tasks.json", tick=0.05)

@wheel.task(name="hello")
def hello(who):
    print("hello", who, flush=True)
'''


def test_run_module_wheel(tmp_path):
    (tmp_path / "mytasks.py").write_text(TASKS_MODULE)
    add_tasks(str(tmp_path / "tasks.json"), time.time(), {"world": 0.2}, name="hello")
    proc = spawn([sys.executable, "-m", "wheelq", "run", "mytasks:wheel"], cwd=tmp_path)
    out, err = Output(proc.stdout), Output(proc.stderr)
    try:
        out.expect(r"^hello world$")
        err.expect(r"running mytasks:wheel \(pid %d\)" % proc.pid)
    finally:
        status = finish(proc, signal.SIGTERM)
    assert status == 0, err.rest()
    assert "stopped cleanly" in err.rest()
    assert data("list", tmp_path / "tasks.json") == []


def test_run_standby_takes_over_when_the_owner_stops(tmp_path, make_wheel):
    (tmp_path / "mytasks.py").write_text(TASKS_MODULE)
    journal = str(tmp_path / "tasks.json")
    owner = make_wheel(journal)  # on a manual clock: it never reaches the task's due time
    owner.start()
    add_tasks(journal, time.time(), {"world": 0}, name="hello")
    proc = spawn([sys.executable, "-m", "wheelq", "run", "--standby", "mytasks:wheel"], cwd=tmp_path)
    out, err = Output(proc.stdout), Output(proc.stderr)
    try:
        err.expect(r"running mytasks:wheel \(pid \d+\) as a standby")
        assert owner.stop(timeout=10)
        err.expect(r"standby took over")
        out.expect(r"^hello world$")
    finally:
        status = finish(proc, signal.SIGTERM)
    assert status == 0, err.rest()


def test_run_errors(tmp_path, make_wheel):
    (tmp_path / "mytasks.py").write_text(TASKS_MODULE)
    (tmp_path / "broken.py").write_text("import wheelq\nraise RuntimeError('bad config')\n")
    error("run", "nosuchmodule:wheel", cwd=tmp_path, words=["no module named 'nosuchmodule'"])
    error("run", "mytasks:nothing", cwd=tmp_path, words=["has no attribute 'nothing'"])
    error("run", "mytasks", cwd=tmp_path, words=["MODULE:WHEEL"], code=2)
    error("run", "mytasks:hello", cwd=tmp_path, words=["not a wheelq.Wheel"])
    error("run", "broken:wheel", cwd=tmp_path, words=["RuntimeError: bad config"])
    make_wheel(str(tmp_path / "tasks.json")).start()
    error("run", "mytasks:wheel", cwd=tmp_path,
          words=["owned by process %d" % os.getpid(), "--standby"])


def test_demo_stops_cleanly_on_ctrl_c(tmp_path):
    proc = spawn([sys.executable, "-m", "wheelq", "demo", "--journal", str(tmp_path / "d.json"),
                  "--tick", "0.1", "--max-delay", "1"])
    err = Output(proc.stderr)
    try:
        err.expect(r"received .*close_unpaid_order\(1\)")
        err.expect(r"finished ", count=2)
    finally:
        status = finish(proc, signal.SIGINT)
    assert status == 0, err.rest()
    assert "stopped cleanly" in err.rest()
    assert ok("check", tmp_path / "d.json").returncode == 0


def test_demo_is_the_default_command(tmp_path):
    env = python_env()
    env["TMPDIR"] = str(tmp_path)  # where the demo makes its journal
    proc = spawn([sys.executable, "-m", "wheelq"], env=env)
    err = Output(proc.stderr)
    try:
        err.expect(r"demo journal: ")
        err.expect(r"finished ")
    finally:
        status = finish(proc, signal.SIGTERM)
    assert status == 0, err.rest()
