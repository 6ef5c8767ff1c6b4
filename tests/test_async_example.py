"""examples/async_fetch.py, run as a user would run it (issue 16)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from conftest import ROOT, python_env

EXAMPLE = ROOT / "examples" / "async_fetch.py"


def run(*args, timeout=60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)],
                          env=env or python_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_async_fetch_fetches_every_url_within_its_limit_and_reads_the_results_back(tmp_path):
    journal = tmp_path / "fetch.json"
    r = run("--count", 15, "--limit", 3, "--latency", 0.1, "--journal", journal)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert re.search(r"^test server on http://127\.0\.0\.1:\d+; fetching 15 URLs, at most 3 at "
                     r"once$", out, re.M)
    fetched = re.findall(r"^/(page|flaky)/(\d+) +200 +\d+ bytes  sha1 [0-9a-f]{12}  try (\d)$",
                         out, re.M)
    assert sorted(int(n) for _, n, _ in fetched) == list(range(15))
    # A /flaky/ page fails once with 503: its fetch raised, was retried, and succeeded.
    assert {kind: tries for kind, _, tries in fetched} == {"page": "1", "flaky": "2"}
    assert len(re.findall(r"failed \(try 1 of 3\): ConnectionError: HTTP 503", r.stderr)) == 2
    summary = re.search(r"^fetched 15 URLs in [\d.]+ s: 2 retried after a 503; the server saw at "
                        r"most (\d+) requests at once \(limit 3\)", out, re.M)
    assert summary, out
    assert 1 <= int(summary.group(1)) <= 3  # async_workers held
    # The results are in the journal's done records, which the command line shows.
    listed = subprocess.run([sys.executable, "-m", "wheelq", "list", str(journal), "--done",
                             "--json"], env=python_env(), capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0, listed.stderr
    results = json.loads(listed.stdout)
    assert len(results) == 15
    assert all(t["result"]["status"] == 200 and t["name"] == "example.fetch" for t in results)


def test_async_fetch_runs_with_its_defaults_in_a_few_seconds_and_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(python_env(), TMPDIR=str(scratch))
    started = time.monotonic()
    r = run(timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - started < 15
    assert re.search(r"^fetched 20 URLs in [\d.]+ s", r.stdout, re.M)
    assert "journal kept" not in r.stdout
    assert list(scratch.iterdir()) == []  # its temporary journal is gone
