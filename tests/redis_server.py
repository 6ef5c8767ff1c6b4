"""A real ``redis-server`` for tests: started from PATH, killed and restarted at will.

Not a conftest: import it from any test module.

    from redis_server import redis_server_or_skip

    def test_something(request):
        server = redis_server_or_skip(request, appendfsync="always")
        client = redis.Redis.from_url(server.url)

``RedisServer`` runs ``redis-server`` on 127.0.0.1 on a free port, in a
temporary directory of its own, with AOF on (``appendonly yes``, the
``appendfsync`` the caller chose), ``save ""`` (no RDB snapshots) and
``protected-mode no``.  ``kill()`` sends SIGKILL; ``restart()`` starts it
again on the same port and in the same directory, so the AOF replays.
Readiness is a RESP ``PING`` answered ``PONG`` (not ``-LOADING``) within a
deadline, polled every few milliseconds.  The helper speaks RESP over a plain
socket, so it needs no redis-py.

``redis_server_or_skip(request, **cfg)`` starts one for a test and stops it
when the test ends, pass or fail.  Where ``redis-server`` (7.0 or later) or
redis-py is missing it skips the test saying what to install, except under
``CI=true``, where it fails it: CI must never pass by skipping.

``ReplyDropper`` is a TCP proxy in front of a server that can swallow the
reply to the next command and close the client's connection, the way a
network fault loses a reply after the server has executed the command.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

__all__ = ["RedisServer", "ReplyDropper", "redis_server_or_skip", "require_redis",
           "server_version"]

_STARTED: "list[RedisServer]" = []  # every server not yet stopped, for the atexit sweep


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resp(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def command(port: int, *args: Any, timeout: float = 5.0) -> bytes:
    """Send one command and return the first line of the reply (``+OK``, ``-ERR ...``).

    Enough for PING, CONFIG SET and SHUTDOWN; not a client.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_resp(*args))
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.split(b"\r\n", 1)[0]


