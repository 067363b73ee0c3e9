"""A design row that is a real kernel (issue 23 point 1): `designs: [v6.1, linux-6.1]` runs
each workload of a cell on the model's v6.1 row and on Debian's Linux 6.1 under qemu, with
the same seeds, and stores both under the same metric names (docs/sweep.md "A real kernel
as a design row").  The sweep test's guest work runs in the session's one boot
(tests/realkernel_boot.py, shared with test_realkernel.py); the config tests boot nothing."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest

import core
import realkernel
import realkernel_boot
from realkernel_boot import KERNEL_CELL
from sweep import cli, config, grid, plan
from sweep.config import ConfigError
from sweep.store import Store
from sweep_helpers import deep_update, write_config

# quantities Linux shows (docs/realkernel.md's table) and one it cannot (SLUB_STATS is off)
OBSERVABLE = ("requests", "kernel_entries", "alloc_kernel_attempts", "enomem_user_visible", "events_high",
              "overshoot_high_peak_pages", "reclaim_scanned_pages")
NOT_OBSERVABLE = ("slub_order_fallbacks", "syscall_latency_p99_ns")


def cells_of(tmp_path, changes):
    path = write_config(tmp_path, deep_update(KERNEL_CELL, changes))
    cfg = config.load(path, [])
    return grid.build_cells(cfg, config.load_mixes(cfg, path))


# ---- config: boots nothing ------------------------------------------------------------------

def test_linux_row_is_an_allowed_design_and_named_in_the_error(tmp_path):
    cells = cells_of(tmp_path, {})
    assert set(cells[0].specs) == {"v6.1", "linux-6.1"}
    assert cells[0].specs["linux-6.1"]["design"] == "linux-6.1"
    with pytest.raises(ConfigError, match=r"designs\[1\]: unknown design 'linux-6.2'.*allowed: .*linux-6\.1"):
        cells_of(tmp_path, {"designs": ["v6.1", "linux-6.2"]})


def test_linux_row_is_keyed_apart_from_the_model_on_the_same_seed(tmp_path):
    cells = cells_of(tmp_path, {})
    planned = grid.workloads(cells, ["v6.1", "linux-6.1"], 1, 7, core.MODEL_VERSION)
    model, kernel = sorted(planned, key=lambda w: w.design == "linux-6.1")
    assert model.seed == kernel.seed and model.key != kernel.key


def test_linux_row_refuses_slab_cells_and_machines_qemu_cannot_give(tmp_path):
    """Debian's 6.1 has SLUB only; realkernel.Setup wants 256 MiB per NUMA node."""
    with pytest.raises(ConfigError, match=r"designs\[1\]: linux-6.1 is a real kernel built with slub only"):
        cells_of(tmp_path, {"workload": {"machine": {"allocator": "slab"}}})
    mixed = cells_of(tmp_path, {"grid": {"allocator": ["slub", "slab"]}})   # the SLAB cell runs without it
    assert sorted(sorted(c.specs) for c in mixed) == [["linux-6.1", "v6.1"], ["v6.1"]]
    machine = {"allocator": "slub", "nodes": 8, "cpus": 8, "mem_mib": 256}
    assert "mem_mib >= 2048" in config.kernel_row_error("linux-6.1", machine)
    assert config.kernel_row_error("linux-6.1", dict(machine, mem_mib=2048)) is None
    assert config.kernel_row_error("v6.1", dict(machine, allocator="slab")) is None


def test_kernel_workloads_are_chunked_one_boot_per_machine_spread_over_the_cpus():
    """A boot replays its streams one after the other, so the streams of a machine go to at
    least as many boots as the executor runs at once (each at most KERNEL_STREAMS_PER_BOOT,
    of even size);
    streams of different machines never share a boot."""
    one, two = ({"nodes": n, "cpus": 2, "mem_mib": 256} for n in (1, 2))
    work = [SimpleNamespace(spec={"machine": one}, key=i) for i in range(34)]
    work += [SimpleNamespace(spec={"machine": two}, key=100 + i) for i in range(4)]
    sizes = lambda chunks: [len(c) for c in chunks]    # noqa: E731
    assert sizes(plan.kernel_chunks(work)) == [17, 17, 4]           # 34 > 32: two boots, even
    assert sizes(plan.kernel_chunks(work, boots_at_once=2)) == [17, 17, 2, 2]
    assert sizes(plan.kernel_chunks(work[:3], boots_at_once=8)) == [1, 1, 1]
    for chunk in plan.kernel_chunks(work, boots_at_once=2):
        assert len({c.spec["machine"]["nodes"] for c in chunk}) == 1


# ---- one boot: the row through the sweep ----------------------------------------------------

