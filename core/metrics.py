"""Names of every metric the simulator reports (docs/workload-spec.md).

One list, used by ``Machine.metrics()``, ``run_workload``, the results store and MLflow,
so a metric has the same name everywhere.  Values are floats; counts are cumulative over
the workload; ``*_pages`` are 4 KiB pages, ``*_ns`` virtual nanoseconds; ``*_rate`` and
``*_per_kentry`` are ratios (0 when the denominator is 0).  docs/workload-spec.md says
what each one counts.
"""

GFP_CLASSES = ("kernel", "nofs", "nowait", "atomic", "nofail")

# where reclaim ran (docs/workload-spec.md, docs/kernel.md §8.4.5)
RECLAIM_PLACES = ("charge", "locked", "return_to_user", "kswapd", "direct")

MEMCG_EVENTS = ("low", "high", "max", "oom", "oom_kill")

METRICS = tuple(
    [f"alloc_{c}_attempts" for c in GFP_CLASSES]
    + [f"alloc_{c}_failures" for c in GFP_CLASSES]
    # per-request latency: the request alone, not the return-to-user work of its syscall
    + [f"latency_{c}_p50_ns" for c in GFP_CLASSES]
    + [f"latency_{c}_p99_ns" for c in GFP_CLASSES]
    + [
        # per syscall: entry until its return-to-user work (punted reclaim) is done
        "syscall_latency_p50_ns",
        "syscall_latency_p99_ns",
    ]
    + [
        "requests",                 # requests issued by the workload / scenario
        "kernel_entries",           # syscall entries (user page faults are not counted)
        "enomem_user_visible",      # GFP_KERNEL/NOFS request failed after its fallback
        "enomem_per_kentry",        # enomem_user_visible / kernel_entries
        "nowait_failures",          # GFP_NOWAIT requests that failed
        "nowait_fallbacks",         # ... of which the caller retried with GFP_KERNEL
        "nowait_failure_rate",      # nowait_failures / alloc_nowait_attempts
        "atomic_failure_rate",      # alloc_atomic_failures / alloc_atomic_attempts
        "charge_forced",            # charges forced past memory.max (NOFAIL, HIGH, dying)
        "charge_forced_pages",
        "charge_bypassed_pages",    # pages a bypass left uncharged or charged to root
        "overshoot_max_peak_pages",     # peak of usage - memory.max over all memcgs
        "overshoot_high_peak_pages",    # peak of usage - memory.high over all memcgs
        "overshoot_high_integral_page_ms",  # time integral of (usage - high)+
        "overshoot_high_syscall_peak_pages",  # peak overage seen at a syscall exit
        "high_sync_enforcements",   # 5.18: over-high handled inside a charge (one batch over)
        "high_throttle_sleeps",     # 5.4: memory.high throttle sleeps (calculate_high_delay)
        "high_throttle_ns",         # ... their total (in request/syscall latency, not sim_ns)
    ]
    + [f"events_{e}" for e in MEMCG_EVENTS]
    + [
        "reclaim_rounds",           # try_to_free_*_pages invocations
        "reclaim_scanned_pages",
        "reclaim_reclaimed_pages",
        "reclaim_slab_objects",     # dentries/inodes freed by shrinkers
    ]
    + [f"reclaim_rounds_{p}" for p in RECLAIM_PLACES]
    + [f"reclaim_ns_{p}" for p in RECLAIM_PLACES]
    + [
        "reclaim_rounds_mmap_sem",  # ... of reclaim_rounds_locked, those under mmap_sem (the
        "reclaim_ns_mmap_sem",      # user page fault's lock); the rest hold the caller's lock
        "slab_charge_reclaim_rounds",  # reclaim rounds inside the charges of new slabs' pages
                                       # (per new slab: / slab_pages_allocated)
        "slab_pages_allocated",     # slabs created (any order)
        "slub_new_slab_attempts",   # allocate_slab() calls: each tries s->oo first
        "slub_high_order_attempts",  # ... of which in caches with oo > min (the NOWAIT try)
        "slub_order_fallbacks",     # ORDER_FALLBACK as 4.3 counts it: the second try, at
                                    # s->min, succeeded (any cache, also oo == min)
        "slab_wrong_node_pages",    # pages of new slabs placed off the requested node
        "slab_wrong_node_objects",  # objects placed in a slab off the node asked for
        "slab_node_probe_failures",  # SLAB gfp_exact_node grows that failed
        "slab_lazy_uncharged_objects",  # objects put in root caches while a clone was created
        "kswapd_wakeups",
        "compaction_attempts",
        "compaction_successes",
        "buddy_failures",           # alloc_pages returned NULL
        "oom_kills_global",
        "oom_kills_memcg",
        "kmem_uncharged_pages",     # kmem of memcg tasks left uncharged, outstanding at the end:
                                    # bypassed kmem pages + objects in root caches (rounded up)
        "sim_ns",                   # virtual time simulated
    ]
)
