"""The design wheelq replaces: one JSON file, rewritten on every add, polled each second.

This is the baseline the suite measures wheelq against.  It is written the
way a careful person would write it in a hurry: the whole list of tasks lives
in memory, ``add`` rewrites the whole file with one ``json.dumps`` (the C
encoder, not the slow streaming ``json.dump``) and a flush, and ``poll``
reads the whole file back and picks the due tasks.
"""

from __future__ import annotations

import json
import os


class NaiveQueue:
    """A delay queue kept as one JSON document on disk."""

    def __init__(self, path: str):
        self.path = path
        self.tasks: list = []
        self._n = 0

    def preload(self, tasks: list) -> None:
        """Hold ``tasks`` as if they had been added (without writing each)."""
        self.tasks.extend(tasks)
        self._n += len(tasks)
        self._save()

    def add(self, name: str, args: list, due: float) -> str:
        """Append a task and rewrite the whole file, as the naive design does."""
        self._n += 1
        tid = "naive-%d" % self._n
        self.tasks.append({"id": tid, "task": name, "due": due, "args": args, "kwargs": {}})
        self._save()
        return tid

    def _save(self) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.tasks))
            f.flush()

    def poll(self, now: float) -> list:
        """Read the whole file and return the tasks due by ``now``."""
        with open(self.path, "r", encoding="utf-8") as f:
            tasks = json.loads(f.read())
        return [t for t in tasks if t["due"] <= now]

    def remove_file(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def make_tasks(n: int, name: str, base: float, spread: float) -> list:
    """``n`` task dicts shaped like the ones ``add`` writes, due in [base, base + spread)."""
    step = spread / max(n, 1)
    return [{"id": "naive-pre-%d" % i, "task": name, "due": base + i * step, "args": [i], "kwargs": {}}
            for i in range(n)]
