#!/usr/bin/env bash
# Installs what berth's demo and tests need on a fresh Debian 12 machine of
# this kind, idempotently: Debian packages, then Go modules. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(busybox-static util-linux systemd dbus iproute2 procps)
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
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
go mod download
