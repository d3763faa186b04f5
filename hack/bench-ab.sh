#!/usr/bin/env bash
# bench-ab.sh REV [ROUNDS] [N]: container start-up of git revision REV (A)
# against the working tree (B), alternating A and B in fresh disposable
# nodes for ROUNDS rounds (default 4) of N starts each (default 50), with
# the page cache dropped before every run (dying memory cgroups left by
# earlier units otherwise make each run slower than the last; the benchmark
# drops it itself since 498decd, revisions before it do not). Prints the
# floor and berth p50 of every run. Needs root and a quiet machine.
set -euo pipefail
rev=${1:?usage: hack/bench-ab.sh REV [ROUNDS] [N]}
rounds=${2:-4}
n=${3:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
wt=$(mktemp -d /tmp/berth-ab.XXXXXX)
trap 'git -C "$here" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git -C "$here" worktree add --detach "$wt" "$rev" >/dev/null
run() { # DIR: one run of the start-up benchmark from the tree in DIR
	sync
	echo 3 >/proc/sys/vm/drop_caches
	(cd "$1" && BERTH_TEST_ALL=1 BERTH_BENCH_N=$n go test -count=1 -run '^$' -bench ContainerStart \
		-benchtime 1x -timeout 30m ./test/bench/ 2>&1) |
		awk '/raw transient unit|berth container/ { for (i = 1; i <= NF; i++) if ($i ~ /^p50=/) printf "%s %s  ", ($1 == "raw" ? "floor" : "berth"), $i }'
	echo
}
for r in $(seq "$rounds"); do
	echo "A ($rev) round $r: $(run "$wt")"
	echo "B (working tree) round $r: $(run "$here")"
done
