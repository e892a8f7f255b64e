#!/usr/bin/env bash
# A private containerd for assure's tests and demo: its own root, state,
# socket and config under one directory; no change to any system-wide
# containerd or its configuration.
#
#   hack/containerd.sh start DIR [--force] [--cri]   start it (DIR must be empty or absent)
#   hack/containerd.sh restart DIR           stop containerd alone (shims and
#                                            containers keep running) and start it again
#   hack/containerd.sh stop DIR [--force]    stop it, unmount what is left, remove DIR
#   hack/containerd.sh env DIR               print the environment for ctr
#   hack/containerd.sh status DIR            exit 0 when it answers
#
# --cri enables containerd's CRI plugin (socket DIR/containerd.sock, as for
# the other services) with a runtime handler "assure" (runtime_type
# io.containerd.assure.v1, pod_annotations dev.assure.manifest and
# dev.assure.manifest.file), the sandbox image $ASSURE_SANDBOX_IMAGE
# (default assure.test/pause:1, to be imported into namespace k8s.io),
# restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE), host-network
# pods only (no CNI plugin), a stream server on a free loopback port.
#
# DIR must be under /tmp unless --force. Layout: DIR/config.toml,
# DIR/root, DIR/state, DIR/containerd.sock, DIR/containerd.log,
# DIR/containerd.pid, DIR/snapshotter (overlayfs, or native where an overlay
# mount fails here). The module's bin/ comes first on containerd's PATH, so
# containerd finds containerd-shim-assure-v1 there. The namespace assure-test
# is created with the snapshotter as its default.
#
# Environment: CONTAINERD_BIN (default: containerd on PATH; containerd 1.6
# and 2.x both work), CTR_BIN (default: ctr on PATH), CONTAINERD_LOG_LEVEL
# (default: info), ASSURE_SNAPSHOTTER (overlayfs or native: skip the overlay
# probe).
set -euo pipefail

NAMESPACE=assure-test
MARKER='# assure private containerd (hack/containerd.sh)'
START_DEADLINE=30 # seconds until `ctr version` must answer
STOP_DEADLINE=15  # seconds between SIGTERM and SIGKILL

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module_dir=$(cd "$script_dir/.." && pwd)
CONTAINERD_BIN=${CONTAINERD_BIN:-containerd}
CTR_BIN=${CTR_BIN:-ctr}

log() { echo "containerd.sh: $*" >&2; }
die() {
	echo "containerd.sh: error: $*" >&2
	exit 1
}
usage() {
	sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
cri=0
args=()
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	--cri) cri=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) args+=("$a") ;;
	esac
done
[ "${#args[@]}" -eq 2 ] || {
	usage >&2
	exit 2
}
cmd=${args[0]}
dir=$(realpath -m -- "${args[1]}")

