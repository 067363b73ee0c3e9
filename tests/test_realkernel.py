"""The real-kernel bench (realkernel/, docs/realkernel.md): Debian's Linux 6.1 under qemu.

One boot for the whole session (the `linux` fixture: tests/realkernel_boot.py, shared with
test_kernel_row.py; ~1-3 min under TCG on 2 busy cores; the first run downloads the kernel
into the cache): the kernel's own test_kmem, and replays of short streams through the
kmemreq module, compared with the model's v6.1 row (the model of the kernel that boots). The
error paths (no qemu, a refused download, an ABI mismatch, a kernel panic, a timeout) are
real and fast, each ending in one RealKernelError line.
"""
import os
import subprocess
import sys
import time

import pytest
import yaml

import core
import realkernel_boot
from kernel_selftest import values_close
from realkernel import bench, compare, fetch, qemu, stream
from realkernel.errors import RealKernelError
from realkernel_boot import ATOMIC_FILL, KERNEL_FILL, REPO, TWO_TASKS, TWO_TASKS_SEED

pytestmark = pytest.mark.realkernel


@pytest.fixture(scope="session")
def linux():
    """The session's ONE boot (realkernel_boot.boot): test_kmem, then the atomic-fill stream,
    one entry of kernel-fill, a short two-task kernel stream (streams 0-2) and the kernel-row
    sweep's streams."""
    return realkernel_boot.boot()


# ---- on the real kernel ---------------------------------------------------------------------

def test_guest_has_the_asked_machine(linux):
    release, cpus, nodes = linux["boot"].split()[1:4]
    assert release.startswith("6.1.") and release.endswith("-amd64")
    assert (cpus, nodes) == ("cpus=2", "nodes=2")


def test_test_kmem_subtests_are_all_reported_and_mapped(linux):
    """Every subtest the kernel ran has a row in the mirror table (a kernel update that adds
    one fails here until the table says whether the model mirrors it)."""
    ran = [name for name, _ in linux["selftests"]["test_kmem"]]
    assert ran and set(ran) == set(compare.MIRRORS["test_kmem"])


def test_mirrored_kmem_subtest_passes_on_linux_as_in_the_model(linux):
    """test_kmem_basic (mirrored by test_modern_selftests.py::test_kmem_basic, which passes in
    this suite) passes on Linux 6.1: negative dentries are charged as slab and memory.high
    reclaims them."""
    outcomes = dict(linux["selftests"]["test_kmem"])
    mirrored = [s for s, nid in compare.MIRRORS["test_kmem"].items() if nid]
    assert mirrored and all(outcomes[s] == "pass" for s in mirrored)


def test_replay_runs_every_request_of_the_stream(linux):
    raw, metrics = linux["raw"][0], linux["streams"][0]
    model = core.run_workload(ATOMIC_FILL, 1)
    assert len(raw["results"]) == len(raw["stream"].requests) + raw["stream"].frees
    assert metrics["requests"] == model["requests"] > 0
    assert metrics["kernel_entries"] == model["kernel_entries"]
    assert metrics["alloc_atomic_attempts"] == model["alloc_atomic_attempts"]
    assert raw["kills"] == 0


def test_a_stream_of_two_tasks_runs_to_its_end_whichever_task_enters_first(linux):
    """Every task's child exits when kreplay closes its command pipe, which only works if no
    other child holds that pipe too (a sweep's 63-bit seeds made task 0 enter first, and the
    guest hung until its timeout)."""
    events = list(core.workload_events(TWO_TASKS, TWO_TASKS_SEED))
    assert next(e for e in events if e[0] == "enter")[1] == 0            # task 0 enters first
    assert {e[1] for e in events if e[0] == "enter"} == {0, 1}
    raw, metrics = linux["raw"][2], linux["streams"][2]
    model = core.run_workload(TWO_TASKS, TWO_TASKS_SEED)
    assert metrics["requests"] == model["requests"] > 0
    assert metrics["kernel_entries"] == model["kernel_entries"] == 100


