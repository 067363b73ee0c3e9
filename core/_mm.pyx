# cython: language_level=3
"""The simulator: one extension module, one .pxi file per kernel layer (the C compiler sees
one translation unit, so the per-request path inlines across layers)."""
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memmove
from libc.math cimport log, exp
from core.mm_types cimport *

from core.metrics import GFP_CLASSES, MEMCG_EVENTS, RECLAIM_PLACES, METRICS

MAX_NODES_ = MAX_NODES

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
include "machine.pxi"
include "workload.pxi"
