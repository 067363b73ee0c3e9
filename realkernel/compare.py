"""The model beside Linux: which model test mirrors which real selftest (and their outcomes
side by side), and a replayed stream's metrics and per-request outcomes against the model's
for the same (spec, seed)."""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import core
from realkernel.stream import S_KILLED, S_NOT_RUN, S_OK, request_results

REPO = Path(__file__).resolve().parent.parent
MODERN = "v6.1"                         # the model's row of the kernel this bench boots (Linux 6.1)
# real subtest -> the model's mirror (a pytest node id under tests/, run for the v6.1 row
# where it is parametrized by design), or None where the model has no mirror
MIRRORS = {
    "test_kmem": {
        "test_kmem_basic": "tests/test_modern_selftests.py::test_kmem_basic",
        "test_kmem_memcg_deletion": None,
        "test_kmem_proc_kpagecgroup": None,
        "test_kmem_kernel_stacks": None,
        "test_kmem_dead_cgroups": None,
        "test_percpu_basic": None,
    },
    "test_memcontrol": {
        "test_memcg_subtree_control": None,
        "test_memcg_current": "tests/test_memcg_selftests.py::test_memcg_current_peak",
        "test_memcg_min": None,
        "test_memcg_low": "tests/test_memcg_selftests.py::"
                          "test_memcg_low_protects_until_only_protected_memory_is_left",
        "test_memcg_high": "tests/test_memcg_selftests.py::test_memcg_high",
        "test_memcg_high_sync": "tests/test_modern_selftests.py::test_memcg_high_sync",
        "test_memcg_max": "tests/test_memcg_selftests.py::test_memcg_max",
        "test_memcg_reclaim": "tests/test_memcg_selftests.py::test_memcg_reclaim",
        "test_memcg_oom_events": "tests/test_memcg_selftests.py::test_memcg_oom_events",
        "test_memcg_swap_max": None,
        "test_memcg_sock": None,
        "test_memcg_oom_group_leaf_events": None,
        "test_memcg_oom_group_parent_events": None,
        "test_memcg_oom_group_score_events": None,
    },
}
_PYTEST_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED)\S* (\S+?)(?:\[([^\]]+)\])?(?: |$)")


def model_mirror_outcomes(selftests):
    """{node id: "pass" | "fail" | "skip" | "missing"} of the mirrors of `selftests`, run
    with pytest in the repository (their v6.1 instance where parametrized)."""
    ids = sorted({nid for name in selftests for nid in MIRRORS.get(name, {}).values() if nid})
    if not ids:
        return {}
    if not (REPO / "tests").is_dir():
        return {nid: "missing" for nid in ids}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           *ids], cwd=REPO, capture_output=True, text=True, env=env)
    out = {nid: "missing" for nid in ids}
    for line in proc.stdout.splitlines():
        m = _PYTEST_LINE.match(line)
        if m and m.group(2) in out and m.group(3) in (None, MODERN):
            out[m.group(2)] = {"PASSED": "pass", "SKIPPED": "skip"}.get(m.group(1), "fail")
    return out


def selftest_table(real, model):
    """Rows (selftest, subtest, Linux outcome, model mirror, model outcome)."""
    rows = []
    for name, results in real.items():
        seen = set()
        for subtest, outcome in results:
            mirror = MIRRORS.get(name, {}).get(subtest)
            rows.append((name, subtest, outcome, mirror or "-",
                         model.get(mirror, "-") if mirror else "-"))
            seen.add(subtest)
        for subtest, mirror in MIRRORS.get(name, {}).items():
            if subtest not in seen:
                rows.append((name, subtest, "not run", mirror or "-", "-"))
    return rows


def model_run(spec, seed, design=MODERN):
    """The model's metrics of (spec, seed) under `design` and its per-request outcomes
    {seq: ok} from run_workload's trace."""
    spec = dict(spec, design=design)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.tsv"
        metrics = core.run_workload(spec, seed, trace=str(trace))
        outcomes = {}
        with open(trace) as f:
            next(f)
            for line in f:
                seq, _, _, _, _, _, _, result, _ = line.split("\t")
                outcomes[int(seq)] = int(result) >= 0
    return metrics, outcomes


def request_agreement(stream, results, model_outcomes):
    """(requests where Linux and the model agree on ok/failed, requests compared, Linux
    failures, model failures), matching requests by their seq; requests the model issued
    but Linux did not (its task had died in the entry) are left out."""
    agree = total = lf = mf = 0
    for (seq, _, _), (status, _) in zip(stream.requests, request_results(stream, results)):
        if seq not in model_outcomes or status == S_NOT_RUN:
            continue
        linux_ok = status != S_KILLED and bool(status & S_OK)
        total += 1
        agree += linux_ok == model_outcomes[seq]
        lf += not linux_ok
        mf += not model_outcomes[seq]
    return agree, total, lf, mf


def metric_rows(model, linux):
    """Rows (metric, model, Linux) for every metric of core.METRICS, Linux 'not observable'
    where the kernel does not expose it."""
    return [(name, model.get(name), "not observable" if linux.get(name) is None else linux[name])
            for name in core.METRICS]
