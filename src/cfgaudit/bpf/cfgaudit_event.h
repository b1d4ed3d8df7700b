/* Generated from src/cfgaudit/events.py (RECORD_FIELDS); do not edit by hand.
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
#define UM_IOPERM 1
#define UM_IOPL 2
#define UM_DEVMEM 3
#define UM_DEVPORT 4
#define CFGAUDIT_DATA_MAX 64
#define CFGAUDIT_PATH_MAX 256
#define CFGAUDIT_RECORD_SIZE 144

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
	__u32 aux;	/* DUP: the new fd; OPEN: open flags; UNMEDIATED: what (UM_*) */
	__u16 type;	/* EV_* record type */
	__u16 data_len;	/* bytes of data captured */
	char comm[16];	/* task comm */
	__u8 data[64];	/* the first bytes written or read */
};

struct cfgaudit_open_event {
	struct cfgaudit_event ev;
	char path[CFGAUDIT_PATH_MAX];	/* the path as the process passed it */
};

#endif
