"""A producer process and an owner process sharing one journal.

    python examples/two_processes.py             # starts an owner, then produces into it

or by hand, in two terminals:

    python examples/two_processes.py owner --journal /tmp/greet.json
    python examples/two_processes.py produce --journal /tmp/greet.json --count 5

The owner (a started Wheel) holds the journal's owner lock and runs the tasks.
The producer builds a Wheel on the same path and never starts it: its
``delay()`` only appends the task to the journal, and the owner takes it in at
its next tick.  Start a second owner and it fails with JournalLocked, naming
the first one's pid.

Standard library only.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile

try:
    import wheelq
except ImportError:  # run from a checkout without installing: use ../wheelq.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import wheelq


def build(path: str) -> tuple:
    """The same wheel and task in both processes: the task name is what links them."""
    wheel = wheelq.Wheel(path, tick=0.1)

    @wheel.task(name="greet")
    def greet(n, sender):
        # One write per line: tasks run on several worker threads at once.
        sys.stdout.write("owner %d ran greet #%d from producer %d\n" % (os.getpid(), n, sender))
        sys.stdout.flush()

    return wheel, greet


def owner(path: str) -> int:
    wheel, _ = build(path)
    wheel.start()  # takes the owner lock; raises JournalLocked if another owner runs
    print("owner %d ready: %s" % (os.getpid(), path), flush=True)
    wheel.run_forever()  # until Ctrl-C or SIGTERM
    print("owner %d stopped" % os.getpid(), flush=True)
    return 0


def produce(path: str, count: int, delay: float) -> int:
    wheel, greet = build(path)  # never started: a producer
    for n in range(1, count + 1):
        handle = greet.delay(n, os.getpid(), count_down=delay)
        print("producer %d queued greet #%d as %s" % (os.getpid(), n, handle.id), flush=True)
    wheel.stop()  # closes the file (after an fsync); the tasks stay in the journal
    return 0


def both(path: str, count: int, delay: float) -> int:
    """Start an owner process, produce into its journal, wait for the tasks, stop it."""
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "owner", "--journal", path],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        print(line, end="", flush=True)
        if "ready" not in line:
            print("the owner did not start", file=sys.stderr)
            return 1
        produce(path, count, delay)
        ran = 0
        while ran < count:
            line = child.stdout.readline()
            if not line:
                print("the owner exited early", file=sys.stderr)
                return 1
            print(line, end="", flush=True)
            ran += line.count(" ran greet ")
    finally:
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=30)
        print(rest, end="", flush=True)
    return child.returncode


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="A producer and an owner sharing one journal.")
    parser.add_argument("role", nargs="?", choices=("both", "owner", "produce"), default="both")
    parser.add_argument("--journal", help="journal path (default: a new temporary file)")
    parser.add_argument("--count", type=int, default=5, help="tasks to produce (default 5)")
    parser.add_argument("--delay", type=float, default=1.0, help="their count_down (default 1 s)")
    args = parser.parse_args(argv)
    path = args.journal or os.path.join(tempfile.mkdtemp(prefix="wheelq-two-"), "greet.json")
    if args.role == "owner":
        return owner(path)
    if args.role == "produce":
        return produce(path, args.count, args.delay)
    return both(path, args.count, args.delay)


if __name__ == "__main__":
    sys.exit(main())
