# berth_purge: what purging berth removes beyond the package's own files.
# One source for both formats: hack/package.sh appends it to the .deb's
# postrm (run by `apt purge berth` / `dpkg --purge berth`, after the files
# are gone, so it may use only what a base system has) and installs it as
# /usr/libexec/berth/berth-purge for the .rpm, which has no purge: there,
# run it before `rpm -e berth`. docs/packages.md lists the same steps.
#
# In order:
#  1. Every container and pod: stopping berth.slice stops every unit under
#     it (pods' and namespaces' slices, containers' services), each with
#     its ExecStopPost; berthd is stopped first so it restarts nothing.
#  2. Mounts berthd made under /run/berth (pinned pod namespaces) and
#     /var/lib/berth (image roots, pinned hostPath and PVC volumes),
#     deepest first. If any is still mounted afterwards nothing is deleted
#     and the purge fails: a pinned hostPath volume is a host directory,
#     which rm -rf would empty.
#  3. The host network state berthd made: nftables tables "ip berth-pods"
#     (masquerading) and "ip berth" (Services), its iptables FORWARD
#     accepts (comment "berth: ..."), the hostPort rules CNI's portmap made
#     for the network "berth" (nat rules commented name: "berth" and their
#     CNI-DN-* chains; the pods are stopped without a CNI DEL), the bridge
#     berth0, the default Service range's route on lo (10.86.0.0/16) and the
#     default cluster DNS address 10.86.0.10/32 on lo (another range or
#     address set in berthd.yaml is gone at the next boot: the file is
#     already removed).
#  4. State: /var/lib/berth (state.db, images, bundles, the API's CA, and
#     the data of local PersistentVolumes under volumes/), /run/berth and
#     /etc/berth (what berthd wrote there: cni/).
# The group berth stays, as Debian keeps system groups a package made:
# files may still be owned by it. `groupdel berth` removes it.
berth_purge() {
	if [ -d /run/systemd/system ]; then
		systemctl stop berthd.service >/dev/null 2>&1 || true
		systemctl stop berth.slice >/dev/null 2>&1 || true
		systemctl reset-failed 'berth-*' 'berthd.service' >/dev/null 2>&1 || true
	fi
	# /proc/self/mounts escapes blanks as \040; berth's paths have none.
	for m in $(awk '$2 ~ "^/(run|var/lib)/berth(/|$)" { print $2 }' /proc/self/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	left=$(awk '$2 ~ "^/(run|var/lib)/berth(/|$)" { print $2 }' /proc/self/mounts)
	if [ -n "$left" ]; then
		echo "berth purge: still mounted, so nothing was deleted (unmount these, then purge again):" $left >&2
		return 1
	fi
	if command -v nft >/dev/null 2>&1; then
		nft delete table ip berth-pods 2>/dev/null || true
		nft delete table ip berth 2>/dev/null || true
	fi
	if command -v iptables >/dev/null 2>&1; then
		# eval: iptables -S quotes comments as the shell does.
		iptables -w -S FORWARD 2>/dev/null | grep -- '--comment "berth: ' | sed 's/^-A /-D /' |
			while read -r rule; do eval "iptables -w $rule" || true; done
		chains=$(iptables -w -t nat -S 2>/dev/null | grep -F 'name: \"berth\"' | grep -o -- '-j CNI-DN-[0-9a-f]*' | cut -c4- | sort -u)
		iptables -w -t nat -S 2>/dev/null | grep -F 'name: \"berth\"' | sed 's/^-A /-D /' |
			while read -r rule; do eval "iptables -w -t nat $rule" || true; done
		for c in $chains; do
			iptables -w -t nat -F "$c" 2>/dev/null || true
			iptables -w -t nat -X "$c" 2>/dev/null || true
		done
	fi
	if command -v ip >/dev/null 2>&1; then
		ip link delete berth0 2>/dev/null || true
		ip route del 10.86.0.0/16 dev lo 2>/dev/null || true
		ip addr del 10.86.0.10/32 dev lo 2>/dev/null || true
	fi
	rm -rf /var/lib/berth /run/berth /etc/berth
}
