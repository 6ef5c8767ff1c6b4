"""Three "hosts" on one Redis server, sharing no file: an owner, a standby and a producer.

    python examples/three_hosts.py                          # starts a redis-server of its own
    python examples/three_hosts.py redis://127.0.0.1:6379/0  # or uses yours (queue three_hosts)

Each role is a process of its own that knows only the URL, as it would on
another machine:

* the owner (``start()``) holds the queue's lease and runs the tasks;
* the standby (``start(standby=True)``) waits for the lease;
* the producer (a Wheel that is never started) adds ten orders, each to be
  closed a second or two later if unpaid, and exits.

Halfway through, this script kills the owner with SIGKILL, as a crashed host
would die.  Within one lease (1 s here) and one tick the standby takes the
lease over, replays the queue and closes the orders that are left.  An order
the owner was closing when it died may be closed twice: execution is at least
once, so tasks are idempotent.  Then everything stops, and the script exits 0
if every order was closed.

Needs ``pip install "wheelq[redis]"`` and, without a URL, ``redis-server`` on PATH.
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import wheelq
except ImportError:  # run from a checkout without installing: use ../wheelq.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import wheelq

ORDERS = 10
LEASE = 1.0  # seconds; the default is 10


def say(text: str) -> None:
    """One whole line on stdout (one write: a worker's line never splits another's)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def build(url: str, role: str) -> tuple:
    """The same wheel and task on every host: the task name is what links them."""
    wheel = wheelq.Wheel("%s?queue=three_hosts&lease=%g" % (url, LEASE), tick=0.1)

    @wheel.task(name="shop.close_unpaid_order")
    def close_unpaid_order(order_id):
        # Idempotent: closing an order that is closed already changes nothing.
        say("%s (pid %d): closed order %d" % (role, os.getpid(), order_id))

    return wheel, close_unpaid_order


# -- the three roles, each in a process of its own -------------------------------------------


def owner(url: str, standby: bool) -> None:
    role = "standby" if standby else "owner"
    wheel, _ = build(url, role)
    wheel.start(standby=standby)
    say("%s (pid %d): %s" % (role, os.getpid(), "waiting for the lease" if standby else
                             "owns the queue"))
    if standby:
        while not wheel.is_owner:
            time.sleep(0.01)
        say("standby (pid %d): took over as owner" % os.getpid())
    wheel.run_forever()  # until SIGTERM (or SIGKILL)


def producer(url: str) -> None:
    wheel, close = build(url, "producer")
    for order_id in range(1, ORDERS + 1):
        close.delay(order_id, count_down=0.3 + order_id * 0.25)
    say("producer (pid %d): added %d orders, each closed in 0.5-2.8 s unless paid"
        % (os.getpid(), ORDERS))
    wheel.stop()


# -- the script that plays the three hosts ----------------------------------------------------


def start_redis() -> tuple:
    """A redis-server of our own: AOF on, every write fsynced, on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH: install it (apt-get install redis-server) or give "
                 "the URL of a server")
    scratch = tempfile.mkdtemp(prefix="three-hosts-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", scratch,
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit("redis-server did not start")
        time.sleep(0.02)
    return "redis://127.0.0.1:%d/0" % port, proc, scratch


class Host:
    """One role's process, its output relayed here and kept for the summary."""

    def __init__(self, url: str, role: str):
        self.role = role
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", role, url],
                                     stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.closed: set = set()  # the orders this host closed
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        for line in self.proc.stdout:
            say("  " + line.rstrip())
            if "closed order" in line:
                self.closed.add(int(line.rsplit(" ", 1)[1]))
            self.lines.put(line)

    def wait_for(self, words: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if words in self.lines.get(timeout=max(0.0, deadline - time.monotonic())):
                    return time.monotonic()
            except queue.Empty:
                break
        raise SystemExit("%s did not say %r within %g s" % (self.role, words, timeout))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", help="a Redis server's URL (default: start one)")
    p.add_argument("--role", choices=("owner", "standby", "producer"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "producer":
        producer(args.url)
        return 0
    if args.role:
        owner(args.url, args.role == "standby")
        return 0
    server = scratch = None
    url = args.url
    if url is None:
        url, server, scratch = start_redis()
        print("started redis-server at %s" % url)
    hosts = []
    try:
        first = Host(url, "owner")
        hosts.append(first)
        first.wait_for("owns the queue")
        second = Host(url, "standby")
        hosts.append(second)
        second.wait_for("waiting for the lease")
        maker = Host(url, "producer")
        hosts.append(maker)
        maker.wait_for("added")
        first.wait_for("closed order 2")
        first.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        print("killed the owner (pid %d) with SIGKILL" % first.proc.pid)
        took = second.wait_for("took over") - killed
        deadline = time.monotonic() + 10
        while len(first.closed | second.closed) < ORDERS and time.monotonic() < deadline:
            time.sleep(0.05)
        closed = first.closed | second.closed
        ok = len(closed) == ORDERS
        print("the standby took over %.2f s after the kill (lease %g s); %d of %d orders closed"
              % (took, LEASE, len(closed), ORDERS))
        return 0 if ok else 1
    finally:
        for host in hosts:
            host.stop()
        if server is not None:
            server.terminate()
            server.wait(10)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
