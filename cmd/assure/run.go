package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

var manifestFlag = &cli.StringFlag{Name: "manifest", Usage: "rescue-point manifest (JSON, version 1)", Required: true}
var eventsFlag = &cli.StringFlag{Name: "events", Usage: "append events as JSON lines to `FILE`"}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a program under rescue-point supervision",
		ArgsUsage: "-- PROGRAM [ARGS...]",
		Description: "The program's stdin, stdout and stderr pass through; assure exits with the program's " +
			"status, or 128+N when signal N killed it.",
		Flags: []cli.Flag{&cli.StringFlag{Name: "manifest", Usage: "rescue-point manifest (JSON, version 1); without one, --control arms them later"}, eventsFlag,
			&cli.StringFlag{Name: "learn", Usage: "with a manifest that heals: arm FILE's rescue points at start when it exists, and write there those crashes teach (a version 1 manifest)"},
			&cli.StringFlag{Name: "control", Usage: "serve the control protocol on this unix socket (mode 0600): assure arm / disarm --control SOCK"}},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return cli.Exit("run: no program given (assure run --manifest FILE -- PROGRAM [ARGS...])", 2)
			}
			if c.String("manifest") == "" && c.String("control") == "" {
				return cli.Exit("run: no rescue points: give --manifest FILE, or --control SOCK to arm them later", 2)
			}
			sup, closeEvents, err := newSupervisor(c, "/")
			if err != nil {
				return err
			}
			defer closeEvents()
			stopControl := func() {}
			if sock := c.String("control"); sock != "" {
				if stopControl, err = serveControl(sup, sock, "/"); err != nil {
					return cli.Exit("run: "+err.Error(), 1)
				}
				defer stopControl()
			}
			self, err := os.Executable()
			if err != nil {
				return cli.Exit(fmt.Sprintf("run: %v", err), 1)
			}
			forwardSignals(sup)
			status, err := sup.Run(self, c.Args().First(), c.Args().Tail())
			if err != nil {
				return cli.Exit("run: "+err.Error(), status)
			}
			closeEvents()
			stopControl() // os.Exit runs no deferred function
			os.Exit(status)
			return nil
		},
	}
}

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "supervise a running process until it exits (SIGINT/SIGTERM detach and leave it running)",
		ArgsUsage: "PID",
		Flags: []cli.Flag{&cli.StringFlag{Name: "manifest", Usage: "rescue-point manifest (JSON, version 1); without one, --control arms them later"}, eventsFlag,
			&cli.StringFlag{Name: "control", Usage: "serve the control protocol on this unix socket (mode 0600): assure arm / disarm --control SOCK"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("attach: want exactly one PID", 2)
			}
			pid, err := strconv.Atoi(c.Args().First())
			if err != nil || pid <= 0 {
				return cli.Exit(fmt.Sprintf("attach: %q is not a process id", c.Args().First()), 2)
			}
			if err := unix.Kill(pid, 0); err != nil {
				return cli.Exit(fmt.Sprintf("attach: process %d: %v", pid, err), 1)
			}
			if c.String("manifest") == "" && c.String("control") == "" {
				return cli.Exit("attach: no rescue points: give --manifest FILE, or --control SOCK to arm them later", 2)
			}
			// Paths in the manifest are as the process sees them.
			root := fmt.Sprintf("/proc/%d/root", pid)
			sup, closeEvents, err := newSupervisor(c, root)
			if err != nil {
				return err
			}
			defer closeEvents()
			if sock := c.String("control"); sock != "" {
				stop, err := serveControl(sup, sock, root)
				if err != nil {
					return cli.Exit("attach: "+err.Error(), 1)
				}
				defer stop()
			}
			ch := make(chan os.Signal, 2)
			signal.Notify(ch, unix.SIGINT, unix.SIGTERM)
			go func() {
				<-ch
				sup.Stop()
			}()
			if err := sup.Attach(pid); err != nil {
				return cli.Exit("attach: "+err.Error(), 1)
			}
			return nil
		},
	}
}

// newSupervisor loads the manifest, resolves its rescue points under root
// before the program starts, and opens the events file.
func newSupervisor(c *cli.Context, root string) (*supervisor.Supervisor, func(), error) {
	return newContainerSupervisor(c, root, "")
}

// newContainerSupervisor is newSupervisor for a container's supervisor:
// its events name the container.
func newContainerSupervisor(c *cli.Context, root, container string) (*supervisor.Supervisor, func(), error) {
	m := manifest.Empty() // assure run --control: armed later
	if file := c.String("manifest"); file != "" {
		var err error
		if m, _, err = resolveManifest(os.Stderr, file, root); err != nil {
			return nil, nil, err
		}
	}
	var (
		jsonOut  io.Writer
		leftover string // what an earlier supervisor died in the middle of
	)
	closeFn := func() {}
	if path := c.String("events"); path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, nil, cli.Exit(fmt.Sprintf("events file: %v", err), 1)
		}
		leftover = events.TakeJournal(path)
		f, err := events.OpenFile(path, 0)
		if err != nil {
			return nil, nil, cli.Exit(err.Error(), 1)
		}
		jsonOut = f
		closeFn = func() { f.Close() }
	}
	sink := events.NewSink(os.Stderr, jsonOut)
	sink.Container = container
	if leftover != "" {
		sink.Emit(events.Event{Type: events.Error, Message: "the previous supervisor died in the middle of a " + leftover +
			": the kernel killed the processes of that rollback (PTRACE_O_EXITKILL) rather than let them run on half rolled back"})
	}
	closeFile := closeFn
	closeFn = func() {
		sink.Flush()
		closeFile()
	}
	cfg := supervisor.Config{Manifest: m, Events: sink, Log: sink.LimitLog(os.Stderr)}
	if file := c.String("learn"); file != "" {
		if err := learnFrom(&cfg, file, root); err != nil {
			closeFn()
			return nil, nil, err
		}
	}
	if file := c.String("learned"); file != "" {
		learnedFrom(&cfg, file, root)
	}
	return supervisor.New(cfg), closeFn, nil
}

// forwardSignals passes termination signals sent to assure on to the
// program, which decides what they mean.
func forwardSignals(sup *supervisor.Supervisor) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	go func() {
		for sig := range ch {
			sup.Forward(sig.(unix.Signal))
		}
	}()
}
