"""Ctrl-C at random moments (not in CI: it takes ~20 min): the acceptance loop of issue 15.

    .venv/bin/python benchmarks/interrupt_loop.py [--tries 20] [--seed 1]

First one uninterrupted run (with the report and MLflow logging to a private sqlite file)
gives the reference results and the run's length T.  Then each try starts the same sweep in
a fresh folder, in its own process group, and sends SIGINT to the group at a random moment
in [0, T] (a third of the tries send a second SIGINT 0-1 s later), as a terminal's Ctrl-C
would.  A try passes when the driver exits 130 (or 0 if it finished before the signal) with
no traceback and no Ray crash text, no process of its local Ray is alive 10 s later, and a
rerun (on a shared Ray, to save time) exits 0 with results equal to the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from sweep.rayhead import LocalHead  # noqa: E402
from sweep_helpers import alive, cli_env, descendants, metric_table, write_config  # noqa: E402

SWEEP = {"name": "loop", "replications": 2, "workload": {"length": {"kernel_entries": 15000}},
         "ray": {"chunk_seconds": 0.3, "max_in_flight": 2}, "tracking": {"enabled": True}}
BAD = ("Traceback", "Check failed", "discovered a bug in Ray")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, help="Ctrl-C within [0, WINDOW] s (default: the reference run's length)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="interrupt-loop-"))
    config = write_config(folder, SWEEP | {"tracking": {"enabled": True, "uri": f"sqlite:///{folder}/mlflow.db"}})
    for attempt in range(3):      # Ray gives its raylet 30 s to register: a busy machine can miss it
        started = time.monotonic()
        code, stderr, _ = drive(config, folder / "reference", None)
        length = time.monotonic() - started
        if code == 0:
            break
        print(f"uninterrupted run failed ({code}): {stderr.strip().splitlines()[-1][:200]}", flush=True)
    assert code == 0, "the uninterrupted run failed three times"
    reference = table(folder / "reference")
    print(f"uninterrupted run: {length:.1f}s, {len(reference)} workloads", flush=True)
    head = LocalHead(2, folder / "shared-ray.log")
    assert head.wait_ready(lambda: False)
    failures = 0
    try:
        for i in range(args.tries):
            at = rng.uniform(0, args.window or length)
            twice = rng.random() < 1 / 3
            out = folder / f"try{i}"
            code, stderr, leftovers = drive(config, out, (at, twice))
            rerun, _, _ = drive(config, out, None, ray_address=head.address) if code != 0 else (0, "", set())
            same = rerun == 0 and table(out).equals(reference)
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            ok = code in (0, 130) and not any(b in stderr for b in BAD) and not leftovers and same
            failures += not ok
            print(f"try {i:2d}: Ctrl-C at {at:5.1f}s{' x2' if twice else '   '} -> exit {code}, "
                  f"{'no' if not leftovers else len(leftovers)} Ray left, rerun {'equal' if same else 'DIFFERENT'}"
                  f"{'' if ok else '  FAIL'} | {last[:110]}", flush=True)
    finally:
        head.close()
    print(f"{args.tries - failures}/{args.tries} tries clean; folder {folder}")
    return 1 if failures else 0


def drive(config: Path, out: Path, signal_at, ray_address: str | None = None) -> tuple[int, str, set[int]]:
    """Run the sweep; with ``signal_at`` = (seconds, twice), Ctrl-C it then. Returns its exit
    code, stderr and the Ray processes it started that are still alive 10 s after it ended."""
    joined = {"RAY_ADDRESS": ray_address, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
              "RAY_AUTH_MODE": "token"} if ray_address else {}
    env = cli_env(**joined)     # (the shared Ray listens on 127.0.0.1 only: PLATFORM.md)
    proc = subprocess.Popen([sys.executable, "-m", "sweep", str(config), f"output.dir={out}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ray: set[int] = set()
    if signal_at is not None:
        at, twice = signal_at
        deadline = time.monotonic() + at
        while time.monotonic() < deadline and proc.poll() is None:
            ray |= descendants(proc.pid)
            time.sleep(0.05)
        ray |= descendants(proc.pid)
        _signal(proc)
        if twice:
            time.sleep(random.uniform(0, 1.0))
            _signal(proc)
    _, stderr = proc.communicate(timeout=600)
    end = time.monotonic() + 10
    while alive(ray) and time.monotonic() < end:
        time.sleep(0.2)
    return proc.returncode, stderr, alive(ray)


def _signal(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass


def table(out: Path):
    from sweep.store import Store

    with Store(out / "results.sqlite") as store:
        return metric_table(store.dataframe())


if __name__ == "__main__":
    sys.exit(main())