def test_every_page_cache_read_of_a_stream_charges_a_page_no_task_has_cached(linux):
    """kreplay counts read_file's pages once for the whole stream, as the model reads fresh
    pages: the two tasks' reads (nothing reclaimed in 32M) leave at least as many pages of
    page cache charged as the stream read. It failed while each forked task counted from 0:
    the other task's reads hit its cache (the calibration's memory.high gap), and readahead
    covered only ~64 pages past the furthest read (the two-task stream reads ~460)."""
    raw = linux["raw"][2]
    stat = raw["cgroups"]["w2"]["stat"]
    assert raw["stream"].read_pages > 256 and stat["pgsteal"] == 0
    assert stat["file"] // 4096 >= raw["stream"].read_pages


def test_atomic_charges_are_forced_past_max_on_linux_as_in_the_model(linux):
    """GFP_ATOMIC cannot reclaim but has __GFP_HIGH: try_charge_memcg forces it past
    memory.max (6.1 mm/memcontrol.c, nomem: -> force:), which the v6.1 row models. Same
    stream, same outcome per request, and the peak over memory.max (exact: memory.peak and
    the usage after every request) within the selftests' 3% (values_close)."""
    raw, linux_m = linux["raw"][0], linux["streams"][0]
    model, outcomes = compare.model_run(ATOMIC_FILL, 1)
    agree, total, linux_failed, model_failed = compare.request_agreement(
        raw["stream"], raw["results"], outcomes)
    assert total == len(raw["stream"].requests) and agree == total
    assert linux_failed == model_failed == 0
    assert linux_m["overshoot_max_peak_pages"] > 0 and model["overshoot_max_peak_pages"] > 0
    assert values_close(linux_m["overshoot_max_peak_pages"], model["overshoot_max_peak_pages"], 3)
    assert values_close(linux_m["events_max"], model["events_max"], 3)
    peak_usage = max(usage for _, usage in raw["results"])
    assert peak_usage * 4096 <= raw["cgroups"]["w0"]["memory.peak"]


def test_an_entry_whose_task_is_oom_killed_still_reports_every_request(linux):
    """kernel-fill: unreclaimable GFP_KERNEL kmem past memory.max. Linux 6.1 invokes the memcg
    OOM killer from the charge (try_charge_memcg -> mem_cgroup_oom, since 4.19's "memcg, oom:
    move out_of_memory back to the charge path"); the killed task finishes its write() before
    it dies, and the module has copied out every outcome by then."""
    raw, metrics = linux["raw"][1], linux["streams"][1]
    assert raw["kills"] >= 1 and metrics["events_oom_kill"] >= 1
    statuses = [status for status, _ in stream.request_results(raw["stream"], raw["results"])]
    assert stream.S_NOT_RUN not in statuses and stream.S_KILLED not in statuses
    assert metrics["requests"] == len(raw["stream"].requests)
    assert 0 < metrics["alloc_kernel_failures"] < metrics["requests"]
    assert metrics["events_oom"] == metrics["alloc_kernel_failures"]   # one per failed charge


def test_metrics_use_the_models_names_and_say_what_linux_cannot_show(linux):
    metrics = linux["streams"][0]
    assert set(metrics) == set(core.METRICS)
    assert metrics["sim_ns"] is None and metrics["slub_order_fallbacks"] is None
    rows = compare.metric_rows(core.run_workload(ATOMIC_FILL, 1), metrics)
    assert ("sim_ns", pytest.approx(rows[[r[0] for r in rows].index("sim_ns")][1]),
            "not observable") in rows


# ---- error paths: each ends in one line, fast ------------------------------------------------

def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "realkernel", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_missing_qemu_is_one_line_before_any_download(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = dict(os.environ, PATH=str(bindir), KMEMCG_SWEEP_CACHE=str(tmp_path / "cache"))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(ATOMIC_FILL))
    proc = _cli("replay", str(spec), env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "realkernel: qemu-system-x86_64 not found on PATH: apt-get install qemu-system-x86 "
        "(make system-deps)"]
    assert not (tmp_path / "cache" / "debs").exists()


