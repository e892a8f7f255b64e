package shim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/oci"
)

// RuncShim is the binary a container with nothing to supervise is handed
// to at start.
const RuncShim = "containerd-shim-runc-v2"

// delegateEnv turns the hand-over off ("off"), for side-by-side
// measurement and for nodes that want every task in assure's shim.
const delegateEnv = "ASSURE_SHIM_DELEGATE"

// startDeadline bounds asking containerd for the labels at start; past it
// the shim serves the container itself (the safe choice: it supervises
// when the labels say so, and runs plain runc otherwise).
const startDeadline = 3 * time.Second

// Delegate is called with the shim's arguments before the shim library
// runs. For the start of a container that declares no manifest and is
// not part of a CRI pod, it executes runc's own shim in its place with
// the same arguments, standard input and working directory (the bundle),
// so that the container costs what it costs under io.containerd.runc.v2:
// runc's shim daemon serves it, and containerd's later `delete` of this
// binary does what runc's would (the same runc manager, the same bundle
// files). It returns, and this binary serves the container, whenever
// handing over is not known to be right: a CRI container (one shim
// serves the whole pod, and a later container of the pod may declare
// rescue points), labels that cannot be read, no runc shim on PATH.
// It returns why it kept the container.
func Delegate(args []string) (kept string) {
	if len(args) < 2 || args[len(args)-1] != "start" {
		return "not a start"
	}
	if os.Getenv(delegateEnv) == "off" {
		return delegateEnv + "=off"
	}
	ns, address, id, err := startFlags(args[1 : len(args)-1])
	if err != nil {
		return err.Error()
	}
	path, reason := delegateTarget(".", ns, address, id)
	if path == "" {
		return reason
	}
	argv := append([]string{path}, args[1:]...)
	err = unix.Exec(path, argv, os.Environ())
	return fmt.Sprintf("exec %s: %v", path, err)
}

// delegateTarget returns runc's shim when container id, whose bundle is
// at bundle, has nothing to supervise, else "" and why not.
func delegateTarget(bundle, ns, address, id string) (string, string) {
	spec, err := oci.SpecFromBundle(bundle)
	if err != nil {
		return "", err.Error()
	}
	for k := range spec.Annotations {
		if strings.HasPrefix(k, "io.kubernetes.cri.") {
			return "", "a CRI pod's container"
		}
	}
	if oci.Declares(nil, spec.Annotations) {
		return "", "annotations declare a manifest"
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), startDeadline)
	defer cancel()
	info, err := fetchInfo(ctx, address, id)
	if err != nil {
		return "", err.Error()
	}
	if oci.Declares(info.Labels, nil) || len(info.Learned) > 0 {
		// This binary serves the container: hand what containerd said
		// to its daemon rather than have it ask again while the
		// container is being created.
		writeHandoff(bundle, info)
		if len(info.Learned) > 0 {
			return "", "its image has learned rescue points"
		}
		return "", "labels declare a manifest"
	}
	return runcShim()
}

// runcShim finds runc's shim on PATH, refusing this binary itself.
func runcShim() (string, string) {
	path, err := exec.LookPath(RuncShim)
	if err != nil {
		return "", err.Error()
	}
	self, err := os.Executable()
	if err == nil && sameFile(self, path) {
		return "", RuncShim + " on PATH is this binary"
	}
	return path, ""
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// startFlags reads the flags containerd gives a shim's start command (the
// shim library's own flag set is only defined once it runs).
func startFlags(args []string) (ns, address, id string, err error) {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&ns, "namespace", "", "")
	fs.StringVar(&address, "address", "", "")
	fs.StringVar(&id, "id", "", "")
	fs.String("publish-binary", "", "")
	fs.String("socket", "", "")
	fs.String("bundle", "", "")
	fs.Bool("debug", false, "")
	if err := fs.Parse(args); err != nil {
		return "", "", "", fmt.Errorf("start flags: %w", err)
	}
	if ns == "" || address == "" || id == "" {
		return "", "", "", errors.New("start flags: -namespace, -address or -id missing")
	}
	if !filepath.IsAbs(address) {
		return "", "", "", fmt.Errorf("start flags: containerd address %q is not a path", address)
	}
	return ns, address, id, nil
}
