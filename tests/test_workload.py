"""Randomized workloads and core.run_workload (issue 4).

The request stream depends only on (spec without design, seed) - common random numbers -
and the model runs the same C request function whether driven by run_workload or, event by
event, by core.replay through core.Machine (one model, two drivers)."""
import copy
import pathlib
import sys

import pytest
import yaml

import core
from core._mm import build_workload_machine
from core.constants import REQUEST_KINDS

MIXES = pathlib.Path(__file__).resolve().parent.parent / "configs" / "mixes"
MIX_NAMES = ("kernel", "nofs", "nowait-burst", "atomic", "nofail", "numa-remote", "dentry-find")


def mix(name):
    return yaml.safe_load((MIXES / f"{name}.yaml").read_text())


def small_spec(mix_name="kernel", design="way2", **over):
    spec = {"machine": {"nodes": 2, "mem_mib": 128, "cpus": 2, "allocator": "slub"},
            "design": design, "cgroup": {"max": "16M", "high": 0.75},
            "background": {"file_mib": 32, "fragment": 0.1},
            "tasks": 2, "length": {"kernel_entries": 200}, "mix": mix(mix_name)}
    spec.update(over)
    return spec


def test_every_shipped_mix_is_valid_and_documented():
    names = sorted(p.stem for p in MIXES.glob("*.yaml"))
    assert set(MIX_NAMES) <= set(names)
    for name in names:
        text = (MIXES / f"{name}.yaml").read_text()
        assert text.startswith(f"# {name}:"), f"{name}.yaml must open with its description"
        assert core.validate_mix(yaml.safe_load(text))["name"] == name


@pytest.mark.parametrize("mix_name", MIX_NAMES)
def test_request_stream_is_identical_across_designs(mix_name):
    results = {d: core.run_workload(small_spec(mix_name, d), seed=11) for d in core.DESIGNS}
    hashes = {(r["request_hash_lo"], r["request_hash_hi"]) for r in results.values()}
    assert len(hashes) == 1
    assert len({r["requests"] for r in results.values()}) == 1
    # ... while the seed does change it
    other = core.run_workload(small_spec(mix_name, "way2"), seed=12)
    assert (other["request_hash_lo"], other["request_hash_hi"]) not in hashes


@pytest.mark.parametrize("design,allocator", [
    (d, a) for d in core.DESIGNS for a in ("slub", "slab")
    if not core.design_allocator_error(d, a)])        # a 6.x row has no SLAB (removed in 6.8)
def test_replay_through_machine_equals_run_workload(allocator, design):
    for mix_name in ("kernel", "nowait-burst", "numa-remote", "dentry-find"):
        spec = small_spec(mix_name, design)
        spec["machine"]["allocator"] = allocator
        fast = core.run_workload(spec, seed=3)
        slow = core.replay(spec, seed=3)
        assert fast == slow, {k: (fast[k], slow[k]) for k in fast if fast[k] != slow[k]}


def test_same_seed_same_metrics_bit_identical():
    spec = small_spec("nofail", "way1")
    assert core.run_workload(spec, 5) == core.run_workload(copy.deepcopy(spec), 5)


def test_every_metric_is_reported():
    out = core.run_workload(small_spec(), 1)
    assert set(core.METRICS) <= set(out)
    assert all(isinstance(v, float) for v in out.values())
    assert out["requests"] > 0 and out["sim_ns"] > 0


def test_trace_lists_every_request_with_its_outcome(tmp_path):
    path = tmp_path / "trace.tsv"
    out = core.run_workload(small_spec("nowait-burst"), 2, trace=str(path))
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["seq", "task", "kind", "arg", "gfp", "node", "locked",
                                    "result", "latency_ns"]
    rows = [line.split("\t") for line in lines[1:]]
    # fallbacks are retried inside one traced request, so rows == issued requests
    assert len(rows) == out["requests"] - out["nowait_fallbacks"]
    assert {r[2] for r in rows} <= {"kmalloc", "read_file"}
    assert all(int(r[8]) >= 0 for r in rows)


