"""Validation and normalisation of a workload spec (docs/workload-spec.md).

`validate_spec(spec)` returns a new, fully defaulted mapping with sizes in bytes and gfp
strings checked, or raises `SpecError` whose message starts with the dotted path of the
offending field and says what is allowed.
"""
import copy
import difflib
from collections.abc import Mapping

from core._mm import DESIGNS, GFP_FLAGS, design_allocator_error, gfp
from core.constants import MAX_ORDER, REQUEST_KINDS, check_int, check_machine, parse_size
from core.constants import ALLOCATORS  # noqa: F401  (re-exported: sweep.claims, sweep.report)

DEFAULTS = {
    "machine": {"nodes": 1, "mem_mib": 1024, "cpus": 2, "allocator": "slub",
                "slub_max_order": 3, "swap": False},
    "design": "way2",
    "cgroup": {"max": "64M", "high": "max", "low": 0},
    "sibling": {"tasks": 0, "max": "max"},
    "background": {"file_mib": 0, "fragment": 0.0},
    "tasks": 2,
    "churn": {"mean_entries": 0},
    "length": {"kernel_entries": 1000},
    "mix": None,
}
MIX_DEFAULTS = {"name": "custom", "description": "", "burst": 8, "locked_share": 0.0,
                "lifetime": {"mean": 256, "long_lived_share": 0.0}}
# the parameter each request kind needs, with its range
KIND_ARGS = {"kmalloc": ("size",), "kmalloc_node": ("size", "node"), "alloc_pages": ("order",),
             "dentries": ("count",), "read_file": ("pages",), "fault_anon": ("pages",)}
# `accounted`: whether the allocation site opted in to kmem accounting (__GFP_ACCOUNT, 4.5);
# read only by rows with charge_only_accounted (v6.18) - the 2015 rows charge every kmem
# allocation of a memcg task. The default per kind: a plain kmalloc is not accounted in
# 6.x (driver and internal allocations; GFP_KERNEL_ACCOUNT sites such as pipe buffers or
# sockets say `accounted: true`); alloc_pages models alloc_kmem_pages, the accounted page
# API (thread stacks, page tables; 6.x GFP_KERNEL_ACCOUNT). The other kinds are always
# charged: dentries/inodes come from SLAB_ACCOUNT caches, and user pages are not kmem.
ACCOUNTED_DEFAULT = {"kmalloc": False, "kmalloc_node": False, "alloc_pages": True}
ALWAYS_CHARGED = {"dentries": "dentries and inodes come from SLAB_ACCOUNT caches",
                  "read_file": "page cache pages are user memory", "fault_anon": "anon pages are user memory"}


class SpecError(ValueError):
    """A workload spec field is wrong; the message starts with its dotted path."""


def _fail(path, msg):
    raise SpecError(f"{path}: {msg}")


def _keys(path, given, allowed):
    if not isinstance(given, Mapping):
        _fail(path, f"must be a mapping, got {type(given).__name__}")
    for key in given:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            _fail(f"{path}.{key}" if path else str(key),
                  f"unknown key{hint}; allowed: {', '.join(allowed)}")


def _int(path, value, lo, hi):
    return check_int(path, value, lo, hi, SpecError)


