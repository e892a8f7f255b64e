package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/oci"
	"github.com/assure-rt/assure/oci/learned"
	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/shim/containerinfo"
	"github.com/assure-rt/assure/shim/supcgroup"
)

// criContainerType is the annotation containerd's CRI plugin sets to
// "sandbox" or "container".
const criContainerType = "io.kubernetes.cri.container-type"

// supervised is a container whose tasks run under a supervisor.
type supervised struct {
	id, ns, bundle   string
	cgroup           string   // the container's cgroup path, "" if unknown
	manifest, events string   // files
	socket           string   // the supervisor's control socket
	cgroups          []string // the supervisor's own (see supcgroup.Make)
	log              *logrus.Entry
	cmd              *exec.Cmd
	client           *control.Client
	gate             *os.File   // the write end of the supervisor's gate, until released
	execs            *execWatch // the seccomp listener that sees exec calls, or nil
	// mu guards cmd, exited and client, which a restart replaces while
	// the exec listener and Start read them (peer).
	mu       sync.Mutex
	exited   <-chan struct{}
	stopping bool // set under state.mu when the task is deleted
	// fwd forwards the events of every supervisor the container has
	// had, once each; closing fwdStop makes it read what is left and
	// return, closing fwdDone.
	fwd              *forwarder
	fwdStop, fwdDone chan struct{}
	// noManifest: only the image's learned rescue points are armed.
	noManifest bool
	// image and digest are the container's image record and its
	// target; learnt what the record's learned labels said at creation
	// (learn.go).
	image, digest string
	learnt        learned.Set
	remembered    map[string]bool // learned labels known to be on the record
}

type state struct {
	mu         sync.Mutex
	containers map[string]*supervised
}

// Create creates the task as runc's shim does; when the image declares
// rescue points, the container's seccomp profile first lets the
// supervisor's injected system calls through, and the init process is
// handed to a supervisor before `runc start` lets it run.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	spec, err := oci.SpecFromBundle(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if spec.Annotations[criContainerType] == "sandbox" {
		// A pod's sandbox (pause) container. CRI gives it the pod's
		// annotations too, a manifest among them, which is for the
		// pod's containers.
		return s.TaskService.Create(ctx, r)
	}
	// A container of the pod that crashed a moment ago may have taught
	// the image something its forwarder has not written yet.
	s.flushLearned()
	info, err := s.info(ctx, r.ID, r.Bundle)
	if err != nil {
		log.G(ctx).WithError(err).Warn("assure: no image labels; only annotations can declare rescue points")
		info = &containerinfo.Info{}
	}
	labels := info.Labels
	// Labels that name a file are read once the root filesystem is
	// mounted (by runc's Create); an inline manifest is checked now.
	rootfs := filepath.Join(r.Bundle, "rootfs")
	fromFile := oci.NeedsRootfs(labels, spec.Annotations)
	var found *oci.Found
	if !fromFile {
		if found, err = oci.FindManifest(labels, spec.Annotations, rootfs); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
		}
		if found == nil && len(info.Learned) == 0 {
			log.G(ctx).Infof("assure: container %s declares no rescue points: running as plain runc, no supervisor", r.ID)
			return s.TaskService.Create(ctx, r)
		}
	}
	sv := s.newSupervised(ctx, r, spec)
	sv.noManifest = !fromFile && found == nil
	sv.image, sv.digest = info.Image, info.Digest
	sv.learnt = learned.Of(info.Learned, info.Digest)
	added := oci.AllowInjectedSyscalls(spec)
	if len(added) > 0 {
		log.G(ctx).Infof("assure: seccomp profile of %s now allows %v (injected by the supervisor)", r.ID, added)
	}
	watchExecs := oci.NotifyExecs(spec, sv.execSocket())
	if len(added) > 0 || watchExecs {
		if err := oci.WriteSpec(r.Bundle, spec); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	if watchExecs {
		if err := sv.watchExecs(); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	} else {
		log.G(ctx).Warnf("assure: the seccomp profile of %s keeps exec calls from being watched: processes started with exec are supervised only once they run", r.ID)
	}
	// The supervisor process starts while runc creates the container;
	// it waits at its gate until the container's cgroups and the
	// manifest are there.
	if err := sv.spawn(); err != nil {
		sv.abort()
		return nil, errdefs.ToGRPC(err)
	}
	resp, err := s.TaskService.Create(ctx, r)
	if err != nil {
		sv.abort()
		return nil, err
	}
	if fromFile {
		found, err = oci.FindManifest(labels, spec.Annotations, rootfs)
	}
	if err == nil && found != nil {
		err = found.CheckBinaries(rootfs)
	}
	if err == nil {
		err = s.superviseInit(sv, found, int(resp.Pid))
	} else {
		sv.abort()
	}
	if err != nil {
		s.undoCreate(ctx, r.ID)
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
	}
	return resp, nil
}