def test_pressure_makes_the_designs_differ():
    # near memory.max, a bursty NOWAIT mix: the same requests, different outcomes (§8.4)
    spec = small_spec("nowait-burst", length={"kernel_entries": 400},
                      cgroup={"max": "8M", "high": 0.5})
    out = {d: core.run_workload(dict(spec, design=d), 9) for d in core.DESIGNS}
    assert out["v4.3"]["overshoot_high_peak_pages"] > out["way2"]["overshoot_high_peak_pages"]
    assert out["way1"]["reclaim_rounds_return_to_user"] > 0
    assert out["way2"]["reclaim_rounds_return_to_user"] == 0
    assert out["v4.3"]["reclaim_rounds_return_to_user"] == 0


def test_oom_killed_tasks_are_restarted_and_the_stream_goes_on():
    anon = {"name": "anon", "requests": [{"kind": "fault_anon", "weight": 1, "pages": 64},
                                         {"kind": "kmalloc", "weight": 1, "size": {"min": 64, "max": 64}}],
            "burst": 2}
    spec = small_spec(cgroup={"max": "4M"}, mix=anon, length={"kernel_entries": 300})
    out = core.run_workload(spec, 1)
    assert out["oom_kills_memcg"] >= 2            # killed, restarted, killed again
    assert out["alloc_kernel_attempts"] > 0


@pytest.mark.parametrize("path,bad,message", [
    ("machine.nodes", 0, "machine.nodes: must be an integer in 1..8"),
    ("machine.allocator", "slob", "machine.allocator: must be one of slub, slab"),
    ("design", "way3", "design: must be one of v4.3, way1, way2"),
    ("cgroup.high", -1.0, "cgroup.high: must be a size"),
    ("cgroup.max", "64Q", "cgroup.max: expected bytes"),
    ("tasks", 0, "tasks: must be an integer in 1..256"),
    ("mix.burst", 0, "mix.burst: must be a number in [1, 65536]"),
])
def test_spec_errors_name_the_field_and_the_allowed_values(path, bad, message):
    spec = small_spec()
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = bad
    with pytest.raises(core.SpecError) as err:
        core.run_workload(spec, 1)
    assert str(err.value).startswith(message)


def test_spec_unknown_keys_suggest_the_near_miss():
    spec = small_spec()
    spec["machine"]["memmib"] = 64
    with pytest.raises(core.SpecError, match=r"machine\.memmib: unknown key \(did you mean 'mem_mib'\?\)"):
        core.validate_spec(spec)
    spec = small_spec()
    spec["mix"]["requests"][0]["gfp"] = "GFP_KERNAL"
    with pytest.raises(core.SpecError, match=r"mix\.requests\[0\]\.gfp: gfp: unknown flag 'GFP_KERNAL'"):
        core.validate_spec(spec)


def test_validate_spec_is_idempotent():
    once = core.validate_spec(small_spec())
    assert core.validate_spec(once) == once
    assert once["cgroup"]["high"] == int(16 * 2**20 * 0.75)


def _unreclaimable_kib(churn, entries=16000, every=1000):
    """slab_unreclaimable of /w sampled every `every` kernel entries (no limit: nothing fails)."""
    spec = {"machine": {"nodes": 1, "mem_mib": 1024, "cpus": 4}, "design": "way2",
            "cgroup": {"max": "max", "high": "max"}, "tasks": 4, "churn": {"mean_entries": churn},
            "length": {"kernel_entries": entries}, "mix": mix("kernel")}
    samples = []
    core.replay(spec, 3, probe=lambda m: samples.append(m.stat("/w")["slab_unreclaimable"] >> 10),
                every=every)
    return samples


