#!/usr/bin/env bash
# Install what assure's build, tests, demo and benchmarks need on Debian 12.
#
#   hack/install-deps.sh               gcc, make, libc6-dev, binutils; checks Go
#   hack/install-deps.sh --containerd  the same, plus containerd, runc and
#                                      busybox-static (a static /bin/busybox
#                                      for test images)
#   hack/install-deps.sh --redis       also redis-server (for make demo)
#   hack/install-deps.sh --lighttpd    also lighttpd (a real server in the e2e
#                                      tests)
#   hack/install-deps.sh --servers     also redis-server, memcached, nginx,
#                                      lighttpd and apache2-utils (ab), for
#                                      make bench
#   hack/install-deps.sh --containerd2 also containerd 2.x (containerd, ctr and
#                                      containerd-shim-runc-v2, built from their Go
#                                      module) in /opt/assure/containerd2/bin
#   hack/install-deps.sh --cri         also crictl (built from its Go module) in
#                                      /opt/assure/crictl/bin, for the CRI tests
#
# Idempotent: installs only what is missing, and runs `apt-get update` only
# when something must be installed. Needs root only in that case. Works
# without a terminal (CI): apt runs non-interactively.
set -euo pipefail

want_containerd=0
want_redis=0
want_servers=0
want_lighttpd=0
want_containerd2=0
want_cri=0
for arg in "$@"; do
	case "$arg" in
	--containerd) want_containerd=1 ;;
	--redis) want_redis=1 ;;
	--lighttpd) want_lighttpd=1 ;;
	--servers) want_redis=1 want_servers=1 want_lighttpd=1 ;;
	--containerd2) want_containerd2=1 ;;
	--cri) want_cri=1 ;;
	-h | --help)
		sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
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
if [ "$want_servers" = 1 ]; then
	pkgs+=(memcached nginx apache2-utils)
	cmd_of[memcached]=memcached
	cmd_of[nginx]=nginx
	cmd_of[apache2-utils]=ab
fi
if [ "$want_lighttpd" = 1 ]; then
	pkgs+=(lighttpd)
	cmd_of[lighttpd]=lighttpd
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

# Go tools built from their modules (not Debian packages), each version in
# its own directory, kept between runs (a second run finds it and builds
# nothing), the current one behind a stable symlink.
CONTAINERD2_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
go_tool() { # NAME VERSION BINARY MODULE/CMD...
	local name=$1 version=$2 check=$3
	shift 3
	local dir=/opt/assure/$name-$version
	if [ ! -x "$dir/bin/$check" ]; then
		[ "$(id -u)" -eq 0 ] || die "$name $version is not installed in $dir; run as root"
		log "building $name $version from its Go module (a few minutes, once)"
		local pkgs=()
		for p in "$@"; do pkgs+=("$p@$version"); done
		mkdir -p "$dir"
		GOBIN=$dir/bin.tmp GOFLAGS=-mod=mod go install "${pkgs[@]}" || die "go install ${pkgs[*]} failed"
		rm -rf "$dir/bin" && mv "$dir/bin.tmp" "$dir/bin"
	fi
	ln -sfn "$dir" "/opt/assure/$name.tmp" && mv -T "/opt/assure/$name.tmp" "/opt/assure/$name"
	log "$name: $version (/opt/assure/$name/bin)"
}
if [ "$want_containerd2" = 1 ]; then
	mkdir -p /opt/assure
	go_tool containerd2 "$CONTAINERD2_VERSION" containerd-shim-runc-v2 \
		github.com/containerd/containerd/v2/cmd/containerd \
		github.com/containerd/containerd/v2/cmd/ctr \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
fi
if [ "$want_cri" = 1 ]; then
	mkdir -p /opt/assure
	go_tool crictl "$CRICTL_VERSION" crictl sigs.k8s.io/cri-tools/cmd/crictl
fi
