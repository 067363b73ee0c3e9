"""The terminal: progress bar or plain lines, messages that leave the bar intact, plurals,
help text and the dry run's summary-first output."""
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from sweep.progress import Progress, is_terminal, plural

REPO = Path(__file__).resolve().parent.parent


def _pty(columns: int):
    """(a writable terminal stream reporting ``columns`` columns, the master fd to read)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return os.fdopen(slave, "w", buffering=1), master


def _read(master: int) -> str:
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_plurals():
    assert plural(1, "CPU") == "1 CPU" and plural(2, "CPU") == "2 CPUs"
    assert plural(8064, "workload") == "8,064 workloads" and plural(0, "error") == "0 errors"


def test_a_terminal_of_zero_columns_gets_plain_progress_lines():
    stream, master = _pty(0)
    try:
        assert stream.isatty() and not is_terminal(stream)
        progress = Progress(10, stream=stream, every_s=0)
        assert progress._bar is None
        progress.update(10)
        progress.close()
        assert "progress: 10/10 (100%) errors=0 lost=0" in _read(master)
    finally:
        stream.close()
        os.close(master)


def test_messages_go_through_the_bar_not_into_its_line():
    stream, master = _pty(100)
    try:
        progress = Progress(10, stream=stream)
        assert progress._bar is not None
        progress.update(3)
        print("started a local Ray in 8.4s", file=progress.writer)     # as the Ray session prints
        progress.update(7)
        progress.close()
        output = _read(master)
        lines = [part.strip() for line in output.splitlines() for part in line.split("\r")]
        assert "started a local Ray in 8.4s" in lines                    # a line of its own
        assert any("10/10" in line for line in lines)                   # and the bar went on
    finally:
        stream.close()
        os.close(master)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_help_has_no_literal_backticks():
    done = _cli("--help")
    assert done.returncode == 0 and "``" not in done.stdout
    assert "-v, --verbose" in done.stdout


def test_dry_run_prints_its_summary_first_and_cells_only_with_v(tmp_path):
    args = ("configs/smoke.yaml", "--dry-run", f"output.dir={tmp_path / 'smoke'}")
    quiet = _cli(*args)
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stdout.splitlines()
    assert lines[0].startswith("sweep 'smoke'") and "cells (id" not in quiet.stdout
    assert any(line.startswith("cells: ") for line in lines) and any("estimated time" in line for line in lines)
    assert "workloads ran" in quiet.stdout and not re.search(r"\b1 (CPUs|workloads|cells)\b", quiet.stdout)
    verbose = _cli(*args, "-v")
    cells = verbose.stdout.split("cells (id: workloads to run):\n", 1)
    assert len(cells) == 2 and verbose.stdout.index("estimated time") < verbose.stdout.index("cells (id")
