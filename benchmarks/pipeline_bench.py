"""The default sweep end to end: how long the user waits for the report and MLflow after the
last workload, against the sweep itself (issue 24: at most 15 % of the sweep's wall time).

    .venv/bin/python benchmarks/pipeline_bench.py                 # default grid (~3 min)
    .venv/bin/python benchmarks/pipeline_bench.py --scale 10      # 10x the cells (~30 min)
    .venv/bin/python benchmarks/pipeline_bench.py --local         # no Ray (in-process executor)
    .venv/bin/python benchmarks/pipeline_bench.py --repo ../main  # another checkout (before/after)
    .venv/bin/python benchmarks/pipeline_bench.py --stored sweeps/grid   # only what follows the sweep
    .venv/bin/python benchmarks/pipeline_bench.py --keep /tmp/run1       # keep the folder (its analysis)

``--stored DIR`` times only what follows the last workload, on a copy of a finished sweep
folder (its store, config and claims; no analysis cache, no report): the driver's
``cli._report_and_log``, report and MLflow both on, as a run calls it.

Runs ``python -m sweep configs/grid.yaml`` once, as a user does (report and MLflow on, into
a fresh sqlite store in a temporary folder), and splits its wall time at the lines it
prints: the sweep (start until the "sweep 'grid'" summary line), then the report and the
MLflow logging up to the end of the process (apart when the driver prints "report:" between
them, else together).  With ``--scale N`` every block of the grid appears N times, copy k
with tasks that exit after 300 + 10k kernel entries (so the copies are distinct cells).

Wall times on a shared 2-core machine are noisy, so each phase also shows the CPU time of
the driver and every process under it (Ray's raylet and workers, a process pool), sampled
from /proc every 0.2 s: the CPU a phase used does not depend on who else ran meanwhile.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sweep.rayhead import descendants  # noqa: E402  (stdlib only: imports no Ray)

GRID = REPO / "configs" / "grid.yaml"
HZ = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) used by a process tree, its exited members included: the
    last value seen of every pid, summed; ``at()`` reads the total at a moment."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.seen, self.stop = pid, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(SAMPLE_S)

    def sample(self) -> None:
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[pid] = (int(stat[11]) + int(stat[12])) / HZ

    def total(self) -> float:
        return sum(self.seen.values())


def machine_busy() -> float:
    """CPU seconds the whole machine has used (all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / HZ


def scaled_config(folder: Path, scale: int) -> Path:
    """configs/grid.yaml with every block ``scale`` times (copy k: churn 300 + 10k entries)."""
    cfg = yaml.safe_load(GRID.read_text())
    cfg["claims"] = str(GRID.parent / cfg["claims"])
    if scale > 1:
        blocks = []
        for k in range(scale):
            for block in cfg["blocks"]:
                workload = {**(block.get("workload") or {}), "churn": {"mean_entries": 300 + 10 * k}}
                blocks.append({**block, "name": f"{block['name']}-{k}", "workload": workload})
        cfg["blocks"] = blocks
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(config: Path, folder: Path, local: bool, extra: list[str], repo: Path = REPO,
        command: list[str] | None = None) -> dict:
    command = command or [str(repo / ".venv" / "bin" / "python"), "-m", "sweep", str(config),
                          f"output.dir={folder}/grid", f"tracking.uri=sqlite:///{folder}/mlflow.db",
                          *(["--local"] if local else []), *extra]
    start, busy = time.perf_counter(), machine_busy()
    child = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONPATH=str(repo), RAY_USAGE_STATS_ENABLED="0"))
    sampler = CpuSampler(child.pid)
    sampler.start()
    marks, lines = {}, []
    for line in child.stdout:
        lines.append(line)
        for mark, prefix in (("swept", "sweep '"), ("reported", "report: "), ("logged", "MLflow: parent run")):
            if line.startswith(prefix) and mark not in marks:
                sampler.sample()
                marks[mark] = (time.perf_counter() - start, sampler.total())
    child.wait()
    sampler.sample()
    sampler.stop.set()
    end = (time.perf_counter() - start, sampler.total())
    if child.returncode != 0 or "swept" not in marks:
        sys.exit(f"python -m sweep failed ({child.returncode}):\n" + "".join(lines[-40:]))
    summary = next(line.strip() for line in lines if line.startswith("sweep '"))
    return {"marks": marks, "end": end, "summary": summary, "others": machine_busy() - busy - end[1],
            "command": " ".join(["python", *command[1:]])}


