/* SPDX-License-Identifier: GPL-2.0 */
/* The request and result records of /proc/kmemreq, shared by the module (kmemreq.c), the
 * guest driver (kreplay.c) and Python (realkernel/stream.py packs the same layout). */
#ifndef KMEMREQ_H
#define KMEMREQ_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef int8_t __s8;
typedef uint32_t __u32;
#endif

enum { KMEMREQ_RESULTS_AT, KMEMREQ_KMALLOC, KMEMREQ_KMALLOC_NODE, KMEMREQ_ALLOC_PAGES,
       KMEMREQ_FREE };
enum { KMEMREQ_KERNEL, KMEMREQ_NOFS, KMEMREQ_NOWAIT, KMEMREQ_ATOMIC };
#define KMEMREQ_F_NOFAIL	0x1
#define KMEMREQ_F_THISNODE	0x2
#define KMEMREQ_F_ACCOUNT	0x4
#define KMEMREQ_F_FALLBACK	0x8
#define KMEMREQ_S_OK		0x1	/* the object was allocated (or freed) */
#define KMEMREQ_S_FALLBACK	0x2	/* the first try failed and was retried with GFP_KERNEL */
#define KMEMREQ_S_KILLED	0xffffffffu	/* kreplay: the task died in this request */
#define KMEMREQ_S_NOT_RUN	0xfffffffeu	/* kreplay: the task died before it */
#define KMEMREQ_NO_SLOT		0xffffffffu
#define KMEMREQ_MAX_BATCH	65536

struct kmemreq_req {		/* 12 bytes */
	__u8 op;
	__u8 gfp;
	__u8 flags;
	__s8 node;		/* -1: any node */
	__u32 slot;		/* the object's slot, for a later free */
	__u32 arg;		/* bytes (kmalloc) or order (alloc_pages) */
};

struct kmemreq_res {		/* 8 bytes */
	__u32 status;
	__u32 usage_pages;	/* memory.current of the caller's memcg after the request */
};
#endif
