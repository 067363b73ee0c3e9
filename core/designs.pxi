# designs: THE policy table. Every difference between the kmem charging designs is a field
# here (policy_t in mm_types.pxd); the layers read fields and never test a design name, so
# a new design is a new row. Sources: kernel-facts §2.3-§2.4 (4.2/4.3), §2.7 (4.4, way1),
# §3.3/§4.6 (Davydov, way2), §8.3 (the designs as switchable policies).

SKIP, SYNC, PUNT = HIGH_SKIP, HIGH_SYNC, HIGH_PUNT

POLICIES = {
    # the kernel as shipped: slab charges see SLUB's high-order NOWAIT try and SLAB's
    # gfp_exact_node probes, before the page allocation; NOWAIT charges skip memory.high;
    # NOFAIL and dying tasks' kmem is left uncharged; -EINTR bypass
    "v4.3": dict(slab_charge_caller_gfp=0, kmem_charge_after_alloc=0, high_wait=SYNC,
                 high_nowait=SKIP, kmem_nofail_uncharged=1, kmem_dying_uncharged=1,
                 bypass_forces=0, force_gfp_high=0),
    # Tejun Heo, merged in 4.4: try_charge mimics alloc_pages and sees the same optimistic
    # gfp (charged after the allocation); high overage of any charge punted to return-to-
    # user; NOFAIL and dying tasks force-charged; NOWAIT and ATOMIC over max fail
    "way1": dict(slab_charge_caller_gfp=0, kmem_charge_after_alloc=1, high_wait=PUNT,
                 high_nowait=PUNT, kmem_nofail_uncharged=0, kmem_dying_uncharged=0,
                 bypass_forces=1, force_gfp_high=0),
    # Vladimir Davydov's patches on 4.3: slab charges with the caller's gfp, the optimistic
    # masks stay in the buddy allocation; memory.high reclaimed synchronously with the
    # caller's gfp; genuine NOWAIT may fail; NOFAIL and __GFP_HIGH force-charged
    "way2": dict(slab_charge_caller_gfp=1, kmem_charge_after_alloc=0, high_wait=SYNC,
                 high_nowait=SKIP, kmem_nofail_uncharged=0, kmem_dying_uncharged=1,
                 bypass_forces=0, force_gfp_high=1),
    # Davydov's variant "2+" (§8.3): way2, plus task_work punting of the memory.high overage
    # of charges without __GFP_WAIT, so back-to-back NOWAIT allocations cannot run over high
    # unchecked (Heo's objection) - one field differs from way2
    "way2+": dict(slab_charge_caller_gfp=1, kmem_charge_after_alloc=0, high_wait=SYNC,
                  high_nowait=PUNT, kmem_nofail_uncharged=0, kmem_dying_uncharged=1,
                  bypass_forces=0, force_gfp_high=1),
}
DESIGNS = tuple(POLICIES)


cdef policy_t policy_for(str design) except *:
    if design not in POLICIES:
        raise ValueError(f"design: unknown design {design!r}; allowed: {', '.join(DESIGNS)}")
    return POLICIES[design]          # Cython converts the row (a dict) to the C struct
