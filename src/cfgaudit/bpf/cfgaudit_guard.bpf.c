/* cfgaudit guard: refuse user-space writes into owned config-space bytes (issue 12), BPF-LSM.
 *
 * Compiled by bcc at run time; probes/guard.py loads it, fills the maps from the policy
 * (regions/guard.py: the same bitmaps decide() uses) and attaches:
 *   rw_verify_area (kprobe), fs/read_write.c: every write(2), pwrite64(2), writev(2), pwritev(2)
 *       and io_uring write reaches it before the LSM hook, with the file, the position
 *       (*ppos) and the byte count: saved per thread for the hook (it is called from inside).
 *   lsm/file_permission (BPF-LSM, CONFIG_BPF_LSM and "bpf" in the LSM list): called by
 *       rw_verify_area() through security_file_permission(file, MAY_WRITE). A write to a
 *       guarded config file (inode -> device code) whose bytes [pos, pos+count) clipped to
 *       [0, 4096) include a refused byte not allowed for this comm is refused with -EPERM
 *       (DRY_RUN: allowed) and recorded. Reads, other files, and writes whose range was not
 *       seen are never refused.
 *   With DOE_PROBES (the kernel's DOE exchanges, as in cfgaudit_kernel.bpf.c: doe_statemachine_work
 *       entry and return, the DOE structs' offsets from BTF as DOE_* constants): an exchange in
 *       flight on a mailbox of a guarded device refuses writes into its [cap, cap+0x18) at every
 *       level (collisions); at --level collision those are the only bytes refused.
 * Record: struct cfgaudit_event (cfgaudit_event.h), type EV_GUARD: offset, size (bytes asked),
 * ret (-EPERM refused, 0 with DRY_RUN), aux = device code | via << 16 | GUARD_* flags << 24
 * (guard_files holds code | via << 16 per config file; via: KV_SYSFS, KV_PROCFS).
 *
 * -D constants: DRY_RUN (1: refuse nothing), MAX_DEVS (devices in the policy), and the common
 * header's RINGBUF_PAGES and FOLLOW (run --guard: refuse only for the followed processes). The policy is maps, never spliced into the text.
 */
#include <linux/fs.h>
#include <linux/pci.h>
#include "cfgaudit_common.bpf.h"

#ifndef DRY_RUN
#define DRY_RUN 0
#endif
#ifndef MAX_DEVS
#define MAX_DEVS 256
#endif
#define GUARD_BITMAP 512        /* bytes: one bit per config offset 0..4095 */
#define GUARD_REFUSED 1         /* aux flag: the write was refused */
#define GUARD_DRY_RUN 2         /* aux flag: it would have been, with --dry-run */
#define GUARD_COLLISION 4       /* aux flag: because the kernel's DOE exchange was in flight there */
#ifndef MAY_WRITE
#define MAY_WRITE 0x00000002
#endif

struct guard_file {
	u64 ino;
	u32 sdev;
	u32 pad;
};
struct guard_bits {
	u8 b[GUARD_BITMAP];
};
struct guard_allow_key {
	u32 code;
	char comm[16];
};
struct guard_comm {
	char comm[16];
};
struct guard_span {
	u64 file;
	s64 pos;
	u64 count;
};

BPF_HASH(guard_files, struct guard_file, u32, 65536);           /* config file inode -> code | via << 16 */
BPF_ARRAY(guard_refuse, struct guard_bits, MAX_DEVS);             /* device code -> refused bytes */
BPF_HASH(guard_allow, struct guard_allow_key, struct guard_bits, 4096); /* (code, comm) -> allowed */
BPF_HASH(guard_allow_comm, struct guard_comm, u8, 256);           /* comms nothing is refused to */
BPF_HASH(guard_span, u32, struct guard_span, 16384);              /* thread -> the write in rw_verify_area */

