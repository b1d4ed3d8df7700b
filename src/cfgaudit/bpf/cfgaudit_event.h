/* Generated from src/cfgaudit/events.py (RECORD_FIELDS, RECORD_LAYOUTS); do not edit by hand.
 * tests/test_live_unit.py fails when this file and events.py drift apart. */
#ifndef CFGAUDIT_EVENT_H
#define CFGAUDIT_EVENT_H

#define EV_WRITE 1
#define EV_READ 2
#define EV_OPEN 3
#define EV_CLOSE 4
#define EV_DUP 5
#define EV_UNMEDIATED 6
#define EV_EXIT 7
#define EV_DOE_START 8
#define EV_DOE_END 9
#define EV_GUARD 10
#define UM_IOPERM 1
#define UM_IOPL 2
#define UM_DEVMEM 3
#define UM_DEVPORT 4
#define UM_VFIO 5
#define UM_IO_URING 6
#define KV_UNKNOWN 0
#define KV_SYSFS 1
#define KV_PROCFS 2
#define KV_VFIO 3
#define KVERDICT_NONE 0
#define KVERDICT_FALSE 1
#define KVERDICT_TRUE 2
#define CFGAUDIT_DATA_MAX 64
#define CFGAUDIT_PATH_MAX 256
#define CFGAUDIT_DEV_NAME_MAX 32
#define CFGAUDIT_RECORD_SIZE 144
#define CFGAUDIT_OPEN_RECORD_SIZE 400
#define CFGAUDIT_KERNEL_RECORD_SIZE 176

/* every record (the only one of most record types) */
struct cfgaudit_event {
	__u64 ts_ns;	/* bpf_ktime_get_ns() at the syscall's exit, ns since boot */
	__s64 offset;	/* file position of the first byte (bytes); -1 when unknown */
	__s64 ret;	/* syscall return value: bytes done or -errno */
	__u64 size;	/* bytes the process asked for */
	__u64 file_id;	/* the tracer's id of the open file description (dup'ed fds share it) */
	__u32 pid;	/* thread group ID */
	__u32 tid;	/* thread ID */
	__u32 uid;	/* real user ID */
	__s32 fd;	/* file descriptor */
	__u32 aux;	/* DUP: the new fd; OPEN: open flags; UNMEDIATED: what (UM_*); kernel: via | verdict << 8; DOE: vid | type << 16 */
	__u16 type;	/* EV_* record type */
	__u16 data_len;	/* bytes of data captured */
	char comm[16];	/* task comm */
	__u8 data[64];	/* the first bytes written or read */
};

/* syscalls program: OPEN records and UNMEDIATED opens of /dev/mem, /dev/port */
struct cfgaudit_open_event {
	struct cfgaudit_event ev;
	char path[256];	/* the path as the process passed it */
};

/* kernel program: every record */
struct cfgaudit_kernel_event {
	struct cfgaudit_event ev;
	char dev[32];	/* the device's name, DDDD:BB:DD.F (its kobject name); empty: unknown */
};

_Static_assert(sizeof(struct cfgaudit_event) == CFGAUDIT_RECORD_SIZE, "cfgaudit_event layout");
_Static_assert(sizeof(struct cfgaudit_open_event) == CFGAUDIT_OPEN_RECORD_SIZE, "cfgaudit_open_event layout");
_Static_assert(sizeof(struct cfgaudit_kernel_event) == CFGAUDIT_KERNEL_RECORD_SIZE, "cfgaudit_kernel_event layout");

#endif