def test_churn_makes_unreclaimable_kmem_level_off():
    """Long-lived objects die with their task (do_exit frees what the task owns, 4.3
    kernel/exit.c do_exit -> exit_mm/exit_files): with process churn the unreclaimable slab of
    the cgroup reaches a steady level; without it, it ramps for as long as the workload runs."""
    ramp = _unreclaimable_kib(churn=0)
    steady = _unreclaimable_kib(churn=200)
    # last quarter over the second: ~2x for the ramp, ~1.0 with churn (measured 1.96 / 1.01)
    growth = [sum(s[12:]) / sum(s[4:8]) for s in (ramp, steady)]
    assert growth[0] > 1.6
    assert 0.8 < growth[1] < 1.2
    assert steady[-1] < ramp[-1] / 3


def test_churn_default_is_the_old_stream_and_churn_replays_equal():
    spec = small_spec("kernel", "way1", length={"kernel_entries": 600})
    assert core.run_workload(spec, 5) == core.run_workload({**spec, "churn": {"mean_entries": 0}}, 5)
    churned = {**spec, "churn": {"mean_entries": 20}}
    fast = core.run_workload(churned, 5)
    assert fast == core.replay(churned, 5)
    assert fast["request_hash_lo"] != core.run_workload(spec, 5)["request_hash_lo"]
    hashes = {core.run_workload({**churned, "design": d}, 5)["request_hash_lo"] for d in core.DESIGNS}
    assert len(hashes) == 1                               # churn is part of the common stream


def test_no_user_fault_of_a_long_entry_is_dropped():
    """An entry's user page faults run after its return to user (task.pxi: fault_anon is
    a user page fault, never inside a syscall); the generator buffered at most 64 of them
    and dropped the rest silently. A fault-only mix with long entries makes hundreds: every
    one must come out, so the request sequence numbers have no gap."""
    faults = {"requests": [{"kind": "fault_anon", "weight": 1, "pages": 1}], "burst": 400}
    spec = {"length": {"kernel_entries": 20}, "mix": faults}
    per_entry, seqs, count = [], [], 0
    for kind, _task, _kind, _arg, _gfp, _node, _locked, seq, _slot in core.workload_events(spec, 3):
        if kind == "exit":
            count = 0
        elif kind == "request":
            count += 1
            seqs.append(seq)
        elif kind == "enter" and seqs:
            per_entry.append(count)
    per_entry.append(count)
    assert max(per_entry) > 64
    assert sorted(seqs) == list(range(len(seqs)))
    assert core.run_workload(spec, 3)["requests"] == len(seqs)



class _FreeChecker:
    """The event stream of core.replay, checking each free it hands out: a free whose
    object id now belongs to another request of the same task (the id was reused) and that
    replay would execute (the object's owner is the task) is counted as stale. With
    `drop_on_replace` False, replacing a task does not drop its scheduled frees."""

    def __init__(self, events, state, drop_on_replace):
        self.events, self.state, self.drop = events, state, drop_on_replace
        self.made_by, self.last_seq, self.last_kind, self.stale = {}, None, None, 0

    def __iter__(self):
        for ev in self.events:
            kind, task, req_kind, arg, gfp, node, locked, seq, slot = ev
            if kind == "request":
                self.last_seq, self.last_kind = seq, REQUEST_KINDS[req_kind]
            elif kind == "free" and arg >= 0:
                machine, tasks = self.state["machine"], self.state["tasks"]
                t = tasks[task]
                if t.alive and machine._owner(arg) == t.tid and self.made_by.get(arg) != seq:
                    self.stale += 1
            yield ev

    def set_result(self, slot, result):
        if result >= 0 and self.last_kind in ("kmalloc", "kmalloc_node", "alloc_pages"):
            self.made_by[result] = self.last_seq
        self.events.set_result(slot, result)

    def task_replaced(self, task):
        if self.drop:
            self.events.task_replaced(task)

    @property
    def request_hash(self):
        return self.events.request_hash


def _stale_frees(monkeypatch, spec, seed, drop_on_replace):
    replay_mod = sys.modules["core.replay"]         # core.replay the name is the function
    state, checkers = {}, []

    def build(s):
        state["machine"], state["tasks"] = build_workload_machine(s)
        return state["machine"], state["tasks"]

    def events(s, seed):
        checkers.append(_FreeChecker(core.workload_events(s, seed), state, drop_on_replace))
        return checkers[-1]

    monkeypatch.setattr(replay_mod, "build_workload_machine", build)
    monkeypatch.setattr(replay_mod, "workload_events", events)
    out = replay_mod.replay(spec, seed)
    return checkers[0].stale, out


