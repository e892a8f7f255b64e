#!/usr/bin/env bash
# make demo-redis: the real server, in a container.
#
# Starts a private containerd, builds an image with the distribution's
# redis-server (and its libraries) whose label declares a rescue point,
# runs it with `ctr run --runtime io.containerd.assure.v1`, stores 10,000
# keys, makes redis crash (DEBUG SEGFAULT), and shows that it answers the
# next request with every key intact, and how long the recovery took. Then
# the same under runc: the container dies and the data is gone. Cleans up
# after itself.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH
cd "$(dirname "$0")/.."
root=$PWD

for c in ctr containerd runc redis-server redis-cli; do
	command -v "$c" >/dev/null || { echo "demo: $c not found: run hack/install-deps.sh --containerd and apt-get install redis-server" >&2; exit 1; }
done
[ -x bin/assure ] && [ -x bin/containerd-shim-assure-v1 ] && [ -x bin/assure-shim ] || { echo "demo: run make build first" >&2; exit 1; }

dir=$(mktemp -d /tmp/assure-demo-redis.XXXXXX)
rmdir "$dir"
port=16379
cleanup() {
	for id in redis-assure redis-runc; do
		ctr task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		ctr task rm -f "$id" >/dev/null 2>&1 || true
		ctr container rm "$id" >/dev/null 2>&1 || true
	done
	bash hack/containerd.sh stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

say "a private containerd in $dir"
bash hack/containerd.sh start "$dir"
eval "$(bash hack/containerd.sh env "$dir")"

manifest='{"version":1,"rescuePoints":[{"binary":"/usr/bin/redis-server","function":"call"}]}'
say "an image with redis-server and the label dev.assure.manifest=$manifest"
real=$(readlink -f /usr/bin/redis-server)
go run ./hack/mkimage -name assure.demo/redis:1 -o "$dir.tar" -import \
	-add "$real:$real" -symlink "/usr/bin/redis-server:$(basename "$real")" -libs \
	-dir /tmp -dir /data -label "dev.assure.manifest=$manifest"
rm -f "$dir.tar"

cli() { redis-cli -p "$port" "$@"; }

waitping() {
	for _ in $(seq 100); do
		[ "$(cli ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.1 # waiting for the server to answer, with a deadline
	done
	echo "demo: redis did not answer" >&2
	return 1
}

run_case() { # runtime id
	local rt=$1 id=$2
	ctr run -d --net-host --runtime "$rt" assure.demo/redis:1 "$id" \
		/usr/bin/redis-server --port "$port" --save "" --appendonly no \
		--enable-debug-command yes --protected-mode no --dir /data >/dev/null
	waitping
	for i in $(seq 1 10000); do echo "SET key:$i value:$i"; done | cli >/dev/null
	echo "stored: DBSIZE = $(cli dbsize)"
	echo "-> DEBUG SEGFAULT"
	# The faulting command fails: with `call` as the rescue point it gets no
	# reply, so the client gives up after 3 s.
	timeout 3 redis-cli -p "$port" debug segfault >/dev/null 2>&1 || true
}

say "under assure: ctr run --runtime io.containerd.assure.v1"
run_case io.containerd.assure.v1 redis-assure
if [ "$(cli ping 2>/dev/null)" = PONG ]; then
	echo "the next request: DBSIZE = $(cli dbsize), GET key:1234 = $(cli get key:1234)"
else
	echo "demo: FAILED: redis did not survive under assure" >&2
	exit 1
fi
echo "\$ assure events redis-assure"
bin/assure events redis-assure | grep recovered
rec=$(bin/assure events --json redis-assure | grep '"type":"recovered"' | head -1)
echo "recovery took $(echo "$rec" | grep -o '"recoveryMicros":[0-9]*' | cut -d: -f2) µs"
[ "$(cli dbsize)" = 10000 ] || { echo "demo: FAILED: keys lost" >&2; exit 1; }
ctr task kill -s SIGKILL redis-assure >/dev/null; ctr task rm -f redis-assure >/dev/null 2>&1 || true
ctr container rm redis-assure >/dev/null

say "under runc: ctr run --runtime io.containerd.runc.v2"
run_case io.containerd.runc.v2 redis-runc
if [ "$(cli ping 2>/dev/null)" = PONG ]; then
	echo "demo: unexpected: redis survived under runc" >&2
	exit 1
fi
echo "the next request: no answer: the container died ($(ctr task ls | awk '$1=="redis-runc"{print $3}')), and the 10,000 keys with it"

say "done: under assure redis answered with all 10,000 keys after the crash; under runc it died"
