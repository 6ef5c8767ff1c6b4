"""Each example in examples/, run as a user would run it, with short delays."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from conftest import ROOT, python_env
from test_cli import Output, finish, spawn

EXAMPLES = ROOT / "examples"


def call(method: str, url: str, body=None) -> tuple:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_order_timeout_closes_the_unpaid_order(tmp_path):
    proc = spawn([sys.executable, str(EXAMPLES / "order_timeout.py"), "--port", "0",
                  "--timeout", "1", "--tick", "0.1", "--data", str(tmp_path)])
    out, err = Output(proc.stdout), Output(proc.stderr)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", out.expect(r"^listening on ")).group(0)
        code, unpaid = call("POST", url + "/orders", {"item": "book"})
        assert code == 201 and unpaid["status"] == "unpaid"
        code, paid = call("POST", url + "/orders", {"item": "pen"})
        assert code == 201
        assert call("POST", url + "/orders/%s/pay" % paid["id"])[0] == 200

        err.expect(r"order %s closed: still unpaid" % unpaid["id"])
        err.expect(r"order %s is paid: nothing to close" % paid["id"])
        assert call("GET", url + "/orders/" + unpaid["id"]) == (
            200, {"id": unpaid["id"], "item": "book", "status": "closed"})
        assert call("GET", url + "/orders/" + paid["id"])[1]["status"] == "paid"
        code, too_late = call("POST", url + "/orders/%s/pay" % unpaid["id"])
        assert code == 409 and too_late["status"] == "closed"
        assert call("GET", url + "/orders/nosuch")[0] == 404
    finally:
        status = finish(proc, signal.SIGINT)
    assert status == 0, err.rest()
    assert "Traceback" not in err.rest()


def clean_env() -> dict:
    """No PYTHONPATH, nothing from the repository: only what a bare machine has."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}


def test_vendored_script_needs_only_wheelq_py_beside_it(tmp_path):
    shutil.copy(ROOT / "wheelq.py", tmp_path)
    shutil.copy(EXAMPLES / "vendored_script.py", tmp_path)
    # -S: no site-packages (so no installed wheelq); -E: no PYTHON* variables.
    cmd = [sys.executable, "-S", "-E", "vendored_script.py"]
    r = subprocess.run(cmd + ["water the plants", "0.4", "call the bank", "0.1"], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["reminder: call the bank", "reminder: water the plants",
                                     "no reminders left"]

    # Stopped with a reminder still pending, it shows it on the next run.
    # "later" is due well after "now", so a loaded machine still stops the script first.
    proc = spawn(cmd + ["later", "6", "now", "0"], cwd=tmp_path, env=clean_env())
    out = Output(proc.stdout)
    try:
        out.expect(r"^reminder: now$")
    finally:
        assert finish(proc, signal.SIGINT) == 0
    assert out.rest().splitlines()[-1] == "stopped; 1 reminder kept for next time"
    r = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["reminder: later", "no reminders left"]


def test_two_processes_share_one_journal(tmp_path):
    journal = tmp_path / "greet.json"
    r = subprocess.run([sys.executable, str(EXAMPLES / "two_processes.py"), "--journal",
                        str(journal), "--count", "4", "--delay", "0.2"], env=python_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    queued = re.findall(r"^producer (\d+) queued greet #(\d)", r.stdout, re.M)
    ran = re.findall(r"^owner (\d+) ran greet #(\d) from producer (\d+)$", r.stdout, re.M)
    assert [n for _, n in queued] == ["1", "2", "3", "4"]
    assert sorted(n for _, n, _ in ran) == ["1", "2", "3", "4"]
    producer = {p for p, _ in queued}
    owner = {o for o, _, _ in ran}
    assert len(producer) == len(owner) == 1 and producer != owner
    assert {p for _, _, p in ran} == producer
    assert re.search(r"^owner \d+ stopped$", r.stdout, re.M)
    # Every task finished: the journal holds nothing pending.
    out = subprocess.run([sys.executable, "-m", "wheelq", "list", str(journal), "--json"],
                         env=python_env(), capture_output=True, text=True, timeout=30)
    assert json.loads(out.stdout) == []