// undoCreate removes a task whose supervision could not be set up: its
// init is still waiting on the exec fifo and never ran the program.
func (s *service) undoCreate(ctx context.Context, id string) {
	s.TaskService.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
	s.TaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: id})
}

// newSupervised describes the supervision of the container being
// created.
func (s *service) newSupervised(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) *supervised {
	ns, _ := namespaces.Namespace(ctx)
	return &supervised{
		id: r.ID, ns: ns, bundle: r.Bundle, cgroup: supcgroup.Of(spec),
		manifest: filepath.Join(r.Bundle, "assure-manifest.json"),
		events:   events.ContainerFile(s.address, ns, r.ID),
		socket:   control.SocketPath(s.address, ns, r.ID),
		log:      log.G(ctx).WithField("container", r.ID),
	}
}

// superviseInit lets the supervisor started at the container's creation
// go on, with the manifest found, and hands it the init process, still
// waiting on its exec fifo.
func (s *service) superviseInit(sv *supervised, found *oci.Found, pid int) error {
	var err error
	if found != nil {
		var data []byte
		if data, err = found.Manifest.JSON(); err == nil {
			err = os.WriteFile(sv.manifest, data, 0o600)
		}
	}
	if err == nil {
		events.Remove(sv.events) // a new task: the events of an old one with this id go
		err = sv.handLearned()
	}
	if err == nil {
		sv.cgroups, err = supcgroup.Make(sv.cgroup)
	}
	if err != nil {
		sv.abort()
		return err
	}
	if err := sv.release(); err != nil {
		return sv.fail(found, err)
	}
	if err := sv.client.Adopt(pid, true); err != nil {
		return sv.fail(found, fmt.Errorf("supervise init %d of %s: %w", pid, sv.id, err))
	}
	sv.fwd = &forwarder{path: sv.events, log: sv.log, publish: s.publishFunc(sv.ns), learned: func(e events.Event) { s.remember(sv, e) }}
	sv.fwdStop, sv.fwdDone = make(chan struct{}), make(chan struct{})
	go sv.fwd.run(sv.fwdStop, sv.fwdDone)
	source := "learned labels of image " + sv.image
	if found != nil {
		source = found.Source
	}
	sv.log.Infof("assure: container %s: supervisor %d supervises init %d (rescue points from %s; %d learned)", sv.id, sv.cmd.Process.Pid, pid, source, len(sv.learnt.Entries))
	s.st.mu.Lock()
	s.st.containers[sv.id] = sv
	s.st.mu.Unlock()
	go s.watch(sv)
	return nil
}

// launch starts a supervisor and connects to it at once (a restart).
func (sv *supervised) launch() error {
	if err := sv.spawn(); err != nil {
		return err
	}
	if err := sv.release(); err != nil {
		return sv.fail(nil, err)
	}
	return nil
}

// spawn starts the supervisor process, which waits at its gate (fd 3)
// until release. The shim makes the control socket and hands the
// supervisor its listening fd (fd 4): the shim can connect at once, with
// no wait for the socket to appear.
func (sv *supervised) spawn() error {
	bin, err := assureBinary()
	if err != nil {
		return err
	}
	lf, err := listenFile(sv.socket)
	if err != nil {
		return err
	}
	defer lf.Close()
	args := []string{"supervise", "--gate", "--events", sv.events, "--container", sv.id,
		"--namespace", sv.ns, "--socket-fd", "4", "--root", filepath.Join(sv.bundle, "rootfs"), "--learned", sv.learnedFile()}
	if !sv.noManifest {
		args = append(args, "--manifest", sv.manifest)
	}
	if sv.cgroup != "" {
		// Every pid handed over must be in the container's cgroup: a
		// recycled pid never leads the supervisor outside.
		args = append(args, "--cgroup", sv.cgroup)
	}
	gate, release, err := os.Pipe()
	if err != nil {
		return err
	}
	defer gate.Close()
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{gate, lf}
	logf, err := os.OpenFile(sv.logPath(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		release.Close()
		return err
	}
	// A file, not a pipe: the supervisor must not depend on the shim
	// reading its output (a Go program dies of SIGPIPE on stderr).
	cmd.Stdout, cmd.Stderr = logf, logf
	defer logf.Close()
	if err := cmd.Start(); err != nil {
		release.Close()
		return fmt.Errorf("start supervisor %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	sv.mu.Lock()
	sv.cmd, sv.exited, sv.gate, sv.client = cmd, exited, release, nil
	sv.mu.Unlock()
	return nil
}

// release opens the supervisor's gate: it joins its cgroups (the
// container's exist by now) before it reads anything, then serves; the
// shim connects.
func (sv *supervised) release() error {
	var msg strings.Builder
	for _, d := range sv.cgroups {
		fmt.Fprintf(&msg, "join %s\n", d)
	}
	msg.WriteString("go\n")
	_, err := sv.gate.WriteString(msg.String())
	sv.gate.Close()
	sv.gate = nil
	if err != nil {
		return fmt.Errorf("supervisor gate: %w", err)
	}
	// The socket listens already (spawn): the connection waits in its
	// backlog until the supervisor serves.
	c, err := control.Dial(sv.socket, 0)
	sv.mu.Lock()
	sv.client = c
	sv.mu.Unlock()
	return err
}

// peer is the current supervisor: its client (nil while there is none)
// and its pid.
func (sv *supervised) peer() (*control.Client, int) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return sv.client, 0
	}
	return sv.client, sv.cmd.Process.Pid
}

// listenFile makes the unix socket a supervisor serves on and returns its
// listening fd as a file (root only: the directory is 0700).
func listenFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	os.Remove(path) // a supervisor killed before
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer l.Close()
	l.SetUnlinkOnClose(false) // the supervisor serves it; stopSupervisor removes it
	os.Chmod(path, 0o600)
	return l.File()
}

