// Package oci is the container-facing half of manifest handling: it finds
// a container's manifest in its image labels or runtime-spec annotations,
// resolves paths inside the container's root filesystem the way the kernel
// resolves them from inside the container (but without ever leaving that
// root filesystem), checks the binaries a manifest names, and adjusts the
// runtime spec's seccomp profile so that the system calls the supervisor
// injects into container processes are allowed.
//
// Everything a manifest, a label or an image file says is untrusted:
// nothing here reads, opens or stats a file outside the root filesystem it
// is given, whatever symlinks or ".." the image contains. Errors name the
// label or annotation, the path and the problem, so that `ctr` can show
// them to the user as they are.
package oci
