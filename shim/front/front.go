// Package front is the binary containerd runs as the runtime's shim,
// containerd-shim-assure-v1. containerd executes it at least twice per
// container, for `start` and for `delete`, and waits for each: it must
// start as fast as a Go program can. It therefore links neither grpc-go
// nor containerd's shim library (they double its start-up, 4 to 8 ms here) and
// only decides who does the work:
//   - start: runc's own shim when the container has nothing to supervise,
//     else assure's shim daemon (the assure-shim binary, which serves the
//     task through containerd's shim library), started here (daemon.go);
//   - delete: done here for a task assure's daemon served (delete.go: runc
//     delete --force, unmount the root filesystem, what the daemon's shim
//     library does); for one of runc's shim, answered here when nothing is
//     left to clean (delete.go's settled), else by runc's shim;
//   - -info (containerd 2.x) is answered here;
//   - anything else goes to assure-shim.
package front

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

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/assure-rt/assure/oci"
	"github.com/assure-rt/assure/shim/containerinfo"
	"github.com/assure-rt/assure/shim/pbwire"
)

// RuntimeName is the runtime type containerd knows the shim by.
const RuntimeName = "io.containerd.assure.v1"

// Version is the shim's version, reported to containerd 2.x's -info.
var Version = "v1"

// RuncShim is the binary a container with nothing to supervise is handed
// to at start, and every deletion.
const RuncShim = "containerd-shim-runc-v2"

// Daemon is assure's shim daemon, looked for next to this binary first.
const Daemon = "assure-shim"

// delegateEnv turns the hand-over to runc's shim off ("off"), for
// side-by-side measurement and for nodes that want every task in
// assure's shim.
const delegateEnv = "ASSURE_SHIM_DELEGATE"

// startDeadline bounds asking containerd for the labels at start; past it
// assure's daemon serves the container (the safe choice: it supervises
// when the labels say so, and runs plain runc otherwise).
const startDeadline = 3 * time.Second

// Main runs the shim binary with args (os.Args) and returns its exit
// status; a command handed to another binary does not return.
func Main(args []string) int {
	if len(args) == 2 && (args[1] == "-info" || args[1] == "--info") {
		return writeInfo()
	}
	switch action(args) {
	case "start":
		return start(args)
	case "delete":
		return remove(args)
	}
	daemon, err := daemonBinary()
	if err != nil {
		return fail(err)
	}
	return execAs(daemon, args)
}

// writeInfo answers -info with a containerd.types.RuntimeInfo{name: 1,
// version: 2 {version: 1}}: no runc features and no annotations, which
// containerd reads as "nothing special" (without an answer it would ask
// again at every task creation and log an error each time).
func writeInfo() int {
	b := pbwire.String(1, RuntimeName)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, pbwire.String(1, Version))
	if _, err := os.Stdout.Write(b); err != nil {
		return fail(err)
	}
	return 0
}

// start hands the container to runc's shim, or starts assure's daemon
// for it and answers containerd with the daemon's address.
func start(args []string) int {
	c, err := parseCommand(args)
	if err != nil {
		return fail(err)
	}
	path, reason, spec := startTarget(".", c)
	if path != "" {
		return execAs(path, args)
	}
	if spec == nil {
		return fail(errors.New(reason))
	}
	daemon, err := daemonBinary()
	if err != nil {
		return fail(err)
	}
	markDaemon()
	addr, done, err := startDaemon(daemon, c, spec)
	switch {
	case err != nil:
		return fail(err)
	case !done:
		return execAs(daemon, args) // the shim library's own start
	}
	if _, err := os.Stdout.WriteString(addr); err != nil {
		return fail(err)
	}
	return 0
}

// execAs executes path in this process's place with the same arguments.
func execAs(path string, args []string) int {
	argv := append([]string{path}, args[1:]...)
	return fail(fmt.Errorf("exec %s: %w", path, unix.Exec(path, argv, os.Environ())))
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "containerd-shim-assure-v1: %v\n", err)
	return 1
}

// action is the shim command containerd asks for: the last argument.
func action(args []string) string {
	if len(args) < 2 {
		return ""
	}
	return args[len(args)-1]
}

// startTarget returns runc's shim when the container being started,
// whose bundle is bundle, has nothing to supervise and is not part of a
// CRI pod, else "" (assure's daemon serves it) and why; and the bundle's
// spec (nil if it does not read). Handing over is done whenever it is
// not known to be wrong: a CRI container stays (one shim serves the whole
// pod, and a later container of the pod may declare rescue points), and
// so does one whose labels cannot be read, or when runc's shim is not on
// PATH. What containerd said of a container the daemon serves is left in
// the bundle for it (containerinfo.Write).
func startTarget(bundle string, c command) (path, reason string, spec *specs.Spec) {
	spec, err := oci.SpecFromBundle(bundle)
	if err != nil {
		return "", err.Error(), nil
	}
	path, reason = delegateTarget(bundle, c, spec)
	return path, reason, spec
}

// delegateTarget decides for the container of spec.
func delegateTarget(bundle string, c command, spec *specs.Spec) (string, string) {
	if os.Getenv(delegateEnv) == "off" {
		return "", delegateEnv + "=off"
	}
	for k := range spec.Annotations {
		if strings.HasPrefix(k, "io.kubernetes.cri.") {
			return "", "a CRI pod's container"
		}
	}
	if oci.Declares(nil, spec.Annotations) {
		return "", "annotations declare a manifest"
	}
	ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
	defer cancel()
	info, err := containerinfo.Fetch(ctx, c.address, c.ns, c.id)
	if err != nil {
		return "", err.Error()
	}
	if oci.Declares(info.Labels, nil) || len(info.Learned) > 0 {
		// The daemon serves the container: hand it what containerd
		// said rather than have it ask again while the container is
		// being created.
		containerinfo.Write(bundle, info)
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

// daemonBinary finds assure-shim next to this binary, else on PATH.
func daemonBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), Daemon)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(Daemon)
	if err != nil {
		return "", fmt.Errorf("assure's shim daemon %s is neither next to this binary nor on PATH (install both, see README)", Daemon)
	}
	return p, nil
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// command is what containerd asks of the shim binary: the flags of
// containerd's shim library (which this binary does not link), the same
// for start and delete.
type command struct {
	ns, address, id string
	debug           bool
}

// parseCommand reads the flags of args (os.Args: the action comes last).
func parseCommand(args []string) (command, error) {
	var c command
	if len(args) < 2 {
		return c, errors.New("shim flags: no command")
	}
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.ns, "namespace", "", "")
	fs.StringVar(&c.address, "address", "", "")
	fs.StringVar(&c.id, "id", "", "")
	fs.String("publish-binary", "", "")
	fs.String("socket", "", "")
	fs.String("bundle", "", "")
	fs.BoolVar(&c.debug, "debug", false, "")
	if err := fs.Parse(args[1 : len(args)-1]); err != nil {
		return c, fmt.Errorf("shim flags: %w", err)
	}
	if c.ns == "" || c.address == "" || c.id == "" {
		return c, errors.New("shim flags: -namespace, -address or -id missing")
	}
	if !filepath.IsAbs(c.address) {
		return c, fmt.Errorf("shim flags: containerd address %q is not a path", c.address)
	}
	return c, nil
}
