#!/bin/bash
# make e2e: cfgaudit against the kernel's own judgement, in a QEMU (TCG) guest that boots Debian's
# linux-image-amd64 with an emulated CXL type-3 device (DOE at 0x190 of 0000:0d:00.0).
# The guest mounts THIS machine's root read-only over 9p (tmpfs overlay + chroot), so it runs this
# checkout's .venv, python3-bpfcc and the linux-headers package matching the guest kernel.
# Approach from ../../../shared/qemu-cxl (README.md, BCC-IN-GUEST.md).
#
# Two boots: strict, and iomem=relaxed. In each, tests/e2e/guest_steps.py runs cfgaudit with
# both live backends while it makes scripted writes and records the kernel's answer for each;
# tests/e2e/compare.py judges and prints `e2e: N writes checked, M agree with the kernel`.
#
# Knobs: CFGAUDIT_E2E_CACHE (default /var/cache/cfgaudit-e2e: debs, extracted kernel, module;
#   must not be under /tmp, which the guest covers with a tmpfs), E2E_SKIP_APT=1, E2E_BOOTS="strict relaxed",
#   E2E_TIMEOUT (per boot, s), E2E_SMP, E2E_MEM.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${CFGAUDIT_E2E_CACHE:-/var/cache/cfgaudit-e2e}
BOOTS=${E2E_BOOTS:-strict relaxed}
TIMEOUT=${E2E_TIMEOUT:-400}
RUNS=$CACHE/runs
T0=$(date +%s)
lap() { echo "e2e-timing: $1 at $(( $(date +%s) - T0 )) s" >&2; }
[ "$(id -u)" = 0 ] || { echo "e2e: needs root" >&2; exit 2; }
case "$CACHE" in /tmp/*) echo "e2e: CFGAUDIT_E2E_CACHE must not be under /tmp (the guest mounts a tmpfs there)" >&2; exit 2;; esac
mkdir -p "$CACHE" "$RUNS"

# ---------------------------------------------------------------- packages
export DEBIAN_FRONTEND=noninteractive
IMGPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$IMGPKG" ] || { echo "e2e: apt-cache knows no linux-image-amd64 (a Debian machine is needed)" >&2; exit 2; }
KVER=${IMGPKG#linux-image-}
if [ -z "${E2E_SKIP_APT:-}" ]; then
	need=""
	for p in qemu-system-x86 busybox-static kmod cpio xz-utils zstd pciutils python3-bpfcc gcc make libc6-dev \
	         "linux-headers-$KVER"; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
	done
	if [ -n "$need" ]; then
		echo "e2e: installing$need" >&2
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $need >/dev/null
	fi
fi
qemu-system-x86_64 -device help 2>/dev/null | grep -q cxl-type3 || { echo "e2e: this QEMU has no cxl-type3" >&2; exit 2; }
[ -x "$REPO/.venv/bin/cfgaudit" ] || { echo "e2e: no $REPO/.venv (make venv)" >&2; exit 2; }
lap "packages"

# ---------------------------------------------------------------- guest kernel (downloaded, never installed)
KPKG=$CACHE/kpkg-$KVER
HDRVER=$(dpkg-query -W -f '${Version}' "linux-headers-$KVER")
if [ ! -f "$KPKG/boot/vmlinuz-$KVER" ] || [ "$(cat "$KPKG/.version" 2>/dev/null)" != "$HDRVER" ]; then
	mkdir -p "$CACHE/debs"
	rm -f "$CACHE/debs/${IMGPKG}"_*.deb
	(cd "$CACHE/debs" && apt-get download "$IMGPKG=$HDRVER" >/dev/null)
	rm -rf "$KPKG"; mkdir -p "$KPKG"
	dpkg -x "$CACHE/debs/${IMGPKG}"_*.deb "$KPKG"
	echo "$HDRVER" > "$KPKG/.version"
fi
KM=$KPKG/lib/modules/$KVER
[ -f "$KM/modules.dep" ] || depmod -b "$KPKG" "$KVER"
lap "guest kernel $KVER ($HDRVER)"

# ---------------------------------------------------------------- claim module + cfgpoke (cached by source hash)
SRCSUM=$(cat "$HERE/src/doe_excl.c" "$HERE/src/cfgpoke.c" "$HERE/src/Kbuild" | sha256sum | cut -c1-16)-$HDRVER
if [ "$(cat "$CACHE/.built" 2>/dev/null)" != "$SRCSUM" ]; then
	B=$CACHE/build; rm -rf "$B"; mkdir -p "$B"
	cp "$HERE/src/doe_excl.c" "$HERE/src/Kbuild" "$B/"
	# no pahole here: skip BTF for the module (harmless: nothing needs the module's BTF)
	make -s -C "/usr/src/linux-headers-$KVER" M="$B" CONFIG_DEBUG_INFO_BTF_MODULES= modules >&2
	cp "$B/doe_excl.ko" "$CACHE/doe_excl.ko"
	gcc -O2 -static -o "$CACHE/cfgpoke" "$HERE/src/cfgpoke.c"
	echo "$SRCSUM" > "$CACHE/.built"
fi
lap "doe_excl.ko + cfgpoke"

# ---------------------------------------------------------------- initramfs
WANT="kernel/drivers/virtio/virtio_pci.ko kernel/net/9p/9pnet_virtio.ko kernel/fs/9p/9p.ko kernel/fs/overlayfs/overlay.ko
      kernel/drivers/nvdimm/libnvdimm.ko kernel/drivers/cxl/cxl_acpi.ko kernel/drivers/cxl/cxl_pci.ko
      kernel/drivers/cxl/cxl_mem.ko kernel/drivers/cxl/cxl_pmem.ko"
ORDER=()
resolve() {
	local m=$1 d deps
	for d in "${ORDER[@]}"; do [ "$d" = "$m" ] && return; done
	grep -q "^$m:" "$KM/modules.dep" || { echo "e2e: module $m not in modules.dep" >&2; exit 2; }
	deps=$(awk -v m="$m:" '$1==m {for (i=NF; i>1; i--) print $i}' "$KM/modules.dep")
	for d in $deps; do resolve "$d"; done
	ORDER+=("$m")
}
for m in $WANT; do resolve "$m"; done
R=$CACHE/initramfs
rm -rf "$R"; mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,e2e}
cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
: > "$R/modules.load"
for m in "${ORDER[@]}"; do
	mkdir -p "$R/lib/modules/$KVER/$(dirname "$m")"
	if   [ -f "$KM/$m" ];     then cp "$KM/$m" "$R/lib/modules/$KVER/$m"
	elif [ -f "$KM/$m.xz" ];  then xz -dc "$KM/$m.xz" > "$R/lib/modules/$KVER/$m"
	elif [ -f "$KM/$m.zst" ]; then zstd -qdc "$KM/$m.zst" > "$R/lib/modules/$KVER/$m"
	fi
	echo "$m" >> "$R/modules.load"
done
cp "$HERE/guest-init.sh" "$R/init"; chmod +x "$R/init"
printf '%s' "cd $REPO && $REPO/.venv/bin/python -u $HERE/guest_steps.py --repo $REPO --cache $CACHE --out /out > /out/steps.log 2>&1; s=\$?; cat /out/steps.log; exit \$s" > "$R/e2e/cmd"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/initramfs.cpio.gz"
lap "initramfs"

# ---------------------------------------------------------------- boots
truncate -s 256M "$CACHE/cxl-mem0.raw" "$CACHE/cxl-lsa0.raw"
OUTS=()
for boot in $BOOTS; do
	OUT=$RUNS/$boot
	rm -rf "$OUT"; mkdir -p "$OUT/out"
	extra=""; [ "$boot" = relaxed ] && extra="iomem=relaxed"
	QEMU=(qemu-system-x86_64 -accel tcg -cpu max -smp "${E2E_SMP:-2}" -m "${E2E_MEM:-2G},maxmem=8G,slots=4"
		-M q35,cxl=on -nographic -no-reboot -serial mon:stdio
		-kernel "$KPKG/boot/vmlinuz-$KVER" -initrd "$CACHE/initramfs.cpio.gz"
		-append "console=ttyS0 panic=-1 quiet $extra"
		-object "memory-backend-file,id=cxl-mem0,share=on,mem-path=$CACHE/cxl-mem0.raw,size=256M"
		-object "memory-backend-file,id=cxl-lsa0,share=on,mem-path=$CACHE/cxl-lsa0.raw,size=256M"
		-device pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1
		-device cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2
		-device cxl-type3,bus=root_port13,memdev=cxl-mem0,lsa=cxl-lsa0,id=cxl-pmem0
		-M cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
		-device virtio-9p-pci,bus=pcie.0,fsdev=hostroot,mount_tag=hostroot
		-fsdev "local,id=out,path=$OUT/out,security_model=none"
		-device virtio-9p-pci,bus=pcie.0,fsdev=out,mount_tag=out)
	printf '%q ' "${QEMU[@]}" > "$OUT/qemu-cmdline.txt"
	set +e
	timeout "$TIMEOUT" "${QEMU[@]}" < /dev/null 2>&1 | tr -d '\r' > "$OUT/console.log"
	rc=${PIPESTATUS[0]}
	set -e
	lap "boot $boot (qemu exit $rc)"
	grep -E '^\[(init|e2e) ' "$OUT/console.log" | sed "s/^/  $boot /" >&2 || true
	OUTS+=("$boot=$OUT/out")
done

# ---------------------------------------------------------------- judge
"$REPO/.venv/bin/python" "$HERE/compare.py" --report "$RUNS/report.txt" "${OUTS[@]}"
st=$?
lap "compare"
exit $st
