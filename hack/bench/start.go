package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/assure-rt/assure/hack/image"
)

// README markers of the start-overhead section.
const (
	startBegin = "<!-- bench-start:begin -->"
	startEnd   = "<!-- bench-start:end -->"
)

// startBench measures what the assure runtime adds to starting a
// container: `ctr run --rm` of a trivial container on a private
// containerd, timed from outside, interleaved with io.containerd.runc.v2,
// for an image without a manifest and one whose label declares rp_call.
// The program (rpbench without arguments) prints its usage and exits at
// once: what is measured is starting and ending a supervised container
// (the supervisor, the rescue point resolved at the exec), not a call of
// the rescue point (the first one pays for arming the checkpoint engine:
// the per-call table above).
type startBench struct {
	b       *bench
	dir     string // private containerd
	address string
}

type startRow struct {
	image          string
	runc, assure   float64 // median ms
	diff, ratio    float64 // median of the pairs
	runcN, assureN int
}

func (b *bench) startOverhead(ctx context.Context) (string, error) {
	sb := &startBench{b: b}
	dir, err := os.MkdirTemp("/tmp", "assure-bench-ctd-")
	if err != nil {
		return "", err
	}
	sb.dir, sb.address = dir, filepath.Join(dir, "containerd.sock")
	script := filepath.Join(b.cfg.root, "hack", "containerd.sh")
	if out, err := exec.CommandContext(ctx, "bash", script, "start", dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("start containerd: %v\n%s", err, out)
	}
	defer func() {
		if out, err := exec.Command("bash", script, "stop", dir).CombinedOutput(); err != nil {
			b.log("stop containerd: %v\n%s", err, out)
		}
	}()
	manifest := `{"version":1,"rescuePoints":[{"binary":"/app/rpbench","function":"rp_call","return":-1}]}`
	images := []struct {
		name, label string
	}{{"assure.bench/start:plain", ""}, {"assure.bench/start:manifest", manifest}}
	for _, im := range images {
		spec := image.Spec{Name: im.name, Files: []image.File{{Src: b.prog, Dst: "/app/rpbench"}}, WithLibs: true}
		if im.label != "" {
			spec.Labels = map[string]string{"dev.assure.manifest": im.label}
		}
		tar := filepath.Join(b.dir, strings.NewReplacer("/", "_", ":", "_").Replace(im.name)+".tar")
		if err := image.Build(spec, tar); err != nil {
			return "", err
		}
		if err := image.Import(sb.address, "assure-test", tar); err != nil {
			return "", err
		}
	}
	var rows []startRow
	t0 := time.Now()
	for _, im := range images {
		var runc, assure, diffs, ratios []float64
		for round := 0; round < b.cfg.startRounds+1; round++ {
			pair := [2]float64{}
			for pass := 0; pass < 2; pass++ {
				useAssure := (pass == 0) == (round%2 == 0)
				rt := "io.containerd.runc.v2"
				if useAssure {
					rt = "io.containerd.assure.v1"
				}
				ms, err := sb.run(ctx, rt, im.name, fmt.Sprintf("start-%d-%d", round, pass))
				if err != nil {
					return "", err
				}
				if useAssure {
					pair[1] = ms
				} else {
					pair[0] = ms
				}
			}
			if round == 0 {
				continue // warm-up: page cache, containerd's first use of the image
			}
			runc, assure = append(runc, pair[0]), append(assure, pair[1])
			diffs, ratios = append(diffs, pair[1]-pair[0]), append(ratios, pair[1]/pair[0])
		}
		rows = append(rows, startRow{image: im.name, runc: median(runc), assure: median(assure),
			diff: median(diffs), ratio: median(ratios), runcN: len(runc), assureN: len(assure)})
		b.log("start %s: runc %.1f ms, assure %.1f ms (+%.1f ms)", im.name, median(runc), median(assure), median(diffs))
	}
	return sb.markdown(rows, time.Since(t0)), nil
}

// run times one `ctr run --rm` of img under runtime rt, in ms.
func (sb *startBench) run(ctx context.Context, rt, img, id string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", "--address", sb.address, "--namespace", "assure-test",
		"run", "--rm", "--runtime", rt, img, id, "/app/rpbench")
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	ms := float64(time.Since(t0).Microseconds()) / 1000
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "usage") {
		return 0, fmt.Errorf("ctr run --runtime %s %s: %v (want the program's usage, status 2)\n%s", rt, img, err, out)
	}
	return ms, nil
}

func (sb *startBench) markdown(rows []startRow, took time.Duration) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Measured %s by `go run ./hack/bench -start-only` on %s.\n\n", time.Now().UTC().Format("2006-01-02"), machine())
	s.WriteString("| image | io.containerd.runc.v2 ms | io.containerd.assure.v1 ms | added ms | ratio |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		what := "no manifest"
		if strings.HasSuffix(r.image, ":manifest") {
			what = "label declares a rescue point"
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %+.1f | %s× |\n", what, num(r.runc), num(r.assure), r.diff, num(r.ratio))
	}
	fmt.Fprintf(&s, "\n- `ctr run --rm` of a container whose program (rpbench, dynamically linked, given no arguments) prints a line and exits, timed from outside, on a private containerd (%s); the two runtimes alternate, %d pairs per image after a warm-up pair; medians of the runs, and of the per-pair differences and ratios. Whole run: %v.\n",
		containerdVersion(), rows[0].runcN, took.Round(time.Second))
	return s.String()
}

func containerdVersion() string {
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		return "containerd ?"
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return "containerd " + f[2]
	}
	return strings.TrimSpace(string(out))
}
