#!/usr/bin/env bash
# The cgroup v2 tier: runs test packages on a pure cgroup v2 kernel. The hosts
# here are cgroup v1 hybrids, so Debian's kernel boots under QEMU (TCG, no KVM
# here) with cgroup_no_v1=all and a busybox initramfs that mounts the host's
# root read-only over 9p with a tmpfs overlay, switches root into it and runs
# each package's test binary from its source directory, as `go test` would.
# The VM is up in about 6 s; a systemd test node boots in it in about 20 s.
#
#   hack/v2vm.sh [-run REGEXP] [-timeout 20m] [-vmtimeout 40m] [-stall 480] PKG...
#
# -timeout is each test binary's; -vmtimeout bounds the whole VM (default: the
# packages' timeouts plus 5 minutes). A VM whose tests print nothing for
# -stall seconds is taken for hung: the guest's kernel is asked (sysrq) for its
# blocked tasks and every CPU's backtrace, which land on the console printed
# below, and the VM is stopped. The packages from the hung one on then get one
# more VM within the same bound (a package that failed never runs again).
# Exits non-zero when a test binary fails, or a VM hangs twice or does not
# report back.
set -euo pipefail
cd "$(dirname "$0")/.."
run= timeout=20m vmtimeout= stall=480
while (($#)); do
	case $1 in
	-run) run=$2; shift 2 ;;
	-timeout) timeout=$2; shift 2 ;;
	-vmtimeout) vmtimeout=$2; shift 2 ;;
	-stall) stall=$2; shift 2 ;;
	*) break ;;
	esac
