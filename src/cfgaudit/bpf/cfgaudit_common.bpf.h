/* cfgaudit: what both BPF programs share (cfgaudit_syscalls.bpf.c, cfgaudit_kernel.bpf.c).
 *
 * -D constants (probes/session.py passes them from the session's options; never spliced in):
 *   FOLLOW          1: trace the thread groups in `traced` and every process they fork
 *   TRACE_READS     1: emit reads too
 *   RINGBUF_PAGES   ring buffer size in 4 KiB pages (a power of two, at least 2)
 *
 * Here: the ring buffer (`events`), the exact per-CPU count of records it could not take
 * (`lost`), the sequence numbers (`next_id`), the follow filter (`traced`), the one thread group
 * to trace (`target_pid`, 0: every process; a map the session fills before the probes are
 * attached, not a constant, so that one compiled program serves every -p), and the record fill.
 * Records are the structs of cfgaudit_event.h (generated from events.py).
 *
 * bcc rewrites map calls (x.lookup(), events.ringbuf_reserve()) only in its main file, never in
 * an included header: probes/bccutil.program_text() puts this header in front of the program
 * as one compilation unit, and the program's own #include of it is then a no-op.
 */
#ifndef CFGAUDIT_COMMON_BPF_H
#define CFGAUDIT_COMMON_BPF_H

#include "cfgaudit_event.h"

/* While compiling, bcc searches /proc/kallsyms at each call of bpf_probe_read_user, _user_str
 * and _kernel (about 0.2 s per call on the 6.18 VM: it checks the kernel has these helpers, added
 * in 5.5, before keeping them); the same helpers under names of their own are left alone. Ring
 * buffers need 5.8, so the helpers are always there: the bytecode is the same either way
 * (bench/bpf_identity.py compares it). */
static long (*cfgaudit_read_user)(void *dst, u32 size, const void *src) = (void *)BPF_FUNC_probe_read_user;
static long (*cfgaudit_read_user_str)(void *dst, u32 size, const void *src) =
	(void *)BPF_FUNC_probe_read_user_str;
static long (*cfgaudit_read_kernel)(void *dst, u32 size, const void *src) = (void *)BPF_FUNC_probe_read_kernel;
static long (*cfgaudit_read_kernel_str)(void *dst, u32 size, const void *src) =
	(void *)BPF_FUNC_probe_read_kernel_str;
#define bpf_probe_read_user cfgaudit_read_user
#define bpf_probe_read_user_str cfgaudit_read_user_str
#define bpf_probe_read_kernel cfgaudit_read_kernel
#define bpf_probe_read_kernel_str cfgaudit_read_kernel_str

#ifndef FOLLOW
#define FOLLOW 0
#endif
#ifndef TRACE_READS
#define TRACE_READS 0
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_ARRAY(next_id, u64, 1);
BPF_HASH(traced, u32, u8, 16384);       /* FOLLOW: the thread groups being traced */
BPF_ARRAY(target_pid, u32, 1);          /* not FOLLOW: trace only this thread group (0: all) */

/* One record the ring buffer could not take (or a call slot taken over): exact, per CPU. */
static __always_inline void count_lost(void)
{
	int zero = 0;
	u64 *n = lost.lookup(&zero);
	if (n)
		(*n)++;
}

/* Room for a record of `size` bytes (a constant), or NULL after counting it lost. */
static __always_inline void *reserve_record(u64 size)
{
	void *e = events.ringbuf_reserve(size);
	if (!e)
		count_lost();
	return e;
}

/* The next sequence number (1, 2, ...), or 0 if the map is missing. */
static __always_inline u64 new_id(void)
{
	int zero = 0;
	u64 *next = next_id.lookup(&zero);
	return next ? __sync_fetch_and_add(next, 1) + 1 : 0;
}

/* Is thread group tgid traced? */
static __always_inline int wanted(u32 tgid)
{
	if (FOLLOW)
		return traced.lookup(&tgid) != NULL;
	int zero = 0;
	u32 *target = target_pid.lookup(&zero);
	if (target && *target)
		return tgid == *target;
	return 1;
}

/* The base record of the current task: no offset, size, data or return value yet. */
static __always_inline void fill(struct cfgaudit_event *e, u16 type, s32 fd, u64 file_id)
{
	u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->uid = (u32)bpf_get_current_uid_gid();
	e->fd = fd;
	e->type = type;
	e->file_id = file_id;
	e->offset = -1;
	e->ret = 0;
	e->size = 0;
	e->aux = 0;
	e->data_len = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/* sched_process_fork: with FOLLOW, a traced parent's child is traced too. */
static __always_inline void follow_fork(u32 parent, u32 child)
{
	if (FOLLOW && traced.lookup(&parent)) {
		u8 one = 1;
		traced.update(&child, &one);
	}
}

/* sched_process_exit of a whole thread group: stop following it. */
static __always_inline void follow_exit(u32 tgid)
{
	if (FOLLOW)
		traced.delete(&tgid);
}

#endif /* CFGAUDIT_COMMON_BPF_H */
