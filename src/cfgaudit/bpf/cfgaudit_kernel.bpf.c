/* cfgaudit: user-space PCI config-space accesses, seen on the kernel's own config accessors.
 *
 * Compiled by bcc at run time; probes are attached by probes/kernel.py to the symbols it found
 * in the running kernel (never by version number). Functions, all with kprobes:
 *   pci_user_write_config_{byte,word,dword}(dev, where, val)      drivers/pci/access.c
 *       every user write ends here, whatever the path (sysfs, procfs, VFIO): one piece each
 *   pci_write_config (sysfs), proc_bus_pci_write (procfs), vfio_pci_config_rw (VFIO)
 *       entry + return: the write the process made (offset, size, return value); the pieces
 *       made inside are gathered into ONE record per call, so a trace equals the syscall
 *       backend's (one record per pwrite). Pieces outside any of these: one record each,
 *       via "unknown".
 *   resource_is_exclusive (return), kernel/resource.c, since v6.2 (278294798ac9, which
 *       introduced it for pci_write_config(); iomem_is_exclusive() calls it too, so only a
 *       call inside a traced write counts): the kernel's own verdict for that write.
 *   pci_read_config / proc_bus_pci_read (return), with TRACE_READS: the bytes read.
 *   With DOE_PROBES (issue 11), the kernel's own DOE exchanges (drivers/pci/doe.c, 6.0+):
 *   doe_statemachine_work (entry: EV_DOE_START; return: EV_DOE_END) runs one whole exchange on
 *   the mailbox's ordered workqueue; the completion callback the worker calls last
 *   (pci_doe_task_complete; cxl_doe_task_complete for CDAT in 6.0-6.3) is where task->rv (bytes
 *   received or -errno) is read, while the requester still waits on it. struct pci_doe_task and
 *   struct pci_doe_mb are private to doe.c: their member offsets come from the running kernel's
 *   BTF as -D constants (probes/btf.py; DOE_TASK_*, DOE_MB_*). docs/KERNEL-FACTS.md has the history.
 *
 * Compiled after cfgaudit_common.bpf.h (the ring buffer, lost counting, the follow filter, the
 * record fill, the target_pid map, the -D constants FOLLOW, TRACE_READS, RINGBUF_PAGES).
 * Record: struct cfgaudit_kernel_event (cfgaudit_event.h, generated from events.py): the base
 * record, then the device name (struct device's kobject name, "DDDD:BB:DD.F"). In it:
 *   aux = via (KV_*) | verdict (KVERDICT_*) << 8 (NONE: no resource_is_exclusive call seen)
 *   file_id = the call's sequence number; fd = -1.
 * DOE records: offset = the DOE capability; aux = vendor | type << 16 | rv seen << 24; START:
 * size = request bytes; END: size = response bytes asked for, ret = task->rv (when seen);
 * file_id pairs a START with its END; pid/comm are the kworker's. Never filtered by -p/-n/FOLLOW.
 */
#include <linux/fs.h>
#include <linux/pci.h>
#include "cfgaudit_common.bpf.h"

/* one user write or read in flight in this thread (inside pci_write_config & co.) */
struct call {
	u64 id;
	s64 off;
	u64 count;
	u64 buf;       /* kernel (sysfs) or user (procfs, vfio) buffer: reads copy from it at return */
	u32 via;
	u32 op;        /* EV_WRITE or EV_READ */
	u32 verdict;
	u32 hi;        /* bytes of data gathered from the pieces (highest end) */
	u32 have_dev;
	u32 pad;
	u8 data[CFGAUDIT_DATA_MAX];
	char dev[CFGAUDIT_DEV_NAME_MAX];
};

BPF_PERCPU_ARRAY(scratch, struct call, 1);
BPF_HASH(inflight, u32, struct call, 16384);

static __always_inline void copy_dev_name(char *out, struct pci_dev *dev)
{
	const char *name = NULL;
	bpf_probe_read_kernel(&name, sizeof(name), &dev->dev.kobj.name);
	if (name)
		bpf_probe_read_kernel_str(out, CFGAUDIT_DEV_NAME_MAX, name);
}