def test_refused_download_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    with pytest.raises(RealKernelError, match=r"^download of linux-image-0\.0\.0-0-amd64 failed: "):
        fetch.fetch(abi="0.0.0-0")


def _fake_deb(folder, name, version):
    root = folder / f"{name}-pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\n"
        f"Description: test\n")
    deb = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_abi_mismatch_between_image_and_headers_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path))
    debs = tmp_path / "debs"
    debs.mkdir()
    names = fetch.package_names("9.9.9-1")
    for key, name in names.items():
        _fake_deb(debs, name, "6.1.1-1" if key == "headers" else "6.1.2-1")
    with pytest.raises(RealKernelError, match=r"^ABI mismatch: linux-image-9\.9\.9-1-amd64_6\.1\.2"
                       r"-1_all\.deb is 6\.1\.2-1 but linux-headers-9\.9\.9-1-amd64_6\.1\.1-1_all"
                       r"\.deb is 6\.1\.1-1"):
        fetch.fetch(abi="9.9.9-1")
    assert not list(tmp_path.glob("linux-*"))          # nothing unpacked


def test_kernel_panic_is_one_line_not_a_hang(linux):
    """An init that exits: the kernel panics ("Attempted to kill init!"), panic=-1 reboots at
    once and -no-reboot ends qemu. (Uses the cached kernel: after the `linux` fixture.)"""
    start = time.monotonic()
    with pytest.raises(RealKernelError, match=r"^kernel panic: Attempted to kill init!"):
        bench.run_boot(qemu.Setup(cpus=1, nodes=1, mem_mib=512, timeout_s=300),
                       init="#!/bin/busybox sh\nexit 3\n", log=lambda *a: None)
    assert time.monotonic() - start < 300


def test_timeout_kills_the_guest_with_one_line(linux):
    start = time.monotonic()
    with pytest.raises(RealKernelError, match=r"^guest timed out after 3 s"):
        bench.run_boot(qemu.Setup(cpus=1, nodes=1, mem_mib=512, timeout_s=3),
                       init="#!/bin/busybox sh\nwhile :; do :; done\n", log=lambda *a: None)
    assert time.monotonic() - start < 20


def test_guest_error_line_ends_the_boot_at_once():
    """A guest's "@@RK error" line ends the boot there (qemu's process group is killed), not
    at the timeout. A shell stands in for qemu: boot() only reads the console."""
    start = time.monotonic()
    with pytest.raises(RealKernelError, match=r"^guest: no such thing$"):
        qemu.boot(["sh", "-c", "echo booting; echo '@@RK error no such thing'; sleep 60"], 30)
    assert time.monotonic() - start < 10


def test_a_timed_out_boot_keeps_the_streams_the_guest_finished():
    """The console up to a timeout travels with the error, so the streams that printed their
    last line (stream_end) before it are kept and the one cut off is not. A shell stands in
    for qemu, printing stream 0 whole and stream 1 in part."""
    script = ("echo '@@RK stream_begin 0'; echo '@@RK r 01000000ef120000'; echo '@@RK cg w0 memory.peak 8192';"
              "echo '@@RK cg w0 events high 3'; echo '@@RK stream_end 0';"
              "echo '@@RK stream_begin 1'; echo '@@RK r 01000000ef120000'; sleep 60")
    with pytest.raises(RealKernelError, match=r"^guest timed out after 3 s") as caught:
        qemu.boot(["sh", "-c", script], 3)
    streams = bench.finished_streams(caught.value.partial)
    assert len(streams) == 1 and len(streams[0]["results"]) == 1
    assert streams[0]["cgroups"]["w0"] == {"events": {"high": 3}, "stat": {}, "memory.peak": 8192}


