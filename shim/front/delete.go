package front

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/mount"
	runc "github.com/containerd/go-runc"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/assure-rt/assure/oci"
	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/shim/supcgroup"
)

// daemonMark, in a task's bundle, says that assure's daemon served the
// task: the front wrote it when it handed the start there. The bundle is
// containerd's own directory, made for the task and removed with it.
const daemonMark = "assure-daemon"

// markDaemon records in the bundle (the working directory) that assure's
// daemon serves the task; best effort: without it the deletion is runc's
// shim's, which does the same.
func markDaemon() { os.WriteFile(daemonMark, nil, 0o600) }

// servedByDaemon reports whether the bundle has the mark.
func servedByDaemon() bool {
	_, err := os.Lstat(daemonMark)
	return err == nil
}

// settled reports whether the task whose bundle is path has nothing left
// that runc's shim's deletion would clean: runc keeps no state for it,
// nothing is mounted under its root filesystem, and its shim left no exit
// record (containerd 2.4's shim writes exit.json at the init's exit and
// reports it at deletion: its deletion is then left to it). That is the
// case after every ordinary deletion, where containerd runs the shim's
// `delete` once the shim has deleted the task and exited, and ignores the
// answer; runc's shim's deletion would then only print the response,
// which the front prints itself (deleteTask's), saving that shim's
// start-up. Anything else, a task whose shim died, goes to runc's shim.
func settled(path, ns, id string) bool {
	root, err := optionsRoot(path)
	if err != nil {
		return false
	}
	for _, f := range []string{filepath.Join(root, ns, id), filepath.Join(path, "exit.json")} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			return false
		}
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(path, "rootfs")))
	return err == nil && len(mounts) == 0
}

// respond prints the answer of a deletion of the task whose bundle is
// path: its init's pid, killed (128+SIGKILL), now.
func respond(path string) int {
	pid, err := runc.ReadPidFile(filepath.Join(path, "init.pid"))
	if err != nil {
		warn("failed to read init pid file: %v", err)
	}
	if _, err := os.Stdout.Write(deleteResponse(pid, 128+int(unix.SIGKILL), time.Now())); err != nil {
		return fail(err)
	}
	return 0
}

// bundle is the bundle of the task being deleted: containerd runs the
// shim's delete in a directory beside it.
func (c command) bundle() (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(cwd), c.id), nil
}

// runcRoot is where runc keeps its state unless the runtime options say
// otherwise (containerd's process.RuncRoot).
const runcRoot = "/run/containerd/runc"

// deleteTask deletes a task assure's daemon served, as the shim library
// it is built with does at `delete` (containerd v1.7's runc manager Stop,
// with the same go-runc and mount packages): `runc delete --force`, the
// root filesystem unmounted, and a DeleteResponse on stdout. Done here
// rather than by runc's shim, whose start-up is about 4 ms of every
// container's end; a task of runc's shim is still deleted by runc's shim
// (its version's own deletion, which may differ).
func deleteTask(c command) int {
	path, err := c.bundle()
	if err != nil {
		return fail(err)
	}
	// After an ordinary deletion the daemon has ended the supervisor;
	// after the daemon died it is still there, in cgroups under the
	// container's that would keep runc from removing them.
	stopSupervisor(path, c)
	binary, err := os.ReadFile(filepath.Join(path, "runtime"))
	if err != nil {
		return fail(err)
	}
	root, err := optionsRoot(path)
	if err != nil {
		return fail(err)
	}
	r := &runc.Runc{Command: string(binary), Log: filepath.Join(path, "log.json"), LogFormat: runc.JSON,
		PdeathSignal: unix.SIGKILL, Root: filepath.Join(root, c.ns)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Delete(ctx, c.id, &runc.DeleteOpts{Force: true}); err != nil {
		warn("failed to remove runc container: %v", err)
	}
	if err := mount.UnmountRecursive(filepath.Join(path, "rootfs"), 0); err != nil {
		warn("failed to cleanup rootfs mount: %v", err)
	}
	return respond(path)
}

// remove deletes a task: one of assure's daemon here (deleteTask), one
// of runc's shim here when it is settled, else by runc's shim (or, with
// no runc shim on PATH, by the daemon's library).
func remove(args []string) int {
	c, err := parseCommand(args)
	if servedByDaemon() {
		if err != nil {
			return fail(err)
		}
		return deleteTask(c)
	}
	shim, _ := runcShim()
	if shim == "" {
		if shim, err = daemonBinary(); err != nil {
			return fail(err)
		}
		return execAs(shim, args)
	}
	if err == nil {
		if path, err := c.bundle(); err == nil && settled(path, c.ns, c.id) {
			return respond(path)
		}
	}
	return execAs(shim, args)
}

// stopSupervisor ends the supervisor of task id, if it is still there,
// and removes its cgroups and sockets: what the daemon does at a
// deletion, for a daemon that died. The supervisor is the process in its
// own cgroups (root's, under the container's: nothing else is put
// there), killed through a pidfd so that no reused pid is hit.
func stopSupervisor(bundle string, c command) {
	spec, err := oci.SpecFromBundle(bundle)
	if err != nil {
		return
	}
	dirs := supcgroup.Existing(supcgroup.Of(spec))
	for _, d := range dirs {
		if err := killAll(filepath.Join(d, "cgroup.procs")); err != nil {
			warn("stop the supervisor of %s: %v", c.id, err)
		}
	}
	if err := supcgroup.Remove(dirs); err != nil {
		warn("remove the supervisor's cgroups: %v", err)
	}
	sock := control.SocketPath(c.address, c.ns, c.id)
	os.Remove(sock)
	os.Remove(strings.TrimSuffix(sock, ".sock") + ".exec") // the daemon's exec listener
}

// killAll kills the processes a cgroup.procs file lists and waits for
// their end, at most 5 s each.
func killAll(procs string) error {
	data, err := os.ReadFile(procs)
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		err = kill(pidfd)
		unix.Close(pidfd)
		if err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
	}
	return nil
}

// kill sends SIGKILL to the process of pidfd and waits for its end.
func kill(pidfd int) error {
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 5000)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case n == 0:
			return errors.New("still running 5 s after SIGKILL")
		}
		return nil
	}
}

// optionsRoot is runc's root from the runtime options the task was
// created with (options.json, written by the runc task service).
func optionsRoot(bundle string) (string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "options.json"))
	if errors.Is(err, os.ErrNotExist) {
		return runcRoot, nil
	}
	if err != nil {
		return "", err
	}
	var opts struct {
		Root string `json:"root"`
	}
	if err := json.Unmarshal(data, &opts); err != nil {
		return "", fmt.Errorf("options.json: %w", err)
	}
	if opts.Root == "" {
		return runcRoot, nil
	}
	return opts.Root, nil
}

// deleteResponse encodes containerd.task.v2.DeleteResponse{pid: 1,
// exit_status: 2, exited_at: 3 (a Timestamp: seconds 1, nanos 2)}.
func deleteResponse(pid, status int, at time.Time) []byte {
	var ts []byte
	ts = protowire.AppendTag(ts, 1, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(at.Unix()))
	ts = protowire.AppendTag(ts, 2, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(at.Nanosecond()))
	var b []byte
	if pid > 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(pid))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(status))
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendBytes(b, ts)
}

// warn says what the deletion could not do, as the library's logger
// would (containerd logs a deletion's stderr as its warnings).
func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "level=warning msg=%q\n", fmt.Sprintf(format, args...))
}
