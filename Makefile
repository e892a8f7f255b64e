# assure — see README.md.
#   make demo    a crashing program surviving under `assure run`
#   make test    all tests (as root: ptrace, userfaultfd, /proc/PID/pagemap);
#                the integration tests twice: with Debian's containerd 1.6 and
#                with containerd 2.x (hack/install-deps.sh --containerd2)
#   make bench   per-call cost of a rescue point, recovery time, start
#                overhead, and redis, memcached, nginx natively vs. under assure
#                (BENCHFLAGS="-readme" also records them in README.md)
#   make lint    go vet + gofmt;  make build  bin/assure, the shim binaries;  make clean

export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

.PHONY: all build test demo demo-redis bench lint clean deps

all: build

DEPS = --containerd --redis --containerd2 --cri --lighttpd
CONTAINERD2 = /opt/assure/containerd2/bin

deps:
	bash hack/install-deps.sh $(DEPS)

# Stripped (-s -w): containerd runs the shim binary several times per
# container, and a smaller binary starts faster (see README, Benchmarks).
BUILDFLAGS = -trimpath -ldflags=-s\ -w

build:
	$(GO) build $(BUILDFLAGS) -o bin/assure ./cmd/assure
	$(GO) build $(BUILDFLAGS) -o bin/containerd-shim-assure-v1 ./cmd/containerd-shim-assure-v1
	$(GO) build $(BUILDFLAGS) -o bin/assure-shim ./cmd/assure-shim

# The tests trace processes, inject syscalls into them and read their
# /proc/PID/pagemap: they need root.
test:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make test: the tests need root (ptrace, userfaultfd, /proc/PID/pagemap); run it as root" >&2; \
		exit 1; \
	fi
	bash hack/install-deps.sh $(DEPS)
	# One package at a time: the e2e and the integration suites each keep
	# both CPUs of these machines busy on their own.
	$(GO) test -count=1 -p 1 -timeout 30m ./...
	@echo "== integration tests again, with containerd 2.x ($(CONTAINERD2))"
	CONTAINERD_BIN=$(CONTAINERD2)/containerd CTR_BIN=$(CONTAINERD2)/ctr $(GO) test -count=1 -timeout 20m ./integration

# The main job: a C server crashing natively and surviving under
# `assure run`, then redis in a container under io.containerd.assure.v1.
demo: build
	bash hack/install-deps.sh --containerd --redis
	bash hack/demo.sh
	bash hack/demo-redis.sh

demo-redis: build
	bash hack/install-deps.sh --containerd --redis
	bash hack/demo-redis.sh

bench: deps build
	bash hack/install-deps.sh --servers
	$(GO) run ./hack/bench $(BENCHFLAGS)

lint:
	$(GO) vet ./...
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then \
		echo "gofmt: these files need formatting (gofmt -w):" >&2; \
		echo "$$out" >&2; \
		exit 1; \
	fi

clean:
	rm -rf bin/
