package front

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/pkg/atomicfile"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/shim/pbwire"
)

// startDaemon does for assure-shim what containerd's shim library
// (v1.7, which assure-shim is built with: runtime/v2/runc/manager's Start
// and runtime/v2/shim's socket helpers) does at `start`: it makes the
// task's socket, starts the daemon serving it on fd 3 and answers
// containerd with its address. Done here, the 20 MB daemon binary starts
// once per container instead of twice (its start command, then the
// daemon), about 8 ms of Go start-up. shim/front's tests check the
// socket's address against the library's own function. It reports
// ok=false, having started nothing, when the start asks for what only
// the library does (a shim cgroup among the runtime options, core
// scheduling): stdin, which it has read, is then handed on in a memfd.
func startDaemon(daemon string, c command, spec *specs.Spec) (addr string, ok bool, err error) {
	opts, err := io.ReadAll(os.Stdin)
	if err != nil {
		return "", true, fmt.Errorf("read the runtime options: %w", err)
	}
	if os.Getenv("SCHED_CORE") != "" || shimCgroup(opts) != "" {
		return "", false, restoreStdin(opts)
	}
	addr = socketAddress(c.address, c.ns, group(c.id, spec))
	path := strings.TrimPrefix(addr, "unix://")
	l, err := newSocket(path)
	if errors.Is(err, unix.EADDRINUSE) {
		// The shim of the container's group serves it too.
		if canConnect(path) {
			return addr, true, writeAddress(addr)
		}
		os.Remove(path)
		l, err = newSocket(path)
	}
	if err != nil {
		return "", true, fmt.Errorf("create the shim socket %s: %w", path, err)
	}
	defer l.Close()
	if err := spawnDaemon(daemon, l, addr, c); err != nil {
		os.Remove(path)
		return "", true, err
	}
	return addr, true, nil
}

// group is the shim group of container id: the one its spec's
// annotations name (a CRI pod's sandbox), else the container alone.
func group(id string, spec *specs.Spec) string {
	for _, k := range []string{"io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"} {
		if g, ok := spec.Annotations[k]; ok {
			return g
		}
	}
	return id
}

// spawnDaemon writes the address file and starts the daemon serving l
// (its fd 3), with containerd's OOM score plus one.
func spawnDaemon(daemon string, l *net.UnixListener, addr string, c command) error {
	if err := writeAddress(addr); err != nil {
		return err
	}
	f, err := l.File()
	if err != nil {
		return err
	}
	defer f.Close()
	dargs := []string{"-namespace", c.ns, "-id", c.id, "-address", c.address}
	if c.debug {
		dargs = append(dargs, "-debug")
	}
	cmd := exec.Command(daemon, dargs...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", daemon, err)
	}
	if err := adjustOOMScore(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("set the shim's OOM score: %w", err)
	}
	return nil
}

// socketAddress is the library's shim.SocketAddress: a path under
// containerd's default state directory named by a hash of containerd's
// address, the namespace and the group.
func socketAddress(address, ns, grouping string) string {
	d := sha256.Sum256([]byte(filepath.Join(address, ns, grouping)))
	return fmt.Sprintf("unix://%s/%x", filepath.Join("/run/containerd", "s"), d)
}

func newSocket(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o600); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The daemon serves it once this process is gone: closing the
	// listener here must not remove it.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, err
	}
	return l, nil
}

func canConnect(path string) bool {
	c, err := net.DialTimeout("unix", path, 100*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// writeAddress leaves the address in the bundle's "address" file, which
// containerd and the daemon read, atomically (as the library does, with
// the same package).
func writeAddress(addr string) error {
	f, err := atomicfile.New("address", 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(addr)); err != nil {
		f.Cancel()
		return err
	}
	return f.Close()
}

// adjustOOMScore gives the daemon containerd's OOM score plus one, as the
// library does (containerd is this process's parent).
func adjustOOMScore(pid int) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", os.Getppid()))
	if err != nil {
		return err
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return err
	}
	score = min(max(score+1, -1000), 1000)
	err = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(score)), 0)
	if errors.Is(err, os.ErrPermission) {
		return nil // as the library: not ours to insist on
	}
	return err
}

// shimCgroup returns the shim_cgroup (field 3) of the runc options
// (containerd.runc.v1.Options) in a protobuf Any (type_url 1, value 2).
func shimCgroup(anyMsg []byte) string {
	typeURL, err := pbwire.Bytes(anyMsg, 1)
	if err != nil || !strings.HasSuffix(string(typeURL), "containerd.runc.v1.Options") {
		return ""
	}
	value, err := pbwire.Bytes(anyMsg, 2)
	if err != nil {
		return ""
	}
	cg, err := pbwire.Bytes(value, 3)
	if err != nil {
		return ""
	}
	return string(cg)
}

// restoreStdin makes what was read from stdin stdin again, for the
// library's start command.
func restoreStdin(data []byte) error {
	fd, err := unix.MemfdCreate("runtime-options", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, data); err != nil {
		return err
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return err
	}
	return unix.Dup3(fd, 0, 0)
}
