// SPDX-License-Identifier: GPL-2.0
/*
 * kmemreq: executes a request stream of kmalloc / kfree / page allocations inside the
 * writing task's memory cgroup, one write() per kernel entry, so that kmemcg-sweep can run
 * the same stream through its model and through Linux (docs/realkernel.md).
 *
 * write(fd, struct kmemreq_req[1 + n]): the first record (op KMEMREQ_RESULTS_AT) holds a
 *     user address (slot: high 32 bits, arg: low 32 bits) of struct kmemreq_res[n]; the n
 *     requests then run in order, in this one kernel entry, and after each its outcome and
 *     the memcg's memory.current (in pages) are copied there at once - so the peak over
 *     memory.high/max inside an entry is exact, and the outcomes of an entry in which the
 *     task is OOM-killed (it dies only on its return to user) are known.
 *     Returns the length written, or -errno (-EINVAL for a malformed buffer).
 * Objects live in one table under the stream's slot numbers (any task may free any object,
 * as the model's frees do); close() - also when the task is OOM-killed - frees the objects
 * its file allocated, as the exit of a task frees its objects.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/slab.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/xarray.h>
#include <linux/uaccess.h>
#include <linux/memcontrol.h>
#include <linux/page_counter.h>
#include <linux/sched/mm.h>

#include "kmemreq.h"

struct kmemreq_obj {
	void *ptr;		/* kmalloc */
	struct page *page;	/* alloc_pages */
	unsigned int order;
	struct file *owner;	/* the file (task) that allocated it */
};

static DEFINE_XARRAY(kmemreq_objs);	/* slot -> struct kmemreq_obj */

static gfp_t kmemreq_gfp(const struct kmemreq_req *r, bool fallback)
{
	static const gfp_t classes[] = {
		[KMEMREQ_KERNEL] = GFP_KERNEL, [KMEMREQ_NOFS] = GFP_NOFS,
		[KMEMREQ_NOWAIT] = GFP_NOWAIT, [KMEMREQ_ATOMIC] = GFP_ATOMIC,
	};
	gfp_t gfp = fallback ? GFP_KERNEL : classes[r->gfp];

	if (r->flags & KMEMREQ_F_NOFAIL)
		gfp |= __GFP_NOFAIL;
	if ((r->flags & KMEMREQ_F_THISNODE) && !fallback)
		gfp |= __GFP_THISNODE;
	if (r->flags & KMEMREQ_F_ACCOUNT)
		gfp |= __GFP_ACCOUNT;
	return gfp | __GFP_NOWARN;	/* failures are the point: keep the console for results */
}

static int kmemreq_alloc(struct kmemreq_obj *obj, const struct kmemreq_req *r, gfp_t gfp)
{
	int node = r->node < 0 ? NUMA_NO_NODE : r->node;

	switch (r->op) {
	case KMEMREQ_KMALLOC:
		obj->ptr = kmalloc(r->arg, gfp);
		return obj->ptr ? 0 : -ENOMEM;
	case KMEMREQ_KMALLOC_NODE:
		obj->ptr = kmalloc_node(r->arg, gfp, node);
		return obj->ptr ? 0 : -ENOMEM;
	case KMEMREQ_ALLOC_PAGES:
		obj->order = r->arg;
		obj->page = node == NUMA_NO_NODE ? alloc_pages(gfp, r->arg)
						 : alloc_pages_node(node, gfp, r->arg);
		return obj->page ? 0 : -ENOMEM;
	}
	return -EINVAL;
}

static void kmemreq_free(struct kmemreq_obj *obj)
{
	if (obj->ptr)
		kfree(obj->ptr);
	if (obj->page)
		__free_pages(obj->page, obj->order);
	kfree(obj);
}

