package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// runCLI runs the assure commands this file tests in-process and returns
// what they printed and the error app.Run returned.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:      "assure",
		Writer:    &out,
		ErrWriter: &errOut,
		// Without this, urfave/cli prints the error and calls os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands:       []*cli.Command{manifestCommand(), symbolsCommand(), candidatesCommand()},
	}
	err = app.Run(append([]string{"assure"}, args...))
	return out.String(), errOut.String(), err
}

// wantExit checks that err is a cli.ExitCoder with the given code and
// message.
func wantExit(t *testing.T, err error, code int, msg string) {
	t.Helper()
	ec, ok := err.(cli.ExitCoder)
	if !ok {
		t.Fatalf("error %v (%T) is not a cli.ExitCoder", err, err)
	}
	if ec.ExitCode() != code || ec.Error() != msg {
		t.Errorf("exit %d %q\nwant %d %q", ec.ExitCode(), ec.Error(), code, msg)
	}
}

// goBinary builds a small Go program, an ELF file with a full symbol
// table (the test binary itself is linked without one), and copies it to
// each of paths.
func goBinary(t *testing.T, paths ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	dir := t.TempDir()
	src := "package main\n\nfunc main() { println(\"hello\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func lookup(t *testing.T, path, name string) elfsym.Func {
	t.Helper()
	f, err := elfsym.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := f.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

func TestSymbols(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "prog")
	goBinary(t, bin)
	stdout, stderr, err := runCLI(t, "symbols", bin)
	if err != nil || stderr != "" {
		t.Fatalf("symbols: %v, stderr %q", err, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "ADDRESS SIZE SOURCE NAME" {
		t.Errorf("header %q", lines[0])
	}
	fn := lookup(t, bin, "runtime.main")
	want := []string{fmt.Sprintf("0x%016x", fn.Addr), fmt.Sprint(fn.Size), "symtab", "runtime.main"}
	found := false
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("row %q has %d columns", l, len(f))
		}
		if strings.Join(f, " ") == strings.Join(want, " ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no row %v in output", want)
	}
	// Columns are aligned: every row has NAME at the header's offset.
	col := strings.Index(lines[0], "NAME")
	for _, l := range lines[1:3] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q not aligned with header %q", l, lines[0])
		}
	}
}

func TestSymbolsStripped(t *testing.T) {
	for _, tool := range []string{"gcc", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	if err := os.WriteFile(src, []byte("int handle(int x) { return x + 1; }\nint main(void) { return handle(0); }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	full, stripped := filepath.Join(dir, "p"), filepath.Join(dir, "p.stripped")
	for _, cmd := range [][]string{{"gcc", "-O0", "-o", full, src}, {"strip", "-o", stripped, full}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
	handle := lookup(t, full, "handle")
	stdout, _, err := runCLI(t, "symbols", stripped)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0x%016x %d eh_frame -", handle.Addr, handle.Size)
	found := false
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Join(strings.Fields(l), " ") == want {
			found = true
		}
	}
	if !found {
		t.Errorf("no row %q in\n%s", want, stdout)
	}
}

func TestSymbolsErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"symbols"}, 2, "symbols: expected exactly one argument: BINARY"},
		{[]string{"symbols", "a", "b"}, 2, "symbols: expected exactly one argument: BINARY"},
		{[]string{"symbols", missing}, 1, "symbols: open " + missing + ": no such file or directory"},
		{[]string{"symbols", text}, 1, "symbols: " + text + ": not an ELF file"},
		{[]string{"symbols", dir}, 1, "symbols: " + dir + ": not a regular file (directory)"},
	} {
		stdout, _, err := runCLI(t, tc.args...)
		wantExit(t, err, tc.code, tc.msg)
		if stdout != "" {
			t.Errorf("%v: printed %q on error", tc.args, stdout)
		}
	}
}

func TestDisplayName(t *testing.T) {
	for in, want := range map[string]string{
		"main":                   "main",
		"operator new(unsigned)": `"operator new(unsigned)"`,
		"evil\x1b[2J":            `"evil\x1b[2J"`,
		"tab\there":              `"tab\there"`,
		"ns::Fn<int>":            "ns::Fn<int>",
		"caf\u00e9":              "caf\u00e9",
		"invalid\xffutf8":        `"invalid\xffutf8"`,
		"runtime.(*m).String-fm": "runtime.(*m).String-fm",
	} {
		if got := displayName(in); got != want {
			t.Errorf("displayName(%q) = %s, want %s", in, got, want)
		}
	}
}
