#!/usr/bin/env bash
# Install what assure's build, tests, demo and benchmarks need on Debian 12.
#
#   hack/install-deps.sh               gcc, make, libc6-dev, binutils; checks Go
#   hack/install-deps.sh --containerd  the same, plus containerd, runc and
#                                      busybox-static (a static /bin/busybox
#                                      for test images)
#   hack/install-deps.sh --redis       also redis-server (for make demo)
#
# Idempotent: installs only what is missing, and runs `apt-get update` only
# when something must be installed. Needs root only in that case. Works
# without a terminal (CI): apt runs non-interactively.
set -euo pipefail

want_containerd=0
want_redis=0
for arg in "$@"; do
	case "$arg" in
	--containerd) want_containerd=1 ;;
	--redis) want_redis=1 ;;
	-h | --help)
		sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "install-deps: unknown argument: $arg (try --help)" >&2
		exit 2
		;;
	esac
done

log() { echo "install-deps: $*"; }
die() {
	echo "install-deps: error: $*" >&2
	exit 1
}

# Debian package -> a command it provides (empty: check the package only).
pkgs=(gcc make libc6-dev binutils)
declare -A cmd_of=([gcc]=gcc [make]=make [libc6-dev]="" [binutils]=nm)
if [ "$want_redis" = 1 ]; then
	pkgs+=(redis-server)
	cmd_of[redis-server]=redis-server
fi
if [ "$want_containerd" = 1 ]; then
	pkgs+=(containerd runc busybox-static)
	cmd_of[containerd]=containerd
	cmd_of[runc]=runc
	cmd_of[busybox-static]=busybox
fi

installed() {
	local pkg=$1 cmd=${cmd_of[$1]:-}
	if [ -n "$cmd" ] && ! command -v "$cmd" >/dev/null 2>&1; then
		return 1
	fi
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done
# strip comes with binutils, but say so if it is somehow absent.
if ! command -v strip >/dev/null 2>&1 && [[ " ${missing[*]:-} " != *" binutils "* ]]; then
	missing+=(binutils)
fi

if [ "${#missing[@]}" -eq 0 ]; then
	log "packages present: ${pkgs[*]}"
else
	if [ "$(id -u)" -ne 0 ]; then
		die "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
	fi
	command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get (this script targets Debian 12)"
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
	log "installing: ${missing[*]}"
	apt-get "${apt_opts[@]}" update
	apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null
	for p in "${missing[@]}"; do
		installed "$p" || die "package $p still missing after apt-get install"
	done
	log "installed: ${missing[*]}"
fi

# Go: not from Debian (Debian 12 ships 1.19); expected at /usr/local/go.
need_major=1 need_minor=26
if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		die "Go is installed at /usr/local/go/bin but not on PATH: export PATH=/usr/local/go/bin:\$PATH"
	fi
	die "Go >= ${need_major}.${need_minor} not found: install it to /usr/local/go and put /usr/local/go/bin on PATH"
fi
gov=$(go env GOVERSION 2>/dev/null || true) # e.g. go1.26.8
if [[ ! "$gov" =~ ^go([0-9]+)\.([0-9]+) ]]; then
	die "cannot tell the version of $(command -v go) (go env GOVERSION said: '${gov}')"
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if [ "$major" -lt "$need_major" ] || { [ "$major" -eq "$need_major" ] && [ "$minor" -lt "$need_minor" ]; }; then
	die "$(command -v go) is $gov; assure needs Go >= ${need_major}.${need_minor} (put /usr/local/go/bin first on PATH)"
fi
log "go: $gov ($(command -v go))"

if [ "$want_containerd" = 1 ]; then
	log "containerd: $(containerd --version 2>/dev/null | head -n1); runc: $(runc --version 2>/dev/null | head -n1); busybox: $(busybox 2>/dev/null | head -n1)"
fi