/* ---------------------------------------------------------------- the outer calls */

static __always_inline int begin(u32 via, u32 op, s64 off, u64 count, u64 buf, const char *kname)
{
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	int zero = 0;
	struct call *c = scratch.lookup(&zero);
	if (!c)
		return 0;
	__builtin_memset(c, 0, sizeof(*c));
	c->id = new_id();
	c->via = via;
	c->op = op;
	c->off = off;
	c->count = count;
	c->buf = buf;
	if (kname) {
		bpf_probe_read_kernel_str(c->dev, CFGAUDIT_DEV_NAME_MAX, kname);
		c->have_dev = 1;
	}
	u32 tid = (u32)bpf_get_current_pid_tgid();
	inflight.update(&tid, c);
	return 0;
}

static __always_inline int finish(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct call *c = inflight.lookup(&tid);
	if (!c)
		return 0;
	s64 ret = PT_REGS_RC(ctx);
	if (c->op == EV_READ && !TRACE_READS) {
		inflight.delete(&tid);
		return 0;
	}
	struct cfgaudit_kernel_event *e = reserve_record(sizeof(struct cfgaudit_kernel_event));
	if (!e) {
		inflight.delete(&tid);
		return 0;
	}
	fill(&e->ev, c->op, -1, 0);
	e->ev.offset = c->off;
	e->ev.size = c->count;
	e->ev.ret = ret;
	e->ev.file_id = c->id;
	e->ev.aux = c->via | (c->verdict << 8);
	__builtin_memcpy(e->dev, c->dev, CFGAUDIT_DEV_NAME_MAX);
	u32 n = 0;
	if (c->op == EV_WRITE) {
		n = c->hi;
		__builtin_memcpy(e->ev.data, c->data, CFGAUDIT_DATA_MAX);
	} else if (ret > 0) {
		n = ret > CFGAUDIT_DATA_MAX ? CFGAUDIT_DATA_MAX : (u32)ret;
		n &= (CFGAUDIT_DATA_MAX * 2 - 1);
		if (n > CFGAUDIT_DATA_MAX)
			n = CFGAUDIT_DATA_MAX;
		if (c->via == KV_SYSFS)
			bpf_probe_read_kernel(e->ev.data, n, (void *)c->buf);
		else
			bpf_probe_read_user(e->ev.data, n, (void *)c->buf);
	}
	e->ev.data_len = n > CFGAUDIT_DATA_MAX ? CFGAUDIT_DATA_MAX : n;
	inflight.delete(&tid);
	events.ringbuf_submit(e, 0);
	return 0;
}

/* sysfs: drivers/pci/pci-sysfs.c, static ssize_t pci_write_config(struct file *, struct kobject *,
 * [const] struct bin_attribute *, char *buf, loff_t off, size_t count); kobj is the device's. */
int on_sysfs_write(struct pt_regs *ctx, struct file *filp, struct kobject *kobj, void *attr, char *buf,
		   loff_t off, size_t count)
{
	const char *name = NULL;
	bpf_probe_read_kernel(&name, sizeof(name), &kobj->name);
	return begin(KV_SYSFS, EV_WRITE, off, count, (u64)buf, name);
}

int on_sysfs_read(struct pt_regs *ctx, struct file *filp, struct kobject *kobj, void *attr, char *buf,
		  loff_t off, size_t count)
{
	const char *name = NULL;
	bpf_probe_read_kernel(&name, sizeof(name), &kobj->name);
	return begin(KV_SYSFS, EV_READ, off, count, (u64)buf, name);
}

/* procfs: drivers/pci/proc.c, proc_bus_pci_{write,read}(struct file *, char __user *buf,
 * size_t nbytes, loff_t *ppos). The device comes from the pieces. */
