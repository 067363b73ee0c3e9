/* kreplay: the guest side of `python -m realkernel replay` (docs/realkernel.md).
 *
 * kreplay STREAM DATAFILE CGROUP_OF_TASK0 [CGROUP_OF_TASK1 ...]
 *
 * STREAM is a sequence of kernel entries, each a header {u32 task, u32 nr} followed by nr
 * struct kmemreq_req records (nr = KREPLAY_EXIT: the task exits, for the model's churn). Each workload task is a child process in its cgroup; the
 * parent (in the root cgroup, so never the OOM victim) hands it one entry at a time. The
 * child runs consecutive kernel requests as ONE write() to /proc/kmemreq (one kernel
 * entry), and page-cache reads (pread of DATAFILE), anonymous faults (touching fresh
 * mmap'ed pages) and dentries (stat() of names that do not exist) from user space.
 * A child that dies (an OOM kill) is restarted at its task's next entry, as in the model.
 * Output, on stdout: "@@RK r <hex>" lines with one struct kmemreq_res per request in stream
 * order (KMEMREQ_S_KILLED: the task died in it, KMEMREQ_S_NOT_RUN: before it), then the
 * numbers of entries and task kills.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kmemreq.h"

enum { OP_READ_FILE = 5, OP_FAULT_ANON, OP_DENTRIES };
#define KREPLAY_EXIT 0xffffffffu	/* an entry header's nr: the task exits */

struct task {
	pid_t pid;
	int cmd, res;
	const char *cgroup;
	struct kmemreq_res *out;	/* shared with the parent, charged to the root cgroup */
};

static const char *datafile;
static long data_pages;
/* The page of DATAFILE the next read_file reads and the number of the next negative dentry,
 * counted for the whole stream: every task and every respawned task takes the next ones, so
 * each read charges pages no task has cached yet and each stat() makes a new dentry, as in
 * the model (a counter per child restarted at 0 with every fork, so with two tasks half of
 * the reads hit the other task's page cache and half of the names its negative dentries).
 * Shared memory set up by the parent: its page is charged to the root cgroup. */
static struct { long data_off, dentry_seq; } *counters;
static pid_t stream_id;		/* the parent's pid: names unique to this stream in the boot */
static char page[4096];			/* pread's buffer */
static struct task *tasks;		/* every workload task, for spawn() */
static int ntasks;