def test_frees_of_an_oom_killed_task_never_hit_its_replacements_objects(monkeypatch):
    """Issue 20 point 5. A task OOM-killed in a user fault (4.2 mem_cgroup_oom_synchronize,
    §2.3 step 16) exits and frees everything (do_exit); its replacement reuses the freed
    object ids. The frees the generator had scheduled for the dead task must be dropped
    (gen_task_replaced bumps task_life, as churn does), or one of them frees an object the
    new task was just given. The scenario is first shown to have that hazard."""
    anon = {"name": "anon", "burst": 4, "lifetime": {"mean": 64},
            "requests": [{"kind": "fault_anon", "weight": 1, "pages": 64},
                         {"kind": "kmalloc", "weight": 6, "size": {"min": 64, "max": 64}}]}
    spec = small_spec(cgroup={"max": "4M"}, mix=anon, tasks=1, length={"kernel_entries": 400})
    hazard, _ = _stale_frees(monkeypatch, spec, 1, drop_on_replace=False)
    assert hazard > 0                          # without the fix: stale frees hit new objects
    stale, out = _stale_frees(monkeypatch, spec, 1, drop_on_replace=True)
    assert out["oom_kills_memcg"] >= 2 and stale == 0
    # run_workload's executor drops them too: its metrics equal the checked replay's
    assert core.run_workload(spec, 1) == out


def test_accounted_defaults_per_kind_and_bad_values_name_the_field():
    """Issue 20 point 4: `accounted` per request, read only by rows that charge opted-in
    sites alone (v6.18). Defaults: kmalloc not accounted (6.x), alloc_pages accounted
    (alloc_kmem_pages), dentries and user pages always charged."""
    reqs = [{"kind": "kmalloc", "size": {"min": 64}}, {"kind": "kmalloc_node", "size": {"min": 64}},
            {"kind": "alloc_pages", "order": 0}, {"kind": "dentries", "count": 1},
            {"kind": "kmalloc", "gfp": "GFP_KERNEL_ACCOUNT", "size": {"min": 64}},
            {"kind": "alloc_pages", "order": 0, "accounted": False}]
    got = [r["accounted"] for r in core.validate_mix({"requests": reqs}, nodes=2)["requests"]]
    assert got == [False, False, True, True, True, False]
    bad = [({"kind": "kmalloc", "size": {"min": 64}, "accounted": "yes"}, "must be true or false"),
           ({"kind": "fault_anon", "pages": 1, "accounted": False}, "always charged"),
           ({"kind": "kmalloc", "gfp": "GFP_KERNEL_ACCOUNT", "size": {"min": 64}, "accounted": False},
            "has __GFP_ACCOUNT")]
    for req, message in bad:
        with pytest.raises(core.SpecError, match=message) as err:
            core.validate_mix({"requests": [req]})
        assert str(err.value).startswith("mix.requests[0].accounted: ")


def test_accounted_sites_decide_what_the_modern_row_charges_in_a_workload():
    """The same kmalloc mix charges the memcg under v6.18 only when its site is accounted;
    the 2015 rows charge it either way."""
    def max_events(design, accounted):
        m = {"name": "k", "requests": [{"kind": "kmalloc", "size": {"min": 256, "max": 4096},
                                        "accounted": accounted}],
             "lifetime": {"mean": 4000, "long_lived_share": 0.5}}
        out = core.run_workload(small_spec(design=design, mix=m, cgroup={"max": "4M"},
                                           length={"kernel_entries": 1000}), 1)
        return out["events_max"]               # charges that hit memory.max
    assert max_events("v6.18", False) == 0 < max_events("v6.18", True)
    assert max_events("way2", False) == max_events("way2", True) > 0
