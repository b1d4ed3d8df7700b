/* cfgaudit: user-space PCI config-space accesses, seen from syscall tracepoints.
 *
 * Compiled by bcc at run time (once per kernel and set of constants: probes/bpfcache.py keeps
 * the bytecode), after cfgaudit_common.bpf.h (the ring buffer, lost counting, the follow filter,
 * the target_pid map, the record fill, and the -D constants FOLLOW, TRACE_READS and
 * RINGBUF_PAGES). Constants of this program, also -D:
 *   SYSFS_PATH, PROCFS_PATH   path prefixes (strings) of config files to track
 *   HAVE_SYS_OPEN             1: the kernel has the open(2) tracepoints (x86_64; not arm64)
 *   HAVE_IO_URING             1: the kernel has sys_exit_io_uring_setup (CONFIG_IO_URING)
 * (probes/syscalls.py sets the HAVE_ ones from tracefs: a probe is compiled only where its
 * tracepoint exists.)
 *
 * Open files are tracked by (tgid, fd) in the `fds` map when their path could be a config
 * file: it starts with one of the prefixes, or ends in "/config" (sysfs config files through
 * any symlinked directory, and the /sys/devices/pci.../BDF/config form), or is a relative
 * "config" or "DD.F". User space resolves each such open from /proc/PID/fd and drops the ones
 * that are not PCI config files. For every other file a write costs one failed map lookup.
 * A failed ring buffer reserve is counted per CPU in `lost`, so loss is exact.
 */
/* The one kernel type the tracepoint records need (rwf_t, the pwritev2/preadv2 flags: an int,
 * __kernel_rwf_t of include/uapi/linux/fs.h), instead of <linux/fs.h> and the hundreds of
 * headers it pulls in (bcc compiles them three times). */
typedef int rwf_t;
#include "cfgaudit_common.bpf.h"

#ifndef SYSFS_PATH
#define SYSFS_PATH "/sys/bus/pci"
#endif
#ifndef PROCFS_PATH
#define PROCFS_PATH "/proc/bus/pci"
#endif
#ifndef HAVE_SYS_OPEN
#define HAVE_SYS_OPEN 0
#endif
#ifndef HAVE_IO_URING
#define HAVE_IO_URING 0
#endif
#define MAX_FORK_FDS 256  /* fds below this are inherited by a forked child */

#define K_WRITE 1
#define K_READ 2
#define K_DUP 3
#define K_OPEN 4
#define K_LSEEK 5
#define K_IOPERM 6
#define K_IOPL 7

struct fdkey {
	u32 tgid;
	s32 fd;
};

struct fdval {
	u64 file_id;
};

struct inflight {
	u32 tid;      /* owner of the slot; 0: free */
	u32 pad;
	u64 buf;      /* user buffer, iovec array, or path */
	u64 count;    /* bytes asked for; iovec count for the vector calls */
	s64 off;      /* explicit offset, or -1: use (and advance) the file position */
	u64 file_id;
	s32 fd;
	u32 kind;
	u32 vec;      /* 1: buf is a struct iovec array */
	u32 aux;
};

BPF_HASH(fds, struct fdkey, struct fdval, 65536);
BPF_HASH(pos, u64, s64, 65536);
BPF_HASH(nfds, u32, u32, 16384);        /* tgid -> tracked fds (fork copies only then) */
/* Arguments between a syscall's enter and exit, in slot tid % CALL_SLOTS. Arrays, not hashes:
 * the verifier inlines their lookups, so the exit of every unrelated syscall costs a load and a
 * compare (target: within 5% of an empty program, BENCHMARKS.md). */
#define CALL_SLOTS 65536
BPF_ARRAY(calls, struct inflight, CALL_SLOTS);
/* 1 once a thread group whose id falls in this slot has followed a config file: only then is
 * the fds hash consulted (a prefilter; a shared slot costs a lookup, never a miss). */
BPF_ARRAY(seen_tgid, u8, CALL_SLOTS);

static __always_inline void emit_simple(u16 type, s32 fd, u64 file_id, u32 aux, s64 ret)
{
	struct cfgaudit_event *e = reserve_record(sizeof(struct cfgaudit_event));
	if (!e)
		return;
	fill(e, type, fd, file_id);
	e->aux = aux;
	e->ret = ret;
	events.ringbuf_submit(e, 0);
}