// abort ends a supervisor whose container will not be supervised: closed
// at its gate, it exits without a word.
func (sv *supervised) abort() {
	if sv.execs != nil {
		sv.execs.close()
		sv.execs = nil
	}
	if sv.gate != nil {
		sv.gate.Close()
		sv.gate = nil
	}
	if sv.cmd != nil {
		sv.cmd.Process.Kill()
		<-sv.exited
	}
	os.Remove(sv.socket)
	supcgroup.Remove(sv.cgroups)
}

func (sv *supervised) logPath() string { return filepath.Join(sv.bundle, "assure-supervisor.log") }

// fail stops a supervisor that could not be set up and explains why: the
// supervisor checks the manifest against the image's binaries (a function
// that does not exist, say) and says why it stopped.
func (sv *supervised) fail(found *oci.Found, err error) error {
	sv.abort()
	out, _ := os.ReadFile(sv.logPath())
	msg := strings.TrimSpace(strings.TrimPrefix(string(out), "assure: "))
	// The manifest file is the shim's copy: name the label instead.
	msg = strings.TrimPrefix(msg, "manifest "+sv.manifest+": ")
	switch {
	case msg == "" && found != nil:
		return fmt.Errorf("%s: %w", found.Source, err)
	case msg == "":
		return err
	case found != nil:
		return fmt.Errorf("%s: %s", found.Source, msg)
	}
	return errors.New(msg)
}

// watch restarts the supervisor if it dies while the container's task
// runs: the kernel detached its tracees, so the new one adopts every
// process of the container again (breakpoints the dead one left are
// recognised: their original bytes come from the files). A task that is
// no longer running gets no new supervisor.
func (s *service) watch(sv *supervised) {
	for {
		<-sv.exited
		s.st.mu.Lock()
		live := s.st.containers[sv.id] == sv && !sv.stopping
		s.st.mu.Unlock()
		if !live {
			return
		}
		ctx := namespaces.WithNamespace(context.Background(), sv.ns)
		if st, err := s.TaskService.State(ctx, &taskAPI.StateRequest{ID: sv.id}); err != nil || !taskLive(st.Status) {
			sv.log.Infof("assure: container %s: supervisor %d exited; the task is not running (%v): no new supervisor", sv.id, sv.cmd.Process.Pid, statusOf(st, err))
			return
		}
		sv.log.Errorf("assure: container %s: supervisor %d died; starting a new one", sv.id, sv.cmd.Process.Pid)
		if err := sv.launch(); err != nil {
			sv.log.WithError(err).Errorf("assure: container %s runs unsupervised", sv.id)
			return
		}
		s.st.mu.Lock()
		stopped := sv.stopping
		s.st.mu.Unlock()
		if stopped { // the task was deleted meanwhile
			sv.abort()
			return
		}
		pids, err := s.TaskService.Pids(ctx, &taskAPI.PidsRequest{ID: sv.id})
		if err != nil {
			sv.log.WithError(err).Errorf("assure: container %s: list its processes", sv.id)
			continue
		}
		adopted := 0
		for _, p := range pids.Processes {
			if err := sv.client.Adopt(int(p.Pid), false); err != nil {
				sv.log.WithError(err).Errorf("assure: container %s: process %d runs unsupervised", sv.id, p.Pid)
				continue
			}
			adopted++
		}
		switch {
		case adopted == 0:
			sv.log.Warnf("assure: container %s: supervisor %d started, but no process of the container could be re-attached (%d listed)", sv.id, sv.cmd.Process.Pid, len(pids.Processes))
		default:
			sv.log.Infof("assure: container %s: supervisor %d re-attached to %d of %d processes", sv.id, sv.cmd.Process.Pid, adopted, len(pids.Processes))
		}
	}
}

