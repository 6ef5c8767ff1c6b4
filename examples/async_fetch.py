"""Fetch N URLs with async def tasks, at most K at once, and read their results back.

    python examples/async_fetch.py                       # 20 URLs, 5 at a time
    python examples/async_fetch.py --count 50 --limit 10 --latency 0.3
    python examples/async_fetch.py --journal /tmp/fetch.json   # keep the journal afterwards

It starts a small HTTP server of its own on 127.0.0.1 (``http.server`` in a
thread; each response takes ``--latency`` seconds, and ``/flaky/...`` pages
fail with 503 the first time they are asked for).  The client is an
``async def`` task written with ``asyncio`` streams, so it needs nothing but
the standard library: wheelq runs it on its event loop (the ``wheelq-asyncio``
thread), at most ``async_workers`` at once, and holds no thread while a
request waits.  A failed fetch raises and is retried; each result is kept
(``result_ttl``) in the task's ``done`` record.  The script schedules the
fetches from asyncio code with ``adelay()`` and awaits them with
``aresult()``; at the end it reads one back with the blocking ``result()``,
as synchronous code would.

Standard library only.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.server
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

try:
    import wheelq
except ImportError:  # run from a checkout without installing: use ../wheelq.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import wheelq


# -- the local test server ----------------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    """Serves /page/N and /flaky/N after ``latency`` seconds, counting requests in flight."""

    daemon_threads = True

    def __init__(self, latency: float):
        super().__init__(("127.0.0.1", 0), Handler)
        self.latency = latency
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.requests = 0
        self.failed_once: set = set()


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.most = max(srv.most, srv.active)
            srv.requests += 1
            fail = self.path.startswith("/flaky/") and self.path not in srv.failed_once
            if fail:
                srv.failed_once.add(self.path)
        try:
            threading.Event().wait(srv.latency)  # a slow backend (this is the server's thread)
            if fail:
                body, status = b"try again\n", 503
            else:
                body = ("page %s\n" % self.path).encode() * 40
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        finally:
            with srv.lock:
                srv.active -= 1

    def log_message(self, format: str, *args) -> None:  # quiet
        pass


# -- the client: an async def task ----------------------------------------------------------


async def http_get(url: str) -> tuple:
    """GET ``url`` with asyncio streams (HTTP/1.1, Connection: close): ``(status, body)``."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        path = parts.path or "/"
        writer.write(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                      "User-Agent: wheelq-example\r\n\r\n" % (path, parts.netloc)).encode())
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length = None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await (reader.readexactly(length) if length is not None else reader.read())
        return status, body
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def build(path: str | None, limit: int) -> tuple:
    wheel = wheelq.Wheel(path, async_workers=limit, tick=0.05)

    @wheel.task(name="example.fetch", result_ttl=3600, timeout=10, retries=2, retry_delay=0.1)
    async def fetch(url):
        status, body = await http_get(url)
        if status != 200:
            raise ConnectionError("HTTP %d from %s" % (status, url))  # retried
        tries = wheelq.current().tries  # failed tries before this one
        return {"url": url, "status": status, "bytes": len(body),
                "sha1": hashlib.sha1(body).hexdigest()[:12], "tries": tries + 1}

    return wheel, fetch


async def fetch_all(fetch, urls: list) -> list:
    """Schedule every fetch from asyncio code, then await every result."""
    handles = [await fetch.adelay(url) for url in urls]
    return handles, await asyncio.gather(*(h.aresult(timeout=30) for h in handles))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="URLs to fetch (default 20)")
    parser.add_argument("--limit", type=int, default=5,
                        help="fetches at once: the wheel's async_workers (default 5)")
    parser.add_argument("--latency", type=float, default=0.2,
                        help="seconds the server takes per response (default 0.2)")
    parser.add_argument("--journal", help="journal path (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    # wheelq logs a retried fetch as a WARNING; say whose line it is.
    logging.basicConfig(level=logging.WARNING, format="wheelq %(levelname)s: %(message)s")

    server = Server(args.latency)
    threading.Thread(target=server.serve_forever, name="test-server", daemon=True).start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    urls = ["%s/%s/%d" % (base, "flaky" if n % 7 == 3 else "page", n) for n in range(args.count)]
    print("test server on %s; fetching %d URLs, at most %d at once" % (base, len(urls), args.limit))

    scratch = None
    path = args.journal
    if path is None:
        scratch = tempfile.mkdtemp(prefix="wheelq-fetch-")
        path = os.path.join(scratch, "fetch.json")
    wheel, fetch = build(path, args.limit)
    t0 = time.monotonic()
    try:
        with wheel:  # start(): the owner, with its wheelq-asyncio loop; stop() at the end
            handles, results = asyncio.run(fetch_all(fetch, urls))
            took = time.monotonic() - t0
            for r in results:
                print("%-36s %d  %5d bytes  sha1 %s  try %d"
                      % (r["url"][len(base):], r["status"], r["bytes"], r["sha1"], r["tries"]))
            again = handles[0].result(timeout=10)  # the blocking call reads the same record
            assert again == results[0]
            retried = sum(1 for r in results if r["tries"] > 1)
            print("fetched %d URLs in %.2f s: %d retried after a 503; the server saw at most %d "
                  "requests at once (limit %d); %d threads in this process"
                  % (len(results), took, retried, server.most, args.limit,
                     threading.active_count()))
    finally:
        server.shutdown()
        server.server_close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.journal:
        print("journal kept at %s: python -m wheelq list %s --done" % (path, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
