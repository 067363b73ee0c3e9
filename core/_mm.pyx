# cython: language_level=3
"""The simulator: one extension module, one .pxi file per kernel layer (the C compiler sees
one translation unit, so the per-request path inlines across layers). _mm.pxd declares
each layer's interface (every C function another file calls), so the order of the includes
below is free; it follows the layers from the bottom up."""
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memmove
from libc.math cimport log, exp
from core.mm_types cimport *

from core.constants import REQUEST_KINDS, check_int, check_machine, parse_size
from core import constants as _constants
from core.metrics import GFP_CLASSES, MEMCG_EVENTS, RECLAIM_PLACES, METRICS

include "lists.pxi"
include "gfp.pxi"
include "designs.pxi"
include "buddy.pxi"
include "compaction.pxi"
include "vmscan.pxi"
include "oom.pxi"
include "memcg.pxi"
include "slab_common.pxi"
include "slub.pxi"
include "slab.pxi"
include "task.pxi"
include "metrics.pxi"
include "mm_init.pxi"
include "hooks.pxi"
include "machine.pxi"
include "geometry.pxi"
include "rng.pxi"
include "wl_heap.pxi"
include "wl_gen.pxi"
include "wl_exec.pxi"
include "wl_api.pxi"


def _check_constants():
    """core/constants.py (pure Python, for core.spec and the sweep) must say what the C
    side says: the sizes in mm_types.pxd and the REQ_* request kinds of task.pxi."""
    c_side = {"PAGE_SIZE": PAGE_SIZE, "MAX_ORDER": MAX_ORDER, "MAX_NODES": MAX_NODES,
              "MAX_CPUS": MAX_CPUS,
              "REQUEST_KINDS": {"kmalloc": REQ_KMALLOC, "kmalloc_node": REQ_KMALLOC_NODE,
                                "alloc_pages": REQ_ALLOC_PAGES, "dentries": REQ_DENTRIES,
                                "read_file": REQ_READ_FILE, "fault_anon": REQ_FAULT_ANON}}
    py_side = {name: getattr(_constants, name) for name in c_side if name != "REQUEST_KINDS"}
    py_side["REQUEST_KINDS"] = {name: i for i, name in enumerate(_constants.REQUEST_KINDS)}
    if py_side != c_side or len(REQUEST_KINDS) != NR_REQ_KINDS:
        raise ImportError(f"core/constants.py disagrees with the C constants: {py_side} != {c_side}")


_check_constants()
