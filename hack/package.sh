#!/usr/bin/env bash
# make package: berth's .deb and .rpm, built with nfpm from packaging/nfpm.yaml
# into OUT (default dist/). The binaries come from BERTH_BIN (default bin/,
# what `make build` makes); the version from hack/version.sh (VERSION in the
# environment wins). Generated first, into OUT/gen: man pages and shell
# completions from the commands themselves, the .deb's postrm (its purge is
# packaging/scripts/purge.sh), the .rpm's berth-purge command, a changelog.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
out=$(realpath -m "${1:-dist}")
# Assigned, then exported: `export X=$(cmd)` would hide cmd's failure
# from set -e, and nfpm makes version 0.0.0-rc0 of an empty VERSION.
VERSION=$(hack/version.sh)
BERTH_BIN=$(realpath "${BERTH_BIN:-bin}")
BERTH_GEN=$out/gen
# The man pages' date, and the packages' file times (nfpm reads it too).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
[ -n "$VERSION" ] && [ -n "$SOURCE_DATE_EPOCH" ] || { echo "package: no version from git: set VERSION and SOURCE_DATE_EPOCH" >&2; exit 1; }
export VERSION BERTH_BIN BERTH_GEN SOURCE_DATE_EPOCH
nfpm=$(go env GOPATH)/bin/nfpm
[ -x "$nfpm" ] || { echo "package: nfpm is missing: make setup installs it" >&2; exit 1; }

rm -rf "$BERTH_GEN"
mkdir -p "$BERTH_GEN/man" "$BERTH_GEN/completion" "$BERTH_GEN/bin"
# Stripped copies: Debian and Fedora ship binaries without symbols (Go's
# stack traces need none; its pclntab stays). A third of the size.
for b in berthd berth berth-init berth-hook berth-verify; do
	strip --strip-unneeded -o "$BERTH_GEN/bin/$b" "$BERTH_BIN/$b"
done
# A fixed HOME and zone: kubectl's flags print their defaults under $HOME
# (--cache-dir), and cobra writes the date in local time.
HOME=/nonexistent TZ=UTC "$BERTH_BIN/berth" __man "$BERTH_GEN/man"
HOME=/nonexistent TZ=UTC "$BERTH_BIN/berthd" __man "$BERTH_GEN/man"
gzip -9n "$BERTH_GEN"/man/*
for sh in bash zsh fish; do
	HOME=/nonexistent "$BERTH_BIN/berth" completion "$sh" >"$BERTH_GEN/completion/berth.$sh"
done
{
	cat packaging/scripts/deb-postrm.head
	cat packaging/scripts/purge.sh
	cat packaging/scripts/deb-postrm.tail
} >"$BERTH_GEN/deb-postrm"
{
	echo '#!/bin/sh'
	echo '# berth-purge --yes: removes every berth container, mount, network rule and'
	echo "# berthd's state from this machine (below); run it before \`rpm -e berth\`."
	cat packaging/scripts/purge.sh
	echo 'if [ "${1:-}" != --yes ]; then'
	echo '	echo "usage: berth-purge --yes (stops every berth container and deletes /var/lib/berth, /run/berth, /etc/berth)" >&2'
	echo '	exit 2'
	echo 'fi'
	echo 'berth_purge'
} >"$BERTH_GEN/berth-purge"
chmod 0755 "$BERTH_GEN/deb-postrm" "$BERTH_GEN/berth-purge"
# Both formats want a changelog (nfpm writes Debian's and rpm's from
# this chglog file; -1 is nfpm.yaml's release); this one names the build
# and its commit.
cat >"$BERTH_GEN/changelog.yml" <<EOF
- semver: $VERSION-1
  date: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  packager: berth maintainers <maintainers@berth.dev>
  deb:
    urgency: medium
    distributions: [unstable]
  changes:
    - note: Built from commit $(git rev-parse HEAD).
EOF

# nfpm expands variables in some fields (version) but not in contents'
# paths: those two are put in here.
man=$(for f in "$BERTH_GEN"/man/*.gz; do
	b=$(basename "$f")
	s=${b%.gz}
	printf '  - {src: %s, dst: /usr/share/man/man%s/%s, file_info: {mode: 0644}, packager: deb}\n' "$f" "${s##*.}" "$b"
	printf '  - {src: %s, dst: /usr/share/man/man%s/%s, type: doc, file_info: {mode: 0644}, packager: rpm}\n' "$f" "${s##*.}" "$b"
done)
sed -e "s|\${BERTH_BIN}|$BERTH_GEN/bin|g" -e "s|\${BERTH_GEN}|$BERTH_GEN|g" packaging/nfpm.yaml |
	awk -v man="$man" '/# @MANPAGES@/ { print man; next } { print }' >"$BERTH_GEN/nfpm.yaml"
# Both at once: each spends its time in xz on one core.
"$nfpm" package -f "$BERTH_GEN/nfpm.yaml" -p deb -t "$out/" >/dev/null &
deb=$!
"$nfpm" package -f "$BERTH_GEN/nfpm.yaml" -p rpm -t "$out/" >/dev/null
wait $deb
ls -1 "$out"/berth[_-]"$VERSION"*
