package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// imageRoot lays out a fake image root with an executable at
// /usr/bin/prog and a library at /usr/lib/x86_64-linux-gnu/libfake.so.1
// (both the same Go binary, which is all the resolver looks at), and
// returns the root and the address of runtime.main in them.
func imageRoot(t *testing.T) (root string, mainAddr uint64) {
	t.Helper()
	root = t.TempDir()
	prog := filepath.Join(root, "usr/bin/prog")
	goBinary(t, prog, filepath.Join(root, "usr/lib/x86_64-linux-gnu/libfake.so.1"))
	return root, lookup(t, prog, "runtime.main").Addr
}

func writeManifest(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.json")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// rows splits a table into the fields of its lines.
func rows(out string) [][]string {
	var r [][]string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		r = append(r, strings.Fields(l))
	}
	return r
}

func TestValidate(t *testing.T) {
	root, mainAddr := imageRoot(t)
	file := writeManifest(t, `{
  "version": 1,
  "rescuePoints": [
    {"binary": "/usr/bin/prog", "function": "runtime.main", "return": -1},
    {"binary": "libfake.so.1", "function": "runtime.main", "return": 0, "scope": "container"},
    {"binary": "libnothere.so.2", "function": "parse_header"}
  ],
  "signals": ["SIGSEGV"],
  "maxRecoveries": 0
}`)
	addr := fmt.Sprintf("0x%x", mainAddr)
	want := [][]string{
		{"BINARY", "FUNCTION", "ADDRESS", "RETURN", "SCOPE"},
		{"/usr/bin/prog", "runtime.main", addr, "-1", "process"},
		{"libfake.so.1", "(/usr/lib/x86_64-linux-gnu/libfake.so.1)", "runtime.main", addr, "0", "container"},
		{"libnothere.so.2", "parse_header", "(run time)", "void", "process"},
		{"manifest", file + ":", "valid:", "3", "rescue", "points", "(1", "resolved", "at", "run", "time);",
			"signals", "SIGSEGV;", "maxRecoveries", "0", "(never", "recovers)"},
	}
	// The flag may come before or after FILE, in either spelling.
	for _, args := range [][]string{
		{"manifest", "validate", file, "--root", root},
		{"manifest", "validate", "--root", root, file},
		{"manifest", "validate", file, "--root=" + root},
		{"manifest", "validate", "-root", root, "--", file},
	} {
		stdout, stderr, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if got := rows(stdout); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%v: table\n%s\nwant rows\n%v", args, stdout, want)
		}
		if stderr != "" {
			t.Errorf("stderr %q, want nothing", stderr)
		}
	}
}

// A manifest too large for an image label is valid, with a note that
// says what to do in an image.
func TestValidateLabelNote(t *testing.T) {
	root, _ := imageRoot(t)
	var rps []string
	for i := 0; i < 60; i++ {
		rps = append(rps, fmt.Sprintf(`{"binary":"libnothere%03d.so","function":"parse_header_with_a_long_name_%03d"}`, i, i))
	}
	file := writeManifest(t, `{"version":1,"rescuePoints":[`+strings.Join(rps, ",")+`]}`)
	_, stderr, err := runCLI(t, "manifest", "validate", file, "--root", root)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "containerd refuses labels over 4096 bytes") || !strings.Contains(stderr, "dev.assure.manifest.file") {
		t.Errorf("stderr %q: want the label limit and dev.assure.manifest.file", stderr)
	}
}

