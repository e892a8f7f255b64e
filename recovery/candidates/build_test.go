package candidates

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The test program has one function of each kind the analysis must tell
// apart. noinline/noclone keep gcc -O2 from inlining them into main or
// cloning them (parse.constprop.0), which would hide the call sites.
const progC = `
#include <stdio.h>
#include <stdlib.h>

#define KEEP __attribute__((noinline, noclone))

struct x { int key; int val; struct x *next; };
static struct x table[4] = {{1, 10, 0}, {2, 20, 0}, {3, 30, 0}, {5, 50, 0}};
volatile int sink;

/* (a) returns -1 on error; callers test < 0 and == -1. */
KEEP int parse(const char *s) {
	int n = 0;
	if (s == NULL || *s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		n = n * 10 + (*s - '0');
	}
	sink = n;
	return 0;
}

/* (b) returns NULL when absent; callers test !p. */
KEEP struct x *lookup(int key) {
	for (int i = 0; i < 4; i++)
		if (table[i].key == key)
			return &table[i];
	return NULL;
}

/* (c) its result is always ignored. */
KEEP int logit(const char *m) { return fprintf(stderr, "log: %s\n", m); }

/* (d) void. */
KEEP void touch(struct x *p) {
	p->val++;
	sink += p->key;
	if (p->next)
		p->next->val--;
}

/* (e) called only through a pointer. */
KEEP int viaptr(int v) {
	if (v > 3)
		return -1;
	sink = v;
	return 0;
}
int (*volatile fp)(int) = viaptr;

int main(int argc, char **argv) {
	if (parse(argc > 1 ? argv[1] : "12") < 0) {
		logit("bad number");
		return 1;
	}
	if (parse(argc > 2 ? argv[2] : "7") == -1) {
		logit("bad second number");
		return 2;
	}
	struct x *p = lookup(argc);
	if (!p) {
		logit("no entry");
		return 3;
	}
	touch(p);
	struct x *q = lookup(argc + 1);
	if (q == NULL)
		return 4;
	touch(q);
	if (fp(argc) < 0)
		return 5;
	logit("done");
	return 0;
}
`

// The library: lib_parse is exported and called both by the library
// itself (through its own PLT: default visibility can be interposed) and
// by the main program; lib_get only by the main program.
const libC = `
#include <stddef.h>
struct obj { int id; };
static struct obj objs[3] = {{1}, {2}, {3}};
volatile int lib_sink;

int lib_parse(const char *s) {
	if (s == NULL || *s == '\0')
		return -1;
	lib_sink = *s;
	return 0;
}

int lib_check(const char *s) {
	if (lib_parse(s) == -1)
		return -2;
	return 1;
}

struct obj *lib_get(int id) {
	for (int i = 0; i < 3; i++)
		if (objs[i].id == id)
			return &objs[i];
	return NULL;
}
`

const libMainC = `
#include <stdio.h>
struct obj;
int lib_parse(const char *s);
int lib_check(const char *s);
struct obj *lib_get(int id);

int main(int argc, char **argv) {
	if (lib_parse(argc > 1 ? argv[1] : "x") < 0)
		return 1;
	if (lib_get(argc) == NULL)
		return 2;
	printf("%d\n", lib_check(argv[0]));
	return 0;
}
`

// variant is one build of progC.
type variant struct {
	name, path string
	unstripped string // the same build with symbols ("" when this is it)
}

// builds are made once per test binary: gcc takes a second or two.
var (
	buildOnce sync.Once
	builds    struct {
		dir      string
		variants []variant
		lib, exe string // the library and its main program
		err      string
	}
)

// needTools skips the test when the compiler or binutils are missing.
func needTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"gcc", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// buildAll compiles progC at -O0 and -O2, PIE and not, each also
// stripped, and the library with its main program.
func buildAll(t testing.TB) {
	t.Helper()
	needTools(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "candidates-test-")
		if err != nil {
			builds.err = err.Error()
			return
		}
		builds.dir = dir
		if msg := doBuild(dir); msg != "" {
			builds.err = msg
		}
	})
	if builds.err != "" {
		t.Fatal(builds.err)
	}
}

func doBuild(dir string) string {
	for name, src := range map[string]string{"prog.c": progC, "lib.c": libC, "main.c": libMainC} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			return err.Error()
		}
	}
	run := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return name + " " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out)
		}
		return ""
	}
	for _, opt := range []string{"-O0", "-O2"} {
		for _, pie := range [][]string{{"-fPIE", "-pie"}, {"-fno-pie", "-no-pie"}} {
			name := "prog" + opt + pie[1]
			out := filepath.Join(dir, name)
			if msg := run("gcc", append(append([]string{opt}, pie...), "-o", out, "prog.c")...); msg != "" {
				return msg
			}
			if msg := run("strip", "-o", out+".stripped", out); msg != "" {
				return msg
			}
			builds.variants = append(builds.variants,
				variant{name: name, path: out},
				variant{name: name + ".stripped", path: out + ".stripped", unstripped: out})
		}
	}
	builds.lib, builds.exe = filepath.Join(dir, "libcand.so"), filepath.Join(dir, "libmain")
	if msg := run("gcc", "-O2", "-shared", "-fPIC", "-o", builds.lib, "lib.c"); msg != "" {
		return msg
	}
	return run("gcc", "-O2", "-o", builds.exe, "main.c", "-L.", "-lcand", "-Wl,-rpath,"+dir)
}

// TestMain removes the programs built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}
