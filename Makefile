# berth: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell PATH=$$PATH:/usr/local/go/bin go env GOPATH 2>/dev/null)/bin
GO ?= go
BIN := bin

.PHONY: all setup build package demo test test-v1 test-v2 test-unit bench clean

all: build

setup:
	@hack/setup.sh

# berth-init is static: it runs before the container's root exists and uses
# Go's all-threads syscalls, which cgo forbids; so is berth-hook, berth-init's
# hook code with the httpGet handler (package net, crypto/tls) linked in.
build:
	$(GO) build -o $(BIN)/berthd ./cmd/berthd
	CGO_ENABLED=0 $(GO) build -o $(BIN)/berth-init ./cmd/berth-init
	CGO_ENABLED=0 $(GO) build -o $(BIN)/berth-hook ./cmd/berth-hook
	$(GO) build -o $(BIN)/berth-verify ./cmd/berth-verify
	$(GO) build -o $(BIN)/berth-node ./cmd/berth-node
	v=$$($(GO) list -m -f '{{.Version}}' k8s.io/kubectl | sed 's/^v0\./v1./'); m=$$(echo $$v | cut -d. -f2); x="-X k8s.io/component-base/version.gitVersion=$$v+berth -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$$m -X k8s.io/component-base/version.gitCommit=$$(git rev-parse HEAD 2>/dev/null)"; $(GO) build -ldflags "$$x $${x//component-base/client-go/pkg}" -o $(BIN)/berth ./cmd/berth

# berth's .deb and .rpm into dist/ (nfpm; hack/package.sh, docs/packages.md).
# VERSION=x.y.z overrides the version git gives (hack/version.sh).
package: setup build
	hack/package.sh dist

demo: setup build
	$(GO) run ./test/cmd/berth-demo -bin $(BIN)

# Every tier, as root, the systemd-node tests included; BERTH_TEST_ALL=1 turns
# a missing prerequisite into a failure instead of a skip. One tier after the
# other, also under make -j: the CPU-throttling checks measure a quota.
test: setup
	$(MAKE) --no-print-directory test-v1
	$(MAKE) --no-print-directory test-v2

# This host (cgroup v1 hybrid): every package. -p 1: packages run one after
# another, so the CPU-throttling check measures a quota, not a machine busy
# compiling the next package.
test-v1:
	@[ "$$(id -u)" = 0 ] || { echo "make test runs as root (namespaces, mounts, cgroups)"; exit 1; }
	$(GO) vet ./...
	@unformatted="$$($$($(GO) env GOROOT)/bin/gofmt -l .)"; [ -z "$$unformatted" ] || { echo "gofmt needed:" $$unformatted; exit 1; }
	BERTH_TEST_ALL=1 $(GO) test -p 1 -count=1 -timeout 15m ./...
	# The API's decoders and handlers fuzzed for a bounded count: no input may
	# panic, answer 5xx or store anything on a 4xx (api/server/fuzz_test.go).
	# A count, not a duration: Go fails a duration-bound run with "context
	# deadline exceeded" when the time ends while an interesting input is
	# being minimized (go.dev/issue/75804; seen here with 0 execs/s for 10 s
	# before the end). 30000 inputs take 15 to 30 s on these machines.
	$(GO) test -run '^$$' -fuzz FuzzHandlers -fuzztime 30000x -fuzzminimizetime 10s -parallel 2 ./api/server

# A cgroup v2 kernel (Debian's, under QEMU): the packages whose behaviour
# depends on the cgroup mode, run again there. The tier takes about 6 minutes;
# a hung VM is diagnosed and stopped after 8 minutes without output, and the
# packages it had not finished get one more VM; all of it within 45 minutes,
# so that make test ends within CI's 90.
V2_PKGS := ./cgroup ./cgroup/own ./test/node ./unitgen/systemd ./agent/berthinit ./agent/storage ./test/e2e
test-v2:
	@[ "$$(id -u)" = 0 ] || { echo "make test runs as root (namespaces, mounts, cgroups)"; exit 1; }
	hack/v2vm.sh -timeout 20m -vmtimeout 45m -stall 8m $(V2_PKGS)

# Plain tier: no root, no node.
test-unit:
	$(GO) test ./...

bench: setup build
	BERTH_TEST_ALL=1 $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/bench/
	$(GO) test -count=1 -run '^$$' -bench 'DeploymentReady|SelectorSwitch|ClusterIPThroughput|MetricsOnNode' -benchtime 1x -timeout 40m ./test/e2e/kubectl/
	# Usage reporting with 500 pods: a collection cycle over their real
	# cgroups against the floor of reading the same files, and a scrape.
	$(GO) test -count=1 -run '^$$' -bench 'Collect' -benchtime 5x ./agent/usage/
	$(GO) test -count=1 -run '^$$' -bench 'Scrape' -benchtime 20x ./agent/exporter/

clean:
	rm -rf $(BIN) dist
