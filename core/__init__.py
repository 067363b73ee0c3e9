"""kmemcg-sweep simulator core: buddy allocator, SLUB/SLAB and memcg of Linux 4.2/4.3 with
the kmem charging designs of the 2015 debate as one policy table (see docs/model.md)."""
from core._mm import (DESIGNS, GFP_FLAGS, MODEL_VERSION, POLICIES, Machine, Task,
                      WorkloadEvents, gfp, parse_size, run_workload, slab_geometry,
                      slub_geometry, watermark_ok, workload_events)
from core.metrics import GFP_CLASSES, METRICS, RECLAIM_PLACES
from core.spec import SpecError, validate_mix, validate_spec
from core.replay import replay

__all__ = ["DESIGNS", "GFP_CLASSES", "GFP_FLAGS", "METRICS", "MODEL_VERSION", "POLICIES",
           "RECLAIM_PLACES", "Machine", "SpecError", "Task", "WorkloadEvents", "gfp",
           "parse_size", "replay", "run_workload", "slab_geometry", "slub_geometry", "validate_mix",
           "validate_spec", "watermark_ok", "workload_events"]
