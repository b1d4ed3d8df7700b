/* vfiopoke: one pwrite of LEN bytes at OFF into a PCI device's config space through VFIO (the
 * device fd's config region), the path the syscall backend cannot follow. The device must be
 * bound to vfio-pci and its IOMMU group viable (every device of the group bound to vfio-pci or
 * to no driver). For the QEMU guest of the e2e tier only: never run it on a machine whose devices
 * matter.
 *   vfiopoke BDF OFF LEN            -> read LEN bytes at OFF (pread on the region), write them back
 *   vfiopoke BDF OFF LEN HEXBYTES   -> write the given bytes (file order, e.g. 00000000)
 * BDF: DDDD:BB:DD.F (as in /sys/bus/pci/devices). OFF/LEN accept 0x-prefixed hex.
 * Steps: the IOMMU group (readlink /sys/bus/pci/devices/BDF/iommu_group), /dev/vfio/vfio
 * (VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU)), /dev/vfio/GROUP
 * (VFIO_GROUP_GET_STATUS: viable), VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU(VFIO_TYPE1_IOMMU),
 * VFIO_GROUP_GET_DEVICE_FD(BDF), VFIO_DEVICE_GET_REGION_INFO(VFIO_PCI_CONFIG_REGION_INDEX), then
 * ONE pwrite at region.offset + OFF. Uses the uapi header <linux/vfio.h> (linux-libc-dev). Built
 * static for the initramfs:
 *   gcc -O2 -static -o vfiopoke vfiopoke.c
 * Prints the result like cfgpoke (plus the region's offset); exit 0 when all LEN bytes were
 * written, 1 on failure (a line naming the failing step), 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *step, const char *what)
{
	fprintf(stderr, "vfiopoke: %s%s%s: %s\n", step, what ? " " : "", what ? what : "", strerror(errno));
	return 1;
}

static int fail_msg(const char *step, const char *msg)
{
	fprintf(stderr, "vfiopoke: %s: %s\n", step, msg);
	return 1;
}

int main(int argc, char **argv)
{
	unsigned char buf[4096];
	char link[4096], path[4096];
	long off, len, i;
	ssize_t n;

	if (argc < 4) {
		fprintf(stderr, "usage: %s BDF OFF LEN [HEXBYTES]\n", argv[0]);
		return 2;
	}
	const char *bdf = argv[1];
	off = strtol(argv[2], NULL, 0);
	len = strtol(argv[3], NULL, 0);
	if (len <= 0 || len > (long)sizeof(buf) || off < 0 || strchr(bdf, '/'))
		return 2;
	if (argc > 4) {
		if ((long)strlen(argv[4]) != 2 * len) { fprintf(stderr, "HEXBYTES must be 2*LEN chars\n"); return 2; }
		for (i = 0; i < len; i++) {
			unsigned v;
			if (sscanf(argv[4] + 2 * i, "%2x", &v) != 1) { fprintf(stderr, "HEXBYTES: not hex\n"); return 2; }
			buf[i] = v;
		}
	}

	/* the IOMMU group: the last component of the iommu_group link */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return fail("readlink", path);
	link[n] = 0;
	const char *group = basename(link);

	/* the container */
	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		return fail("open", "/dev/vfio/vfio");
	int api = ioctl(container, VFIO_GET_API_VERSION);
	if (api != VFIO_API_VERSION) {
		fprintf(stderr, "vfiopoke: VFIO_GET_API_VERSION: %d, not %d\n", api, VFIO_API_VERSION);
		return 1;
	}
	if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0)
		return fail_msg("VFIO_CHECK_EXTENSION", "no VFIO_TYPE1_IOMMU");

	/* the group */
	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	int grp = open(path, O_RDWR);
	if (grp < 0)
		return fail("open", path);
	struct vfio_group_status status = {.argsz = sizeof(status)};
	if (ioctl(grp, VFIO_GROUP_GET_STATUS, &status) < 0)
		return fail("VFIO_GROUP_GET_STATUS", path);
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return fail_msg("VFIO_GROUP_GET_STATUS",
				"group not viable: bind every device of the group to vfio-pci (or to no driver)");
	if (ioctl(grp, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		return fail("VFIO_GROUP_SET_CONTAINER", path);
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
		return fail("VFIO_SET_IOMMU", "VFIO_TYPE1_IOMMU");

	/* the device and its config region */
	int dev = ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		return fail("VFIO_GROUP_GET_DEVICE_FD", bdf);
	struct vfio_region_info reg = {.argsz = sizeof(reg), .index = VFIO_PCI_CONFIG_REGION_INDEX};
	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &reg) < 0)
		return fail("VFIO_DEVICE_GET_REGION_INFO", "VFIO_PCI_CONFIG_REGION_INDEX");
	if (!(reg.flags & VFIO_REGION_INFO_FLAG_WRITE))
		return fail_msg("VFIO_DEVICE_GET_REGION_INFO", "the config region is not writable");
	if ((unsigned long long)off + len > reg.size) {
		fprintf(stderr, "vfiopoke: OFF+LEN %#lx is past the config region (%#llx bytes)\n", off + len,
			(unsigned long long)reg.size);
		return 1;
	}

	if (argc <= 4) {
		n = pread(dev, buf, len, (off_t)(reg.offset + off));
		if (n != len) { fprintf(stderr, "pread got %zd: %s\n", n, strerror(errno)); return 1; }
	}
	n = pwrite(dev, buf, len, (off_t)(reg.offset + off));
	int err = errno;
	printf("vfiopoke: pwrite(%s, off=%#lx, len=%ld, bytes=", bdf, off, len);
	for (i = 0; i < len; i++) printf("%02x", buf[i]);
	printf(") = %zd%s%s region_offset=%#llx\n", n, n < 0 ? " " : "", n < 0 ? strerror(err) : "",
	       (unsigned long long)reg.offset);
	close(dev);
	close(grp);
	close(container);
	return n == len ? 0 : 1;
}
