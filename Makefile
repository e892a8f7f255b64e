# assure — see README.md.
#   make demo    a crashing program surviving under `assure run`
#   make test    all tests (as root: ptrace, userfaultfd, /proc/PID/pagemap)
#   make bench   per-call cost of a rescue point and recovery time
#                (BENCHFLAGS="-readme" also records them in README.md)
#   make lint    go vet + gofmt;  make build  bin/assure;  make clean

export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

.PHONY: all build test demo demo-redis bench lint clean deps

all: build

deps:
	bash hack/install-deps.sh --containerd --redis

build:
	$(GO) build -o bin/assure ./cmd/assure
	$(GO) build -o bin/containerd-shim-assure-v1 ./cmd/containerd-shim-assure-v1

# The tests trace processes, inject syscalls into them and read their
# /proc/PID/pagemap: they need root.
test:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make test: the tests need root (ptrace, userfaultfd, /proc/PID/pagemap); run it as root" >&2; \
		exit 1; \
	fi
	bash hack/install-deps.sh --containerd --redis
	$(GO) test -count=1 -timeout 30m ./...

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
