package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/discover"
)

func discoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "discover",
		Usage:     "find a program's rescue points and test them against faults",
		ArgsUsage: "-- PROGRAM [ARGS...] | --pid PID | --address SOCK [--namespace NS] CONTAINER",
		Description: "Runs PROGRAM under supervision and writes a manifest of the rescue points it found and tested, " +
			"with a report on stdout. Candidates come from the program's code (functions whose callers test " +
			"their result; assure candidates lists them); probes on them learn which ones the workload " +
			"reaches; each of those is then armed alone in a fresh instance of the program and made to fault " +
			"partway through a call. A candidate is accepted when the fault is recovered, the program runs " +
			"on, the workload passes again and the program holds no more descriptors, threads or memory " +
			"than before. WORKLOAD (run with sh -c once the program is up, as often as needed) is your own " +
			"client and check: it must exit 0 when the program answered correctly.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "workload", Required: true, Usage: "command (sh -c) that exercises the program and exits 0 when it answered correctly"},
			&cli.StringFlag{Name: "out", Usage: "write the manifest to this file (default: print it after the report)"},
			&cli.DurationFlag{Name: "budget", Value: discoverBudget, Usage: "time for the whole discovery; triage stops taking candidates when it is spent"},
			&cli.StringFlag{Name: "address", Usage: "containerd's socket: discover in the init process of CONTAINER, as with --pid", EnvVars: []string{"CONTAINERD_ADDRESS"}},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "default", Usage: "containerd namespace of CONTAINER", EnvVars: []string{"CONTAINERD_NAMESPACE"}},
			&cli.IntFlag{Name: "pid", Usage: "discover in this running process instead (attached to, never restarted: what a rejected candidate breaks stays broken)"},
			&cli.StringFlag{Name: "log", Usage: "append the program's output to this file (default: a temporary file, removed unless discovery fails)"},
			&cli.BoolFlag{Name: "keep-masked", Usage: "keep accepted candidates whose faulting workload run passed as well (their error return did not reach the client)"},
			&cli.BoolFlag{Name: "nested", Usage: "keep an accepted candidate even when an accepted inner one covers its calls (it then also recovers faults in its own code)"},
			&cli.BoolFlag{Name: "libraries", Usage: "also take candidates from the shared libraries the program links"},
			&cli.IntFlag{Name: "profile-runs", Value: 3, Usage: "workload runs the probes count"},
			&cli.DurationFlag{Name: "start-timeout", Value: 30 * time.Second, Usage: "how long the workload may take to pass a first time (the program starting)"},
			&cli.DurationFlag{Name: "workload-timeout", Value: time.Minute, Usage: "how long one run of the workload may take"},
		},
		Action: func(c *cli.Context) error {
			pid, args, err := discoverTarget(c)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return cli.Exit("discover: "+err.Error(), 1)
			}
			log := c.String("log")
			keepLog := log != ""
			if !keepLog {
				f, err := os.CreateTemp("", "assure-discover-*.log")
				if err != nil {
					return cli.Exit("discover: "+err.Error(), 1)
				}
				f.Close()
				log = f.Name()
			}
			ctx, cancel := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
			defer cancel()
			res, err := discover.Run(ctx, discover.Config{
				Program: args.First(), Args: args.Tail(), Pid: pid, Workload: c.String("workload"),
				Budget: c.Duration("budget"), Self: self, Log: log, Progress: c.App.ErrWriter,
				ProfileRuns: c.Int("profile-runs"), Libraries: c.Bool("libraries"), Nested: c.Bool("nested"), KeepMasked: c.Bool("keep-masked"),
				StartTimeout: c.Duration("start-timeout"), WorkloadTimeout: c.Duration("workload-timeout"),
			})
			if err != nil {
				msg := "discover: " + err.Error()
				if fi, serr := os.Stat(log); serr == nil && fi.Size() > 0 {
					msg += " (the program's output: " + log + ")"
				} else if !keepLog {
					os.Remove(log) // nothing in it: the program never said anything
				}
				return cli.Exit(msg, 1)
			}
			if !keepLog {
				os.Remove(log)
				res.Log = "not kept (--log FILE keeps it)"
			}
			writeDiscovery(c.App.Writer, res)
			return finishDiscovery(c, res)
		},
	}
}