def test_qemu_ending_early_is_one_line():
    with pytest.raises(RealKernelError, match=r"^qemu exited \(3\) before the guest finished "
                                              r"\(last line: 'half'\)$"):
        qemu.boot(["sh", "-c", "echo half; exit 3"], 30)


# ---- no boot: the pieces ---------------------------------------------------------------------

def test_kvm_is_refused_without_vmx_or_svm(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu vme de pse hypervisor\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        cpuinfo if p == "/proc/cpuinfo" else p, *a, **k))
    monkeypatch.setattr(os, "access", lambda p, mode: True)
    ok, why = qemu.kvm_usable()
    assert not ok and "without vmx/svm" in why
    lines = []
    monkeypatch.delenv(qemu.ACCEL_ENV, raising=False)
    assert qemu.choose_accel(lines.append) == "tcg" and len(lines) == 1


def test_qemu_command_has_one_memory_backend_and_node_per_numa_node(monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda name: "/usr/bin/" + name)
    cmd = qemu.qemu_command(qemu.Setup(cpus=4, nodes=2, mem_mib=2048), "vmlinuz", "initrd", "tcg")
    joined = " ".join(cmd)
    assert "-accel tcg,thread=multi -cpu max -smp 4,sockets=2 -m 2048M" in joined
    assert "memory-backend-ram,id=m0,size=1024M" in joined
    assert "node,nodeid=1,cpus=2-3,memdev=m1" in joined      # the model's task_new() mapping
    assert "panic=-1" in joined


@pytest.mark.parametrize("name, code, flags", [
    ("GFP_KERNEL_ACCOUNT", 0, stream.F_ACCOUNT),
    ("GFP_NOFS|__GFP_ACCOUNT", 1, stream.F_ACCOUNT),
    ("GFP_NOWAIT|__GFP_ACCOUNT", 2, stream.F_ACCOUNT | stream.F_FALLBACK),
    ("GFP_ATOMIC|__GFP_ACCOUNT", 3, stream.F_ACCOUNT),
    ("GFP_KERNEL_ACCOUNT|__GFP_NOFAIL", 0, stream.F_ACCOUNT | stream.F_NOFAIL),
    ("GFP_KERNEL_ACCOUNT|__GFP_THISNODE", 0, stream.F_ACCOUNT | stream.F_THISNODE),
    ("GFP_KERNEL", 0, 0),            # a site that did not opt in: 6.1 does not charge it
    ("GFP_ATOMIC", 3, 0),
])
def test_model_gfp_becomes_the_same_request_in_6_1(name, code, flags):
    assert stream.linux_gfp(core.gfp(name)) == (code, flags)


def test_stream_holds_every_request_and_free_of_the_model():
    long_entry = yaml.safe_load((REPO / "configs/mixes/long-entry.yaml").read_text())
    spec = dict(ATOMIC_FILL, mix=long_entry,
                length={"kernel_entries": 3}, tasks=2)
    s = stream.build_stream(spec, 7)
    model = core.run_workload(spec, 7)
    assert len(s.requests) == model["requests"] and s.entries == model["kernel_entries"]
    pos, ops = 0, []
    while pos < len(s.data):                      # walk the bytes kreplay walks
        task, n = stream.HDR.unpack_from(s.data, pos)
        pos += stream.HDR.size
        assert task < s.nr_tasks
        ops += [stream.REQ.unpack_from(s.data, pos + i * stream.REQ.size)[0] for i in range(n)]
        pos += n * stream.REQ.size
    assert len(ops) == len(s.requests) + s.frees and ops.count(stream.OPS["free"]) == s.frees > 0


