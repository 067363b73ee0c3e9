"""The local executor: a campaign's chunks run one at a time in the driver process.

``python -m sweep CONFIG --local`` and the tests that are not about Ray.  It calls the same
function a Ray task runs (``sweep.worker.run_chunk``) on the same chunks, so the stored
metrics are bit-identical to a Ray run's; only ``worker`` and the timings differ.  One
chunk is pending at a time, so a first Ctrl-C stops after the chunk that is running (the
campaign checks between chunks); a second one ends the process at once, as with Ray (the
workload runs with the GIL released, so sweep.interrupt's watcher thread hears it).
"""
from __future__ import annotations

import itertools
from collections import deque

from sweep import worker


class LocalExecutor:
    name = "local"
    cpus = 1
    max_in_flight = 1

    def __init__(self):
        self._queue: deque = deque()
        self._handles = itertools.count()

    def prepare(self) -> None:
        pass

    def start(self, out) -> None:
        pass

    def submit(self, items: list[dict]) -> int:
        handle = next(self._handles)
        self._queue.append((handle, items))
        return handle

    def finished(self, timeout: float):
        """Runs the oldest submitted chunk to its end (``timeout`` does not apply: nothing
        else could finish meanwhile)."""
        if self._queue:
            handle, items = self._queue.popleft()
            yield handle, worker.run_chunk(items), None

    def record(self) -> dict:
        return {"executor": self.name, "ray_cpus": None}

    def kill(self) -> None:
        pass

    def close(self) -> None:
        self._queue.clear()
