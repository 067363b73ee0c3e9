"""Progress of a run: a tqdm bar on a terminal, one plain line every few seconds otherwise
(CI and pod logs get readable lines instead of carriage-return spam; so does a terminal
that reports 0 columns, where tqdm would draw nothing).  Messages printed while the bar
is up go through :attr:`Progress.writer` (``tqdm.write``), so they never land inside the
bar's line."""
from __future__ import annotations

import os
import sys
import time


QUIET_S = 60.0      # without a terminal: the longest silence while nothing finishes


def format_seconds(seconds: float) -> str:
    """'42s', '3m07s', '2h05m': elapsed times and estimates."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plural(n, word: str, many: str | None = None) -> str:
    """'1 CPU', '2 CPUs', '8,064 workloads'."""
    n = int(n)
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def is_terminal(stream) -> bool:
    """A TTY that reports a usable width (a 0-column pty gets plain lines)."""
    if not getattr(stream, "isatty", lambda: False)():
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


class Progress:
    def __init__(self, total: int, label: str = "workloads", stream=None, every_s: float = 10.0):
        self.total, self.done, self.errors, self.lost = total, 0, 0, 0
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.started = self._last_line = time.monotonic()
        self._done_at_start = 0
        self._bar = None
        self.writer = _LineWriter(self)
        if is_terminal(self.stream):
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

    def tick(self) -> None:
        """Nothing finished since the last look. While one long chunk runs (a real-kernel
        boot replays its streams for minutes) the clock stays visible: the bar's elapsed
        time, or without a terminal a line once ``QUIET_S`` passed without one."""
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last_line >= 1.0:
                self._last_line = now
                self._bar.refresh()
        elif now - self._last_line >= QUIET_S:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line for the user that leaves the bar intact."""
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

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
            self._bar = None

    def _failures(self) -> str:
        return f"errors={self.errors} lost={self.lost}"


class _LineWriter:
    """A file-like stream for ``print(..., file=progress.writer)``: whole lines go through
    :meth:`Progress.message`, so code that prints (the Ray session) needs no change."""

    def __init__(self, progress: Progress):
        self._progress, self._pending = progress, ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._progress.message(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._progress.message(self._pending)
            self._pending = ""
