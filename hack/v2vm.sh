#!/usr/bin/env bash
# The cgroup v2 tier: runs test packages on a pure cgroup v2 kernel. The hosts
# here are cgroup v1 hybrids, so Debian's kernel boots under QEMU (TCG, no KVM
# here) with cgroup_no_v1=all and a busybox initramfs that mounts the host's
# root read-only over 9p with a tmpfs overlay, switches root into it and runs
# each package's test binary from its source directory, as `go test` would.
# The VM is up in about 6 s; a systemd test node boots in it in about 20 s.
#
#   hack/v2vm.sh [-run REGEXP] [-timeout 20m] [-vmtimeout 45m] [-stall 8m] PKG...
#
# -timeout is each test binary's; -vmtimeout bounds the VMs (default: the
# packages' timeouts plus 5 minutes; durations are whole seconds, minutes or
# hours: 90s, 8m, 1h). A VM whose tests print nothing for -stall is taken
# for hung: the guest's kernel is asked (sysrq) for its
# blocked tasks and every CPU's backtrace, which land on the console printed
# below, and the VM is stopped. The packages from the hung one on then get one
# more VM within the same bound (a package that failed never runs again).
# Exits non-zero when a test binary fails, or a VM hangs twice or does not
# report back.
set -euo pipefail
cd "$(dirname "$0")/.."
run= timeout=20m vmtimeout= stall=8m
while (($#)); do
	case $1 in
	-run) run=$2; shift 2 ;;
	-timeout) timeout=$2; shift 2 ;;
	-vmtimeout) vmtimeout=$2; shift 2 ;;
	-stall) stall=$2; shift 2 ;;
	*) break ;;
	esac
done
(($#)) || { echo "usage: $0 [-run REGEXP] [-timeout D] [-vmtimeout D] [-stall D] PKG..." >&2; exit 2; }
# secs D: D (90s, 8m, 1h or plain seconds) in seconds.
secs() {
	[[ $1 =~ ^([0-9]+)([hms]?)$ ]] || { echo "$0: duration $1: want whole seconds, minutes or hours (90s, 8m, 1h)" >&2; return 2; }
	case ${BASH_REMATCH[2]} in
	h) echo $((10#${BASH_REMATCH[1]} * 3600)) ;;
	m) echo $((10#${BASH_REMATCH[1]} * 60)) ;;
	*) echo $((10#${BASH_REMATCH[1]})) ;;
	esac
}
per=$(secs "$timeout")
stall=$(secs "$stall")
vm=
[ -z "$vmtimeout" ] || vm=$(secs "$vmtimeout")
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
# Background helpers (log tailer, monitor drain, watchdog) go with the script.
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
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
deadline=$((SECONDS + ${vm:-$((per * ${#pkgs[@]} + 300))}))
mkfifo "$work/mon.in" "$work/mon.out"
# run_vm: boots the VM on $script; out.log gets the tests' output, console.log
# the kernel's, and the file "stalled" appears if the watchdog stopped it.
run_vm() {
	rm -f "$work/stalled" "$work/qemu.pid"
	: >"$work/out.log"
	setpriv --pdeathsig KILL -- tail -F -n +1 "$work/out.log" 2>/dev/null &
	local tailer=$!
	setpriv --pdeathsig KILL -- cat "$work/mon.out" >"$work/mon.log" 2>/dev/null &
	local drain=$!
	# The watchdog: no new output for $stall seconds means a hung guest. It
	# ends with this script, even a killed one. A qemu that ignores quit is
	# killed.
	(
		# Killed, it takes its sleep along.
		trap 'kill $! 2>/dev/null; wait $! 2>/dev/null; exit 0' TERM
		nap() { sleep "$1" & wait $!; }
		exec 7<>"$work/mon.in"
		last=-1 quiet=0
		while nap 10; do
			kill -0 $$ 2>/dev/null || exit 0
			size=$(stat -c %s "$work/out.log" 2>/dev/null || echo 0)
			if [ "$size" != "$last" ]; then last=$size quiet=0; continue; fi
			quiet=$((quiet + 10))
			((quiet >= stall)) || continue
			echo "=== v2vm: no output from the tests for ${stall}s; asking the guest kernel for blocked tasks and backtraces" >&2
			: >"$work/stalled"
			printf 'sendkey alt-sysrq-w\n' >&7
			nap 5
			printf 'sendkey alt-sysrq-l\n' >&7
			nap 20
			printf 'quit\n' >&7
			nap 30
			kill -KILL "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null || true
			exit 0
		done
	) &
	local watchdog=$!
	vmrc=0 vmlimit=$((deadline - SECONDS))s
	setpriv --pdeathsig KILL -- timeout --foreground -k 30s "$vmlimit" setpriv --pdeathsig KILL -- qemu-system-x86_64 -accel tcg -m 6144 -smp "$(nproc)" -kernel "$vmlinuz" -initrd "$work/initramfs.gz" \
		-append "console=ttyS0 rdinit=/init cgroup_no_v1=all panic=-1 quiet" \
		-virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$work,mount_tag=work,security_model=none" \
		-chardev "pipe,id=mon,path=$work/mon" -mon chardev=mon,mode=readline \
		-pidfile "$work/qemu.pid" -display none -serial stdio -no-reboot </dev/null >"$work/console.log" || vmrc=$?
	sleep 1
	kill "$tailer" "$watchdog" "$drain" 2>/dev/null || true
	wait "$watchdog" "$drain" 2>/dev/null || true
}
# console: the VM's console; after the watchdog's sysrq, from 100 lines before
# it (hung-task reports, OOM kills) on.
console() {
	local at
	at=$(grep -n -m1 'sysrq: Show Blocked State' "$work/console.log" | cut -d: -f1 || true)
	if [ -n "$at" ]; then
		echo "=== v2vm: the VM's console from line $((at > 100 ? at - 100 : 1)) (at most 4000 lines):" >&2
		{ tail -n +"$((at > 100 ? at - 100 : 1))" "$work/console.log" | head -n 4000 >&2; } || true
	else
		echo "=== v2vm: the VM's console (its last 400 lines):" >&2
		tail -n 400 "$work/console.log" >&2
	fi
}
write_script 0
run_vm
failed=$(grep -c '^=== v2vm: FAIL ' "$work/out.log" || true)
# A hung guest gets one more VM, within the same deadline, for the packages
# not yet done, the hung one first; its diagnosis stays above. Not when a
# package failed (the tier fails anyway; it is never rerun) or every package
# had reported.
if [ -e "$work/stalled" ] && ((failed == 0 && deadline - SECONDS > 300)) && ! grep -q '^=== v2vm: exit ' "$work/out.log"; then
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
