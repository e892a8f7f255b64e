package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// armer carries out the control socket's "arm" and "disarm" for a
// supervisor whose binaries are under root. The manifest is checked as
// `assure manifest validate` checks it, against those binaries, before
// anything is armed: it may come from an untrusted image.
type armer struct {
	sup  *supervisor.Supervisor
	root string
}

func (a armer) ArmManifest(data []byte) error {
	m, err := manifest.Parse(data)
	if err != nil {
		return err
	}
	var log bytes.Buffer
	if _, _, err := checkManifest(&log, m, "(armed)", a.root); err != nil {
		return fmt.Errorf("%s%v", log.String(), err)
	}
	return a.sup.Arm(m)
}

func (a armer) DisarmManifest(data []byte) error {
	m, err := manifest.Parse(data)
	if err != nil {
		return err
	}
	return a.sup.Disarm(m)
}

// armCommand and disarmCommand change the rescue points of a running
// supervisor: a container's (--address, --namespace, CONTAINER) or that
// of `assure run --control SOCK`.
func armCommand(disarm bool) *cli.Command {
	name, usage := "arm", "add a manifest's rescue points to a running container or `assure run --control`, without a restart"
	if disarm {
		name, usage = "disarm", "take a manifest's rescue points out of a running container or `assure run --control` (every patched byte restored)"
	}
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "[CONTAINER] MANIFEST",
		Flags: append(containerdFlags(),
			&cli.StringFlag{Name: "control", Usage: "the control socket of `assure run --control` (instead of a container)"}),
		Action: func(c *cli.Context) error {
			sock, file, err := armTarget(c)
			if err != nil {
				return err
			}
			// Checked here for a clear message; the supervisor checks it
			// again against the binaries it supervises.
			if _, err := manifest.Load(file); err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", name, err), 1)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", name, err), 1)
			}
			if c.String("control") == "" {
				if err := containerSupervised(c, sock); err != nil {
					return cli.Exit(fmt.Sprintf("%s: %v", name, err), 1)
				}
			}
			cl, err := control.Dial(sock, 5*time.Second)
			if err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", name, err), 1)
			}
			defer cl.Close()
			cl.SetDeadline(time.Now().Add(time.Minute))
			do := cl.Arm
			if disarm {
				do = cl.Disarm
			}
			if err := do(data); err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", name, err), 1)
			}
			return nil
		},
	}
}

// armTarget returns the control socket and the manifest file.
func armTarget(c *cli.Context) (string, string, error) {
	if sock := c.String("control"); sock != "" {
		if c.NArg() != 1 {
			return "", "", cli.Exit(c.Command.Name+": with --control, expected MANIFEST", 2)
		}
		return sock, c.Args().First(), nil
	}
	if c.NArg() != 2 {
		return "", "", cli.Exit(c.Command.Name+": expected CONTAINER MANIFEST (or --control SOCK MANIFEST)", 2)
	}
	return control.SocketPath(c.String("address"), c.String("namespace"), c.Args().First()), c.Args().Get(1), nil
}

// containerSupervised says why container CONTAINER has no supervisor to
// arm when its control socket sock is not there.
func containerSupervised(c *cli.Context, sock string) error {
	if _, err := os.Stat(sock); err == nil {
		return nil
	}
	id, ns := c.Args().First(), c.String("namespace")
	if _, err := containerInit(c.String("address"), ns, id); err != nil {
		return err
	}
	return fmt.Errorf("container %s in namespace %s runs without a supervisor: it was started without a manifest (its image declares no rescue points and learned none), so runc's shim serves it; "+
		"start it with the runtime io.containerd.assure.v1 and a manifest (label or annotation dev.assure.manifest; one with only \"heal\" arms nothing until a crash), then arm it", id, ns)
}

// runHandler answers the control protocol for `assure run --control`
// and `assure attach --control`.
type runHandler struct {
	armer
}

func (h runHandler) Adopt(int, bool) error {
	return errors.New("adopt: only a container's supervisor adopts processes")
}
func (h runHandler) Metrics() any { return h.sup.MetricsSnapshot() }
func (h runHandler) Stop()        { h.sup.Stop() }

// serveControl listens on sock (only root, or whoever runs assure, may
// connect: mode 0600) and serves the control protocol for sup, whose
// binaries are under root; the function returned closes and removes the
// socket.
func serveControl(sup *supervisor.Supervisor, sock, root string) (func(), error) {
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(sock) // a socket an earlier run left
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", sock)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	go control.Serve(l, runHandler{armer{sup: sup, root: root}})
	return func() { l.Close(); os.Remove(sock) }, nil
}
