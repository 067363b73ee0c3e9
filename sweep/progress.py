"""Progress of a run: a tqdm bar on a terminal, one plain line every few seconds otherwise
(CI and pod logs get readable lines instead of carriage-return spam)."""
from __future__ import annotations

import sys
import time

from sweep.plan import format_seconds


class Progress:
    def __init__(self, total: int, label: str = "workloads", stream=None, every_s: float = 10.0):
        self.total, self.done, self.errors, self.lost = total, 0, 0, 0
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.started = self._last_line = time.monotonic()
        self._done_at_start = 0
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="wl", desc=label, file=self.stream, smoothing=0.1)

    def restart_clock(self) -> None:
        """Rate and ETA count from now (after Ray's start-up, which is no workload time)."""
        self.started, self._done_at_start = time.monotonic(), self.done
        if self._bar is not None:
            self._bar.unpause()

    def update(self, done: int, errors: int = 0, lost: int = 0) -> None:
        """``done`` more finished; of them ``errors`` raised and ``lost`` lost their worker."""
        self.done += done
        self.errors += errors
        self.lost += lost
        if self._bar is not None:
            self._bar.set_postfix_str(self._failures(), refresh=False)
            self._bar.update(done)
        elif time.monotonic() - self._last_line >= self.every_s or self.done == self.total:
            self._last_line = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self._done_at_start) / elapsed if elapsed > 0 else 0.0
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"progress: {self.done}/{self.total} ({pct:.0f}%) {self._failures()} "
                f"elapsed {format_seconds(elapsed)} ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _failures(self) -> str:
        return f"errors={self.errors} lost={self.lost}"
