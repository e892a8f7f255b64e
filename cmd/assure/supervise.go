package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// superviseCommand is the supervisor process a container shim starts: it
// serves the control protocol on a socket and supervises the processes
// the shim hands it. Hidden: users run `assure run` or `attach`.
func superviseCommand() *cli.Command {
	return &cli.Command{
		Name:      "supervise",
		Hidden:    true,
		Usage:     "serve a container's supervisor on a control socket (used by the shim)",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "manifest", Usage: "rescue-point manifest (JSON, version 1); none: only --learned's"}, eventsFlag,
			&cli.StringFlag{Name: "learned", Usage: "arm the rescue points of `FILE` (the image's learned ones) when they resolve, and add those crashes teach"},
			&cli.StringFlag{Name: "socket", Usage: "control socket to create"},
			&cli.IntFlag{Name: "socket-fd", Usage: "serve on this listening unix socket `FD` instead (the shim's)"},
			&cli.StringFlag{Name: "root", Usage: "root filesystem the manifest's paths are resolved in", Value: "/"},
			&cli.StringFlag{Name: "cgroup", Usage: "refuse processes outside this cgroup (path as in /proc/PID/cgroup)"},
			&cli.StringFlag{Name: "container", Usage: "container id stamped on the events"},
			&cli.StringFlag{Name: "namespace", Usage: "containerd namespace of the container, for metrics"},
			&cli.BoolFlag{Name: "gate", Usage: "wait on fd 3 for the shim's go-ahead (and the cgroups to join) before reading anything"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("gate") {
				if err := passGate(os.NewFile(3, "gate")); err != nil {
					return err
				}
			}
			sup, closeEvents, err := newContainerSupervisor(c, c.String("root"), c.String("container"))
			if err != nil {
				return err
			}
			defer closeEvents()
			l, err := controlListener(c.String("socket"), c.Int("socket-fd"))
			if err != nil {
				return cli.Exit(fmt.Sprintf("supervise: %v", err), 1)
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
			go func() {
				<-sigs
				sup.Stop()
			}()
			served := make(chan error, 1)
			go func() { served <- sup.Serve(supervisor.ServeConfig{Cgroup: c.String("cgroup")}) }()
			h := &containerHandler{Supervisor: sup, armer: armer{sup: sup, root: c.String("root")},
				namespace: c.String("namespace"), container: c.String("container")}
			go control.Serve(l, h)
			if err := <-served; err != nil {
				return cli.Exit(fmt.Sprintf("supervise: %v", err), 1)
			}
			l.Close()
			return nil
		},
	}
}

// containerHandler answers the control protocol for a container's
// supervisor; metrics say which container they are of.
type containerHandler struct {
	*supervisor.Supervisor
	armer
	namespace, container string
}

func (h *containerHandler) Metrics() any {
	m := h.MetricsSnapshot()
	m.Namespace, m.Container, m.Supervisor = h.namespace, h.container, os.Getpid()
	return m
}

// passGate waits at the shim's gate: the shim starts the supervisor while
// runc creates the container, then writes "join DIR" for each cgroup the
// supervisor is to be charged to (the container's exist only once runc
// has created it) and "go". They are joined first of all, so that what
// the supervisor allocates from then on (the parsed binaries, the shadow
// copies) is the container's. A gate closed before "go" (the creation
// failed) makes the supervisor exit without a word.
func passGate(gate *os.File) error {
	defer gate.Close()
	sc := bufio.NewScanner(gate)
	for sc.Scan() {
		line := sc.Text()
		if line == "go" {
			return nil
		}
		dir, ok := strings.CutPrefix(line, "join ")
		if !ok {
			return cli.Exit(fmt.Sprintf("supervise: gate: unexpected %q", line), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return cli.Exit(fmt.Sprintf("supervise: join cgroup %s: %v", dir, err), 1)
		}
	}
	return cli.Exit("", 0)
}

// controlListener is the listening socket of the control protocol: one
// handed over as an fd, or a new one at path (root only), removed when
// the listener is closed.
func controlListener(path string, fd int) (net.Listener, error) {
	if fd > 0 {
		return net.FileListener(os.NewFile(uintptr(fd), "control"))
	}
	if path == "" {
		return nil, errors.New("give --socket or --socket-fd")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	os.Chmod(path, 0o600)
	return l, nil
}
