package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// candidatesProg: parse's callers test for -1, lookup's for NULL, and
// logit's result is ignored.
const candidatesProg = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct item { int v; };
static struct item items[4];
__attribute__((noinline)) int parse(const char *s) {
	if (s == NULL || *s == 0) return -1;
	return atoi(s) > 100 ? -1 : 0;
}
__attribute__((noinline)) struct item *lookup(int k) {
	if (k < 0 || k >= 4) return NULL;
	return &items[k];
}
__attribute__((noinline)) int logit(const char *s) { return fprintf(stderr, "%s\n", s); }
int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (parse(argv[i]) == -1) { logit("bad"); continue; }
		struct item *it = lookup(atoi(argv[i]));
		if (!it) { logit("none"); continue; }
		if (parse(argv[i]) < 0) return 2;
		it->v++;
	}
	logit("done");
	return 0;
}
`

func TestCandidatesCommand(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "p.c"), filepath.Join(dir, "p")
	if err := os.WriteFile(src, []byte(candidatesProg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, _, err := runCLI(t, "candidates", "--json", "--min-confidence", "low", bin)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var c candidateJSON
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got[c.Function] = c.Return
	}
	if r, ok := got["parse"]; !ok || r != -1 {
		t.Errorf("parse: %v %v, want a candidate returning -1 (%s)", r, ok, out)
	}
	if r, ok := got["lookup"]; !ok || r != 0 {
		t.Errorf("lookup: %v %v, want a candidate returning 0 (%s)", r, ok, out)
	}
	if _, ok := got["logit"]; ok {
		t.Errorf("logit, whose result is ignored, is a candidate (%s)", out)
	}
	table, _, err := runCLI(t, "candidates", bin)
	if err != nil || !strings.Contains(table, "parse") || !strings.Contains(table, "functions,") {
		t.Errorf("table: %v\n%s", err, table)
	}
	_, _, err = runCLI(t, "candidates", filepath.Join(dir, "missing"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	_, _, err = runCLI(t, "candidates", "--min-confidence", "certain", bin)
	wantExit(t, err, 2, `candidates: --min-confidence: "certain" is not low, medium or high`)
}
