"""kmemcg-sweep simulator core: buddy allocator, SLUB/SLAB and memcg of Linux 4.2/4.3 with
the kmem charging designs of the 2015 debate - and the 6.x kernel they converged on - as one
policy table (see docs/model.md)."""
import hashlib as _hashlib
import pathlib as _pathlib

from core._mm import (DESIGNS, GFP_FLAGS, POLICIES, Machine, Task, WorkloadEvents,
                      design_allocator_error, gfp, high_delay_jiffies, slab_geometry,
                      slub_geometry, watermark_ok)
from core.constants import parse_size
from core.metrics import GFP_CLASSES, METRICS, RECLAIM_PLACES
from core.spec import SpecError, validate_mix, validate_spec
from core.replay import replay
from core.workload import run_workload, workload_events


def _model_version():
    """A digest of the simulator's sources: results stored under one model version can never
    be mixed with results of changed model code (the results store keys on it)."""
    digest = _hashlib.sha256()
    here = _pathlib.Path(__file__).parent
    model_py = ("constants.py", "metrics.py", "spec.py", "workload.py")
    for path in sorted(here.glob("*.p[yx][xid]")) + [here / name for name in model_py]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return "m" + digest.hexdigest()[:12]


MODEL_VERSION = _model_version()

__all__ = ["DESIGNS", "GFP_CLASSES", "GFP_FLAGS", "METRICS", "MODEL_VERSION", "POLICIES",
           "RECLAIM_PLACES", "Machine", "SpecError", "Task", "WorkloadEvents",
           "design_allocator_error", "gfp", "high_delay_jiffies",
           "parse_size", "replay", "run_workload", "slab_geometry", "slub_geometry", "validate_mix",
           "validate_spec", "watermark_ok", "workload_events"]
