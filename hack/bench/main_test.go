package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseResult(t *testing.T) {
	r, err := parseResult("noise\nns_per_call=12.500 calls=1000 errors=3 mem_mib=4\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.nsPerCall != 12.5 || r.calls != 1000 || r.errors != 3 {
		t.Fatalf("got %+v", r)
	}
	if _, err := parseResult("nothing here\n"); err == nil {
		t.Fatal("no error for output without a result line")
	}
	if _, err := parseResult("ns_per_call=x calls=1\n"); err == nil {
		t.Fatal("no error for a bad number")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if m := median(v); m != 5.5 {
		t.Errorf("median = %v, want 5.5", m)
	}
	if p := percentile(v, 0.9); p != 9 {
		t.Errorf("p90 = %v, want 9", p)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v, want 2", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

func TestReadRecoveries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	data := `{"type":"attached","pid":1}
{"type":"recovered","pid":1,"recoveryMicros":42}

{"type":"recovered","pid":1,"recoveryMicros":7}
{"type":"detached","pid":1}
`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readRecoveries(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 42 || got[1] != 7 {
		t.Fatalf("got %v", got)
	}
	if err := os.WriteFile(path, []byte(`{"type":"crash","signal":"SIGSEGV"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecoveries(path); err == nil || !strings.Contains(err.Error(), "crash") {
		t.Fatalf("crash event: err = %v", err)
	}
}

func TestRewriteReadme(t *testing.T) {
	path := filepath.Join(t.TempDir(), "README.md")
	orig := "# x\n\n" + beginMarker + "\nnot yet measured\n" + endMarker + "\n\n## after\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := rewriteReadme(path, "| table |\n"); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	want := "# x\n\n" + beginMarker + "\n| table |\n" + endMarker + "\n\n## after\n"
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if err := os.WriteFile(path, []byte("# no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rewriteReadme(path, "x"); err == nil {
		t.Fatal("no error without markers")
	}
}

// TestRPBenchNative compiles the embedded program and runs it natively:
// plain calls succeed, so do those of the other bodies with idle threads,
// and a faulting run dies of SIGSEGV.
func TestRPBenchNative(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "rpbench.c")
	if err := os.WriteFile(src, rpbenchSource, 0o644); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "rpbench")
	if out, err := exec.Command(gcc, "-O2", "-pthread", "-Wall", "-Werror", "-o", prog, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b := &bench{cfg: &config{runTimeout: time.Minute}, dir: dir, prog: prog, log: t.Logf}
	r, err := b.runNative(context.Background(), 4, 10000, 0, plain)
	if err != nil {
		t.Fatal(err)
	}
	if r.calls != 10000 || r.errors != 0 || r.nsPerCall <= 0 {
		t.Fatalf("got %+v", r)
	}
	for _, v := range captureVariants {
		if r, err := b.runNative(context.Background(), 1, 1000, 0, v.load); err != nil || r.errors != 0 {
			t.Fatalf("%s: %+v, %v", v.what, r, err)
		}
	}
	_, _, err = b.exec(context.Background(), nil, prog, "1", "100", "10")
	if err == nil || !strings.Contains(err.Error(), "segmentation fault") {
		t.Fatalf("faulting run: err = %v, want a SIGSEGV", err)
	}
}
