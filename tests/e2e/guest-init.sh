#!/bin/sh
# /init of the cfgaudit e2e initramfs (busybox): load modules, mount the host's root read-only over
# 9p with a tmpfs overlay, chroot into it and run the step runner with the host's cfgaudit venv.
# Adapted from ../../../shared/qemu-cxl/bcc-in-guest/guest-init.sh.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing; mount -t debugfs debugfs /sys/kernel/debug
KVER=$(uname -r)
say() { echo "[init $(cut -d' ' -f1 /proc/uptime)] $*"; }
fail() { say "FATAL: $*"; sync; poweroff -f; }
say "BOOT-DONE $KVER cmdline: $(cat /proc/cmdline)"
while read -r m; do insmod "/lib/modules/$KVER/$m" || say "insmod $m FAILED"; done < /modules.load
mkdir -p /host /ovl /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || fail "9p mount"
mount -t tmpfs -o size=768m,mode=0755 tmpfs /ovl; mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot || fail "overlay"
N=/newroot
for d in proc sys dev; do mount -o bind /$d $N/$d || fail "bind /$d"; done
mount -o bind /sys/kernel/tracing $N/sys/kernel/tracing; mount -o bind /sys/kernel/debug $N/sys/kernel/debug
mount -t bpf bpf $N/sys/fs/bpf 2>/dev/null
mkdir -p $N/dev/pts $N/dev/shm; mount -t devpts devpts $N/dev/pts; mount -t tmpfs tmpfs $N/dev/shm
# /tmp stays the overlay (writable, upper in tmpfs), so a checkout under the host's /tmp is visible
mount -t tmpfs tmpfs $N/run
mkdir -p $N/lib/modules/$KVER
[ -L $N/lib/modules/$KVER/build ]  || ln -sfn /usr/src/linux-headers-$KVER $N/lib/modules/$KVER/build
[ -L $N/lib/modules/$KVER/source ] || ln -sfn /usr/src/linux-headers-${KVER%-*}-common $N/lib/modules/$KVER/source
CXL=""
for d in /sys/bus/pci/devices/*; do [ "$(cat $d/class)" = "0x050210" ] && CXL=${d##*/} && break; done
i=0; while [ -n "$CXL" ] && [ ! -e /sys/bus/pci/devices/$CXL/driver ] && [ $i -lt 10 ]; do sleep 1; i=$((i+1)); done
mkdir -p $N/out && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $N/out || fail "out share"
say "chroot ready; CXL device ${CXL:-none}; running: $(cat /e2e/cmd)"
chroot $N /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
	CXL_BDF=$CXL /bin/sh -c "$(cat /e2e/cmd)"
say "guest command exit status $?"
dmesg > $N/out/dmesg.txt 2>&1
sync; umount $N/out 2>/dev/null
say "DONE; powering off"
poweroff -f
