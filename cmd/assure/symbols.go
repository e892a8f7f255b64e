package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/elfsym"
)

func symbolsCommand() *cli.Command {
	return &cli.Command{
		Name:      "symbols",
		Usage:     "list the functions of an ELF file",
		ArgsUsage: "BINARY",
		Description: "Lists the functions assure can see in BINARY, sorted by address: what a manifest's " +
			"\"function\" can name and what stacks are symbolized with. Functions come from .symtab and " +
			".dynsym; in a stripped file the .eh_frame unwind entries add the rest, without names " +
			"(NAME \"-\"): name those in a manifest by \"address\". Addresses are ELF virtual addresses, " +
			"as nm prints them.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("symbols: expected exactly one argument: BINARY", 2)
			}
			f, err := elfsym.Open(c.Args().First())
			if err != nil {
				return cli.Exit("symbols: "+err.Error(), 1)
			}
			defer f.Close()
			if err := writeSymbols(c.App.Writer, f.Funcs()); err != nil {
				return cli.Exit("symbols: "+err.Error(), 1)
			}
			return nil
		},
	}
}

// writeSymbols prints funcs as a table.
func writeSymbols(w io.Writer, funcs []elfsym.Func) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSIZE\tSOURCE\tNAME")
	for _, fn := range funcs {
		name := "-"
		if fn.Name != "" {
			name = displayName(fn.Name)
		}
		fmt.Fprintf(tw, "0x%016x\t%d\t%s\t%s\n", fn.Addr, fn.Size, fn.Source, name)
	}
	return tw.Flush()
}

// displayName quotes a name read from an untrusted file when it holds
// anything but graphic characters, so that it cannot break the table or
// send escape sequences to the terminal.
func displayName(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
