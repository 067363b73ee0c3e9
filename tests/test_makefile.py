"""Every script and module a Makefile target runs exists (`make bench` once ran a
benchmarks/run.py that did not)."""
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def recipes():
    """(target, command) for every recipe line of the Makefile."""
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t"):
            yield target, line.strip()
        elif re.match(r"^[\w$().-]+:", line):
            target = line.split(":")[0]


def test_every_script_a_make_target_runs_exists():
    commands = list(recipes())
    scripts = [(t, s) for t, c in commands for s in re.findall(r"(?<![\w/.$-])([\w/.-]+\.py)\b", c)]
    modules = [(t, m) for t, c in commands for m in re.findall(r"\$\(VPY\) -m (\w[\w.]*)", c)]
    assert ("bench", "benchmarks/core_bench.py") in scripts
    assert ("run", "sweep") in modules
    missing = [(t, s) for t, s in scripts if not (ROOT / s).is_file()]
    missing += [(t, m) for t, m in modules if importlib.util.find_spec(m) is None]
    assert not missing, f"Makefile targets run what does not exist: {missing}"