/* One request; its status bits (KMEMREQ_S_*). */
static u32 kmemreq_one(struct file *file, const struct kmemreq_req *r)
{
	struct kmemreq_obj *obj, *old;
	u32 status = 0;

	if (r->op == KMEMREQ_FREE) {
		obj = xa_erase(&kmemreq_objs, r->slot);
		if (!obj)
			return 0;
		kmemreq_free(obj);
		return KMEMREQ_S_OK;
	}
	/* the table's own memory is not accounted: only the request is charged */
	obj = kzalloc(sizeof(*obj), GFP_KERNEL);
	if (!obj)
		return 0;
	obj->owner = file;
	if (kmemreq_alloc(obj, r, kmemreq_gfp(r, false)) == 0) {
		status = KMEMREQ_S_OK;
	} else if (r->flags & KMEMREQ_F_FALLBACK) {
		/* the caller's fallback: a failed GFP_NOWAIT is retried with GFP_KERNEL */
		status = KMEMREQ_S_FALLBACK;
		if (kmemreq_alloc(obj, r, kmemreq_gfp(r, true)) == 0)
			status |= KMEMREQ_S_OK;
	}
	if (!(status & KMEMREQ_S_OK) || r->slot == KMEMREQ_NO_SLOT) {
		kmemreq_free(obj);	/* not kept: freed at once */
		return status;
	}
	old = xa_store(&kmemreq_objs, r->slot, obj, GFP_KERNEL);
	if (xa_is_err(old))
		kmemreq_free(obj);
	else if (old)		/* the stream reused a slot whose free it dropped: the model's */
		kmemreq_free(old);	/* owner died and freed it, here it lives on */
	return status;
}

static ssize_t kmemreq_write(struct file *file, const char __user *buf, size_t len,
			     loff_t *ppos)
{
	struct kmemreq_req *reqs;
	struct kmemreq_res __user *out;
	struct kmemreq_res res;
	struct mem_cgroup *memcg;
	u32 i, n = len / sizeof(*reqs);
	ssize_t ret = len;

	if (len % sizeof(*reqs) || n < 2 || n > KMEMREQ_MAX_BATCH + 1)
		return -EINVAL;
	reqs = memdup_user(buf, len);
	if (IS_ERR(reqs))
		return PTR_ERR(reqs);
	for (i = 0; i < n; i++)
		if ((i == 0) != (reqs[i].op == KMEMREQ_RESULTS_AT) || reqs[i].op > KMEMREQ_FREE ||
		    reqs[i].gfp > KMEMREQ_ATOMIC ||
		    (reqs[i].op == KMEMREQ_ALLOC_PAGES && reqs[i].arg >= MAX_ORDER)) {
			kfree(reqs);
			return -EINVAL;
		}
	out = u64_to_user_ptr((u64)reqs[0].slot << 32 | reqs[0].arg);
	memcg = get_mem_cgroup_from_mm(current->mm);
	for (i = 1; i < n; i++) {
		res.status = kmemreq_one(file, &reqs[i]);
		res.usage_pages = memcg ? page_counter_read(&memcg->memory) : 0;
		/* at once: if the task is OOM-killed in this entry, what ran is still known */
		if (copy_to_user(&out[i - 1], &res, sizeof(res))) {
			ret = -EFAULT;
			break;
		}
	}
	mem_cgroup_put(memcg);
	kfree(reqs);
	return ret;
}

static int kmemreq_open(struct inode *inode, struct file *file)
{
	return 0;
}

static int kmemreq_release(struct inode *inode, struct file *file)
{
	struct kmemreq_obj *obj;
	unsigned long slot;

	xa_for_each(&kmemreq_objs, slot, obj)
		if (obj->owner == file && xa_erase(&kmemreq_objs, slot) == obj)
			kmemreq_free(obj);
	return 0;
}

static const struct proc_ops kmemreq_ops = {
	.proc_open = kmemreq_open,
	.proc_release = kmemreq_release,
	.proc_write = kmemreq_write,
	.proc_lseek = noop_llseek,
};

static int __init kmemreq_init(void)
{
	return proc_create("kmemreq", 0600, NULL, &kmemreq_ops) ? 0 : -ENOMEM;
}

static void __exit kmemreq_exit(void)
{
	struct kmemreq_obj *obj;
	unsigned long slot;

	xa_for_each(&kmemreq_objs, slot, obj)
		kmemreq_free(xa_erase(&kmemreq_objs, slot));
	remove_proc_entry("kmemreq", NULL);
}

module_init(kmemreq_init);
module_exit(kmemreq_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmemcg-sweep: run a request stream of kernel allocations in the caller's memcg");