def _num(path, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        _fail(path, f"must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _choice(path, value, allowed):
    if value not in allowed:
        _fail(path, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def _size(path, value, allow_zero=False):
    try:
        nbytes = parse_size(value, path)
    except ValueError as err:
        raise SpecError(str(err)) from None
    if nbytes is None:
        return "max"
    if nbytes < 4096 and not (allow_zero and nbytes == 0):
        _fail(path, f"{nbytes} bytes is less than a page; sizes are bytes or '64M' "
                    "(a ratio must be written as a float, e.g. 1.0)")
    return nbytes


def _merge(defaults, given):
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _request(path, req, nodes):
    _keys(path, req, ("kind", "weight", "gfp", "accounted")
          + tuple(sorted({a for v in KIND_ARGS.values() for a in v})))
    kind = _choice(f"{path}.kind", req.get("kind"), REQUEST_KINDS)
    out = {"kind": kind, "weight": _num(f"{path}.weight", req.get("weight", 1), 0, 1e9)}
    default_gfp = "GFP_KERNEL"
    try:
        out["gfp"] = req.get("gfp", default_gfp)
        gfp(out["gfp"])
    except ValueError as err:
        raise SpecError(f"{path}.gfp: {err}") from None
    for arg in KIND_ARGS[kind]:
        if arg not in req and arg != "node":
            _fail(f"{path}.{arg}", f"required for kind {kind}")
    out["accounted"] = _accounted(path, req, kind, gfp(out["gfp"]))
    extra = set(req) - {"kind", "weight", "gfp", "accounted"} - set(KIND_ARGS[kind])
    if extra:
        _fail(f"{path}.{sorted(extra)[0]}", f"not a parameter of kind {kind}; it takes "
              + ", ".join(KIND_ARGS[kind]))
    if "size" in KIND_ARGS[kind]:
        size = req["size"]
        _keys(f"{path}.size", size, ("min", "max"))
        lo = _int(f"{path}.size.min", size.get("min", 8), 1, 4 << 20)
        hi = _int(f"{path}.size.max", size.get("max", lo), lo, 4 << 20)
        out["size"] = {"min": lo, "max": hi}
    if kind == "kmalloc_node":
        node = req.get("node", "remote")
        if node not in ("remote", "local"):
            _int(f"{path}.node", node, 0, nodes - 1)
        out["node"] = node
    if kind == "alloc_pages":
        out["order"] = _int(f"{path}.order", req["order"], 0, MAX_ORDER - 1)
    if kind == "dentries":
        out["count"] = _int(f"{path}.count", req["count"], 1, 1 << 20)
    if kind in ("read_file", "fault_anon"):
        out["pages"] = _int(f"{path}.pages", req["pages"], 1, 1 << 20)
    return out


def _accounted(path, req, kind, mask):
    """The request's `accounted` (see ACCOUNTED_DEFAULT); a gfp with __GFP_ACCOUNT (e.g.
    GFP_KERNEL_ACCOUNT) says true itself."""
    in_gfp = bool(mask & GFP_FLAGS["__GFP_ACCOUNT"])
    if kind in ALWAYS_CHARGED:
        if req.get("accounted", True) is not True:
            _fail(f"{path}.accounted", f"kind {kind} is always charged ({ALWAYS_CHARGED[kind]}); "
                  f"`accounted: false` is allowed only for {', '.join(ACCOUNTED_DEFAULT)}")
        return True
    value = req.get("accounted", in_gfp or ACCOUNTED_DEFAULT[kind])
    if not isinstance(value, bool):
        _fail(f"{path}.accounted", f"must be true or false, got {value!r}")
    if in_gfp and not value:
        _fail(f"{path}.accounted", f"false, but gfp {req.get('gfp')!r} has __GFP_ACCOUNT")
    return value


def validate_mix(mix, nodes=1, path="mix"):
    if not isinstance(mix, Mapping):
        _fail(path, "must be a mapping (a GFP mix, e.g. configs/mixes/kernel.yaml)")
    _keys(path, mix, ("name", "description", "requests", "burst", "locked_share", "lifetime"))
    out = _merge(MIX_DEFAULTS, mix)
    _keys(f"{path}.lifetime", out["lifetime"], ("mean", "long_lived_share"))
    reqs = mix.get("requests")
    if not isinstance(reqs, (list, tuple)) or not reqs:
        _fail(f"{path}.requests", "must be a non-empty list of requests")
    if len(reqs) > 16:
        _fail(f"{path}.requests", f"at most 16 request kinds, got {len(reqs)}")
    out["requests"] = [_request(f"{path}.requests[{i}]", r, nodes) for i, r in enumerate(reqs)]
    if sum(r["weight"] for r in out["requests"]) <= 0:
        _fail(f"{path}.requests", "weights must not all be 0")
    out["burst"] = _num(f"{path}.burst", out["burst"], 1, 1 << 16)
    out["locked_share"] = _num(f"{path}.locked_share", out["locked_share"], 0, 1)
    out["lifetime"]["mean"] = _num(f"{path}.lifetime.mean", out["lifetime"]["mean"], 1, 1e9)
    out["lifetime"]["long_lived_share"] = _num(f"{path}.lifetime.long_lived_share",
                                               out["lifetime"]["long_lived_share"], 0, 1)
    return out


def validate_spec(spec):
    """The normalised spec; raises SpecError naming the field."""
    _keys("", spec, tuple(DEFAULTS))
    out = _merge({k: v for k, v in DEFAULTS.items() if k != "mix"}, {k: v for k, v in spec.items() if k != "mix"})
    for section in ("machine", "cgroup", "sibling", "background", "churn", "length"):
        _keys(section, out[section], tuple(DEFAULTS[section]))
    mach = out["machine"]
    check_machine(mach["nodes"], mach["mem_mib"], mach["cpus"], mach["allocator"],
                  mach["slub_max_order"], mach["swap"], "machine.", SpecError)
    nodes = mach["nodes"]
    _choice("design", out["design"], DESIGNS)
    error = design_allocator_error(out["design"], mach["allocator"])
    if error:
        _fail("machine.allocator", error)
    cg = out["cgroup"]
    cg["max"] = _size("cgroup.max", cg["max"])
    high = cg["high"]
    if isinstance(high, float) and not isinstance(high, bool):
        if not 0 < high <= 1:
            _fail("cgroup.high", f'must be a size ("32M"), "max", or a ratio in (0, 1], got {high!r}')
        if cg["max"] == "max":
            _fail("cgroup.high", "a ratio needs cgroup.max to be a size")
        cg["high"] = int(cg["max"] * high)
    else:
        cg["high"] = _size("cgroup.high", high)
    cg["low"] = _size("cgroup.low", cg["low"], allow_zero=True)
    mem_bytes = mach["mem_mib"] << 20
    for key in ("max", "high", "low"):
        if cg[key] != "max" and cg[key] > mem_bytes:
            _fail(f"cgroup.{key}", f"{cg[key]} bytes is more than the machine's memory ({mem_bytes})")
    out["sibling"]["tasks"] = _int("sibling.tasks", out["sibling"]["tasks"], 0, 64)
    out["sibling"]["max"] = _size("sibling.max", out["sibling"]["max"])
    bg = out["background"]
    bg["file_mib"] = _int("background.file_mib", bg["file_mib"], 0, mach["mem_mib"])
    bg["fragment"] = _num("background.fragment", bg["fragment"], 0, 0.5)
    out["tasks"] = _int("tasks", out["tasks"], 1, 256)
    # process churn: a task exits after a geometric number of kernel entries (this mean) and
    # a new one starts in its place; 0 = tasks live as long as the workload
    out["churn"]["mean_entries"] = _num("churn.mean_entries", out["churn"]["mean_entries"], 0, 1e12)
    out["length"]["kernel_entries"] = _int("length.kernel_entries", out["length"]["kernel_entries"], 1, 1 << 31)
    if spec.get("mix") is None:
        _fail("mix", "required: a GFP mix (see configs/mixes/)")
    out["mix"] = validate_mix(spec["mix"], nodes)
    return out