static void die(const char *what)
{
	printf("@@RK error kreplay: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int full_io(int fd, void *buf, size_t len, int rd)
{
	char *p = buf;
	while (len) {
		ssize_t n = rd ? read(fd, p, len) : write(fd, p, len);
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

static unsigned long memcg_current(const char *cgroup)
{
	char path[256], buf[64];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/memory.current", cgroup);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return strtoul(buf, NULL, 10) / 4096;
}

/* A user-space request: its status (KMEMREQ_S_OK or 0). */
static unsigned user_op(const struct kmemreq_req *r, int task)
{
	char name[64];
	struct stat st;
	unsigned long i;

	if (r->op == OP_READ_FILE) {
		int fd = open(datafile, O_RDONLY);
		if (fd < 0)
			return 0;
		for (i = 0; i < r->arg; i++) {
			long off = __atomic_fetch_add(&counters->data_off, 1, __ATOMIC_RELAXED);
			if (pread(fd, page, sizeof(page), (off % data_pages) * 4096) != sizeof(page))
				break;
		}
		close(fd);
		return i == r->arg ? KMEMREQ_S_OK : 0;
	}
	if (r->op == OP_FAULT_ANON) {	/* kept until the task exits, as in the model */
		char *p = mmap(NULL, r->arg * 4096UL, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 0;
		for (i = 0; i < r->arg; i++)
			p[i * 4096] = 1;
		return KMEMREQ_S_OK;
	}
	for (i = 0; i < r->arg; i++) {	/* OP_DENTRIES: negative dentries */
		snprintf(name, sizeof(name), "/neg/%d-%d-%ld", (int)stream_id, task,
			 __atomic_fetch_add(&counters->dentry_seq, 1, __ATOMIC_RELAXED));
		stat(name, &st);
	}
	return KMEMREQ_S_OK;
}

/* The child: everything it needs before joining the cgroup (its buffers, touched, and the
 * open /proc/kmemreq) is charged to the root cgroup, so that past memory.max nothing but the
 * stream's own requests asks the workload memcg for memory. */
static void child(int cmd, int res, struct task *t, int task)
{
	struct kmemreq_req *reqs = malloc(KMEMREQ_MAX_BATCH * sizeof(*reqs));
	struct kmemreq_req *batch = malloc((KMEMREQ_MAX_BATCH + 1) * sizeof(*batch));
	int dev = open("/proc/kmemreq", O_RDWR);
	char path[256], pid[32];
	uint64_t one = 1;
	uint32_t nr;
	int fd;

	if (dev < 0 || !reqs || !batch)
		die("/proc/kmemreq");
	memset(reqs, 0, KMEMREQ_MAX_BATCH * sizeof(*reqs));
	memset(batch, 0, (KMEMREQ_MAX_BATCH + 1) * sizeof(*batch));
	memset(page, 0, sizeof(page));
	/* map the shared results here too: the page tables are charged, and now to the root */
	memset(t->out, 0, KMEMREQ_MAX_BATCH * sizeof(*t->out));
	snprintf(path, sizeof(path), "%s/cgroup.procs", t->cgroup);
	fd = open(path, O_WRONLY);
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (fd < 0 || write(fd, pid, strlen(pid)) < 0)
		die(path);
	close(fd);
	while (full_io(cmd, &nr, 4, 1) == 0) {
		uint32_t i = 0, j;
		if (full_io(cmd, reqs, nr * sizeof(*reqs), 1))
			break;
		while (i < nr) {
			if (reqs[i].op >= OP_READ_FILE) {
				t->out[i].status = KMEMREQ_S_KILLED;	/* until it returns */
				t->out[i].status = user_op(&reqs[i], task);
				t->out[i].usage_pages = memcg_current(t->cgroup);
				i++;
				continue;
			}
			for (j = i; j < nr && reqs[j].op < OP_READ_FILE; j++)
				;
			/* one kernel entry; the module writes each outcome to t->out[i..j) */
			batch[0].op = KMEMREQ_RESULTS_AT;
			batch[0].slot = (uint64_t)(uintptr_t)&t->out[i] >> 32;
			batch[0].arg = (uint32_t)(uintptr_t)&t->out[i];
			memcpy(&batch[1], &reqs[i], (j - i) * sizeof(*reqs));
			if (write(dev, batch, (j - i + 1) * sizeof(*batch)) < 0)
				die("kmemreq write");
			i = j;
		}
		/* an eventfd, not a pipe: a pipe write allocates a charged page, and past
		 * memory.max that page alone would OOM-kill this task */
		if (write(res, &one, 8) != 8)
			break;
	}
	exit(0);
}

static void spawn(struct task *t, int task)
{
	int cmd[2], res[2];

	if (pipe(cmd))
		die("pipe");
	res[0] = res[1] = eventfd(0, 0);
	if (res[0] < 0)
		die("eventfd");
	t->pid = fork();
	if (t->pid < 0)
		die("fork");
	if (t->pid == 0) {
		struct task *o;
		/* drop the other tasks' ends this child inherited: a child holding another task's
		 * command pipe keeps that task from ever seeing EOF when kreplay closes it (churn,
		 * the end of the stream), and reap() would wait for it forever */
		for (o = tasks; o < tasks + ntasks; o++)
			if (o != t && o->pid) {
				close(o->cmd);
				close(o->res);
			}
		close(cmd[1]);
		child(cmd[0], res[1], t, task);
	}
	close(cmd[0]);
	t->cmd = cmd[1];
	t->res = res[0];
}

static void reap(struct task *t)
{
	close(t->cmd);
	close(t->res);
	if (t->pid > 0)
		waitpid(t->pid, NULL, 0);
	t->pid = 0;
}

/* Wait for the child's eventfd; -1 if the child died first (an OOM kill). */
static int wait_done(struct task *t)
{
	struct pollfd p = { .fd = t->res, .events = POLLIN };
	uint64_t v;

	for (;;) {
		if (poll(&p, 1, 50) == 1 && read(t->res, &v, 8) == 8)
			return 0;
		if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
			t->pid = -1;	/* reaped already */
			return -1;
		}
	}
}

static void print_hex(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		if (i % 48 == 0)
			printf("%s@@RK r ", i ? "\n" : "");
		printf("%02x", p[i]);
	}
	if (len)
		printf("\n");
}

int main(int argc, char **argv)
{
	struct kmemreq_req *reqs = malloc(KMEMREQ_MAX_BATCH * sizeof(*reqs));
	uint32_t hdr[2];
	long entries = 0, kills = 0;
	struct stat st;
	int i;
	FILE *stream;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc < 4) {
		printf("@@RK error usage: kreplay STREAM DATAFILE CGROUP...\n");
		return 2;
	}
	stream = fopen(argv[1], "r");
	if (!stream)
		die(argv[1]);
	datafile = argv[2];
	if (stat(datafile, &st))
		die(datafile);
	data_pages = st.st_size / 4096 ? st.st_size / 4096 : 1;
	mkdir("/neg", 0755);
	stream_id = getpid();
	counters = mmap(NULL, sizeof(*counters), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counters == MAP_FAILED)
		die("mmap");
	memset(counters, 0, sizeof(*counters));
	ntasks = argc - 3;
	tasks = calloc(ntasks, sizeof(*tasks));
	for (i = 0; i < ntasks; i++) {
		tasks[i].cgroup = argv[3 + i];
		tasks[i].out = mmap(NULL, KMEMREQ_MAX_BATCH * sizeof(struct kmemreq_res),
				    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (tasks[i].out == MAP_FAILED)
			die("mmap");
		memset(tasks[i].out, 0, KMEMREQ_MAX_BATCH * sizeof(struct kmemreq_res));
	}
	while (fread(hdr, 4, 2, stream) == 2) {
		struct task *t;
		if (hdr[0] >= (uint32_t)ntasks || (hdr[1] > KMEMREQ_MAX_BATCH && hdr[1] != KREPLAY_EXIT) ||
		    (hdr[1] != KREPLAY_EXIT && fread(reqs, sizeof(*reqs), hdr[1], stream) != hdr[1])) {
			printf("@@RK error kreplay: malformed stream at entry %ld\n", entries);
			return 1;
		}
		t = &tasks[hdr[0]];
		if (hdr[1] == KREPLAY_EXIT) {	/* churn: the task exits, a new one follows */
			if (t->pid)
				reap(t);
			continue;
		}
		if (!t->pid)
			spawn(t, hdr[0]);
		for (i = 0; i < (int)hdr[1]; i++)
			t->out[i].status = KMEMREQ_S_NOT_RUN, t->out[i].usage_pages = 0;
		if (full_io(t->cmd, &hdr[1], 4, 0) || full_io(t->cmd, reqs, hdr[1] * sizeof(*reqs), 0) ||
		    wait_done(t)) {
			/* killed in this entry (an OOM kill): t->out holds what ran */
			reap(t);
			kills++;
		}
		print_hex(t->out, hdr[1] * sizeof(*t->out));
		entries++;
	}
	for (i = 0; i < ntasks; i++)
		if (tasks[i].pid)
			reap(&tasks[i]);
	printf("@@RK replay_entries %ld\n@@RK replay_task_kills %ld\n", entries, kills);
	return 0;
}
