// Command assure runs programs under rescue-point supervision.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/discover"
	"github.com/assure-rt/assure/recovery/supervisor"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == supervisor.WakeArg {
		return // a supervisor's wake-up call: its exit is the message
	}
	if len(os.Args) > 1 && os.Args[1] == supervisor.ExecHelperArg {
		// Re-executed as the launcher of a supervised program.
		err := supervisor.ExecHelper(os.Args[2:])
		fmt.Fprintln(os.Stderr, "assure:", err)
		os.Exit(127)
	}
	if len(os.Args) > 1 && os.Args[1] == discover.RunnerArg {
		discover.RunnerMain() // assure discover's workload runner
		return
	}
	app := &cli.App{
		Name:  "assure",
		Usage: "run servers under rescue-point supervision",
		Description: "assure checkpoints a program at the entry of declared rescue points and, " +
			"when a fault hits inside one, rolls the program back and makes the function return its error value.",
		HideHelpCommand: true,
		// Errors are printed once, below, with the "assure:" prefix.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			runCommand(),
			attachCommand(),
			manifestCommand(),
			symbolsCommand(),
			candidatesCommand(),
			discoverCommand(),
			armCommand(false),
			armCommand(true),
			learnedCommand(),
			forgetCommand(),
			eventsCommand(),
			metricsCommand(),
			superviseCommand(),
		},
	}
	if err := app.Run(os.Args); err != nil {
		if ec, ok := err.(cli.ExitCoder); ok {
			if msg := ec.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, "assure:", msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "assure:", err)
		os.Exit(1)
	}
}