// taskLive: a task whose processes may still run.
func taskLive(st task.Status) bool {
	return st == task.Status_RUNNING || st == task.Status_PAUSED || st == task.Status_PAUSING
}

func statusOf(st *taskAPI.StateResponse, err error) string {
	if err != nil {
		return err.Error()
	}
	return strings.ToLower(st.Status.String())
}

// assureBinary finds the assure command next to the shim, else on PATH.
func assureBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "assure")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("assure")
	if err != nil {
		return "", fmt.Errorf("the assure command is neither next to the shim nor on PATH: %w", err)
	}
	return p, nil
}

// Delete stops the container's supervisor with the task: before runc
// deletes the container, whose cgroups must be empty by then (the
// supervisor's are children of the container's), unless the task still
// runs and the deletion is bound to fail.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	if r.ExecID != "" {
		return s.TaskService.Delete(ctx, r)
	}
	if st, err := s.TaskService.State(ctx, &taskAPI.StateRequest{ID: r.ID}); err == nil && !taskLive(st.Status) {
		s.stopSupervisor(r.ID)
	}
	resp, err := s.TaskService.Delete(ctx, r)
	if err == nil {
		s.stopSupervisor(r.ID)
	}
	return resp, err
}

// stopSupervisor ends the supervisor of container id, if it has one,
// forwards its last events and removes its cgroups and sockets. The
// task's processes are gone by then (its deletion comes after it stopped,
// and runc kills what is left of it): there is nothing to detach from,
// so the supervisor is killed rather than asked to detach and exit,
// which is slower (its tracer thread must be woken from wait4).
func (s *service) stopSupervisor(id string) {
	s.st.mu.Lock()
	sv := s.st.containers[id]
	if sv != nil {
		sv.stopping = true
	}
	delete(s.st.containers, id)
	s.st.mu.Unlock()
	if sv == nil {
		return
	}
	sv.mu.Lock()
	c, cmd, exited := sv.client, sv.cmd, sv.exited
	sv.mu.Unlock()
	if c != nil { // nil when a restart failed
		c.Close()
	}
	cmd.Process.Kill()
	<-exited
	close(sv.fwdStop)
	<-sv.fwdDone
	os.Remove(sv.socket) // left by a supervisor that was killed
	if sv.execs != nil {
		sv.execs.close()
	}
	if err := supcgroup.Remove(sv.cgroups); err != nil {
		sv.log.WithError(err).Warnf("assure: container %s: remove the supervisor's cgroups", id)
	}
}

// Start starts a task as runc's shim does. A process started with
// `ctr task exec` in a supervised container has been handed to its
// supervisor at its execve already (execWatch); it is handed over here
// too, for a container whose seccomp profile kept exec calls from being
// watched (the supervisor ignores a process it has).
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	resp, err := s.TaskService.Start(ctx, r)
	if err != nil || r.ExecID == "" {
		return resp, err
	}
	s.st.mu.Lock()
	sv := s.st.containers[r.ID]
	s.st.mu.Unlock()
	if sv == nil {
		return resp, nil
	}
	c, _ := sv.peer()
	if c == nil {
		return resp, nil
	}
	if err := c.Adopt(int(resp.Pid), false); err != nil {
		log.G(ctx).WithError(err).Errorf("assure: exec %s of %s (pid %d) runs unsupervised", r.ExecID, r.ID, resp.Pid)
	} else {
		log.G(ctx).Infof("assure: exec %s of %s (pid %d) supervised", r.ExecID, r.ID, resp.Pid)
	}
	return resp, nil
}

// execSocket is where the shim listens for the seccomp notifications of
// the container's exec calls: next to the control socket, as short.
func (sv *supervised) execSocket() string {
	return strings.TrimSuffix(sv.socket, ".sock") + ".exec"
}

// watchExecs starts the container's seccomp listener: a process that
// calls exec untraced (one runc exec started) is handed to the
// supervisor first.
func (sv *supervised) watchExecs() error {
	w, err := newExecWatch(sv.execSocket(), func(pid int) {
		c, _ := sv.peer()
		if c == nil {
			return // no supervisor right now: the restart adopts everything
		}
		if err := c.Adopt(pid, true); err != nil {
			sv.log.WithError(err).Warnf("assure: container %s: process %d runs unsupervised", sv.id, pid)
		}
	}, func(pid int) bool {
		_, sup := sv.peer()
		st, err := procfs.ReadStatus(pid)
		if err != nil || st.TracerPid == 0 || sup == 0 {
			return false
		}
		tracer, err := procfs.ReadStatus(st.TracerPid) // a thread of the supervisor
		return err == nil && tracer.Tgid == sup
	})
	sv.execs = w
	return err
}
