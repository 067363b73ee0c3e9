# metrics: the counters of docs/workload-spec.md, assembled under the names of core/metrics.py.

cdef int64_t lat_percentile(const int64_t *hist, double q) noexcept nogil:
    """The lower bound of the histogram bucket holding the q-quantile (0 if empty)."""
    cdef int64_t total = 0, seen = 0, target
    cdef int i, e
    for i in range(LAT_BUCKETS):
        total += hist[i]
    if total == 0:
        return 0
    target = <int64_t>(q * total)
    if target >= total:
        target = total - 1
    for i in range(LAT_BUCKETS):
        seen += hist[i]
        if seen > target:
            if i < LAT_SUB:
                return i
            e = i // LAT_SUB + 3
            return (<int64_t>(LAT_SUB + i % LAT_SUB)) << (e - 4)   # 64-bit: throttled syscalls take seconds
    return 0


cdef inline double ratio(int64_t num, int64_t den) noexcept nogil:
    """num / den, 0 without a denominator (the store wants a number; sweep.stats masks
    rates whose denominator is 0 as undefined)."""
    return <double>num / <double>den if den > 0 else 0.0


cdef dict collect_metrics(mm_t *mm):
    cdef dict out = {}
    cdef int c, p, e, i
    cdef int64_t peak_high = 0, peak_max = 0, over
    cdef double integral = 0.0
    cdef int64_t events[5]
    cdef memcg_t *m
    for c, name in enumerate(GFP_CLASSES):
        out[f"alloc_{name}_attempts"] = float(mm.stats[M_ATTEMPTS_BASE + c])
        out[f"alloc_{name}_failures"] = float(mm.stats[M_FAILURES_BASE + c])
        out[f"latency_{name}_p50_ns"] = float(lat_percentile(mm.lat[c], 0.5))
        out[f"latency_{name}_p99_ns"] = float(lat_percentile(mm.lat[c], 0.99))
    for e in range(NR_MEMCG_EVENTS):
        events[e] = 0
    for i in range(1, mm.nr_memcgs):
        m = &mm.memcgs[i]
        for e in range(NR_MEMCG_EVENTS):
            events[e] += m.events[e]
        peak_high = max(peak_high, m.peak_over_high)
        peak_max = max(peak_max, m.peak_over_max)
        integral += m.over_high_page_ns
        over = m.memory.count - m.high
        if over > 0:
            integral += <double>over * <double>(mm.now_ns - m.last_ns)
    out["syscall_latency_p50_ns"] = float(lat_percentile(mm.syscall_lat, 0.5))
    out["syscall_latency_p99_ns"] = float(lat_percentile(mm.syscall_lat, 0.99))
    out["requests"] = float(mm.stats[M_REQUESTS])
    out["enomem_user_visible"] = float(mm.stats[M_ENOMEM])
    out["kernel_entries"] = float(mm.stats[M_KENTRIES])
    out["enomem_per_kentry"] = ratio(mm.stats[M_ENOMEM], mm.stats[M_KENTRIES])
    out["nowait_failure_rate"] = ratio(mm.stats[M_NOWAIT_FAIL], mm.stats[M_ATTEMPTS_BASE + GC_NOWAIT])
    out["atomic_failure_rate"] = ratio(mm.stats[M_FAILURES_BASE + GC_ATOMIC],
                                       mm.stats[M_ATTEMPTS_BASE + GC_ATOMIC])
    out["nowait_failures"] = float(mm.stats[M_NOWAIT_FAIL])
    out["nowait_fallbacks"] = float(mm.stats[M_NOWAIT_FALLBACK])
    out["charge_forced"] = float(mm.stats[M_CHARGE_FORCED])
    out["charge_forced_pages"] = float(mm.stats[M_CHARGE_FORCED_PAGES])
    out["charge_bypassed_pages"] = float(mm.stats[M_CHARGE_BYPASSED_PAGES])
    out["overshoot_max_peak_pages"] = float(peak_max)
    out["overshoot_high_peak_pages"] = float(peak_high)
    out["overshoot_high_integral_page_ms"] = integral / 1e6
    out["overshoot_high_syscall_peak_pages"] = float(mm.stats[M_OVER_HIGH_SYSCALL_PEAK])
    out["high_sync_enforcements"] = float(mm.stats[M_HIGH_SYNC])
    out["high_throttle_sleeps"] = float(mm.stats[M_HIGH_THROTTLES])
    out["high_throttle_ns"] = float(mm.stats[M_HIGH_THROTTLE_NS])
    for e, name in enumerate(MEMCG_EVENTS):
        out[f"events_{name}"] = float(events[e])
    out["reclaim_rounds"] = float(mm.stats[M_RECLAIM_ROUNDS])
    out["reclaim_scanned_pages"] = float(mm.stats[M_RECLAIM_SCANNED])
    out["reclaim_reclaimed_pages"] = float(mm.stats[M_RECLAIM_RECLAIMED])
    out["reclaim_slab_objects"] = float(mm.stats[M_RECLAIM_SLAB_OBJS])
    for p, name in enumerate(RECLAIM_PLACES):
        out[f"reclaim_rounds_{name}"] = float(mm.stats[M_RR_BASE + p])
        out[f"reclaim_ns_{name}"] = float(mm.stats[M_RNS_BASE + p])
    out["reclaim_rounds_mmap_sem"] = float(mm.stats[M_RR_MMAP_SEM])
    out["reclaim_ns_mmap_sem"] = float(mm.stats[M_RNS_MMAP_SEM])
    out["slab_charge_reclaim_rounds"] = float(mm.stats[M_SLAB_CHARGE_RECLAIM])
    out["slab_pages_allocated"] = float(mm.stats[M_SLAB_PAGES])
    out["slub_new_slab_attempts"] = float(mm.stats[M_SLUB_NEW_SLAB_ATTEMPTS])
    out["slub_high_order_attempts"] = float(mm.stats[M_SLUB_HIGH_ATTEMPTS])
    out["slub_order_fallbacks"] = float(mm.stats[M_SLUB_FALLBACKS])
    out["slab_wrong_node_pages"] = float(mm.stats[M_SLAB_WRONG_NODE])
    out["slab_wrong_node_objects"] = float(mm.stats[M_SLAB_WRONG_NODE_OBJS])
    out["slab_node_probe_failures"] = float(mm.stats[M_SLAB_PROBE_FAIL])
    out["slab_lazy_uncharged_objects"] = float(mm.stats[M_SLAB_LAZY])
    out["kswapd_wakeups"] = float(mm.stats[M_KSWAPD_WAKEUPS])
    out["compaction_attempts"] = float(mm.stats[M_COMPACT_ATTEMPTS])
    out["compaction_successes"] = float(mm.stats[M_COMPACT_SUCCESS])
    out["buddy_failures"] = float(mm.stats[M_BUDDY_FAIL])
    out["oom_kills_global"] = float(mm.stats[M_OOM_GLOBAL])
    out["oom_kills_memcg"] = float(mm.stats[M_OOM_MEMCG])
    out["kmem_uncharged_pages"] = float(mm.kmem_miss_pages + (mm.lazy_bytes + PAGE_SIZE - 1) // PAGE_SIZE)
    out["sim_ns"] = float(mm.now_ns)
    return out