int on_proc_write(struct pt_regs *ctx, struct file *file, const char *buf, size_t nbytes, loff_t *ppos)
{
	loff_t pos = 0;
	bpf_probe_read_kernel(&pos, sizeof(pos), ppos);
	return begin(KV_PROCFS, EV_WRITE, pos, nbytes, (u64)buf, NULL);
}

int on_proc_read(struct pt_regs *ctx, struct file *file, char *buf, size_t nbytes, loff_t *ppos)
{
	loff_t pos = 0;
	bpf_probe_read_kernel(&pos, sizeof(pos), ppos);
	return begin(KV_PROCFS, EV_READ, pos, nbytes, (u64)buf, NULL);
}

/* VFIO: vfio_pci_config_rw(vdev, char __user *buf, size_t count, loff_t *ppos, bool iswrite);
 * the config offset is *ppos & VFIO_PCI_OFFSET_MASK (40 bits). */
int on_vfio_rw(struct pt_regs *ctx, void *vdev, char *buf, size_t count, loff_t *ppos, bool iswrite)
{
	loff_t pos = 0;
	bpf_probe_read_kernel(&pos, sizeof(pos), ppos);
	return begin(KV_VFIO, iswrite ? EV_WRITE : EV_READ, pos & ((1ULL << 40) - 1), count, (u64)buf, NULL);
}

int on_outer_return(struct pt_regs *ctx)
{
	return finish(ctx);
}

/* resource_is_exclusive(root, addr, size) returned: the kernel's verdict on the write in flight */
int on_exclusive_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct call *c = inflight.lookup(&tid);
	if (!c || c->op != EV_WRITE)
		return 0;
	c->verdict = (PT_REGS_RC(ctx) & 0xff) ? KVERDICT_TRUE : KVERDICT_FALSE;
	return 0;
}

/* ---------------------------------------------------------------- the pieces */

static __always_inline int piece(struct pt_regs *ctx, struct pci_dev *dev, int where, u32 val, u32 width)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct call *c = inflight.lookup(&tid);
	if (c) {
		if (c->op != EV_WRITE)
			return 0;
		if (!c->have_dev) {
			copy_dev_name(c->dev, dev);
			c->have_dev = 1;
		}
		u64 rel = (u64)((s64)where - c->off);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (i < width && rel + i < CFGAUDIT_DATA_MAX)
				c->data[(rel + i) & (CFGAUDIT_DATA_MAX - 1)] = (val >> (8 * i)) & 0xff;
		}
		if (rel < CFGAUDIT_DATA_MAX && rel + width > c->hi)
			c->hi = rel + width > CFGAUDIT_DATA_MAX ? CFGAUDIT_DATA_MAX : rel + width;
		return 0;
	}
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	/* a write through a path without an outer probe: one record per piece */
	struct cfgaudit_kernel_event *e = reserve_record(sizeof(struct cfgaudit_kernel_event));
	if (!e)
		return 0;
	fill(&e->ev, EV_WRITE, -1, 0);
	e->ev.offset = where;
	e->ev.size = width;
	e->ev.ret = width;
	e->ev.aux = KV_UNKNOWN;
	__builtin_memset(e->ev.data, 0, CFGAUDIT_DATA_MAX);
	__builtin_memset(e->dev, 0, CFGAUDIT_DEV_NAME_MAX);
	e->ev.data[0] = val & 0xff;
	e->ev.data[1] = (val >> 8) & 0xff;
	e->ev.data[2] = (val >> 16) & 0xff;
	e->ev.data[3] = (val >> 24) & 0xff;
	e->ev.data_len = width;
	copy_dev_name(e->dev, dev);
	events.ringbuf_submit(e, 0);
	return 0;
}

int on_write_byte(struct pt_regs *ctx, struct pci_dev *dev, int where, u8 val)
{
	return piece(ctx, dev, where, val, 1);
}

int on_write_word(struct pt_regs *ctx, struct pci_dev *dev, int where, u16 val)
{
	return piece(ctx, dev, where, val, 2);
}

int on_write_dword(struct pt_regs *ctx, struct pci_dev *dev, int where, u32 val)
{
	return piece(ctx, dev, where, val, 4);
}

