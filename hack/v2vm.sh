#!/usr/bin/env bash
# Runs test binaries on a pure cgroup v2 kernel: Debian's kernel under QEMU
# (TCG, no KVM here), booted with a busybox initramfs that mounts the host's
# root read-only over 9p with a tmpfs overlay, mounts cgroup2 (all
# controllers, cgroup_no_v1=all) and runs the tests in a chroot. The VM is up
# in about 6 s. Work in progress for issue 2's "works on a cgroup v2 host":
# the cgroup v2 VM runs; a systemd test node does not finish booting in it yet.
#
#   hack/v2vm.sh PKG [-test.run REGEXP ...]     e.g. hack/v2vm.sh ./test/node -test.run TestNodeBoots
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${1:?package}; shift
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
if ((${#need[@]})); then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; fi
vmlinuz=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${vmlinuz#/boot/vmlinuz-}
work=$(mktemp -d /tmp/berth-v2vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
go test -c -o "$work/pkg.test" "$pkg"
ir=$work/initramfs
mkdir -p "$ir"/{bin,proc,sys,dev,host,rw,newroot,lib/modules}
cp /bin/busybox "$ir/bin/"
for a in sh mount insmod mkdir echo cat poweroff chroot; do ln -sf busybox "$ir/bin/$a"; done
mods=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
	drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet net/9p/9pnet_virtio
	fs/netfs/netfs fs/fscache/fscache fs/9p/9p fs/overlayfs/overlay)
for m in "${mods[@]}"; do cp "/lib/modules/$kver/kernel/$m.ko" "$ir/lib/modules/"; done
args=$(printf "%q " "$@")
cat >"$ir/init" <<INIT
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in ${mods[*]##*/}; do insmod /lib/modules/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host /host || poweroff -f
mount -t tmpfs -o size=3g tmpfs /rw; mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || poweroff -f
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
for d in run tmp var/tmp; do mount -t tmpfs tmpfs /newroot/\$d; done
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mkdir -p /newroot$work; mount --bind /host$work /newroot$work
echo "=== cgroup v2 controllers: \$(cat /newroot/sys/fs/cgroup/cgroup.controllers)"
chroot /newroot /bin/sh -c 'cd $work && PATH=/usr/sbin:/usr/bin:/sbin:/bin BERTH_TEST_ALL=1 ./pkg.test -test.v $args 2>&1'
poweroff -f
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$work/initramfs.gz"
timeout 1800 qemu-system-x86_64 -accel tcg -m 4096 -smp 2 -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
	-append "console=ttyS0 rdinit=/init cgroup_no_v1=all panic=-1 quiet" \
	-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on -nographic -no-reboot </dev/null
