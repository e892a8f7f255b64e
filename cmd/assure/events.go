package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/events"
)

// eventsCommand prints the events of a container's supervisor.
func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "print the recoveries and crashes of a container run with io.containerd.assure.v1",
		ArgsUsage: "CONTAINER",
		Flags:     append(containerdFlags(), &cli.BoolFlag{Name: "json", Usage: "print the JSON lines as they are"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("events: want exactly one CONTAINER", 2)
			}
			path := events.ContainerFile(c.String("address"), c.String("namespace"), c.Args().First())
			data, err := events.ReadFiles(path)
			if err != nil {
				if os.IsNotExist(err) {
					return cli.Exit(fmt.Sprintf("events: no events for container %s in namespace %s of %s (never supervised, or nothing happened yet)",
						c.Args().First(), c.String("namespace"), c.String("address")), 1)
				}
				return cli.Exit(fmt.Sprintf("events: %v", err), 1)
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if c.Bool("json") {
					fmt.Fprintln(c.App.Writer, sc.Text())
					continue
				}
				var e events.Event
				if json.Unmarshal(sc.Bytes(), &e) != nil {
					continue
				}
				if line := events.Format(e); line != "" {
					fmt.Fprintf(c.App.Writer, "%s %s\n", e.Time, line)
				}
			}
			return sc.Err()
		},
	}
}