#define GUARD_MAILBOXES 4       /* DOE mailboxes per device the guard follows */
#define DOE_CAP_SIZEOF 0x18     /* PCI_DOE_CAP_SIZEOF, include/uapi/linux/pci_regs.h */
struct guard_caps {
	u32 cap[GUARD_MAILBOXES];   /* config offsets of the device's DOE capabilities; 0: none */
};
BPF_ARRAY(guard_caps, struct guard_caps, MAX_DEVS);                /* device code -> its mailboxes */
struct guard_mb {
	u32 code;
	u32 cap;
};
BPF_HASH(guard_inflight, struct guard_mb, u32, 1024);             /* mailbox -> exchanges in flight */

/* int rw_verify_area(int read_write, struct file *file, const loff_t *ppos, size_t count) */
int on_rw_verify_area(struct pt_regs *ctx, int read_write, struct file *file, const loff_t *ppos, size_t count)
{
	if (read_write == 0)        /* READ */
		return 0;
	struct guard_span s = {};
	s.file = (u64)file;
	s.pos = -1;
	s.count = count;
	if (ppos)
		bpf_probe_read_kernel(&s.pos, sizeof(s.pos), ppos);
	u32 tid = (u32)bpf_get_current_pid_tgid();
	guard_span.update(&tid, &s);
	return 0;
}

#ifndef DOE_PROBES
#define DOE_PROBES 0
#endif
#if DOE_PROBES
struct guard_name {
	char name[CFGAUDIT_DEV_NAME_MAX];
};
BPF_HASH(guard_devname, struct guard_name, u32, 4096);           /* device name -> code */
BPF_HASH(guard_doe_tid, u32, struct guard_mb, 1024);              /* kworker -> the mailbox it drives */

/* static void doe_statemachine_work(struct work_struct *work): task = work - DOE_TASK_WORK */
int on_doe_work(struct pt_regs *ctx, void *work)
{
	void *mb = NULL, *pdev = NULL;
	u16 cap = 0;
	bpf_probe_read_kernel(&mb, sizeof(mb), (void *)((u64)work - DOE_TASK_WORK + DOE_TASK_MB));
	if (!mb)
		return 0;
	bpf_probe_read_kernel(&pdev, sizeof(pdev), mb + DOE_MB_PDEV);
	bpf_probe_read_kernel(&cap, sizeof(cap), mb + DOE_MB_CAP);
	if (!pdev)
		return 0;
	struct guard_name n = {};
	const char *name = NULL;
	bpf_probe_read_kernel(&name, sizeof(name), &((struct pci_dev *)pdev)->dev.kobj.name);
	if (name)
		bpf_probe_read_kernel_str(n.name, sizeof(n.name), name);
	u32 *code = guard_devname.lookup(&n);
	if (!code)
		return 0;
	struct guard_mb k = {};
	k.code = *code;
	k.cap = cap;
	u32 one = 1, *cnt = guard_inflight.lookup(&k);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	else
		guard_inflight.update(&k, &one);
	u32 tid = (u32)bpf_get_current_pid_tgid();
	guard_doe_tid.update(&tid, &k);
	return 0;
}

int on_doe_work_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct guard_mb *k = guard_doe_tid.lookup(&tid);
	if (!k)
		return 0;
	u32 *cnt = guard_inflight.lookup(k);
	if (cnt && *cnt)
		__sync_fetch_and_add(cnt, (u32)-1);  /* XADD: no atomic sub before BPF v3 */
	guard_doe_tid.delete(&tid);
	return 0;
}
#endif

static __always_inline void guard_record(u32 file, s64 pos, u64 count, int refused, int collision)
{
	struct cfgaudit_event *e = reserve_record(sizeof(struct cfgaudit_event));
	if (!e)
		return;
	fill(e, EV_GUARD, -1, 0);
	e->offset = pos;
	e->size = count;
	e->ret = refused ? -1 /* -EPERM */ : 0;
	e->aux = file | ((u32)((refused ? GUARD_REFUSED : GUARD_DRY_RUN) | (collision ? GUARD_COLLISION : 0)) << 24);
	events.ringbuf_submit(e, 0);
}

