# designs: THE policy table. Every difference between the kmem charging designs is a field
# here (policy_t in mm_types.pxd); the layers read fields and never test a design name, so
# a new design is a new row. Sources: docs/kernel.md §2.3-§2.4 (4.2/4.3), §2.7 (4.4, way1),
# §3.3/§4.6 (Davydov, way2), §8.3 (the designs as switchable policies), §6.2-§6.4 (v6.18).

SKIP, SYNC, PUNT = HIGH_SKIP, HIGH_SYNC, HIGH_PUNT

# what the 2015 rows share: the 4.2-4.4 constants, none of the later mechanisms
LEGACY = dict(charge_batch=CHARGE_BATCH, reclaim_retries=MEM_CGROUP_RECLAIM_RETRIES,
              force_dying=1, force_max_event=0, high_sync_over_batch=0, high_throttle=0,
              high_skip_dying=0, high_write_loop=0, obj_charge=0, slub_high_no_kswapd=0,
              slub_only=0, charge_only_accounted=0)

POLICIES = {
    # the kernel as shipped: slab charges see SLUB's high-order NOWAIT try and SLAB's
    # gfp_exact_node probes, before the page allocation; NOWAIT charges skip memory.high;
    # NOFAIL and dying tasks' kmem is left uncharged; -EINTR bypass
    "v4.3": dict(slab_charge_caller_gfp=0, kmem_charge_after_alloc=0, high_wait=SYNC,
                 high_nowait=SKIP, kmem_nofail_uncharged=1, kmem_dying_uncharged=1,
                 bypass_forces=0, force_gfp_high=0, **LEGACY),
    # Tejun Heo, merged in 4.4: try_charge mimics alloc_pages and sees the same optimistic
    # gfp (charged after the allocation); high overage of any charge punted to return-to-
    # user; NOFAIL and dying tasks force-charged; NOWAIT and ATOMIC over max fail
    "way1": dict(slab_charge_caller_gfp=0, kmem_charge_after_alloc=1, high_wait=PUNT,
                 high_nowait=PUNT, kmem_nofail_uncharged=0, kmem_dying_uncharged=0,
                 bypass_forces=1, force_gfp_high=0, **LEGACY),
    # Vladimir Davydov's patches on 4.3: slab charges with the caller's gfp, the optimistic
    # masks stay in the buddy allocation; memory.high reclaimed synchronously with the
    # caller's gfp; genuine NOWAIT may fail; NOFAIL and __GFP_HIGH force-charged
    "way2": dict(slab_charge_caller_gfp=1, kmem_charge_after_alloc=0, high_wait=SYNC,
                 high_nowait=SKIP, kmem_nofail_uncharged=0, kmem_dying_uncharged=1,
                 bypass_forces=0, force_gfp_high=1, **LEGACY),
    # Davydov's variant "2+" (§8.3): way2, plus task_work punting of the memory.high overage
    # of charges without __GFP_WAIT, so back-to-back NOWAIT allocations cannot run over high
    # unchecked (Heo's objection) - one field differs from way2
    "way2+": dict(slab_charge_caller_gfp=1, kmem_charge_after_alloc=0, high_wait=SYNC,
                  high_nowait=PUNT, kmem_nofail_uncharged=0, kmem_dying_uncharged=1,
                  bypass_forces=0, force_gfp_high=1, **LEGACY),
    # the kernel today (Linux 6.18, §6.3-§6.4): Heo's charge side - memory.high punted to
    # return-to-user for every gfp, NOWAIT over max fails, NOFAIL and __GFP_HIGH forced
    # (5.4/6.3), kmem charged after the allocation - plus the 5.4 throttle, the 5.18
    # synchronous enforcement beyond one batch, 6.1's batch of 64, 5.9's 16 retries and
    # Davydov's caller's-gfp charging reached through per-object accounting (5.9); dying
    # tasks are charged like any other (5.16) but skip high reclaim (6.8); SLUB only (6.8);
    # only the allocation sites that opted in (__GFP_ACCOUNT/SLAB_ACCOUNT, 4.5) are charged
    "v6.18": dict(slab_charge_caller_gfp=1, kmem_charge_after_alloc=1, high_wait=PUNT,
                  high_nowait=PUNT, kmem_nofail_uncharged=0, kmem_dying_uncharged=0,
                  bypass_forces=1, force_gfp_high=1, charge_batch=64, reclaim_retries=16,
                  force_dying=0, force_max_event=1, high_sync_over_batch=1, high_throttle=1,
                  high_skip_dying=1, high_write_loop=1, obj_charge=1, slub_high_no_kswapd=1,
                  slub_only=1, charge_only_accounted=1),
}
DESIGNS = tuple(POLICIES)


cdef policy_t policy_for(str design) except *:
    if design not in POLICIES:
        raise ValueError(f"design: unknown design {design!r}; allowed: {', '.join(DESIGNS)}")
    return POLICIES[design]          # Cython converts the row (a dict) to the C struct


def design_allocator_error(design, allocator):
    """Why `design` cannot run on `allocator` (None if it can): SLAB was removed in Linux
    6.8, so a row with slub_only refuses it (the caller prefixes the config path)."""
    row = POLICIES.get(design)
    if row is not None and row["slub_only"] and allocator == "slab":
        return (f"design {design!r} models a kernel without SLAB (removed in Linux 6.8); "
                f"use allocator slub")
    return None