done
(($#)) || { echo "usage: $0 [-run REGEXP] [-timeout D] PKG..." >&2; exit 2; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v cpio >/dev/null || need+=(cpio)
if ((${#need[@]})); then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; fi
vmlinuz=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${vmlinuz#/boot/vmlinuz-}
# A run killed with SIGKILL cannot clean up: its directory goes at the next
# run (its qemu died with it, see setpriv below).
for d in /tmp/berth-v2vm.*; do
	[ -d "$d" ] && ! kill -0 "$(cat "$d/owner" 2>/dev/null || echo 0)" 2>/dev/null && rm -rf "$d"
done
work=$(mktemp -d /tmp/berth-v2vm.XXXXXX)
echo $$ >"$work/owner"
trap 'rm -rf "$work"' EXIT
repo=$(pwd)
script=$work/tests.sh
# The tests run as on a systemd host: in a cgroup of their own below the root
# (whose controllers they may delegate further, as test/node does), with
# loopback up and the host's Go toolchain, module and build caches (writes
# land in the VM's tmpfs overlay).
pkgs=() dirs=() bins=()
i=0
for pkg in "$@"; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	[[ $dir != *$'\n'* ]] || { echo "$0: $pkg names several packages; list them one by one" >&2; exit 2; }
	i=$((i + 1))
	go test -c -o "$work/$i.test" "$pkg"
	[ -e "$work/$i.test" ] || continue # no test files
	pkgs+=("$pkg") dirs+=("$dir") bins+=("$work/$i.test")
done
# write_script FROM: the guest's script, running the packages from index FROM
# on; each one's verdict is a line "=== v2vm: ok PKG" or "=== v2vm: FAIL PKG".
write_script() {
	{
		printf 'export PATH=%q HOME=%q BERTH_TEST_ALL=1\n' "/usr/sbin:/usr/bin:/sbin:/bin:$(dirname "$(command -v go)"):$(go env GOPATH)/bin" "$HOME"
		printf 'export GOCACHE=%q GOMODCACHE=%q GOPATH=%q\n' "$(go env GOCACHE)" "$(go env GOMODCACHE)" "$(go env GOPATH)"
		cat <<SETUP
ip link set lo up
mkdir -p /sys/fs/cgroup/berth-tests
echo "\$(sed 's/[^ ]*/+&/g' /sys/fs/cgroup/cgroup.controllers)" >/sys/fs/cgroup/cgroup.subtree_control
echo \$\$ >/sys/fs/cgroup/berth-tests/cgroup.procs
cd /; rc=0
SETUP
		local j
		for ((j = $1; j < ${#pkgs[@]}; j++)); do
			printf 'echo "=== v2vm: %s"; if (cd %q && %q -test.v -test.timeout %q %s); then echo "=== v2vm: ok %s"; else rc=1; echo "=== v2vm: FAIL %s"; fi\n' \
				"${pkgs[j]}" "${dirs[j]}" "${bins[j]}" "$timeout" "${run:+-test.run $(printf %q "$run")}" "${pkgs[j]}" "${pkgs[j]}"
		done
		echo 'echo "=== v2vm: exit $rc"'
	} >"$script"
}
ir=$work/initramfs
mkdir -p "$ir"/{bin,proc,sys,dev,host,rw,newroot,lib/modules}
cp /bin/busybox "$ir/bin/"
for a in sh mount insmod mkdir echo cat poweroff switch_root; do ln -sf busybox "$ir/bin/$a"; done
mods=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
	drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet net/9p/9pnet_virtio
	fs/netfs/netfs fs/fscache/fscache fs/9p/9p fs/overlayfs/overlay)
for m in "${mods[@]}"; do cp "/lib/modules/$kver/kernel/$m.ko" "$ir/lib/modules/"; done
cat >"$ir/init" <<INIT
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# Booted quietly; from here on the kernel's messages (OOM kills, hung tasks,
# sysrq dumps) all reach the console, and sysrq answers the host's watchdog.
echo 7 >/proc/sys/kernel/printk; echo 1 >/proc/sys/kernel/sysrq
for m in ${mods[*]##*/}; do insmod /lib/modules/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 host /host || poweroff -f
mount -t tmpfs -o size=4g tmpfs /rw; mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || poweroff -f
mount --move /proc /newroot/proc; mount --move /sys /newroot/sys; mount --move /dev /newroot/dev
for d in run tmp var/tmp; do mount -t tmpfs tmpfs /newroot/\$d; done
# A checkout under one of them (a CI clone in /tmp) is bound back in, read-only.
case $repo/ in /run/*|/tmp/*|/var/tmp/*) mkdir -p /newroot$repo; mount --bind /host$repo /newroot$repo ;; esac
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mkdir -p /newroot$work; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /newroot$work || poweroff -f
echo "=== v2vm: kernel \$(cat /newroot/proc/sys/kernel/osrelease), cgroup2 controllers: \$(cat /newroot/sys/fs/cgroup/cgroup.controllers)" >/newroot$work/out.log
# switch_root, not chroot: setns(CLONE_NEWNS) puts nsenter at the mount
# namespace's root, which must be the host's tree, not the initramfs under it.
# The tests write to the shared directory, not the slow serial console.
exec switch_root /newroot /bin/sh -c '. $script >>$work/out.log 2>&1; exec /bin/busybox poweroff -f'
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$work/initramfs.gz"
# The whole VM gets each package's test timeout plus 5 minutes for booting
# and building, unless -vmtimeout says otherwise. --foreground keeps ^C
# reaching qemu; PDEATHSIG on both processes: the VM dies with this script,
# however it ends. multidevs=remap: the host tree spans several file systems,
# whose inode numbers could collide. The monitor is a pair of FIFOs, for the
# watchdog's sysrq keys.
secs() { case $1 in *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
deadline=$((SECONDS + $(secs "${vmtimeout:-$(($(secs "$timeout") * ${#pkgs[@]} + 300))}")))
mkfifo "$work/mon.in" "$work/mon.out"
# run_vm: boots the VM on $script; out.log gets the tests' output, console.log
# the kernel's, and the file "stalled" appears if the watchdog stopped it.
run_vm() {
	rm -f "$work/stalled"
	: >"$work/out.log"
	setpriv --pdeathsig KILL -- tail -F -n +1 "$work/out.log" 2>/dev/null &
	local tailer=$!
	setpriv --pdeathsig KILL -- cat "$work/mon.out" >"$work/mon.log" 2>/dev/null &
	local drain=$!
	# The watchdog: no new output for $stall seconds means a hung guest.
	(
		exec 7<>"$work/mon.in"
		last=-1 quiet=0
		while sleep 10; do
			size=$(stat -c %s "$work/out.log" 2>/dev/null || echo 0)
			if [ "$size" != "$last" ]; then last=$size quiet=0; continue; fi
			quiet=$((quiet + 10))
			((quiet >= stall)) || continue
			echo "=== v2vm: no output from the tests for ${stall}s; asking the guest kernel for blocked tasks and backtraces" >&2
			: >"$work/stalled"
			printf 'sendkey alt-sysrq-w\n' >&7
			sleep 5
			printf 'sendkey alt-sysrq-l\n' >&7
			sleep 20
			printf 'quit\n' >&7
			exit 0
		done
	) &
	local watchdog=$!
	vmrc=0 vmlimit=$((deadline - SECONDS))s
	setpriv --pdeathsig KILL -- timeout --foreground "$vmlimit" setpriv --pdeathsig KILL -- qemu-system-x86_64 -accel tcg -m 6144 -smp "$(nproc)" -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
		-append "console=ttyS0 rdinit=/init cgroup_no_v1=all panic=-1 quiet" \
		-virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$work,mount_tag=work,security_model=none" \
		-chardev "pipe,id=mon,path=$work/mon" -mon chardev=mon,mode=readline \
		-display none -serial stdio -no-reboot </dev/null >"$work/console.log" || vmrc=$?
	sleep 1
	kill "$tailer" "$watchdog" "$drain" 2>/dev/null || true
	wait "$watchdog" "$drain" 2>/dev/null || true
}
console() {
	echo "=== v2vm: the VM's console (its last 400 lines):" >&2
	tail -n 400 "$work/console.log" >&2
}
write_script 0
run_vm
failed=$(grep -c '^=== v2vm: FAIL ' "$work/out.log" || true)
# A hung guest gets one more VM, within the same deadline, for the packages
# not yet done, the hung one first; its diagnosis stays above. A package that
# failed is never rerun.
if [ -e "$work/stalled" ] && ((deadline - SECONDS > 300)); then
	console
	finished=$(grep -cE '^=== v2vm: (ok|FAIL) ' "$work/out.log" || true)
	echo "=== v2vm: the guest hung in ${pkgs[finished]:-its shutdown}; once more in a new VM, from there on" >&2
	write_script "$finished"
	run_vm
	failed=$((failed + $(grep -c '^=== v2vm: FAIL ' "$work/out.log" || true)))
fi
if ((vmrc == 124)); then
	echo "=== v2vm: the VM ran out of its $vmlimit" >&2
fi
if ((failed)) || [ -e "$work/stalled" ] || ! grep -q '^=== v2vm: exit [01]$' "$work/out.log"; then
	echo "=== v2vm: failed" >&2
	console
	exit 1
fi