/* The decision for one permission check on `file` (0, or -EPERM as -1). Reads the file's inode
 * with probe reads, so that the same code also verifies as a kprobe program (GUARD_SELFTEST: the
 * live tier loads it where BPF-LSM programs cannot be loaded). */
static __always_inline int guard_decide(struct file *file, int mask)
{
	if (!(mask & MAY_WRITE))
		return 0;
	if (!wanted(bpf_get_current_pid_tgid() >> 32))  /* run --guard: CMD and its descendants only */
		return 0;
	struct guard_file key = {};
	struct inode *inode = NULL;
	struct super_block *sb = NULL;
	bpf_probe_read_kernel(&inode, sizeof(inode), &file->f_inode);
	if (!inode)
		return 0;
	bpf_probe_read_kernel(&key.ino, sizeof(key.ino), &inode->i_ino);
	bpf_probe_read_kernel(&sb, sizeof(sb), &inode->i_sb);
	if (sb)
		bpf_probe_read_kernel(&key.sdev, sizeof(key.sdev), &sb->s_dev);
	u32 *code = guard_files.lookup(&key);
	if (!code)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct guard_span *sp = guard_span.lookup(&tid);
	if (!sp || sp->file != (u64)file || sp->pos < 0)
		return 0;       /* the range is not known: never refuse what may be outside */
	s64 pos = sp->pos;
	u64 count = sp->count;
	guard_span.delete(&tid);
	if (count == 0 || pos >= 4096)
		return 0;
	u64 end = (u64)pos + count;     /* exclusive */
	if (end > 4096)
		end = 4096;
	struct guard_comm who = {};
	bpf_get_current_comm(&who.comm, sizeof(who.comm));
	if (guard_allow_comm.lookup(&who))
		return 0;
	u32 f = *code, c = f & 0xffff;
	int hit = 0, collision = 0;
	struct guard_caps *caps = guard_caps.lookup(&c);
	if (caps) {
#pragma unroll
		for (int j = 0; j < GUARD_MAILBOXES; j++) {
			u32 cap = caps->cap[j];
			if (!cap || (u64)pos >= cap + DOE_CAP_SIZEOF || end <= cap)
				continue;
			struct guard_mb k = {};
			k.code = c;
			k.cap = cap;
			u32 *cnt = guard_inflight.lookup(&k);
			if (cnt && *cnt)
				collision = 1;  /* refused whatever the level, unless allow-comm */
		}
	}
	struct guard_bits *refuse = guard_refuse.lookup(&c);
	if (!refuse)
		return 0;
	struct guard_allow_key ak = {};
	ak.code = c;
	__builtin_memcpy(ak.comm, who.comm, sizeof(ak.comm));
	struct guard_bits *allow = guard_allow.lookup(&ak);
	u32 first = (u32)pos >> 3, last = (u32)(end - 1) >> 3;
	for (u32 i = 0; i < GUARD_BITMAP && !collision; i++) {
		u32 k = first + i;
		if (k > last)
			break;
		k &= GUARD_BITMAP - 1;
		asm volatile("" : "+r"(k));  /* index from the masked value each time: the verifier's bound */
		u8 m = refuse->b[k];
		if (allow)
			m &= ~allow->b[k];
		if (k == first)
			m &= (u8)(0xff << (pos & 7));
		if (k == last)
			m &= (u8)(0xff >> (7 - ((end - 1) & 7)));
		if (m) {
			hit = 1;
			break;
		}
	}
	if (!hit && !collision)
		return 0;
	guard_record(f, pos, count, !DRY_RUN, collision);
	return DRY_RUN ? 0 : -1 /* -EPERM */;
}

#ifdef GUARD_SELFTEST
int guard_selftest(struct pt_regs *ctx, struct file *file)
{
	return guard_decide(file, MAY_WRITE);
}
#else
LSM_PROBE(file_permission, struct file *file, int mask)
{
	return guard_decide(file, mask);
}
#endif

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	follow_fork(parent, args->child_pid);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	guard_span.delete(&tid);
	if (tid == id >> 32)
		follow_exit(id >> 32);
	return 0;
}
