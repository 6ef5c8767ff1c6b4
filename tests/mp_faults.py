"""Fault scenarios that need a process of their own; run by tests/test_faults.py.

    python tests/mp_faults.py fill JOURNAL fsize
    python tests/mp_faults.py fill JOURNAL diskfull FILLER     (inside a tiny tmpfs)
    python tests/mp_faults.py start-on-full-disk JOURNAL       (inside a tiny tmpfs)
    python tests/mp_faults.py read-only-fs JOURNAL             (inside a tmpfs it remounts)
    python tests/mp_faults.py as-nobody SCENARIO JOURNAL

Each prints one JSON object on its last stdout line, for the test to check.
The checks that need the moment of the fault (the bytes of the file right
after a failed ``delay()``) are made here and reported.
"""
from __future__ import annotations

import json
import os
import random
import resource
import sys

import wheelq


def journal_lines(path: str) -> tuple:
    """(complete: bool, [records]): the file ends with a newline and every line is JSON."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.endswith(b"\n"):
        return False, []
    records = []
    for line in data.splitlines()[1:]:
        try:
            records.append(json.loads(line))
        except ValueError:
            return False, []
    return True, records


def added_ids(records: list) -> list:
    return [r["id"] for r in records if r["op"] == "add"]


def fill(path: str, how: str, filler: str | None = None) -> dict:
    """Add tasks from an owner and a producer until the file cannot grow; then free space."""
    clock = wheelq.ManualClock()
    ran = []
    owner = wheelq.Wheel(path, clock=clock, workers=1)
    own_task = owner.task(name="fault.t")(lambda payload: ran.append(payload))
    owner.start()
    producer = wheelq.Wheel(path, clock=clock)
    prod_task = producer.task(name="fault.t")(lambda payload: None)
    limit = None
    if how == "fsize":
        limit = os.path.getsize(path) + 6000
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    rng = random.Random(7)
    acked, errors, torn_after_error = [], [], 0
    for i in range(600):
        who, task = ("owner", own_task) if i % 2 else ("producer", prod_task)
        payload = "%d:%s" % (i, "x" * rng.randint(10, 600))
        try:
            acked.append(task.delay(payload, count_down=100).id)
        except OSError as exc:
            errors.append({"who": who, "errno": exc.errno, "msg": str(exc)})
            complete, _ = journal_lines(path)
            torn_after_error += not complete
    if how == "fsize":
        # At the limit exactly, a write fails outright (EFBIG) instead of coming back short.
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path), resource.RLIM_INFINITY))
        for who, task in (("owner", own_task), ("producer", prod_task)):
            try:
                acked.append(task.delay("at-limit", count_down=100).id)
            except OSError as exc:
                errors.append({"who": who, "errno": exc.errno, "msg": str(exc)})
    complete, records = journal_lines(path)
    result = {
        "acked": len(acked), "errors": errors[:3] + errors[-2:], "n_errors": len(errors),
        "errnos": sorted({e["errno"] for e in errors}),
        "short_writes": sum("only" in e["msg"] and "bytes fit" in e["msg"] for e in errors),
        "torn_after_error": torn_after_error, "complete": complete,
        "file_ids_equal_acked": added_ids(records) == acked,
    }
    # Compaction cannot write its copy: the journal stays as it was.
    if how == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))
    before = open(path, "rb").read()
    try:
        owner.compact()
        result["compact_error"] = None
    except OSError as exc:
        result["compact_error"] = str(exc)
    result["compact_unchanged"] = open(path, "rb").read() == before
    result["compact_tmp_left"] = os.path.exists(path + ".tmp")
    if how == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path), resource.RLIM_INFINITY))
    # The outcome of tasks run while the file cannot grow: the done records fail.
    clock.advance(200)
    result["joined_while_full"] = owner.join(timeout=20)
    result["ran_while_full"] = len(ran)
    complete, records = journal_lines(path)
    result["complete_after_run"] = complete
    result["done_records_while_full"] = sum(r["op"] == "done" for r in records)
    # Free the space: the same wheels go on working.
    if how == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    else:
        os.unlink(filler)
    more = [own_task.delay("after-owner", count_down=100).id,
            prod_task.delay("after-producer", count_down=100).id]
    producer.stop()
    result["stopped"] = owner.stop(timeout=20)
    # A new owner finds every acknowledged task; those whose done record could
    # not be written are pending again (they will run again: at least once).
    again = wheelq.Wheel(path, clock=wheelq.ManualClock())  # before any task's due time
    again.start()
    pending = {t.id for t in again.pending()}
    result["pending_after_restart"] = len(pending)
    result["all_acked_pending"] = set(acked + more) <= pending
    result["extra_pending"] = len(pending - set(acked + more))
    again.stop(timeout=20)
    return result


def start_on_full_disk(path: str) -> dict:
    """An owner starts on a disk with no room left, not even for its pid."""
    clock = wheelq.ManualClock()
    w = wheelq.Wheel(path, clock=clock)
    t = w.task(name="fault.t")(lambda: None)
    acked = [t.delay(count_down=100).id for _ in range(3)]
    fd = os.open(os.path.join(os.path.dirname(path), "filler"), os.O_WRONLY | os.O_CREAT)
    for size in (4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)
    try:
        while True:  # fill the journal's last page too
            acked.append(t.delay(count_down=100).id)
    except OSError:
        pass
    w.stop()  # a producer: no owner lock file yet
    out: dict = {}
    owner = wheelq.Wheel(path, clock=clock)
    t = owner.task(name="fault.t")(lambda: None)
    try:
        owner.start()
    except Exception as exc:
        out["start_error"] = "%s: %s" % (type(exc).__name__, exc)
        return out
    out["owner"] = owner.is_owner
    out["pending"] = sorted(i.id for i in owner.pending()) == sorted(acked)
    try:
        wheelq.Wheel(path).start()
    except wheelq.JournalLocked as exc:
        out["second_owner"] = str(exc)
    try:
        t.delay(count_down=100)
    except OSError as exc:
        out["delay_error"] = str(exc)
    os.unlink(os.path.join(os.path.dirname(path), "filler"))
    out["after_freeing"] = owner.get(t.delay(count_down=100).id) is not None
    out["stopped"] = owner.stop(timeout=20)
    return out


def read_only_fs(path: str) -> dict:
    """The filesystem under a journal is remounted read-only."""
    import subprocess

    w = wheelq.Wheel(path)
    w.task(name="fault.t")(lambda: None).delay(count_down=100)
    w.stop()
    subprocess.run(["mount", "-o", "remount,ro", os.path.dirname(path)], check=True)
    out: dict = {}
    for what, make in (("owner", lambda: wheelq.Wheel(path).start()),
                       ("producer", lambda: wheelq.Wheel(path).stats()),
                       ("new", lambda: wheelq.Wheel(path + ".new").stats())):
        try:
            make()
            out[what] = None
        except OSError as exc:
            out[what] = {"errno": exc.errno, "msg": str(exc)}
    return out


def as_nobody(scenario: str, path: str) -> dict:
    """Drop to the unprivileged user ``nobody``, then meet a permission fault."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    out: dict = {"uid": os.getuid()}
    if scenario == "create-in-readonly-dir":
        try:
            wheelq.Wheel(path).stats()
        except OSError as exc:
            out.update(error=type(exc).__name__, errno=exc.errno, msg=str(exc))
        out["created"] = os.path.exists(path)
    elif scenario == "open-unreadable-file":
        try:
            wheelq.Wheel(path).stats()
        except OSError as exc:
            out.update(error=type(exc).__name__, errno=exc.errno, msg=str(exc))
    elif scenario == "existing-journal-readonly-dir":
        # The file is ours, the directory is not: adding works, an owner cannot
        # create its lock, and (with the lock file present) cannot compact.
        w = wheelq.Wheel(path)
        t = w.task(name="fault.t")(lambda payload: None)
        out["producer_added"] = t.delay("p", count_down=100).id
        try:
            w.start()
        except OSError as exc:
            out.update(start_error=type(exc).__name__, start_msg=str(exc))
        out["still_producer"] = t.delay("p2", count_down=100).id
        w.stop()
    elif scenario == "compact-readonly-dir":
        clock = wheelq.ManualClock()
        w = wheelq.Wheel(path, clock=clock)
        t = w.task(name="fault.t")(lambda payload: None)
        w.start()
        h = t.delay("o", count_down=100)
        before = open(path, "rb").read()
        try:
            w.compact()
        except OSError as exc:
            out.update(compact_error=type(exc).__name__, compact_msg=str(exc))
        out["unchanged"] = open(path, "rb").read() == before
        out["tmp_left"] = os.path.exists(path + ".tmp")
        h2 = t.delay("o2", count_down=100)
        out["usable"] = w.get(h2.id) is not None and w.get(h.id) is not None
        out["stopped"] = w.stop(timeout=20)
    return out


def main(argv: list) -> int:
    if argv[0] == "fill":
        out = fill(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
    elif argv[0] == "start-on-full-disk":
        out = start_on_full_disk(argv[1])
    elif argv[0] == "read-only-fs":
        out = read_only_fs(argv[1])
    elif argv[0] == "as-nobody":
        out = as_nobody(argv[1], argv[2])
    else:
        raise SystemExit("unknown scenario %r" % argv[0])
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