def stored_command(stored: Path, folder: Path, repo: Path) -> list[str]:
    """The post-sweep step of a run on a copy of ``stored``."""
    copy = folder / "grid"
    copy.mkdir()
    for name in ("results.sqlite", "config.yaml", "claims.yaml", "sweep.json"):
        if (stored / name).exists():
            shutil.copy2(stored / name, copy / name)
    code = ("import sys; from sweep import cli; from sweep.outdir import SweepDir; d = SweepDir(sys.argv[1]); "
            "print(\"sweep 'stored': after the last workload\", flush=True); "
            "sys.exit(cli._report_and_log(d, d.read_config([sys.argv[2]])))")
    return [str(repo / ".venv" / "bin" / "python"), "-c", code, str(copy), f"tracking.uri=sqlite:///{folder}/mlflow.db"]


def phases(result: dict) -> list[tuple[str, float, float]]:
    """(phase, wall s, CPU s) in order; report and log apart when the driver said where."""
    points = [("sweep", result["marks"]["swept"])]
    if "reported" in result["marks"]:
        points.append(("report", result["marks"]["reported"]))
        points.append(("MLflow log", result["end"]))
    else:
        points.append(("report + MLflow log", result["end"]))
    out, before = [], (0.0, 0.0)
    for name, at in points:
        out.append((name, at[0] - before[0], at[1] - before[1]))
        before = at
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="every block of the grid this many times")
    parser.add_argument("--local", action="store_true", help="run the workloads in the driver (no Ray)")
    parser.add_argument("--stored", type=Path, help="time only the report and MLflow of this finished sweep")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout (with its .venv) to run")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it, e.g. to compare analyses")
    parser.add_argument("overrides", nargs="*", help="key=value for python -m sweep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True)
            folder = args.keep.resolve()
        repo = args.repo.resolve()
        command = stored_command(args.stored.resolve(), folder, repo) if args.stored else None
        result = run(scaled_config(folder, args.scale), folder, args.local, args.overrides, repo, command)
    rows = phases(result)
    sweep_wall, sweep_cpu = rows[0][1], rows[0][2]
    post_wall, post_cpu = sum(r[1] for r in rows[1:]), sum(r[2] for r in rows[1:])
    wall, cpu = result["end"]
    print(f"- {result['summary']}")
    print(f"- `{result['command']}` (scale {args.scale}): {wall:.1f} s wall, {cpu:.1f} s CPU (driver + "
          f"its processes); the rest of the machine used {result['others']:.0f} CPU s meanwhile "
          f"({result['others'] / wall:.2f} CPUs)")
    print("\n| phase | wall s | CPU s |\n|---|---:|---:|")
    for name, w, c in rows:
        print(f"| {name} | {w:.1f} | {c:.1f} |")
    if args.stored:
        print(f"\n- report + MLflow after the last workload: {post_wall:.1f} s wall, {post_cpu:.1f} s CPU")
        return
    print(f"\n- report + MLflow after the last workload: {post_wall:.1f} s wall = "
          f"{100 * post_wall / sweep_wall:.0f} % of the sweep's {sweep_wall:.1f} s; CPU {post_cpu:.1f} s = "
          f"{100 * post_cpu / sweep_cpu:.0f} % of the sweep's {sweep_cpu:.1f} s")


if __name__ == "__main__":
    main()
