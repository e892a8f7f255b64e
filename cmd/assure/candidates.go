package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/candidates"
)

func candidatesCommand() *cli.Command {
	return &cli.Command{
		Name:      "candidates",
		Usage:     "list the functions of a program that look like rescue points (static analysis, untested)",
		ArgsUsage: "PROGRAM [LIBRARY...]",
		Description: "Decodes PROGRAM and each LIBRARY and lists the functions whose callers test the value " +
			"they return and branch on it, with the error value inferred from the function's own return " +
			"paths and from what its callers compare it with (CONFIDENCE high, medium or low). The " +
			"program's calls into a library count for the library's functions. These are candidates " +
			"only: nothing has tested that the program survives an error return from them. Stripped " +
			"files work (unnamed functions are listed by address, as a manifest names them).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the reports as JSON, one per file"},
			&cli.StringFlag{Name: "min-confidence", Value: "medium", Usage: "list candidates at least this confident: low, medium or high"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 {
				return cli.Exit("candidates: expected PROGRAM [LIBRARY...]", 2)
			}
			min, err := parseConfidence(c.String("min-confidence"))
			if err != nil {
				return cli.Exit("candidates: "+err.Error(), 2)
			}
			reports, err := analyzeFiles(c.Args().Slice())
			if err != nil {
				return cli.Exit("assure "+err.Error(), 1)
			}
			if c.Bool("json") {
				return writeCandidatesJSON(c.App.Writer, reports, min)
			}
			return writeCandidates(c.App.Writer, reports, min)
		},
	}
}

// analyzeFiles analyses the program, then each library with the
// program's (and the earlier libraries') calls into it.
func analyzeFiles(paths []string) ([]*candidates.Report, error) {
	var reports []*candidates.Report
	for _, path := range paths {
		r, err := candidates.Find(path, candidates.Options{ExternalCallers: candidates.MergeImports(reports...)})
		if err != nil {
			return nil, err
		}
		reports = append(reports, r)
	}
	return reports, nil
}

func parseConfidence(s string) (candidates.Confidence, error) {
	for _, c := range []candidates.Confidence{candidates.Low, candidates.Medium, candidates.High} {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("--min-confidence: %q is not low, medium or high", s)
}

func writeCandidates(w io.Writer, reports []*candidates.Report, min candidates.Confidence) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BINARY\tFUNCTION\tADDRESS\tRETURN\tCONFIDENCE\tCHECKED\tEVIDENCE")
	for _, r := range reports {
		for _, cd := range r.Candidates {
			if cd.Confidence < min {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t0x%x\t%d\t%s\t%d/%d\t%s\n", displayName(r.Binary), displayName(cd.Label()),
				cd.Address, *cd.Return, cd.Confidence, cd.CheckedSites, cd.CallSites, cd.ReturnEvidence)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reports {
		fmt.Fprintf(w, "%s: %d functions, %d candidates, %d without direct callers, in %v",
			displayName(r.Binary), r.Functions, len(r.Candidates), len(r.NoDirectCallers), r.Stats.Elapsed.Round(1e6))
		if r.Incomplete != "" {
			fmt.Fprintf(w, " (incomplete: %s)", r.Incomplete)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// candidateJSON is one line of --json: what a script needs to build
// manifest entries from.
type candidateJSON struct {
	Binary     string `json:"binary"`
	Function   string `json:"function,omitempty"`
	Address    string `json:"address"`
	Return     int64  `json:"return"`
	Confidence string `json:"confidence"`
	CallSites  int    `json:"callSites"`
	Checked    int    `json:"checkedSites"`
	Evidence   string `json:"evidence"`
}

func writeCandidatesJSON(w io.Writer, reports []*candidates.Report, min candidates.Confidence) error {
	enc := json.NewEncoder(w)
	for _, r := range reports {
		for _, cd := range r.Candidates {
			if cd.Confidence < min {
				continue
			}
			if err := enc.Encode(candidateJSON{Binary: r.Binary, Function: cd.Function, Address: fmt.Sprintf("0x%x", cd.Address),
				Return: *cd.Return, Confidence: cd.Confidence.String(), CallSites: cd.CallSites, Checked: cd.CheckedSites,
				Evidence: cd.ReturnEvidence}); err != nil {
				return err
			}
		}
	}
	return nil
}
