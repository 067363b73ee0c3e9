"""Core speed and memory (issues 2 and 4). Run: .venv/bin/python benchmarks/core_bench.py

Each figure is measured in a fresh subprocess so RSS deltas are not polluted by earlier
runs. Results go to stdout as Markdown rows for benchmarks/RESULTS.md.
"""
import json
import subprocess
import sys
import textwrap

CASES = {
    "machine_16g": """
        import time, core
        rss0 = rss()
        t0 = time.perf_counter(); m = core.Machine(nodes=1, mem_mib=16384, cpus=2)
        dt = time.perf_counter() - t0
        pages = 16384 * 256
        out = {"construct_s": dt, "rss_bytes_per_page": (rss() - rss0) / pages}
    """,
    "buddy_pairs": """
        import time, core
        m = core.Machine(nodes=1, mem_mib=4096, cpus=2)
        n = 20_000_000
        # worst case: a fresh zone, every pair splits an order-10 block and merges it back
        t0 = time.perf_counter(); m._bench_buddy_pairs(n); worst = n / (time.perf_counter() - t0)
        # typical: one pinned page leaves free blocks of every order; pairs use order 0
        m.spawn("/").alloc_pages(0)
        t0 = time.perf_counter(); m._bench_buddy_pairs(n); typical = n / (time.perf_counter() - t0)
        out = {"pairs_per_s_split_merge_10_levels": worst, "pairs_per_s_order0_list": typical}
    """,
    "workload_kernel_mix": """
        import time, yaml, core
        mix = yaml.safe_load(open("configs/mixes/kernel.yaml"))
        spec = {"machine": {"nodes": 1, "mem_mib": 4096, "cpus": 2}, "cgroup": {"max": "max"},
                "tasks": 2, "length": {"kernel_entries": 200000}, "mix": mix, "design": "way2"}
        core.run_workload(dict(spec, length={"kernel_entries": 1000}), 1)
        rss0 = rss()
        t0 = time.perf_counter(); r = core.run_workload(spec, 1); dt = time.perf_counter() - t0
        out = {"requests": r["requests"], "requests_per_s": r["requests"] / dt,
               "seconds": dt, "peak_rss_mib": peak_rss() / 2**20}
    """,
    "workload_kmalloc_only": """
        import time, core
        mix = {"requests": [{"kind": "kmalloc", "weight": 1, "gfp": "GFP_KERNEL",
                             "size": {"min": 8, "max": 4096}}], "burst": 8, "lifetime": {"mean": 256}}
        spec = {"machine": {"nodes": 1, "mem_mib": 4096, "cpus": 2}, "cgroup": {"max": "max"},
                "tasks": 2, "length": {"kernel_entries": 400000}, "mix": mix, "design": "way2"}
        t0 = time.perf_counter(); r = core.run_workload(spec, 1); dt = time.perf_counter() - t0
        out = {"requests": r["requests"], "requests_per_s": r["requests"] / dt}
    """,
    "workload_cpu": """
        import yaml, core
        # process CPU time, best of 3: comparable between builds on a shared machine, where
        # wall time mostly measures the other users
        kernel = yaml.safe_load(open("configs/mixes/kernel.yaml"))
        kmalloc = {"requests": [{"kind": "kmalloc", "weight": 1, "gfp": "GFP_KERNEL",
                                 "size": {"min": 8, "max": 4096}}], "burst": 8, "lifetime": {"mean": 256}}
        base = {"machine": {"nodes": 1, "mem_mib": 4096, "cpus": 2}, "cgroup": {"max": "max"},
                "tasks": 2, "design": "way2"}
        out = {}
        for name, mix, entries in (("kernel", kernel, 200000), ("kmalloc", kmalloc, 400000)):
            spec = dict(base, mix=mix, length={"kernel_entries": entries})
            core.run_workload(dict(spec, length={"kernel_entries": 1000}), 1)
            best = min(cpu_seconds(core.run_workload, spec, 1) for _ in range(3))
            out[f"{name}_requests_per_cpu_s"] = core.run_workload(spec, 1)["requests"] / best
    """,
    "workload_memory_4g": """
        import yaml, core
        mix = yaml.safe_load(open("configs/mixes/kernel.yaml"))
        spec = {"machine": {"nodes": 2, "mem_mib": 4096, "cpus": 4}, "cgroup": {"max": "256M", "high": 0.75},
                "background": {"file_mib": 2048, "fragment": 0.05},
                "tasks": 4, "length": {"kernel_entries": 50000}, "mix": mix, "design": "way1"}
        base = peak_rss()
        r = core.run_workload(spec, 1)
        out = {"peak_rss_increase_mib": (peak_rss() - base) / 2**20, "requests": r["requests"]}
    """,
}

PRELUDE = """
import resource
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def cpu_seconds(fn, *args):
    import time
    start = time.process_time()
    fn(*args)
    return time.process_time() - start
"""


def run(name):
    code = PRELUDE + textwrap.dedent(CASES[name]) + "\nimport json; print(json.dumps(out))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    for case in sys.argv[1:] or CASES:
        print(case, json.dumps(run(case)))