/* The arguments saved at the syscall's entry, if the entry saved some of this kind (they are
 * consumed: each entry is taken once). */
static __always_inline void save_call(struct inflight *a)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 idx = tid & (CALL_SLOTS - 1);
	struct inflight *slot = calls.lookup(&idx);
	if (!slot)
		return;
	if (slot->tid && slot->tid != tid)
		count_lost();   /* another thread's call in flight in the same slot: its record is lost */
	a->tid = tid;
	*slot = *a;
}

static __always_inline int take_call(u32 kind1, u32 kind2, struct inflight *out)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 idx = tid & (CALL_SLOTS - 1);
	struct inflight *a = calls.lookup(&idx);
	if (!a || a->tid != tid || (a->kind != kind1 && a->kind != kind2))
		return 0;
	*out = *a;
	a->tid = 0;
	return 1;
}

static __always_inline int maybe_tracked(u32 tgid)
{
	u32 idx = tgid & (CALL_SLOTS - 1);
	u8 *seen = seen_tgid.lookup(&idx);
	return seen && *seen;
}

/* The current process's followed open file behind fd, or NULL (one inlined load for others). */
static __always_inline struct fdval *tracked_fd(int fd)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!maybe_tracked(tgid))
		return NULL;
	struct fdkey k = {.tgid = tgid, .fd = fd};
	return fds.lookup(&k);
}

static __always_inline void mark_tracked(u32 tgid)
{
	u32 idx = tgid & (CALL_SLOTS - 1);
	u8 *seen = seen_tgid.lookup(&idx);
	if (seen)
		*seen = 1;
}

/* Follow fd of the current process as open file file_id (counting new fds per process). */
static __always_inline void track_fd(s32 fd, u64 file_id)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fdkey k = {.tgid = tgid, .fd = fd};
	struct fdval v = {.file_id = file_id};
	mark_tracked(tgid);
	if (!fds.lookup(&k)) {
		u32 one = 1, *n = nfds.lookup(&tgid);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			nfds.update(&tgid, &one);
	}
	fds.update(&k, &v);
}

/* ---------------------------------------------------------------- opens */

static __always_inline int enter_open(const char *filename, int flags)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	struct inflight a = {};
	a.buf = (u64)filename;
	a.kind = K_OPEN;
	a.aux = flags;
	save_call(&a);
	return 0;
}

/* 1 if the string at p starts with the literal lit. Fully unrolled, so the literal's bytes
 * become immediates (bcc has no read-only data section). p must hold CFGAUDIT_PATH_MAX bytes. */
#define PREFIX(p, lit) ({                                                   \
	int _ok = 1;                                                        \
	const char _w[] = lit;                                              \
	_Pragma("unroll")                                                   \
	for (int _i = 0; _i < (int)sizeof(_w) - 1 && _i < CFGAUDIT_PATH_MAX; _i++) { \
		if ((p)[_i] != _w[_i]) {                                    \
			_ok = 0;                                            \
			break;                                              \
		}                                                           \
	}                                                                   \
	_ok;                                                                \
})

static __always_inline int candidate(const char *p, int len)
{
	/* len counts the trailing NUL (bpf_probe_read_user_str) */
	int l = len - 1;
	if (l <= 0 || l >= CFGAUDIT_PATH_MAX)
		return 0;
	if (PREFIX(p, SYSFS_PATH) || PREFIX(p, PROCFS_PATH) || PREFIX(p, "/sys/devices/pci"))
		return 1;
	/* ".../config" or a relative "config" */
	if (l >= 6) {
		int s = (l - 6) & (CFGAUDIT_PATH_MAX - 1);
		if (p[s] == 'c' && p[(s + 1) & 255] == 'o' && p[(s + 2) & 255] == 'n' && p[(s + 3) & 255] == 'f' &&
		    p[(s + 4) & 255] == 'i' && p[(s + 5) & 255] == 'g' && (l == 6 || p[(s - 1) & 255] == '/'))
			return 1;
	}
	/* a relative "DD.F" (procfs, after chdir into a bus directory) */
	if (p[0] != '/' && l >= 4) {
		int s = (l - 4) & (CFGAUDIT_PATH_MAX - 1);
		if (p[(s + 2) & 255] == '.' && p[(s + 3) & 255] >= '0' && p[(s + 3) & 255] <= '7' &&
		    (l == 4 || p[(s - 1) & 255] == '/'))
			return 1;
	}
	return 0;
}

