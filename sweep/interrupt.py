"""One interrupt path for the whole driver: the sweep, the report and the MLflow logging.

First Ctrl-C (SIGINT) or SIGTERM: stop.  While the campaign holds :func:`polling`, the signal
only sets a flag that the campaign reads at safe points (between chunks, never inside a store
write or a Ray call), so every finished chunk is stored and no Ray task is cancelled
(``ray.cancel`` can crash Ray 2.60's core worker).  Anywhere else (imports, config, the
report, the logging) it raises ``KeyboardInterrupt``, which the CLI turns into one line and
exit 130.  Second signal: the user wants out now; the registered last words run (they mark
``sweep.json`` interrupted) and the process ends at once with 130, never a traceback.

Test hook (tests/test_faults.py): ``SWEEP_TEST_PAUSE=point[,point:N...]`` with
``SWEEP_TEST_PAUSE_FILE=path``: at :func:`checkpoint` ``point`` (with a count >= N) the
driver writes the point's name to the file and waits for the next signal (or for the file
to be deleted), so a test acts at a known moment instead of a wall-clock guess.  Stdlib only: this module is
installed before anything heavy is imported.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

INTERRUPTED = 130

_signals = 0          # signals received so far
_polling = 0          # > 0: the campaign polls stop_requested() instead of taking an exception
_last_words: list = []
_fired: set[str] = set()
_wakeup = None        # (read, write) ends of the signal wakeup pipe
_exiting = threading.Lock()


def install() -> None:
    """Route SIGINT and SIGTERM here (again after anything that installs its own, e.g. ray.init)."""
    if threading.current_thread() is not threading.main_thread():
        return      # only the main thread may; a library caller keeps its own handlers
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    _watch_from_a_thread()


def _watch_from_a_thread() -> None:
    """A Python handler runs only when the main thread runs Python; inside a long C++ call
    (``ray.init`` connecting to a GCS that does not answer) it would not run at all.  The
    C-level handler still writes each signal to the wakeup fd, so this thread counts them
    too and makes a second Ctrl-C end the process in any case."""
    global _wakeup
    if _wakeup is not None:
        signal.set_wakeup_fd(_wakeup[1], warn_on_full_buffer=False)
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _wakeup = (read_end, write_end)

    def count():
        seen = 0
        while True:
            seen += sum(b in (signal.SIGINT, signal.SIGTERM) for b in os.read(read_end, 64))
            if seen > 1:
                time.sleep(0.5)      # the main thread's own handler, when it can run, goes first
                exit_now("interrupted again: stopped at once")

    threading.Thread(target=count, name="sweep-interrupt-watch", daemon=True).start()


def stop_requested() -> bool:
    return _signals > 0


@contextmanager
def polling():
    """Within: a first signal sets the flag only; the caller polls :func:`stop_requested`."""
    global _polling
    _polling += 1
    try:
        yield
    finally:
        _polling -= 1


@contextmanager
def last_words(action):
    """Within: ``action()`` runs if a second signal ends the process at once."""
    _last_words.append(action)
    try:
        yield
    finally:
        _last_words.remove(action)


def _on_signal(signum, frame) -> None:
    global _signals
    _signals += 1
    if _signals > 1:
        exit_now("interrupted again: stopped at once")
    if not _polling:
        raise KeyboardInterrupt


def exit_now(message: str, code: int = INTERRUPTED) -> None:
    """Last words, one line, flushed output, then ``os._exit``: no cleanup can hang or raise."""
    if not _exiting.acquire(blocking=False):       # the other thread is already on its way out
        while True:
            time.sleep(1)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # a third Ctrl-C must not interrupt this
    for action in reversed(_last_words):
        try:
            action()
        except BaseException:  # noqa: BLE001 - best effort on the way out
            pass
    try:
        sys.stdout.flush()      # e.g. a dry run's plan
    except BaseException:  # noqa: BLE001 - the main thread may be inside a write
        pass
    try:    # os.write: the main thread may hold sys.stderr's lock (a handler must not print)
        os.write(2, (("\n" if os.isatty(2) else "") + message + "\n").encode())
    except OSError:
        pass
    os._exit(code)


def checkpoint(point: str, count: int = 0) -> None:
    """Test hook: pause at ``point`` when SWEEP_TEST_PAUSE names it (see the module doc)."""
    wanted = os.environ.get("SWEEP_TEST_PAUSE")
    if not wanted or point in _fired:
        return
    for item in wanted.split(","):
        name, _, at_least = item.partition(":")
        if name == point and count >= int(at_least or 0):
            _fired.add(point)
            _pause(point)
            return


def _pause(point: str) -> None:
    seen = _signals
    path = os.environ["SWEEP_TEST_PAUSE_FILE"]
    with open(path + ".tmp", "w") as handle:
        handle.write(point)
    os.replace(path + ".tmp", path)
    while _signals == seen and os.path.exists(path):   # raises KeyboardInterrupt here unless polling
        time.sleep(0.02)


def leave(code: int) -> None:
    """End the process with ``code`` (130 if a signal came and was not yet answered), skipping
    the interpreter's finalization, where a late Ctrl-C would print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _signals and code == 0:
        code = INTERRUPTED
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)
