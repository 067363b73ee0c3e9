"""The model's constants that Python needs, the request kinds, and the one parser and
formatter of sizes: pure Python, so core.spec, the sweep and core._mm itself import it
without an import cycle. core/_mm.pyx checks at import that the C side (mm_types.pxd, the
REQ_* kinds of task.pxi) agrees with these values."""
import math
import re

PAGE_SIZE = 4096
MAX_ORDER = 11                     # orders 0..10 (include/linux/mmzone.h)
MAX_NODES = 8
MAX_CPUS = 256
MEM_MIB = (16, 65536)              # the machine sizes the simulator accepts
ALLOCATORS = ("slub", "slab")
# workload request kinds; a kind's index is its C value (REQ_* in core/task.pxi)
REQUEST_KINDS = ("kmalloc", "kmalloc_node", "alloc_pages", "dentries", "read_file", "fault_anon")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def check_int(name, value, lo, hi, error=ValueError):
    """value if it is an integer in lo..hi, else `error` naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise error(f"{name}: must be an integer in {lo}..{hi}, got {value!r}")
    return value


def check_machine(nodes, mem_mib, cpus, allocator, slub_max_order, swap, path="",
                  error=ValueError):
    """The range checks of a machine, shared by core.Machine and the workload spec's
    `machine` section (`path` prefixes the field names, e.g. "machine.")."""
    check_int(f"{path}nodes", nodes, 1, MAX_NODES, error)
    check_int(f"{path}mem_mib", mem_mib, *MEM_MIB, error)
    if isinstance(cpus, int) and not isinstance(cpus, bool) and 1 <= cpus < nodes:
        raise error(f"{path}cpus: need at least one CPU per node ({nodes} nodes), got {cpus}")
    check_int(f"{path}cpus", cpus, 1, MAX_CPUS, error)
    if allocator not in ALLOCATORS:
        raise error(f"{path}allocator: must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    check_int(f"{path}slub_max_order", slub_max_order, 0, MAX_ORDER - 1, error)
    if not isinstance(swap, bool):
        raise error(f"{path}swap: must be true or false, got {swap!r}")


def parse_size(value, what="size"):
    """cgroupfs memparse: bytes, or a number with K/M/G/T; "max" is no limit (None)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected bytes, 'NNN[KMG]' or 'max', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what}: must be >= 0, got {value}")
        return value
    if isinstance(value, str):
        if value.strip() == "max":
            return None
        mt = _SIZE_RE.match(value)
        if mt:
            return int(mt.group(1)) * _UNITS[mt.group(2).upper()]
    raise ValueError(f"{what}: expected bytes, 'NNN[KMG]' or 'max', got {value!r}")


def size_bytes(value) -> float:
    """A grid axis value as a number: "64M" -> bytes, "max" -> inf, ratios (0.75) unchanged."""
    if isinstance(value, float):
        return float(value)
    try:
        nbytes = parse_size(value)
    except ValueError:
        return float(value)                   # a ratio or a number written as text
    return math.inf if nbytes is None else float(nbytes)


def format_size(nbytes) -> str:
    """Bytes as cgroupfs would accept them: 67108864 -> '64M', inf -> 'max'."""
    if not math.isfinite(nbytes):
        return "max"
    nbytes = int(nbytes)
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)