@pytest.mark.realkernel
def test_linux_row_runs_through_the_sweep_beside_the_model(tmp_path, monkeypatch, capsys):
    """linux-6.1 beside v6.1 on the same seeds, through the sweep (--local, in-process): the
    same streams, the model's metric names and units, NULL (never 0) for what Linux does not
    expose, the kernel's version stored, a report with the "Model vs a real kernel" section,
    and a rerun that resumes without a boot.  The worker's realkernel.run is answered from
    the session's boot, which ran exactly the streams this sweep plans on its machine
    (realkernel_boot.answer_from_boot refuses anything else).  (It first failed on kreplay's
    inherited pipes: a stream whose first entry is task 0's, as most sweep seeds give, hung
    the guest until its timeout.)"""
    path = write_config(tmp_path, KERNEL_CELL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(realkernel, "run", realkernel_boot.answer_from_boot)
    assert cli.main([str(path), "--local"]) == cli.OK, capsys.readouterr().err[-3000:]
    with Store(tmp_path / "out" / "results.sqlite") as store:
        frame = store.dataframe()
    assert (frame["status"] == "ok").all(), frame[["design", "error"]]
    model, kernel = (frame[frame["design"] == d].set_index("replication") for d in ("v6.1", "linux-6.1"))
    assert len(model) == len(kernel) == 2 and (model["seed"] == kernel["seed"]).all()
    # the same request stream: the same counts of entries and requests, in the same columns
    for name in OBSERVABLE:
        assert kernel[name].notna().all(), name
    assert (kernel["requests"] == model["requests"]).all()
    assert (kernel["kernel_entries"] == model["kernel_entries"]).all()
    # units: pages over high are pages (bounded by the cgroup's size), not bytes
    assert (kernel["overshoot_high_peak_pages"] <= (32 << 20) // 4096).all()
    # not observable is NULL in the store (NaN here), never 0; the model has a value
    for name in NOT_OBSERVABLE:
        assert kernel[name].isna().all() and model[name].notna().all(), name
    assert kernel["model_version"].str.startswith("linux 6.1.").all()
    assert (model["model_version"] == core.MODEL_VERSION).all()
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert '<a id="model-vs-kernel"></a>' in report and "(#model-vs-kernel)" in report   # section + verdict link
    # the verdict names the simulator's version as the model's, the kernel's release apart
    simulated = re.search(r"every figure but the linux-6.1 row's \(linux 6\.1\.[^)]+\) is simulated "
                          r"\(the kmemcg-sweep simulator, model ([^)]+)\)", report)
    assert simulated and simulated.group(1) == core.MODEL_VERSION, report[:3000]
    # a rerun resumes: nothing left to run, no boot
    monkeypatch.setattr(realkernel, "run", _no_boot)
    capsys.readouterr()
    assert cli.main([str(path), "--local", "output.report=false"]) == cli.OK
    out = capsys.readouterr()
    assert "4 already stored, 0 ran" in out.err + out.out, out.err[-2000:]
    assert not math.isnan(model["requests"].iloc[0])


def _no_boot(*args, **kwargs):
    raise AssertionError("a resumed sweep booted the kernel again")


@pytest.mark.realkernel
def test_a_boot_that_times_out_keeps_the_streams_it_finished(tmp_path, monkeypatch, capsys):
    """A boot replays its streams one after the other; when it times out (or panics) after
    the first, that stream's results are stored as ok - the metrics the guest printed - and
    only the unfinished one is an error, rerun by the next sweep.  (A calibration boot of 17
    streams timed out after 2340 s on its last stream and lost all 17.)  The guest's results
    are the session boot's; the timeout after the first stream is raised as realkernel.run
    raises it, carrying the streams the guest finished (tests/test_realkernel.py checks
    that the bench fills them in)."""
    path = write_config(tmp_path, deep_update(KERNEL_CELL, {"designs": ["linux-6.1"], "output": {"report": False}}))
    monkeypatch.chdir(tmp_path)
    finished = {}

    def first_then_timeout(setup, traces, **kwargs):
        ran = realkernel_boot.answer_from_boot(setup, traces, **kwargs)
        finished.update(seed=traces[0][1], metrics=ran["streams"][0])
        err = realkernel.RealKernelError("guest timed out after 540 s (last line: '@@RK r 01000000')")
        err.streams, err.kernel = ran["streams"][:1], ran["kernel"]
        raise err

    monkeypatch.setattr(realkernel, "run", first_then_timeout)
    assert cli.main([str(path), "--local"]) == cli.FAILED
    with Store(tmp_path / "out" / "results.sqlite") as store:
        rows = store.dataframe().set_index("seed")
    assert sorted(rows["status"]) == ["error", "ok"]
    kept = rows.loc[finished["seed"]]
    assert kept["status"] == "ok" and kept["model_version"].startswith("linux 6.1.")
    for name in ("requests", "events_high", "overshoot_high_peak_pages", "reclaim_scanned_pages"):
        assert kept[name] == finished["metrics"][name], name
    assert "guest timed out after 540 s" in rows[rows["status"] == "error"]["error"].iloc[0]
    # the rerun boots for the unfinished stream only
    asked = []
    monkeypatch.setattr(realkernel, "run", lambda setup, traces, **kw: asked.append(len(traces))
                        or realkernel_boot.answer_from_boot(setup, traces, **kw))
    capsys.readouterr()
    assert cli.main([str(path), "--local"]) == cli.OK
    assert asked == [1]
    with Store(tmp_path / "out" / "results.sqlite") as store:
        assert (store.dataframe()["status"] == "ok").all()