/* ---------------------------------------------------------------- the kernel's DOE exchanges */
#ifndef DOE_PROBES
#define DOE_PROBES 0
#endif
#if DOE_PROBES
/* the exchange this kworker thread is running (doe_statemachine_work runs one work at a time) */
struct doe_x {
	u64 task;
	u64 id;
	u64 req_sz;
	u64 rsp_sz;
	s64 rv;
	u32 cap;
	u32 aux;
	char dev[CFGAUDIT_DEV_NAME_MAX];
};
BPF_HASH(doe_inflight, u32, struct doe_x, 1024);

static __always_inline void doe_record(struct doe_x *x, u16 type)
{
	struct cfgaudit_kernel_event *e = reserve_record(sizeof(struct cfgaudit_kernel_event));
	if (!e)
		return;
	fill(&e->ev, type, -1, x->id);
	e->ev.offset = x->cap;
	e->ev.aux = x->aux;
	if (type == EV_DOE_START) {
		e->ev.size = x->req_sz;
	} else {
		e->ev.size = x->rsp_sz;
		e->ev.ret = x->rv;
	}
	__builtin_memset(e->ev.data, 0, CFGAUDIT_DATA_MAX);
	__builtin_memcpy(e->dev, x->dev, CFGAUDIT_DEV_NAME_MAX);
	events.ringbuf_submit(e, 0);
}

/* static void doe_statemachine_work(struct work_struct *work): task = work - DOE_TASK_WORK */
int on_doe_work(struct pt_regs *ctx, void *work)
{
	struct doe_x x = {};
	void *mb = NULL;
	struct pci_dev *pdev = NULL;
	u16 vid = 0, cap = 0;
	u8 type = 0;
	x.task = (u64)work - DOE_TASK_WORK;
	bpf_probe_read_kernel(&mb, sizeof(mb), (void *)(x.task + DOE_TASK_MB));
	if (!mb)
		return 0;
	bpf_probe_read_kernel(&pdev, sizeof(pdev), mb + DOE_MB_PDEV);
	bpf_probe_read_kernel(&cap, sizeof(cap), mb + DOE_MB_CAP);
	bpf_probe_read_kernel(&vid, sizeof(vid), (void *)(x.task + DOE_TASK_VID));
	bpf_probe_read_kernel(&type, sizeof(type), (void *)(x.task + DOE_TASK_TYPE));
	bpf_probe_read_kernel(&x.req_sz, sizeof(x.req_sz), (void *)(x.task + DOE_TASK_REQ_SZ));
	bpf_probe_read_kernel(&x.rsp_sz, sizeof(x.rsp_sz), (void *)(x.task + DOE_TASK_RSP_SZ));
	if (pdev)
		copy_dev_name(x.dev, pdev);
	x.cap = cap;
	x.aux = vid | ((u32)type << 16);
	x.id = new_id();
	u32 tid = (u32)bpf_get_current_pid_tgid();
	doe_inflight.update(&tid, &x);
	doe_record(&x, EV_DOE_START);
	return 0;
}

/* the completion callback (task): task->rv is set; the task is still the requester's */
int on_doe_complete(struct pt_regs *ctx, void *task)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct doe_x *x = doe_inflight.lookup(&tid);
	if (!x || x->task != (u64)task)
		return 0;
	int rv = 0;
	bpf_probe_read_kernel(&rv, sizeof(rv), (void *)(x->task + DOE_TASK_RV));
	x->rv = rv;
	x->aux |= 1 << 24;
	return 0;
}

int on_doe_work_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct doe_x *x = doe_inflight.lookup(&tid);
	if (!x)
		return 0;
	doe_record(x, EV_DOE_END);
	doe_inflight.delete(&tid);
	return 0;
}
#endif

/* ---------------------------------------------------------------- processes (FOLLOW) */

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	follow_fork(parent, args->child_pid);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	u32 tid = (u32)id;
	inflight.delete(&tid);
	if (tid == tgid)
		follow_exit(tgid);
	return 0;
}