def test_stream_slots_name_one_live_object_each_as_in_the_model():
    """kmemreq keeps objects in one table by slot and frees what a store replaces
    (guest/kmemreq.c kmemreq_one): a slot handed to a second allocation while its first
    object lives would free that object early on Linux only. The model frees an object only
    by its own scheduled free (core/replay.py), so in the stream every allocation must find
    its slot empty and every free its slot full - and the objects left live are the ones
    whose free is still pending at the end, as in the model."""
    long_entry = yaml.safe_load((REPO / "configs/mixes/long-entry.yaml").read_text())
    spec = dict(ATOMIC_FILL, mix=dict(long_entry, lifetime={"mean": 1500, "long_lived_share": 0.0}),
                length={"kernel_entries": 3}, tasks=2)
    s = stream.build_stream(spec, 7)
    live, stored_over, freed_empty, pos = set(), 0, 0, 0
    while pos < len(s.data):
        _, n = stream.HDR.unpack_from(s.data, pos)
        pos += stream.HDR.size
        for i in range(n if n != stream.EXIT else 0):
            op, _, _, _, slot, _ = stream.REQ.unpack_from(s.data, pos + i * stream.REQ.size)
            if op == stream.OPS["free"]:
                freed_empty += slot not in live
                live.discard(slot)
            elif op in (stream.OPS["kmalloc"], stream.OPS["kmalloc_node"], stream.OPS["alloc_pages"]):
                stored_over += slot in live
                live.add(slot)
        pos += (n if n != stream.EXIT else 0) * stream.REQ.size
    allocs = sum(kind in ("kmalloc", "kmalloc_node", "alloc_pages") for _, kind, _ in s.requests)
    assert s.frees > 0 and (stored_over, freed_empty) == (0, 0)
    assert len(live) == allocs - s.frees


def test_linux_metrics_count_a_failed_nowait_and_its_fallback():
    spec = dict(ATOMIC_FILL, mix={"requests": [{"kind": "kmalloc", "weight": 1, "gfp": "GFP_NOWAIT",
                                                "size": {"min": 64, "max": 64}}], "burst": 2},
                length={"kernel_entries": 1})
    s = stream.build_stream(spec, 1)
    n = len(s.requests)
    results = [(stream.S_FALLBACK | stream.S_OK, 10)] + [(stream.S_OK, 10)] * (n - 1)
    if n > 1:
        results[1] = (stream.S_FALLBACK, 11)                 # fallback failed too: ENOMEM
    cg = {"events": {"max": 2}, "stat": {"pgscan": 5}, "peak": 12 * 4096, "max": 8 << 20,
          "high": None}
    m = stream.linux_metrics(s, results + [(stream.S_OK, 0)] * s.frees, cg)
    assert m["nowait_failures"] == m["nowait_fallbacks"] == min(n, 2)
    assert m["alloc_kernel_attempts"] == min(n, 2)
    assert m["enomem_user_visible"] == (1 if n > 1 else 0)
    assert m["events_max"] == 2 and m["reclaim_scanned_pages"] == 5
    assert m["overshoot_max_peak_pages"] == 0


def test_selftest_tap_lines_give_each_subtests_outcome():
    tagged = [("selftest_begin", "test_memcontrol"),
              ("st", "test_memcontrol ok 1 test_memcg_subtree_control"),
              ("st", "test_memcontrol memory.current = 123"),         # a printed quantity
              ("st", "test_memcontrol not ok 2 test_memcg_sock"),
              ("st", "test_memcontrol ok 3 # SKIP test_memcg_swap_max"),
              ("selftest_end", "test_memcontrol")]
    console = qemu.Console(tagged, [], 0.0)
    assert bench._selftest_results(console) == {"test_memcontrol": [
        ("test_memcg_subtree_control", "pass"), ("test_memcg_sock", "fail"),
        ("test_memcg_swap_max", "skip")]}
    assert bench._selftest_notes(console) == {"test_memcontrol": ["memory.current = 123"]}


def test_bad_input_exits_2_with_one_line_naming_it(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(dict(ATOMIC_FILL, tasks=0)))
    proc = _cli("replay", str(spec))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert str(spec) in proc.stderr and "tasks" in proc.stderr
    proc = _cli("selftests", "--tests", "test_nothing")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("realkernel: --tests: unknown test_nothing; known: test_kmem, "
                                   "test_memcontrol")