# Refuse what is not under /tmp, and / or /tmp themselves, even with --force
# for the latter.
case "$dir" in
/ | /tmp) die "refusing DIR $dir" ;;
/tmp/*) ;;
*) [ "$force" = 1 ] || die "DIR $dir is not under /tmp (use --force to allow it)" ;;
esac

sock=$dir/containerd.sock
pidfile=$dir/containerd.pid

# ctr 2.x warns on stderr at every call that cgroup v1 is deprecated.
export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1
ctr_() { "$CTR_BIN" --address "$sock" --connect-timeout 2s "$@"; }

# pid of our containerd when it is alive (and is containerd), else empty.
live_pid() {
	local pid
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile" 2>/dev/null || true)
	[[ "$pid" =~ ^[0-9]+$ ]] || return 0
	[ -d "/proc/$pid" ] || return 0
	# A recycled pid would not have our config on its command line.
	if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir/config.toml"; then
		echo "$pid"
	fi
}

answers() { [ -S "$sock" ] && ctr_ version >/dev/null 2>&1; }

# Mount points under DIR, deepest first (from /proc/self/mountinfo; field 5
# is the mount point, with octal escapes for spaces and the like).
mounts_under() {
	awk -v d="$dir" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print p }' /proc/self/mountinfo |
		awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

# Whether an overlay mount works with its upper dir in DIR (the overlayfs
# snapshotter keeps its upper and work dirs under DIR/root).
overlay_works() {
	local p=$dir/.overlay-probe ok=1
	mkdir -p "$p/lower" "$p/upper" "$p/work" "$p/merged"
	echo probe >"$p/lower/f"
	if mount -t overlay overlay -o "lowerdir=$p/lower,upperdir=$p/upper,workdir=$p/work" "$p/merged" 2>/dev/null; then
		if [ "$(cat "$p/merged/f" 2>/dev/null)" = probe ] && echo x >"$p/merged/g" 2>/dev/null; then
			ok=0
		fi
		umount "$p/merged" 2>/dev/null || umount -l "$p/merged" 2>/dev/null || true
	fi
	rm -rf "$p"
	return $ok
}

write_config() {
	local snap=$1 cri_plugins='"io.containerd.grpc.v1.cri",'
	[ "$cri" = 1 ] && cri_plugins=""
	cat >"$dir/config.toml" <<EOF
$MARKER
version = 2
root = "$dir/root"
state = "$dir/state"
# Only what ctr, crictl and the assure shim need: no exotic snapshotters,
# CRI only with --cri. (containerd 2.x migrates this version 2 file.)
disabled_plugins = [
  $cri_plugins
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$sock"
  uid = 0
  gid = 0

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""
  level = "${CONTAINERD_LOG_LEVEL:-info}"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.gc.v1.scheduler"]
    startup_delay = "100ms"
EOF
	[ "$cri" = 1 ] && write_cri_config "$snap"
	echo "$snap" >"$dir/snapshotter"
}

# The CRI plugin as a kubelet on this machine needs it (see usage).
write_cri_config() {
	local snap=$1
	mkdir -p "$dir/cni/bin" "$dir/cni/conf"
	cat >>"$dir/config.toml" <<EOF
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${ASSURE_SANDBOX_IMAGE:-assure.test/pause:1}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$dir/cni/bin"
      conf_dir = "$dir/cni/conf"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snap"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.assure]
        runtime_type = "io.containerd.assure.v1"
        pod_annotations = ["dev.assure.manifest", "dev.assure.manifest.file"]
EOF
	echo cri >"$dir/cri"
}

do_start() {
	local pid
	pid=$(live_pid)
	if [ -n "$pid" ] && answers; then
		log "already running in $dir (pid $pid)"
		return 0
	fi
	# A socket path longer than sun_path (108 bytes) cannot be bound.
	[ "${#sock}" -lt 100 ] || die "socket path $sock is too long for a unix socket"
	if [ -e "$dir" ]; then
		[ -d "$dir" ] || die "$dir exists and is not a directory"
		if [ -n "$(ls -A "$dir")" ] && [ "$force" != 1 ]; then
			die "DIR $dir is not empty (use --force to use it anyway)"
		fi
	fi
	command -v "$CONTAINERD_BIN" >/dev/null 2>&1 || die "containerd not found (run hack/install-deps.sh --containerd)"
	command -v "$CTR_BIN" >/dev/null 2>&1 || die "ctr not found (run hack/install-deps.sh --containerd)"
	[ "$(id -u)" -eq 0 ] || die "containerd needs root"
	mkdir -p "$dir"
	chmod 0711 "$dir"

	local snap=native
	case "${ASSURE_SNAPSHOTTER:-}" in
	overlayfs | native) snap=$ASSURE_SNAPSHOTTER ;;
	"")
		if overlay_works; then
			snap=overlayfs
		else
			log "an overlay mount fails under $dir: using the native snapshotter"
		fi
		;;
	*) die "ASSURE_SNAPSHOTTER=$ASSURE_SNAPSHOTTER: want overlayfs or native" ;;
	esac
	write_config "$snap"
	mkdir -p "$dir/root" "$dir/state"
	launch
	if ! ctr_ namespaces ls -q | grep -qx "$NAMESPACE"; then
		ctr_ namespaces create "$NAMESPACE" "containerd.io/defaults/snapshotter=$snap" >/dev/null
	fi
	log "started in $dir (pid $(cat "$pidfile"), snapshotter $snap, socket $sock)"
}

# launch runs containerd on DIR's config and waits until it answers.
launch() {
	local pid
	# setsid: not in the caller's process group or session; all fds redirected,
	# so a caller reading our output is not kept waiting by containerd. Its
	# PATH: our shim, then the shims next to the containerd binary (a
	# containerd 2.x wants its own containerd-shim-runc-v2).
	local bindir
	bindir=$(dirname "$(command -v "$CONTAINERD_BIN")")
	PATH="$module_dir/bin:$bindir:$PATH" setsid "$CONTAINERD_BIN" --config "$dir/config.toml" \
		</dev/null >>"$dir/containerd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$pidfile"

	local deadline=$((SECONDS + START_DEADLINE))
	until answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$dir/containerd.log" >&2 || true
			die "containerd exited during startup; log: $dir/containerd.log"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 "$dir/containerd.log" >&2 || true
			kill -KILL "$pid" 2>/dev/null || true
			die "containerd did not answer within ${START_DEADLINE}s; log: $dir/containerd.log"
		fi
		sleep 0.1
	done
}

# stop_containerd ends containerd alone: SIGTERM, SIGKILL after a deadline.
stop_containerd() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_DEADLINE))
	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "containerd (pid $pid) did not stop within ${STOP_DEADLINE}s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
}

# do_restart stops containerd without touching its tasks (its shims run on,
# as after a containerd upgrade) and starts it again on the same state.
do_restart() {
	head -n1 "$dir/config.toml" 2>/dev/null | grep -qxF "$MARKER" || die "$dir does not hold a containerd started by this script"
	local pid
	pid=$(live_pid)
	[ -n "$pid" ] && stop_containerd "$pid"
	launch
	log "restarted in $dir (pid $(cat "$pidfile"))"
}

# Kill and delete every task and container, so that no shim outlives
# containerd. Best effort: containerd may already be gone.
clean_tasks() {
	local ns id
	answers || return 0
	for ns in $(ctr_ namespaces ls -q 2>/dev/null); do
		for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
			ctr_ -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ -n "$ns" tasks ls -q 2>/dev/null); do
			ctr_ --timeout 10s -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ -n "$ns" containers ls -q 2>/dev/null); do
			ctr_ -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
		done
	done
}

# Shims started by our containerd that are still running: they carry
# `-address DIR/containerd.sock` on their command line.
leftover_shims() {
	local p
	for p in /proc/[0-9]*; do
		if tr '\0' '\n' 2>/dev/null <"$p/cmdline" | grep -qxF -- "$sock"; then
			case "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" in
			*containerd-shim*) echo "${p#/proc/}" ;;
			esac
		fi
	done
}

# Containers whose bundle is under DIR and that are still known to runc
# (their shim died, or containerd was killed): kill and delete them. Their
# runc state lives in runc's root under containerd's default state dir, one
# per namespace.
clean_runc() {
	command -v runc >/dev/null 2>&1 || return 0
	local r id bundle
	for r in /run/containerd/runc/*/; do
		[ -d "$r" ] || continue
		while read -r id bundle; do
			case "$bundle" in
			"$dir"/*)
				log "killing leftover container $id (runc root $r)"
				runc --root "$r" kill "$id" KILL >/dev/null 2>&1 || true
				runc --root "$r" delete -f "$id" >/dev/null 2>&1 || true
				;;
			esac
		done < <(runc --root "$r" list 2>/dev/null | awk 'NR > 1 { print $1, $4 }' || true)
	done
}

do_stop() {
	if [ ! -e "$dir" ]; then
		log "$dir does not exist: nothing to stop"
		return 0
	fi
	if ! head -n1 "$dir/config.toml" 2>/dev/null | grep -qxF "$MARKER" && [ "$force" != 1 ]; then
		die "$dir does not hold a containerd started by this script (use --force to remove it anyway)"
	fi
	local pid
	pid=$(live_pid)
	if [ -n "$pid" ]; then
		clean_tasks
		stop_containerd "$pid"
	fi
	clean_runc
	local s
	for s in $(leftover_shims); do
		log "killing leftover shim pid $s"
		kill -KILL "$s" 2>/dev/null || true
	done
	local m
	while IFS= read -r m; do
		[ -n "$m" ] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done < <(mounts_under)
	if [ -n "$(mounts_under)" ]; then
		die "mounts left under $dir: $(mounts_under | tr '\n' ' ')"
	fi
	rm -rf -- "$dir"
	# The events the assure shim kept for this containerd's containers
	# (events.ContainerFile: sha256 of the socket address, 12 hex digits).
	local ev
	ev=/run/assure/events/$(printf %s "$dir/containerd.sock" | sha256sum | cut -c1-12)
	rm -rf -- "$ev"
	# runc's per-namespace state directories, empty once the tasks are gone.
	find /run/containerd/runc -mindepth 1 -maxdepth 1 -type d -empty -delete 2>/dev/null || true
	log "stopped; removed $dir"
}

case "$cmd" in
start) do_start ;;
restart) do_restart ;;
stop) do_stop ;;
env)
	snap=$(cat "$dir/snapshotter" 2>/dev/null || echo overlayfs)
	echo "export CONTAINERD_ADDRESS=$sock CONTAINERD_NAMESPACE=$NAMESPACE CONTAINERD_SNAPSHOTTER=$snap"
	;;
status)
	pid=$(live_pid)
	if [ -n "$pid" ] && answers; then
		echo "running (pid $pid)"
	else
		echo "not running"
		exit 1
	fi
	;;
*)
	usage >&2
	exit 2
	;;
esac