def server_version(binary: str = "redis-server") -> "tuple[int, ...] | None":
    """The version of ``redis-server`` on PATH, or None when it is not there."""
    path = shutil.which(binary)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    for word in out.split():
        if word.startswith("v="):
            return tuple(int(p) for p in word[2:].split(".") if p.isdigit())
    return ()


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with AOF on, in its own directory.

    ``extra`` lines go into the config file verbatim (``rename-command CONFIG ""``
    can only be set there); keyword settings become ``name value`` lines, with
    underscores as dashes (``maxmemory_policy="allkeys-lru"``).
    """

    def __init__(self, *, appendfsync: str = "always", appendonly: str = "yes",
                 extra: "list[str] | tuple[str, ...]" = (), directory: "str | None" = None,
                 start_timeout: float = 20.0, **settings: Any) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError("appendfsync is always, everysec or no, not %r" % appendfsync)
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not on PATH: apt-get install redis-server")
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="wheelq-redis-")
        self.port = _free_port()
        self.start_timeout = start_timeout
        self.proc: "subprocess.Popen | None" = None
        self._settings = {"appendonly": appendonly, "appendfsync": appendfsync}
        self._settings.update({k.replace("_", "-"): v for k, v in settings.items()})
        self._extra = list(extra)
        self.conf = os.path.join(self.dir, "redis.conf")
        self.log = os.path.join(self.dir, "redis.log")
        self._write_conf()
        _STARTED.append(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- config ------------------------------------------------------------------------
    def _write_conf(self) -> None:
        lines = [
            "bind 127.0.0.1",
            "port %d" % self.port,
            "protected-mode no",
            "daemonize no",
            'dir "%s"' % self.dir,
            'logfile "%s"' % self.log,
            'save ""',
            "appendfilename appendonly.aof",
        ]
        lines += ["%s %s" % (k, v) for k, v in self._settings.items()]
        lines += self._extra
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    @property
    def pid(self) -> "int | None":
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        return self.pid is not None

    # -- life cycle ----------------------------------------------------------------------
    def _start(self) -> None:
        for attempt in range(5):
            self.proc = subprocess.Popen([self.binary, self.conf], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         cwd=self.dir)
            try:
                self._wait_ready()
                return
            except _PortTaken:
                # Another process took the free port between probe and bind; a restart
                # must keep its port, so only a first start moves.
                if self.pid is not None:
                    self.proc.kill()
                self.proc.wait()
                if attempt == 4 or getattr(self, "_started_once", False):
                    raise RuntimeError("port %d is taken: %s" % (self.port, self._log_tail()))
                self.port = _free_port()
                self._write_conf()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                if "Address already in use" in tail:
                    raise _PortTaken()
                raise RuntimeError("redis-server exited with status %s: %s"
                                   % (self.proc.returncode, tail))
            try:
                if command(self.port, "PING", timeout=1.0) == b"+PONG":
                    self._started_once = True
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("redis-server on port %d was not ready within %.0f s: %s"
                                   % (self.port, self.start_timeout, self._log_tail()))
            time.sleep(0.005)

    def _log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash; the AOF holds what it wrote."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its connections."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same port and in the same directory, so the AOF replays.

        A server still running is stopped first (SIGTERM, a clean shutdown).
        """
        self._terminate()
        self._write_conf()
        self._start()

    def _terminate(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.resume()  # a stopped process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop the server and remove its directory. Harmless to call twice."""
        self._terminate()
        if self in _STARTED:
            _STARTED.remove(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def config_set(self, name: str, value: Any) -> None:
        """``CONFIG SET name value`` on the running server, and in its config file,
        so that a restart keeps it."""
        reply = command(self.port, "CONFIG", "SET", name, value)
        if reply != b"+OK":
            raise RuntimeError("CONFIG SET %s %s: %s" % (name, value, reply.decode(errors="replace")))
        self._settings[name] = value

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "<RedisServer port=%d pid=%s dir=%s>" % (self.port, self.pid, self.dir)


class _PortTaken(Exception):
    pass


@atexit.register
def _sweep() -> None:
    for server in list(_STARTED):
        server.kill()
        server.stop()


def _missing(request: Any, why: str) -> None:
    import pytest
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("%s (CI=true: this must not be skipped)" % why, pytrace=False)
    pytest.skip(why)


def require_redis(request: Any = None, *, client: bool = True) -> None:
    """Skip (or under CI=true fail) the test unless redis-server 7.0+ and redis-py exist."""
    version = server_version()
    if version is None:
        _missing(request, "redis-server is not installed: apt-get install redis-server")
    elif version < (7, 0):
        _missing(request, "redis-server %s is too old: wheelq needs 7.0 or later"
                 % ".".join(map(str, version)))
    if client:
        try:
            import redis  # noqa: F401
        except ImportError:
            _missing(request, 'redis-py is not installed: pip install "wheelq[redis]"')


def redis_server_or_skip(request: Any, *, client: bool = True, **cfg: Any) -> RedisServer:
    """A ``RedisServer(**cfg)`` that is stopped when the test ends, pass or fail.

    ``request`` is pytest's ``request`` fixture.  ``client=False`` does not ask
    for redis-py (for tests that only drive processes).
    """
    require_redis(request, client=client)
    server = RedisServer(**cfg)
    request.addfinalizer(server.stop)
    return server


class ReplyDropper:
    """A TCP proxy to ``port`` that can lose replies, as a network fault does.

    ``drop_next(n=1)``: for the next ``n`` chunks of reply bytes the server
    sends, the proxy swallows the bytes and closes that client connection.
    The server has executed the command; the client sees a ConnectionError
    and cannot know whether it was executed.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(64)
        self.port = self._listen.getsockname()[1]
        self._drops = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        self._socks: "list[socket.socket]" = []
        threading.Thread(target=self._accept, daemon=True, name="reply-dropper").start()

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def drop_next(self, n: int = 1) -> None:
        with self._lock:
            self._drops += n

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if replies:
                    with self._lock:
                        drop = self._drops > 0
                        if drop:
                            self._drops -= 1
                            self.dropped += 1
                    if drop:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listen.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
