#!/bin/bash
# make e2e: cfgaudit against the kernel's own judgement, in a QEMU (TCG) guest that boots Debian's
# kernels (6.1 from linux-image-amd64, and the newest 6.12 apt offers) with an emulated CXL type-3
# device (DOE at 0x190 of 0000:0d:00.0), a vIOMMU and a spare PCI device for vfio-pci.
# The guest mounts THIS machine's root read-only over 9p (tmpfs overlay + chroot), so it runs this
# checkout's .venv, python3-bpfcc and the linux-headers package matching the guest kernel.
# Approach from ../../../shared/qemu-cxl (README.md, BCC-IN-GUEST.md).
#
# Boots (E2E_BOOTS, KERNEL:MODE): 6.1 strict and iomem=relaxed, 6.12 strict. In each,
# tests/e2e/guest_steps.py runs cfgaudit with both live backends while it makes scripted writes
# (sysfs, procfs; on strict boots also the kernel's own DOE exchanges with user writes during
# them, io_uring and VFIO) and records the kernel's answer for each; tests/e2e/compare.py judges
# and prints `e2e: N writes checked, M agree with the kernel; X kernel DOE exchanges seen of Y
# made; C collisions flagged of D`.
#
# Knobs: CFGAUDIT_E2E_CACHE (default /var/cache/cfgaudit-e2e: debs, extracted kernels, modules;
#   must not be under /tmp, which the guest covers with a tmpfs), E2E_SKIP_APT=1,
#   E2E_BOOTS="6.1:strict 6.1:relaxed 6.12:strict" (KERNEL: a series, or an exact ABI name such as
#   6.1.0-53 or 6.12.100+deb12), E2E_QUICK=1 (phases A-C only: the exclusive checks; make
#   e2e-kernels), E2E_TIMEOUT (per boot, s), E2E_SMP, E2E_MEM.
set -euo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${CFGAUDIT_E2E_CACHE:-/var/cache/cfgaudit-e2e}
BOOTS=${E2E_BOOTS:-6.1:strict 6.1:relaxed 6.12:strict}
TIMEOUT=${E2E_TIMEOUT:-600}
RUNS=$CACHE/runs
T0=$(date +%s)
lap() { echo "e2e-timing: $1 at $(( $(date +%s) - T0 )) s" >&2; }
[ "$(id -u)" = 0 ] || { echo "e2e: needs root" >&2; exit 2; }
case "$CACHE" in /tmp/*) echo "e2e: CFGAUDIT_E2E_CACHE must not be under /tmp (the guest mounts a tmpfs there)" >&2; exit 2;; esac
mkdir -p "$CACHE" "$RUNS"

# ---------------------------------------------------------------- kernels and packages
export DEBIAN_FRONTEND=noninteractive
# image package for a boot's kernel tag: an exact ABI name (6.1.0-53, 6.12.100+deb12) names
# linux-image-<tag>-amd64; a series (6.1, 6.12) the package its metapackage linux-image-<tag>-amd64
# (or linux-image-amd64, when it is of that series) depends on, else the newest
# linux-image-<tag>.N+debNN-amd64 apt offers
image_for() {
	local tag=$1 meta dep
	case "$tag" in *-*|*+*) apt-cache show "linux-image-$tag-amd64" >/dev/null 2>&1 && echo "linux-image-$tag-amd64"
		return;; esac
	for meta in "linux-image-$tag-amd64" linux-image-amd64; do
		dep=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
		case "$dep" in linux-image-"$tag".*) echo "$dep"; return;; esac
	done
	apt-cache search --names-only "^linux-image-${tag//./\\.}\.[0-9]+\+deb[0-9]+-amd64\$" 2>/dev/null |
		awk '{print $1}' | sort -V | tail -1
}
TAGS=$(for b in $BOOTS; do echo "${b%%:*}"; done | awk '!seen[$0]++')
declare -A KVER_OF
for tag in $TAGS; do
	img=$(image_for "$tag")
	[ -n "$img" ] || { echo "e2e: apt offers no linux-image for kernel series $tag (a Debian 12 machine is needed)" >&2; exit 2; }
	KVER_OF[$tag]=${img#linux-image-}
done
if [ -z "${E2E_SKIP_APT:-}" ]; then
	need=""
	for p in qemu-system-x86 busybox-static kmod cpio xz-utils zstd pciutils python3-bpfcc gcc make libc6-dev \
	         linux-libc-dev $(for t in $TAGS; do echo "linux-headers-${KVER_OF[$t]}"; done); do
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

# ---------------------------------------------------------------- user-space pokers (static, any kernel)
PSUM=$(cat "$HERE"/src/{cfgpoke,uringpoke,vfiopoke}.c | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/.pokers" 2>/dev/null)" != "$PSUM" ]; then
	for p in cfgpoke uringpoke vfiopoke; do gcc -O2 -static -o "$CACHE/$p" "$HERE/src/$p.c"; done
	echo "$PSUM" > "$CACHE/.pokers"
fi
lap "pokers"

# ---------------------------------------------------------------- per kernel: image, modules, initramfs
# WANT: modules the guest loads at boot (those built into a kernel are skipped): virtio/9p/overlay
# for the host's root, CXL, and VFIO with its type-1 IOMMU backend for the vfio-pci step
WANT="kernel/drivers/virtio/virtio_pci.ko kernel/net/9p/9pnet_virtio.ko kernel/fs/9p/9p.ko kernel/fs/overlayfs/overlay.ko
      kernel/drivers/nvdimm/libnvdimm.ko kernel/drivers/cxl/cxl_acpi.ko kernel/drivers/cxl/cxl_pci.ko
      kernel/drivers/cxl/cxl_mem.ko kernel/drivers/cxl/cxl_pmem.ko
      kernel/drivers/vfio/vfio_iommu_type1.ko kernel/drivers/vfio/pci/vfio-pci.ko"
prepare_kernel() {
	local tag=$1 KVER=${KVER_OF[$1]} IMGPKG="linux-image-${KVER_OF[$1]}"
	local KD=$CACHE/k-$KVER
	local KPKG=$KD/pkg HDRVER
	mkdir -p "$KD"
	HDRVER=$(dpkg-query -W -f '${Version}' "linux-headers-$KVER")
	if [ ! -f "$KPKG/boot/vmlinuz-$KVER" ] || [ "$(cat "$KPKG/.version" 2>/dev/null)" != "$HDRVER" ]; then
		mkdir -p "$CACHE/debs"
		rm -f "$CACHE/debs/${IMGPKG}"_*.deb
		(cd "$CACHE/debs" && apt-get download "$IMGPKG=$HDRVER" >/dev/null)
		rm -rf "$KPKG"; mkdir -p "$KPKG"
		dpkg -x "$CACHE/debs/${IMGPKG}"_*.deb "$KPKG"
		echo "$HDRVER" > "$KPKG/.version"
	fi
	local KM=$KPKG/lib/modules/$KVER
	[ -f "$KM/modules.dep" ] || depmod -b "$KPKG" "$KVER"
	lap "kernel $tag: $KVER ($HDRVER)"
	# test modules (claim, DOE exchanges), cached by source hash
	local SRCSUM B
	SRCSUM=$(cat "$HERE"/src/{doe_excl.c,doe_loop.c,Kbuild} | sha256sum | cut -c1-16)-$HDRVER
	if [ "$(cat "$KD/.built" 2>/dev/null)" != "$SRCSUM" ]; then
		B=$KD/build; rm -rf "$B"; mkdir -p "$B"
		cp "$HERE"/src/{doe_excl.c,doe_loop.c,Kbuild} "$B/"
		# no pahole here: skip BTF for the modules (harmless: nothing needs their BTF)
		make -s -C "/usr/src/linux-headers-$KVER" M="$B" CONFIG_DEBUG_INFO_BTF_MODULES= modules >&2
		cp "$B/doe_excl.ko" "$B/doe_loop.ko" "$KD/"
		echo "$SRCSUM" > "$KD/.built"
	fi
	# initramfs
	local ORDER=() m R=$KD/initramfs
	resolve() {
		local m=$1 d deps
		for d in "${ORDER[@]}"; do [ "$d" = "$m" ] && return; done
		if ! grep -q "^$m:" "$KM/modules.dep"; then
			grep -qx "$m" "$KM/modules.builtin" 2>/dev/null && return
			echo "e2e: module $m of $KVER neither in modules.dep nor built in" >&2; exit 2
		fi
		deps=$(awk -v m="$m:" '$1==m {for (i=NF; i>1; i--) print $i}' "$KM/modules.dep")
		for d in $deps; do resolve "$d"; done
		ORDER+=("$m")
	}
	for w in $WANT; do
		m=$(awk -F: -v w="$w" '{b=$1; sub(/\.(xz|zst|gz)$/, "", b)} b==w {print $1; exit}' "$KM/modules.dep")
		if [ -z "$m" ]; then
			grep -qx "$w" "$KM/modules.builtin" 2>/dev/null && continue
			echo "e2e: module $w of $KVER neither in modules.dep nor built in" >&2; exit 2
		fi
		resolve "$m"
	done
	rm -rf "$R"; mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,e2e}
	cp /bin/busybox "$R/bin/busybox"
	for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
	: > "$R/modules.load"
	for m in "${ORDER[@]}"; do
		local plain=${m%.xz}; plain=${plain%.zst}; plain=${plain%.gz}
		mkdir -p "$R/lib/modules/$KVER/$(dirname "$m")"
		case "$m" in
			*.xz)  xz -dc "$KM/$m" > "$R/lib/modules/$KVER/$plain";;
			*.zst) zstd -qdc "$KM/$m" > "$R/lib/modules/$KVER/$plain";;
			*.gz)  gzip -dc "$KM/$m" > "$R/lib/modules/$KVER/$plain";;
			*)     cp "$KM/$m" "$R/lib/modules/$KVER/$plain";;
		esac
		echo "$plain" >> "$R/modules.load"
	done
	cp "$HERE/guest-init.sh" "$R/init"; chmod +x "$R/init"
	printf '%s' "cd $REPO && $REPO/.venv/bin/python -u $HERE/guest_steps.py --repo $REPO --cache $CACHE --kmods $KD ${E2E_QUICK:+--quick} --out /out > /out/steps.log 2>&1; s=\$?; cat /out/steps.log; exit \$s" > "$R/e2e/cmd"
	(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$KD/initramfs.cpio.gz"
	lap "kernel $tag: modules + initramfs"
}
for tag in $TAGS; do prepare_kernel "$tag"; done

# ---------------------------------------------------------------- boots
truncate -s 256M "$CACHE/cxl-mem0.raw" "$CACHE/cxl-lsa0.raw"
OUTS=()
for boot in $BOOTS; do
	tag=${boot%%:*}; mode=${boot#*:}; KVER=${KVER_OF[$tag]}; KD=$CACHE/k-$KVER
	name="$tag-$mode"
	OUT=$RUNS/$name
	rm -rf "$OUT"; mkdir -p "$OUT/out"
	# intel_iommu=on: the vIOMMU below, for the vfio-pci step (Debian's kernels have no VFIO noiommu).
	# pcie_ports=compat: QEMU 7.2's cxl-rp/type-3 need it for cxl_pci to bind from 6.12 on.
	extra="intel_iommu=on"; [ "$mode" = relaxed ] && extra="$extra iomem=relaxed"
	case "$tag" in 6.1|6.1.*) ;; *) extra="$extra pcie_ports=compat";; esac
	QEMU=(qemu-system-x86_64 -accel tcg -cpu max -smp "${E2E_SMP:-2}" -m "${E2E_MEM:-2G},maxmem=8G,slots=4"
		-M q35,cxl=on -nographic -no-reboot -serial mon:stdio
		-kernel "$KD/pkg/boot/vmlinuz-$KVER" -initrd "$KD/initramfs.cpio.gz"
		-append "console=ttyS0 panic=-1 quiet $extra"
		-device intel-iommu,intremap=off
		-object "memory-backend-file,id=cxl-mem0,share=on,mem-path=$CACHE/cxl-mem0.raw,size=256M"
		-object "memory-backend-file,id=cxl-lsa0,share=on,mem-path=$CACHE/cxl-lsa0.raw,size=256M"
		-device pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1
		-device cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2
		-device cxl-type3,bus=root_port13,memdev=cxl-mem0,lsa=cxl-lsa0,id=cxl-pmem0
		-M cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G
		-device pci-testdev,bus=pcie.0,addr=0x6
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
		-device virtio-9p-pci,bus=pcie.0,fsdev=hostroot,mount_tag=hostroot
		-fsdev "local,id=out,path=$OUT/out,security_model=none"
		-device virtio-9p-pci,bus=pcie.0,fsdev=out,mount_tag=out)
	printf '%q ' "${QEMU[@]}" > "$OUT/qemu-cmdline.txt"
	set +e
	timeout "$TIMEOUT" "${QEMU[@]}" < /dev/null 2>&1 | tr -d '\r' > "$OUT/console.log"
	rc=${PIPESTATUS[0]}
	set -e
	lap "boot $name (qemu exit $rc)"
	grep -E '^\[(init|e2e) ' "$OUT/console.log" | sed "s/^/  $name /" >&2 || true
	OUTS+=("$name=$OUT/out")
done

# ---------------------------------------------------------------- judge
"$REPO/.venv/bin/python" "$HERE/compare.py" --report "$RUNS/report.txt" "${OUTS[@]}"
st=$?
lap "compare"
exit $st
