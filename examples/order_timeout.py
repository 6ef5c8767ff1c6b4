"""A small shop: an order that is still unpaid 30 minutes after it was placed is closed.

    python examples/order_timeout.py                    # http://127.0.0.1:8000
    python examples/order_timeout.py --timeout 5        # close unpaid orders after 5 s

    curl -X POST localhost:8000/orders -d '{"item": "book"}'    # -> {"id": "3f1c9a0e", ...}
    curl -X POST localhost:8000/orders/3f1c9a0e/pay
    curl localhost:8000/orders/3f1c9a0e

Orders live in SQLite and the checks in a wheelq journal, both in --data DIR, so
a restart keeps them: a check that came due while the shop was down runs when
it is back.  The order of the two writes matters.  The check is scheduled
first, then the order is stored: if the process dies in between, the check
finds no order and does nothing.  The other way round, a crash could leave an
order that nothing ever closes.  The check is idempotent, since wheelq runs a
task at least once: it closes the order only if it is still unpaid.

Standard library only.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import wheelq
except ImportError:  # run from a checkout without installing: use ../wheelq.py
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import wheelq

log = logging.getLogger("shop")


class Shop:
    """Orders in SQLite, and a Wheel that closes the unpaid ones."""

    def __init__(self, data_dir: str, timeout: float, tick: float):
        os.makedirs(data_dir, exist_ok=True)
        self.db_path = os.path.join(data_dir, "orders.sqlite")
        self.timeout = timeout
        self.sql("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, item TEXT NOT NULL, "
                 "status TEXT NOT NULL)")
        self.wheel = wheelq.Wheel(os.path.join(data_dir, "tasks.json"), tick=tick)
        self.close_if_unpaid = self.wheel.task(name="shop.close_if_unpaid")(self._close_if_unpaid)

    def sql(self, query: str, *params) -> tuple:
        """Run one statement in its own transaction; return (rows, rowcount)."""
        con = sqlite3.connect(self.db_path, timeout=10)
        try:
            with con:
                cur = con.execute(query, params)
                return cur.fetchall(), cur.rowcount
        finally:
            con.close()

    def place(self, item: str) -> dict:
        order_id = secrets.token_hex(4)
        # Schedule first, then store: see the module docstring.
        self.close_if_unpaid.delay(order_id, count_down=self.timeout, task_id="close-" + order_id)
        self.sql("INSERT INTO orders VALUES (?, ?, 'unpaid')", order_id, item)
        log.info("order %s placed (%s); closes in %gs unless paid", order_id, item, self.timeout)
        return {"id": order_id, "item": item, "status": "unpaid", "closes_in": self.timeout}

    def pay(self, order_id: str) -> tuple:
        _, changed = self.sql("UPDATE orders SET status = 'paid' WHERE id = ? AND status = 'unpaid'",
                              order_id)
        order = self.get(order_id)
        if order is None:
            return 404, {"error": "no order %s" % order_id}
        if not changed:
            return 409, {"error": "order %s is %s" % (order_id, order["status"]), **order}
        log.info("order %s paid", order_id)
        return 200, order

    def get(self, order_id: str) -> dict | None:
        rows, _ = self.sql("SELECT id, item, status FROM orders WHERE id = ?", order_id)
        return dict(zip(("id", "item", "status"), rows[0])) if rows else None

    def all(self) -> list:
        rows, _ = self.sql("SELECT id, item, status FROM orders ORDER BY rowid")
        return [dict(zip(("id", "item", "status"), row)) for row in rows]

    def _close_if_unpaid(self, order_id: str) -> None:
        _, changed = self.sql("UPDATE orders SET status = 'closed' WHERE id = ? AND status = 'unpaid'",
                              order_id)
        if changed:
            log.info("order %s closed: still unpaid after %gs", order_id, self.timeout)
        else:
            order = self.get(order_id)
            log.info("order %s is %s: nothing to close", order_id, order["status"] if order else "gone")


def handler_for(shop: Shop) -> type:
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code: int, body) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/orders":
                return self.reply(200, shop.all())
            m = re.fullmatch(r"/orders/(\w+)", self.path)
            order = shop.get(m.group(1)) if m else None
            self.reply(200, order) if order else self.reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/orders":
                try:
                    item = str(json.loads(body or b"{}").get("item", "something"))
                except (ValueError, AttributeError):
                    return self.reply(400, {"error": 'send JSON such as {"item": "book"}'})
                return self.reply(201, shop.place(item))
            m = re.fullmatch(r"/orders/(\w+)/pay", self.path)
            if m:
                return self.reply(*shop.pay(m.group(1)))
            self.reply(404, {"error": "not found"})

        def log_message(self, format: str, *args) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="A shop that closes unpaid orders.")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before an unpaid order is closed (default 1800, 30 minutes)")
    parser.add_argument("--data", default="shop-data", help="directory for orders and tasks")
    parser.add_argument("--tick", type=float, default=1.0, help="wheel tick in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    shop = Shop(args.data, args.timeout, args.tick)
    shop.wheel.start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(shop))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="shop-http", daemon=True).start()
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        shop.wheel.run_forever()  # until Ctrl-C or SIGTERM
    finally:
        server.shutdown()
        server.server_close()
    log.info("shop closed; pending checks stay in %s", os.path.join(args.data, "tasks.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
