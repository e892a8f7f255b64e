package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/oci/learned"
	"github.com/assure-rt/assure/oci/learned/store"
)

// containerdFlags are the flags of the commands that talk to containerd.
func containerdFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "address", Usage: "containerd's socket", Value: "/run/containerd/containerd.sock", EnvVars: []string{"CONTAINERD_ADDRESS"}},
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "containerd namespace", Value: "default", EnvVars: []string{"CONTAINERD_NAMESPACE"}},
	}
}

// learnedCommand lists the rescue points an image's containers learned
// (labels dev.assure.learned.* of the image record).
func learnedCommand() *cli.Command {
	return &cli.Command{
		Name:      "learned",
		Usage:     "list the rescue points an image's containers learned from crashes",
		ArgsUsage: "IMAGE",
		Flags:     append(containerdFlags(), &cli.BoolFlag{Name: "json", Usage: "one JSON object per rescue point"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("learned: expected IMAGE", 2)
			}
			labels, digest, err := imageRecord(c, c.Args().First())
			if err != nil {
				return cli.Exit("learned: "+err.Error(), 1)
			}
			set := learned.Of(labels, digest)
			if c.Bool("json") {
				return printLearnedJSON(set)
			}
			printLearned(set)
			return nil
		},
	}
}

// forgetCommand removes learned rescue points from an image.
func forgetCommand() *cli.Command {
	return &cli.Command{
		Name:      "forget",
		Usage:     "remove an image's learned rescue points (all of them, or those of FUNCTION); running containers keep theirs",
		ArgsUsage: "IMAGE [FUNCTION]",
		Flags:     containerdFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return cli.Exit("forget: expected IMAGE [FUNCTION]", 2)
			}
			image, fn := c.Args().First(), c.Args().Get(1)
			labels, _, err := imageRecord(c, image)
			if err != nil {
				return cli.Exit("forget: "+err.Error(), 1)
			}
			keys := forgotten(labels, fn)
			if len(keys) == 0 {
				if fn != "" {
					return cli.Exit(fmt.Sprintf("forget: image %s has no learned rescue point %s (assure learned %s lists them)", image, fn, image), 1)
				}
				return nil
			}
			st, ctx, cancel, err := learnedStore(c)
			if err != nil {
				return cli.Exit("forget: "+err.Error(), 1)
			}
			defer cancel()
			defer st.Close()
			if err := st.Forget(ctx, image, keys); err != nil {
				return cli.Exit("forget: "+err.Error(), 1)
			}
			fmt.Printf("forgot %d learned rescue point(s) of %s\n", len(keys), image)
			return nil
		},
	}
}

// forgotten returns the learned labels to remove: every one (those that
// do not decode too) without fn, else those whose function or address is
// fn.
func forgotten(labels map[string]string, fn string) []string {
	var keys []string
	for k, v := range labels {
		if !strings.HasPrefix(k, learned.Prefix) {
			continue
		}
		if fn != "" {
			e, err := learned.Decode(k, v)
			if err != nil || e.RescuePoint.Name() != fn {
				continue
			}
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func learnedStore(c *cli.Context) (*store.Store, context.Context, context.CancelFunc, error) {
	st, err := store.Dial(c.String("address"))
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), c.String("namespace")), 10*time.Second)
	return st, ctx, cancel, nil
}

// imageRecord returns the labels and target digest of an image record.
func imageRecord(c *cli.Context, image string) (map[string]string, string, error) {
	st, ctx, cancel, err := learnedStore(c)
	if err != nil {
		return nil, "", err
	}
	defer cancel()
	defer st.Close()
	labels, digest, err := st.Image(ctx, image)
	if err != nil {
		return nil, "", fmt.Errorf("%w (namespace %s)", err, c.String("namespace"))
	}
	return labels, digest, nil
}

func printLearned(set learned.Set) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FUNCTION\tBINARY\tRETURN\tLEARNED\tCONTAINER\tSIGNAL\tSTATE")
	row := func(e learned.Entry, state string) {
		ret := "void"
		if r := e.RescuePoint.Return; r != nil {
			ret = fmt.Sprint(*r)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.RescuePoint.Name(), e.RescuePoint.Binary, ret, e.Time, e.Container, e.Signal, state)
	}
	for _, e := range set.Entries {
		row(e, "armed in new containers")
	}
	for _, e := range set.Stale {
		row(e, "stale: learned in "+e.Image)
	}
	w.Flush()
	for _, p := range set.Problems {
		fmt.Printf("ignored: %v\n", p)
	}
}

type learnedJSON struct {
	Binary    string `json:"binary"`
	Function  string `json:"function,omitempty"`
	Address   string `json:"address,omitempty"`
	Return    *int64 `json:"return,omitempty"`
	Image     string `json:"image"`
	Time      string `json:"time,omitempty"`
	Container string `json:"container,omitempty"`
	Signal    string `json:"signal,omitempty"`
	Label     string `json:"label"`
	Stale     bool   `json:"stale,omitempty"`
}

func printLearnedJSON(set learned.Set) error {
	enc := json.NewEncoder(os.Stdout)
	out := func(e learned.Entry, stale bool) error {
		rp := e.RescuePoint
		j := learnedJSON{Binary: rp.Binary, Function: rp.Function, Return: rp.Return, Image: e.Image,
			Time: e.Time, Container: e.Container, Signal: e.Signal, Label: learned.Key(rp), Stale: stale}
		if rp.HasAddress {
			j.Function, j.Address = "", rp.Name()
		}
		return enc.Encode(j)
	}
	for _, e := range set.Entries {
		if err := out(e, false); err != nil {
			return err
		}
	}
	for _, e := range set.Stale {
		if err := out(e, true); err != nil {
			return err
		}
	}
	for _, p := range set.Problems {
		fmt.Fprintf(os.Stderr, "assure: ignored: %v\n", p)
	}
	return nil
}