func TestValidateErrors(t *testing.T) {
	root, mainAddr := imageRoot(t)
	if err := os.WriteFile(filepath.Join(root, "usr/bin/script"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Absolute and relative links that point outside the root must be
	// resolved inside it, where nothing exists.
	for name, target := range map[string]string{"abs": "/bin/sh", "rel": "../../../../../../../../bin/sh"} {
		if err := os.Symlink(target, filepath.Join(root, "usr/bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "usr/bin/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	entry := func(e string) string { return `{"version":1,"rescuePoints":[` + e + `]}` }
	for _, tc := range []struct {
		name     string
		manifest string
		want     string // after "manifest FILE: "
	}{
		{"no such function", entry(`{"binary":"/usr/bin/prog","function":"nosuch"}`),
			`rescuePoints[0] (nosuch in /usr/bin/prog): field "function": no function "nosuch" in /usr/bin/prog (stripped? use "address")`},
		{"not a function", entry(`{"binary":"/usr/bin/prog","function":"runtime.buildVersion"}`),
			`rescuePoints[0] (runtime.buildVersion in /usr/bin/prog): field "function": "runtime.buildVersion" in /usr/bin/prog is not a function (symbol type STT_OBJECT)`},
		{"library function", entry(`{"binary":"libfake.so.1","function":"nosuch"}`),
			`rescuePoints[0] (nosuch in libfake.so.1): field "function": no function "nosuch" in /usr/lib/x86_64-linux-gnu/libfake.so.1 (stripped? use "address")`},
		{"address inside a function", entry(fmt.Sprintf(`{"binary":"/usr/bin/prog","address":"0x%x"}`, mainAddr+1)),
			fmt.Sprintf(`rescuePoints[0] (0x%x in /usr/bin/prog): field "address": 0x%x is 0x1 bytes into runtime.main, not at a function start: the top of the stack is not a return address there`, mainAddr+1, mainAddr+1)},
		{"address not executable", entry(`{"binary":"/usr/bin/prog","address":"0x10"}`),
			`rescuePoints[0] (0x10 in /usr/bin/prog): field "address": 0x10 is not in an executable segment of /usr/bin/prog`},
		{"climbs above the root", entry(`{"binary":"/../../usr/bin/prog","function":"main"}`),
			`rescuePoints[0] (main in /../../usr/bin/prog): field "binary": /../../usr/bin/prog: escapes the container root filesystem (".." above /)`},
		{"climbs above the root later", entry(`{"binary":"/usr/../../usr/bin/prog","function":"main"}`),
			`rescuePoints[0] (main in /usr/../../usr/bin/prog): field "binary": /usr/../../usr/bin/prog: escapes the container root filesystem (".." above /)`},
		{"missing binary", entry(`{"binary":"/usr/bin/missing","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin/missing): field "binary": /usr/bin/missing does not exist in the image`},
		{"absolute symlink out of root", entry(`{"binary":"/usr/bin/abs","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin/abs): field "binary": /usr/bin/abs does not exist in the image (via symlink /usr/bin/abs -> /bin/sh)`},
		{"relative symlink out of root", entry(`{"binary":"/usr/bin/rel","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin/rel): field "binary": /usr/bin/rel: escapes the container root filesystem (symlink /usr/bin/rel -> ../../../../../../../../bin/sh goes above /)`},
		{"not ELF", entry(`{"binary":"/usr/bin/script","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin/script): field "binary": /usr/bin/script: not an ELF file`},
		{"directory", entry(`{"binary":"/usr/bin","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin): field "binary": /usr/bin: not a regular file (directory)`},
		{"fifo", entry(`{"binary":"/usr/bin/fifo","function":"main"}`),
			`rescuePoints[0] (main in /usr/bin/fifo): field "binary": /usr/bin/fifo: not a regular file (named pipe)`},
		{"same address twice", entry(fmt.Sprintf(`{"binary":"/usr/bin/prog","function":"runtime.main"},{"binary":"/usr/bin/prog","address":"%x"}`, mainAddr)),
			fmt.Sprintf(`rescuePoints[1] (0x%x in /usr/bin/prog): field "address": resolves to 0x%x in /usr/bin/prog, like rescuePoints[0]`, mainAddr, mainAddr)},
		{"parse error", `{"version":1,"rescuePoints":[{"binary":"/usr/bin/prog","function":"f","scope":"global"}]}`,
			`rescuePoints[0] (f in /usr/bin/prog): field "scope": must be "process" or "container", got "global"`},
		{"unsupported version", `{"version":2}`, `field "version": unsupported version 2 (supported: 1)`},
		{"healing candidate of another image", `{"version":1,"heal":{"candidates":[{"binary":"/usr/bin/prog","function":"runtime.main"},{"binary":"/usr/sbin/other","function":"handle"}]}}`,
			`heal.candidates[1] (handle in /usr/sbin/other): field "binary": /usr/sbin/other does not exist in the image`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeManifest(t, tc.manifest)
			stdout, stderr, err := runCLI(t, "manifest", "validate", file, "--root", root)
			wantExit(t, err, 1, "manifest "+file+": "+tc.want)
			if stdout != "" || stderr != "" {
				t.Errorf("printed %q, %q on error", stdout, stderr)
			}
		})
	}
}

func TestValidateSeveralErrors(t *testing.T) {
	root, _ := imageRoot(t)
	file := writeManifest(t, `{"version":1,"rescuePoints":[
		{"binary":"/usr/bin/prog","function":"nosuch"},
		{"binary":"/usr/bin/prog","function":"runtime.main"},
		{"binary":"/usr/bin/missing","function":"main"}]}`)
	stdout, stderr, err := runCLI(t, "manifest", "validate", file, "--root", root)
	wantExit(t, err, 1, "manifest "+file+": 2 of 3 rescue points failed to resolve")
	want := "assure: manifest " + file + `: rescuePoints[0] (nosuch in /usr/bin/prog): field "function": no function "nosuch" in /usr/bin/prog (stripped? use "address")` + "\n" +
		"assure: manifest " + file + `: rescuePoints[2] (main in /usr/bin/missing): field "binary": /usr/bin/missing does not exist in the image` + "\n"
	if stderr != want || stdout != "" {
		t.Errorf("stdout %q\nstderr %q\nwant   %q", stdout, stderr, want)
	}
}

func TestValidateDefaultRoot(t *testing.T) {
	// With the default root, absolute paths are the host's.
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	goBinary(t, prog)
	file := writeManifest(t, `{"version":1,"rescuePoints":[{"binary":"`+prog+`","function":"runtime.main"},{"binary":"`+dir+`/nope","function":"f"}]}`)
	_, _, err := runCLI(t, "manifest", "validate", file)
	wantExit(t, err, 1, "manifest "+file+": rescuePoints[1] (f in "+dir+"/nope): field \"binary\": "+dir+"/nope does not exist")
}

func TestValidateCompiled(t *testing.T) {
	for _, tool := range []string{"gcc", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	root := t.TempDir()
	src := filepath.Join(t.TempDir(), "server.c")
	code := "int handle_request(int x) { return x * 2; }\nint main(int c, char **v) { (void)v; return handle_request(c); }\n"
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(root, "usr/bin/server")
	stripped := filepath.Join(root, "usr/bin/server.stripped")
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"gcc", "-O0", "-o", full, src}, {"strip", "-o", stripped, full}} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
	handle := lookup(t, full, "handle_request").Addr
	file := writeManifest(t, fmt.Sprintf(`{"version":1,"rescuePoints":[
		{"binary":"/usr/bin/server","function":"handle_request","return":-1},
		{"binary":"/usr/bin/server.stripped","address":"%016x","return":-1}]}`, handle))
	stdout, stderr, err := runCLI(t, "manifest", "validate", file, "--root", root)
	if err != nil || stderr != "" {
		t.Fatalf("%v, stderr %q", err, stderr)
	}
	a := fmt.Sprintf("0x%x", handle)
	want := [][]string{
		{"BINARY", "FUNCTION", "ADDRESS", "RETURN", "SCOPE"},
		{"/usr/bin/server", "handle_request", a, "-1", "process"},
		{"/usr/bin/server.stripped", a, a, "-1", "process"}, // unnamed: shown by address
	}
	if got := rows(stdout); fmt.Sprint(got[:3]) != fmt.Sprint(want) {
		t.Errorf("table\n%s\nwant %v", stdout, want)
	}

	// In the stripped copy the function can only be named by address.
	file = writeManifest(t, `{"version":1,"rescuePoints":[{"binary":"/usr/bin/server.stripped","function":"handle_request"}]}`)
	_, _, err = runCLI(t, "manifest", "validate", file, "--root", root)
	wantExit(t, err, 1, "manifest "+file+`: rescuePoints[0] (handle_request in /usr/bin/server.stripped): field "function": no function "handle_request" in /usr/bin/server.stripped (stripped? use "address")`)
}

func TestValidateUsage(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{}, "manifest validate: expected exactly one manifest FILE, got 0 arguments"},
		{[]string{"a.json", "b.json"}, "manifest validate: expected exactly one manifest FILE, got 2 arguments"},
		{[]string{"a.json", "--root"}, "manifest validate: flag --root needs a value"},
		{[]string{"a.json", "--rot", "x"}, "manifest validate: unknown flag --rot"},
		{[]string{"a.json", "--root", filepath.Join(dir, "missing")}, "manifest validate: --root " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{[]string{"a.json", "--root", notDir}, "manifest validate: --root " + notDir + ": not a directory"},
		{[]string{"a.json", "--root="}, "manifest validate: --root must not be empty"},
	} {
		_, _, err := runCLI(t, append([]string{"manifest", "validate"}, tc.args...)...)
		wantExit(t, err, 2, tc.msg)
	}
	missing := filepath.Join(dir, "missing.json")
	_, _, err := runCLI(t, "manifest", "validate", missing)
	wantExit(t, err, 1, "manifest "+missing+": open: no such file or directory")
}