/* The UM_* kind of an open of p (the path as the process passed it), or 0. Literal absolute
 * paths only, like the config-file prefixes: "/dev/mem", "/dev/port", and anything under
 * "/dev/vfio/" (the group files, /dev/vfio/vfio, iommufd's /dev/vfio/devices/vfioN): through
 * a VFIO device fd's config region, config writes are pread/pwrite on that fd, which this
 * program does not follow. */
static __always_inline int unmediated_path(const char *p)
{
	if (PREFIX(p, "/dev/mem") && p[8] == 0)
		return UM_DEVMEM;
	if (PREFIX(p, "/dev/port") && p[9] == 0)
		return UM_DEVPORT;
	if (PREFIX(p, "/dev/vfio/") && p[10] != 0)
		return UM_VFIO;
	return 0;
}

static __always_inline int exit_open(long ret)
{
	struct inflight args;
	if (!take_call(K_OPEN, K_OPEN, &args) || ret < 0)
		return 0;
	struct cfgaudit_open_event *e = reserve_record(sizeof(struct cfgaudit_open_event));
	if (!e)
		return 0;
	int len = bpf_probe_read_user_str(e->path, sizeof(e->path), (const void *)args.buf);
	int um = len > 0 ? unmediated_path(e->path) : 0;
	if (len <= 0 || (!um && !candidate(e->path, len))) {
		events.ringbuf_discard(e, 0);
		return 0;
	}
	u64 file_id = 0;
	if (!um) {
		file_id = new_id();
		if (!file_id) {
			events.ringbuf_discard(e, 0);
			return 0;
		}
		s64 zero_pos = 0;
		track_fd((s32)ret, file_id);
		pos.update(&file_id, &zero_pos);
	}
	fill(&e->ev, um ? EV_UNMEDIATED : EV_OPEN, (s32)ret, file_id);
	e->ev.aux = um ? um : args.aux;
	e->ev.ret = ret;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return enter_open(args->filename, args->flags); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return exit_open(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) { return enter_open(args->filename, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return exit_open(args->ret); }
#if HAVE_SYS_OPEN
TRACEPOINT_PROBE(syscalls, sys_enter_open) { return enter_open(args->filename, args->flags); }
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return exit_open(args->ret); }
#endif

/* ---------------------------------------------------------------- reads and writes */

static __always_inline int enter_rw(u32 kind, int fd, u64 buf, u64 count, s64 off, u32 vec)
{
	/* reads are followed even without TRACE_READS: they move the file position */
	struct fdval *v = tracked_fd(fd);
	if (!v)
		return 0;
	struct inflight a = {};
	a.buf = buf;
	a.count = count;
	a.off = off;
	a.file_id = v->file_id;
	a.fd = fd;
	a.kind = kind;
	a.vec = vec;
	save_call(&a);
	return 0;
}

struct iov {
	u64 base;
	u64 len;
};

struct scratch_t {
	u8 b[2 * CFGAUDIT_DATA_MAX];
};
BPF_PERCPU_ARRAY(scratch, struct scratch_t, 1);

static __always_inline int exit_rw(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	struct inflight a;
	if (!take_call(K_WRITE, K_READ, &a))
		return 0;
	s64 off = a.off;
	s64 *p = pos.lookup(&a.file_id);
	if (off < 0) {   /* write/read/writev/readv, or pwritev2 with offset -1: the file position */
		off = p ? *p : -1;
		if (p && ret > 0) {
			s64 np = off + ret;
			pos.update(&a.file_id, &np);
		}
	}
	if ((a.kind == K_READ && !TRACE_READS) || !wanted(id >> 32))
		return 0;
	struct cfgaudit_event *e = reserve_record(sizeof(struct cfgaudit_event));
	if (!e)
		return 0;
	fill(e, a.kind == K_WRITE ? EV_WRITE : EV_READ, a.fd, a.file_id);
	e->offset = off;
	e->ret = ret;
	/* data: the first CFGAUDIT_DATA_MAX bytes; for reads only what was read */
	u64 limit = CFGAUDIT_DATA_MAX;
	if (a.kind == K_READ)
		limit = ret > 0 ? ((u64)ret < limit ? (u64)ret : limit) : 0;
	u32 n = 0;
	if (a.vec) {   /* size = the iovecs' total (up to 8 of them); data gathered from them */
		int zero = 0;
		struct scratch_t *sc = scratch.lookup(&zero);
		u64 total = 0;
#pragma unroll
		for (int i = 0; i < 8; i++) {
			if (i >= a.count)
				break;
			struct iov v = {};
			bpf_probe_read_user(&v, sizeof(v), (void *)(a.buf + i * sizeof(struct iov)));
			total += v.len;
			if (sc && n < limit && v.len > 0) {
				u32 k = v.len > CFGAUDIT_DATA_MAX ? CFGAUDIT_DATA_MAX : v.len;
				bpf_probe_read_user(&sc->b[n & (CFGAUDIT_DATA_MAX - 1)], k, (void *)v.base);
				n += k;
			}
		}
		e->size = total;
		if (n > limit)
			n = limit;
		if (sc && n > 0)
			bpf_probe_read_kernel(e->data, CFGAUDIT_DATA_MAX, sc->b);
	} else {
		e->size = a.count;
		u64 k = a.count < limit ? a.count : limit;
		if (k > CFGAUDIT_DATA_MAX)
			k = CFGAUDIT_DATA_MAX;
		n = k;
		if (k > 0)
			bpf_probe_read_user(e->data, k, (void *)a.buf);
	}
	e->data_len = n;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_pwrite64) { return enter_rw(K_WRITE, args->fd, (u64)args->buf, args->count, args->pos, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_pwrite64) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return enter_rw(K_WRITE, args->fd, (u64)args->buf, args->count, -1, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_pwritev) { return enter_rw(K_WRITE, args->fd, (u64)args->vec, args->vlen, args->pos_l, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_pwritev) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_pwritev2) { return enter_rw(K_WRITE, args->fd, (u64)args->vec, args->vlen, (s64)args->pos_l, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_pwritev2) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return enter_rw(K_WRITE, args->fd, (u64)args->vec, args->vlen, -1, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_pread64) { return enter_rw(K_READ, args->fd, (u64)args->buf, args->count, args->pos, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_pread64) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return enter_rw(K_READ, args->fd, (u64)args->buf, args->count, -1, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return enter_rw(K_READ, args->fd, (u64)args->vec, args->vlen, -1, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return exit_rw(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_preadv) { return enter_rw(K_READ, args->fd, (u64)args->vec, args->vlen, args->pos_l, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_preadv) { return exit_rw(args->ret); }

/* ---------------------------------------------------------------- file position */

TRACEPOINT_PROBE(syscalls, sys_enter_lseek)
{
	struct fdval *v = tracked_fd(args->fd);
	if (!v)
		return 0;
	struct inflight a = {};
	a.kind = K_LSEEK;
	a.file_id = v->file_id;
	save_call(&a);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_lseek)
{
	struct inflight a;
	if (!take_call(K_LSEEK, K_LSEEK, &a))
		return 0;
	s64 np = args->ret;
	if (np >= 0)
		pos.update(&a.file_id, &np);
	return 0;
}

/* ---------------------------------------------------------------- fd table */

static __always_inline int enter_dup(int oldfd, int newfd)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!maybe_tracked(id >> 32))
		return 0;
	struct fdkey k = {.tgid = id >> 32, .fd = oldfd};
	struct fdval *v = fds.lookup(&k);
	struct fdkey nk = {.tgid = id >> 32, .fd = newfd};
	if (!v && (newfd < 0 || !fds.lookup(&nk)))
		return 0;
	struct inflight a = {};
	a.kind = K_DUP;
	a.fd = oldfd;
	a.file_id = v ? v->file_id : 0;
	save_call(&a);
	return 0;
}

static __always_inline int exit_dup(long ret)
{
	struct inflight a;
	if (!take_call(K_DUP, K_DUP, &a) || ret < 0)
		return 0;
	struct fdkey nk = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (s32)ret};
	if (a.file_id) {
		track_fd((s32)ret, a.file_id);
	} else {
		fds.delete(&nk);   /* dup2 of an untracked fd over a tracked one */
	}
	emit_simple(EV_DUP, a.fd, a.file_id, (u32)ret, ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup) { return enter_dup(args->fildes, -1); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup) { return exit_dup(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) { return enter_dup(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return exit_dup(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return enter_dup(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return exit_dup(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_fcntl)
{
	/* F_DUPFD 0, F_DUPFD_CLOEXEC 1030 (include/uapi/linux/fcntl.h) */
	if (args->cmd != 0 && args->cmd != 1030)
		return 0;
	return enter_dup(args->fd, -1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_fcntl) { return exit_dup(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	struct fdval *v = tracked_fd(args->fd);
	if (!v)
		return 0;
	u64 fid = v->file_id;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fdkey k = {.tgid = tgid, .fd = args->fd};
	fds.delete(&k);
	u32 *n = nfds.lookup(&tgid);
	if (n && *n > 0)
		__sync_fetch_and_add(n, -1);
	emit_simple(EV_CLOSE, args->fd, fid, 0, 0);
	return 0;
}

/* ---------------------------------------------------------------- processes */

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	/* runs in the parent; child_pid is the new task (a new thread group unless CLONE_THREAD) */
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	u32 child = args->child_pid;
	follow_fork(parent, child);
	u32 *n = nfds.lookup(&parent);
	if (!n || *n == 0)
		return 0;
	/* the child inherits the parent's count; no per-path scalar in the loop, so the
	 * verifier's states stay mergeable */
	u32 count = *n;
	nfds.update(&child, &count);
	u32 cidx = child & (CALL_SLOTS - 1);
	u8 *seen = seen_tgid.lookup(&cidx);
	if (seen)
		*seen = 1;
#pragma clang loop unroll(disable)
	for (int fd = 0; fd < MAX_FORK_FDS; fd++) {
		struct fdkey pk = {.tgid = parent, .fd = fd};
		struct fdval *v = fds.lookup(&pk);
		if (!v)
			continue;
		struct fdkey ck = {.tgid = child, .fd = fd};
		struct fdval cv = {.file_id = v->file_id};
		fds.update(&ck, &cv);
	}
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if ((u32)id != tgid)
		return 0;   /* a thread, not the whole process */
	if (nfds.lookup(&tgid)) {
		nfds.delete(&tgid);
		emit_simple(EV_EXIT, -1, 0, 0, 0);   /* user space drops the process's fds */
	}
	follow_exit(tgid);
	return 0;
}

/* ---------------------------------------------------------------- unmediated access */

/* A grant in flight: what (UM_*) and, for ioperm, the first port and the count; iopl: the level. */
static __always_inline int enter_grant(u32 kind, u32 what, s64 from, u64 count)
{
	struct inflight a = {};
	a.kind = kind;
	a.aux = what;
	a.off = from;
	a.count = count;
	save_call(&a);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioperm)
{
	/* only grants that reach the configuration ports 0xCF8-0xCFF */
	if (!args->turn_on || args->from > 0xCFF || args->from + args->num <= 0xCF8 ||
	    !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return enter_grant(K_IOPERM, UM_IOPERM, args->from, args->num);
}

TRACEPOINT_PROBE(syscalls, sys_enter_iopl)
{
	if (args->level < 3 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return enter_grant(K_IOPL, UM_IOPL, 0, args->level);
}

static __always_inline int exit_grant(long ret)
{
	struct inflight a;
	if (!take_call(K_IOPERM, K_IOPL, &a) || ret != 0)
		return 0;
	struct cfgaudit_event *e = reserve_record(sizeof(struct cfgaudit_event));
	if (!e)
		return 0;
	fill(e, EV_UNMEDIATED, -1, 0);
	e->aux = a.aux;
	e->offset = a.off;
	e->size = a.count;
	events.ringbuf_submit(e, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioperm) { return exit_grant(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_iopl) { return exit_grant(args->ret); }

#if HAVE_IO_URING
/* io_uring_setup() succeeded (ret: the ring's fd): writes submitted through the ring
 * (IORING_OP_WRITE and friends) are no write/pwrite syscall, so a config write among them would
 * not be seen here. Only the exit: nothing of the arguments is needed. */
TRACEPOINT_PROBE(syscalls, sys_exit_io_uring_setup)
{
	if (args->ret < 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_simple(EV_UNMEDIATED, (s32)args->ret, 0, UM_IO_URING, args->ret);
	return 0;
}
#endif