// discoverTarget returns the process discovery works in (0: the program
// it starts, args).
func discoverTarget(c *cli.Context) (int, cli.Args, error) {
	pid := c.Int("pid")
	if c.IsSet("address") {
		if pid != 0 || c.NArg() != 1 {
			return 0, nil, cli.Exit("discover: with --address, expected exactly one CONTAINER (and no --pid)", 2)
		}
		p, err := containerInit(c.String("address"), c.String("namespace"), c.Args().First())
		if err != nil {
			return 0, nil, cli.Exit("discover: "+err.Error(), 1)
		}
		if t := tracerOf(p); t != 0 {
			return 0, nil, cli.Exit(fmt.Sprintf("discover: the init (pid %d) of container %s is traced by %d already (a container run with io.containerd.assure.v1 and a manifest has its supervisor): discovery cannot attach; run it without a manifest", p, c.Args().First(), t), 1)
		}
		return p, c.Args(), nil
	}
	if (c.NArg() < 1) == (pid == 0) {
		return 0, nil, cli.Exit("discover: expected -- PROGRAM [ARGS...], --pid PID or --address SOCK CONTAINER (one of them)", 2)
	}
	return pid, c.Args(), nil
}

// tracerOf is the TracerPid of pid (0: none, or unknown).
func tracerOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			var n int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &n)
			return n
		}
	}
	return 0
}

// discoverBudget is the default time for a discovery.
const discoverBudget = 5 * time.Minute

// finishDiscovery writes the manifest where it was asked for.
func finishDiscovery(c *cli.Context, res *discover.Result) error {
	if res.Manifest == nil {
		return cli.Exit("discover: no candidate passed triage: no manifest written", 1)
	}
	data, err := res.Manifest.JSON()
	if err != nil {
		return cli.Exit("discover: "+err.Error(), 1)
	}
	if out := c.String("out"); out != "" {
		if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
			return cli.Exit("discover: "+err.Error(), 1)
		}
		fmt.Fprintf(c.App.Writer, "manifest: %s (%d rescue points)\n", out, len(res.Manifest.RescuePoints))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "manifest:\n%s\n", data)
	return nil
}

// writeDiscovery prints the report: what was analysed, every hot
// candidate with its verdict, and how long it took.
func writeDiscovery(w io.Writer, res *discover.Result) {
	for _, f := range res.Files {
		fmt.Fprintf(w, "%s: %d functions, %d candidates\n", displayName(f.Binary), f.Functions, len(f.Candidates))
	}
	fmt.Fprintf(w, "%d candidates reached by the workload:\n", len(res.Hot))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tBINARY\tADDRESS\tRETURN\tFROM\tCALLS/RUN\tDEPTH\tVERDICT")
	for _, v := range res.Hot {
		c := v.Candidate
		calls := fmt.Sprintf("%.1f", v.CallsPerRun)
		if v.Saturated {
			calls = "≥" + calls
		}
		fmt.Fprintf(tw, "%s\t%s\t0x%x\t%d\t%s\t%s\t%.0f\t%s\n", displayName(c.Label()), displayName(c.Binary), c.Address,
			*c.Return, c.Confidence, calls, v.Depth, verdictWord(v))
	}
	tw.Flush()
	for _, v := range res.Hot {
		if !v.Triaged {
			continue
		}
		fmt.Fprintf(w, "- %s: %s\n  return %d: %s\n", displayName(v.Candidate.Label()), verdictText(v), *v.Candidate.Return,
			v.Candidate.ReturnEvidence)
		if len(v.Outer) > 0 {
			fmt.Fprintf(w, "  called inside: %s\n", strings.Join(v.Outer, ", "))
		}
	}
	if res.Stopped != "" {
		fmt.Fprintf(w, "triage stopped: %s\n", res.Stopped)
	}
	fmt.Fprintf(w, "took %v; the program's output: %s\n", res.Elapsed.Round(1e6), res.Log)
}

func verdictWord(v *discover.Verdict) string {
	switch {
	case !v.Triaged:
		return "not tested"
	case v.Kept:
		return "kept"
	case v.Accepted:
		return "accepted, dropped"
	}
	return "rejected"
}

func verdictText(v *discover.Verdict) string {
	switch {
	case v.Kept:
		return "kept: " + v.Evidence
	case v.Accepted:
		return "accepted (" + v.Evidence + ") but dropped: " + v.Dropped
	}
	return "rejected: " + v.Reason
}
