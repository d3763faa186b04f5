#!/usr/bin/env bash
# Installs what berth's demo and tests need on a fresh Debian 12 machine of
# this kind, idempotently: Debian packages, Go modules, and the cosign CLI
# (not packaged by Debian; built once with `go install`, ~12 min, then cached
# in $(go env GOPATH)/bin). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

# busybox-static: test and demo images; util-linux: nsenter for the test node;
# docker-registry: the real registry the image tests pull from; skopeo, umoci,
# podman: peers in the benchmarks; qemu-system-x86, linux-image-amd64, cpio:
# the cgroup v2 tier (hack/v2vm.sh boots Debian's kernel with cgroup v2 only);
# containernetworking-plugins, iptables: the pod network (CNI bridge,
# host-local, portmap, firewall); nftables: Services' forwarding (the nft
# that sigs.k8s.io/knftables drives); prometheus, curl: the real Prometheus
# scraping a node's berthd (test/e2e/kubectl's TestUsage);
# prometheus-node-exporter: the peer in BenchmarkMetricsOnNode; lintian,
# rpm, rpmlint: `make package`'s checks (test/e2e/packages); ansible (with
# kubernetes.core), ansible-core, python3-kubernetes, openssh-server: the
# Ansible collection's tests and the fleet of nodes reached by ssh
# (test/e2e/ansible, test/e2e/fleet); pylint, yamllint, python3-pycodestyle,
# python3-voluptuous, shellcheck, python3-venv: what `ansible-test sanity`
# runs offline (packaging/ansible/sanity.sh builds its virtualenvs from
# these, as there is no PyPI here); python3-apt: the role's apt module on
# the fleet's nodes (their python3 is the host's).
pkgs=(busybox-static util-linux systemd dbus iproute2 procps docker-registry skopeo umoci podman
	qemu-system-x86 linux-image-amd64 cpio containernetworking-plugins iptables nftables prometheus curl
	prometheus-node-exporter lintian rpm rpmlint ansible ansible-core python3-kubernetes openssh-server
	pylint yamllint python3-pycodestyle python3-voluptuous shellcheck python3-venv python3-apt)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start a registry and a Prometheus service where
# systemd runs; berth's tests start their own, in their nodes. The host's
# Prometheus would only scrape itself every 15 s, and the node exporter is
# only the benchmark's peer: both stopped once, when this script installs
# them. The same for openssh-server's sshd: the fleet's nodes run their own.
for svc in prometheus prometheus-node-exporter ssh; do
	pkg=$svc
	[ "$svc" = ssh ] && pkg=openssh-server
	if [[ " ${missing[*]} " == *" $pkg "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
	fi
done
go mod download

gobin=$(go env GOPATH)/bin
if ! "$gobin/cosign" version 2>/dev/null | grep -q 'v2.6.5'; then
	echo "setup: building the cosign CLI v2.6.5 (go install, once)"
	go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
fi

# nfpm builds the .deb and .rpm (`make package`; not packaged by Debian).
if ! go version -m "$gobin/nfpm" 2>/dev/null | grep -Eq 'mod[[:space:]]+github.com/goreleaser/nfpm/v2[[:space:]]+v2.45.2'; then
	echo "setup: building nfpm v2.45.2 (go install, once)"
	go install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
fi
