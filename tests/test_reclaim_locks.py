"""Which lock a counted reclaim round holds (issue 20 points 1 and 2, docs/model.md
"Which lock a counted round holds").

* Return to user holds no lock: 4.4 mem_cgroup_handle_over_high() runs from
  tracehook_notify_resume() on the way out to user mode, after the syscall or the user page
  fault has dropped every lock (§2.7). A user page fault happens in user mode, so it never
  carries the `locked` flag of a syscall's request.
* Reclaim inside a user page fault runs under mmap_sem held for read: 4.x __do_page_fault()
  takes down_read(&mm->mmap_sem) before handle_mm_fault(), whose do_anonymous_page()
  allocates the page and charges it (mem_cgroup_try_charge) - the charge's memory.max
  reclaim, the synchronous memory.high reclaim of v4.3/way2 and the 5.18 in-charge
  enforcement of v6.18 all run there (6.x: the per-VMA lock or mmap_lock). It is released
  before pagefault_out_of_memory() and the return to user.
"""
import pytest

import core
from kernel_selftest import MB

FAULTS = {"name": "faults", "burst": 4, "locked_share": 1.0,
          "requests": [{"kind": "fault_anon", "weight": 1, "pages": 16}]}


def fault_spec(design, **cgroup):
    return {"machine": {"nodes": 1, "mem_mib": 512, "cpus": 2}, "design": design,
            "cgroup": cgroup, "tasks": 2, "length": {"kernel_entries": 400},
            "churn": {"mean_entries": 50}, "mix": FAULTS}


@pytest.mark.parametrize("design", ("way1", "v6.18"))
def test_punted_reclaim_after_a_fault_is_never_counted_as_locked(design):
    """Every request of the mix is drawn `locked`, but the requests are user faults: the
    memory.high overage they punt (way1, v6.18 for every gfp) is reclaimed at the return to
    user with no lock held. memory.max is far away and the machine roomy, so no reclaim runs
    inside a fault: no round may count as locked."""
    out = core.run_workload(fault_spec(design, max="max", high="4M"), 1)
    assert out["reclaim_rounds_return_to_user"] > 0
    assert out["reclaim_rounds_locked"] == 0 and out["reclaim_rounds_mmap_sem"] == 0


@pytest.mark.parametrize("design", core.DESIGNS)
def test_reclaim_inside_a_fault_holds_mmap_sem(design):
    """At memory.max, the fault's own charge reclaims (page cache makes room): each of
    those rounds holds mmap_sem, so it counts as locked; no caller lock is involved."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, design=design)
    m.mkdir("/a")
    m.write("/a", "memory.max", "8M")
    task = m.spawn("/a")
    with task.syscall():
        task.read_file(MB(6))                   # reclaimable: the fault's charges make room
    before = m.metrics()
    task.fault_anon(MB(4))
    after = m.metrics()
    charge = after["reclaim_rounds_charge"] - before["reclaim_rounds_charge"]
    mmap_sem = after["reclaim_rounds_mmap_sem"] - before["reclaim_rounds_mmap_sem"]
    locked = after["reclaim_rounds_locked"] - before["reclaim_rounds_locked"]
    assert charge > 0 and mmap_sem >= charge
    assert locked == mmap_sem                   # every locked round is the fault's mmap_sem
    assert after["reclaim_ns_mmap_sem"] > before["reclaim_ns_mmap_sem"]


@pytest.mark.parametrize("design", ("v4.3", "way2"))
def test_synchronous_high_reclaim_in_a_fault_holds_mmap_sem(design):
    """v4.3/way2 reclaim memory.high in the charging context (done_restock -> reclaim with
    the caller's gfp): in a fault that context holds mmap_sem; below memory.max nothing else
    reclaims, so every such round is a locked mmap_sem round and none is at return to user."""
    out = core.run_workload(fault_spec(design, max="max", high="4M"), 1)
    assert out["reclaim_rounds_charge"] > 0
    assert out["reclaim_rounds_mmap_sem"] == out["reclaim_rounds_charge"]
    assert out["reclaim_rounds_locked"] == out["reclaim_rounds_mmap_sem"]
    assert out["reclaim_rounds_return_to_user"] == 0


def test_a_caller_lock_and_mmap_sem_are_told_apart():
    """A syscall's kmalloc under Task.lock() reclaims under the caller's lock (counted
    locked, not mmap_sem); the fault's reclaim counts both: reclaim_rounds_locked minus
    reclaim_rounds_mmap_sem is the caller-lock share."""
    m = core.Machine(nodes=1, mem_mib=256, cpus=2, design="way2")
    m.mkdir("/a")
    m.write("/a", "memory.max", "8M")
    task = m.spawn("/a")
    with task.syscall():
        task.read_file(MB(7))
        with task.lock():
            for _ in range(MB(2) // 4096):
                task.alloc_pages(0)
    out = m.metrics()
    assert out["reclaim_rounds_locked"] > 0 and out["reclaim_rounds_mmap_sem"] == 0


def test_a_user_fault_cannot_be_made_under_a_kernel_lock():
    """The scenario API refuses what the generator never does: a user fault runs in user
    mode, so no lock of kernel code is held around it."""
    m = core.Machine(nodes=1, mem_mib=64, cpus=1)
    task = m.spawn("/")
    with task.lock():
        with pytest.raises(ValueError, match="fault_anon: a user page fault runs in user mode"):
            task.fault_anon(4096)
    assert task.fault_anon(4096)
