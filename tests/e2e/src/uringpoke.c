/* uringpoke: one write of LEN bytes at OFF into a PCI config file, submitted through io_uring
 * (IORING_OP_WRITE), so no write/pwrite syscall is made: what the syscall backend cannot see.
 *   uringpoke FILE OFF LEN            -> read LEN bytes at OFF (pread), write them back through the ring
 *   uringpoke FILE OFF LEN HEXBYTES   -> write the given bytes (file order, e.g. 00000000)
 * OFF/LEN accept 0x-prefixed hex. Raw syscalls (io_uring_setup, mmap of the rings, io_uring_enter),
 * no liburing; the uapi header <linux/io_uring.h> (linux-libc-dev). Built static for the initramfs:
 *   gcc -O2 -static -o uringpoke uringpoke.c
 * Prints the completion's result like cfgpoke prints pwrite's; exit 0 when all LEN bytes were
 * written, 1 on failure, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif

static int uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

/* The ring's write: one IORING_OP_WRITE of len bytes of buf at off of fd. Returns the CQE's res
 * (bytes written or -errno), or -errno of a failing io_uring step with *step naming it. */
static int ring_write(int fd, const void *buf, unsigned len, uint64_t off, const char **step)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	int ring = uring_setup(1, &p);
	if (ring < 0) {
		*step = "io_uring_setup";
		return -errno;
	}
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
	if (single && cq_len > sq_len)
		sq_len = cq_len;
	int res;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED) {
		*step = "mmap(SQ ring)";
		res = -errno;
		goto out_ring;
	}
	char *cq = sq;
	if (!single) {
		cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED) {
			*step = "mmap(CQ ring)";
			res = -errno;
			goto out_sq;
		}
	}
	size_t sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	struct io_uring_sqe *sqes = mmap(NULL, sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
					 IORING_OFF_SQES);
	if (sqes == MAP_FAILED) {
		*step = "mmap(SQEs)";
		res = -errno;
		goto out_cq;
	}

	/* one SQE in slot 0, published through the SQ array and the tail */
	unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned *sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *sq_array = (unsigned *)(sq + p.sq_off.array);
	unsigned tail = __atomic_load_n(sq_tail, __ATOMIC_ACQUIRE);
	unsigned idx = tail & *sq_mask;
	struct io_uring_sqe *sqe = &sqes[idx];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_WRITE;
	sqe->fd = fd;
	sqe->addr = (uint64_t)(uintptr_t)buf;
	sqe->len = len;
	sqe->off = off;
	sqe->user_data = 0xcf9;
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);

	int n = uring_enter(ring, 1, 1, IORING_ENTER_GETEVENTS);
	if (n < 0) {
		*step = "io_uring_enter";
		res = -errno;
		goto out_sqes;
	}
	unsigned *cq_head = (unsigned *)(cq + p.cq_off.head);
	unsigned *cq_tail = (unsigned *)(cq + p.cq_off.tail);
	unsigned *cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
		*step = "io_uring_enter (no completion)";
		res = -EAGAIN;
		goto out_sqes;
	}
	struct io_uring_cqe *cqe = &cqes[head & *cq_mask];
	res = cqe->res;
	if (cqe->user_data != 0xcf9) {
		*step = "completion (not ours)";
		res = -EIO;
	}
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
out_sqes:
	munmap(sqes, sqes_len);
out_cq:
	if (!single)
		munmap(cq, cq_len);
out_sq:
	munmap(sq, sq_len);
out_ring:
	close(ring);
	return res;
}

int main(int argc, char **argv)
{
	unsigned char buf[4096];
	long off, len, i;
	ssize_t n;
	int fd;
	const char *step = NULL;

	if (argc < 4) {
		fprintf(stderr, "usage: %s FILE OFF LEN [HEXBYTES]\n", argv[0]);
		return 2;
	}
	off = strtol(argv[2], NULL, 0);
	len = strtol(argv[3], NULL, 0);
	if (len <= 0 || len > (long)sizeof(buf) || off < 0)
		return 2;
	fd = open(argv[1], O_RDWR);
	if (fd < 0) { perror("open"); return 1; }
	if (argc > 4) {
		if ((long)strlen(argv[4]) != 2 * len) { fprintf(stderr, "HEXBYTES must be 2*LEN chars\n"); return 2; }
		for (i = 0; i < len; i++) {
			unsigned v;
			if (sscanf(argv[4] + 2 * i, "%2x", &v) != 1) { fprintf(stderr, "HEXBYTES: not hex\n"); return 2; }
			buf[i] = v;
		}
	} else {
		n = pread(fd, buf, len, off);
		if (n != len) { fprintf(stderr, "pread got %zd: %s\n", n, strerror(errno)); return 1; }
	}
	n = ring_write(fd, buf, (unsigned)len, (uint64_t)off, &step);
	printf("uringpoke: io_uring write(%s, off=%#lx, len=%ld, bytes=", argv[1], off, len);
	for (i = 0; i < len; i++) printf("%02x", buf[i]);
	printf(") = %zd%s%s%s%s\n", n, n < 0 ? " " : "", n < 0 ? strerror((int)-n) : "",
	       step ? " at " : "", step ? step : "");
	close(fd);
	return n == len ? 0 : 1;
}
