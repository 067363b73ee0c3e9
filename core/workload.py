"""The workload entry points: validate a spec (core.spec), then generate or run it in C
(core._mm: wl_gen.pxi, wl_exec.pxi, wl_api.pxi). docs/workload-spec.md describes the spec."""
from core._mm import events_of, run_validated
from core.spec import validate_spec


def workload_events(spec, seed):
    """The event stream of (spec, seed) - identical for every design."""
    return events_of(validate_spec(spec), seed)


def run_workload(spec, seed, trace=None):
    """Run one randomized workload in C with the GIL released; every metric of
    core.METRICS plus request_hash_lo/hi (the request stream's hash, equal across designs).
    With trace="file", each request and its outcome is written there (TSV)."""
    return run_validated(validate_spec(spec), seed, trace)
