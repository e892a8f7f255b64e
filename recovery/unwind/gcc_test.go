package unwind

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// These tests compile a C program with gcc, run it under ptrace until it
// stops itself, and walk its stack from the registers ptrace reads, as
// the supervisor will.

// progC stops itself with SIGSTOP three calls deep (mode 0), or faults
// there and stops in its SIGSEGV handler (mode 1). The frames differ on
// purpose: a realigns its stack through a DRAP register (CFA by
// DW_CFA_def_cfa_expression, rbp saved by DW_CFA_expression), b has a
// variable-length array (CFA on rbp even with -fomit-frame-pointer), c is
// plain. The additions after each call keep them from being tail calls.
const progC = `
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile int sink;
int *volatile bad;

#define NOINLINE __attribute__((noinline, noclone))

NOINLINE void c(int mode) {
	if (mode == 1)
		*bad = 1;
	else
		kill(getpid(), SIGSTOP);
	sink++;
}

NOINLINE void b(int mode) {
	char buf[mode + 16];
	memset(buf, mode, sizeof buf);
	c(mode);
	sink += buf[mode];
}

NOINLINE void a(int mode) {
	char vla[mode + 16];
	_Alignas(64) volatile char big[64];
	big[mode] = 1;
	vla[mode] = 2;
	b(mode);
	sink += big[mode] + vla[mode];
}

static void handler(int sig) {
	(void)sig;
	kill(getpid(), SIGSTOP);
	_exit(3);
}

int main(int argc, char **argv) {
	int mode = argc > 1 ? atoi(argv[1]) : 0;
	if (mode == 1) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = handler;
		sigaction(SIGSEGV, &sa, NULL);
	}
	a(mode);
	return sink;
}
`

// builds are the flavours compiled, all PIE.
var builds = []struct {
	name  string
	flags []string
}{
	{"O0", []string{"-O0"}},
	{"O2-nofp", []string{"-O2", "-fomit-frame-pointer"}},
	{"O0-nopie", []string{"-O0", "-fno-pie", "-no-pie"}},
}

// buildProg compiles progC with each flavour (and a stripped copy of the
// -O2 one) into a temporary directory, or skips when gcc is missing.
func buildProg(t testing.TB) map[string]string {
	t.Helper()
	for _, tool := range []string{"gcc", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "prog.c")
	if err := os.WriteFile(src, []byte(progC), 0o644); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, b := range builds {
		bin := filepath.Join(dir, "prog-"+b.name)
		flags := b.flags
		if !strings.Contains(b.name, "nopie") {
			flags = append(flags, "-fPIE", "-pie")
		}
		run(t, "gcc", append(flags, "-o", bin, src)...)
		out[b.name] = bin
	}
	out["O2-nofp-stripped"] = out["O2-nofp"] + ".stripped"
	run(t, "strip", "-o", out["O2-nofp-stripped"], out["O2-nofp"])
	return out
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// stopped starts bin under ptrace and runs it until it stops itself with
// SIGSTOP, delivering the signals it gets on the way (mode 1's SIGSEGV).
// The caller must have locked its OS thread: ptrace requests must come
// from the thread that started the tracee. The process is killed when the
// test ends.
func stopped(t testing.TB, bin, mode string) (int, unix.PtraceRegs) {
	t.Helper()
	cmd := exec.Command(bin, mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var deliver unix.Signal
	for stops := 0; ; stops++ {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			t.Fatalf("wait4: %v", err)
		}
		if !ws.Stopped() || stops > 10 {
			t.Fatalf("process %d: wait status %v", pid, ws)
		}
		switch ws.StopSignal() {
		case unix.SIGSTOP:
			var regs unix.PtraceRegs
			if err := unix.PtraceGetRegs(pid, &regs); err != nil {
				t.Fatalf("PTRACE_GETREGS: %v", err)
			}
			return pid, regs
		case unix.SIGTRAP: // the exec
			deliver = 0
		default:
			deliver = ws.StopSignal()
		}
		if err := unix.PtraceCont(pid, int(deliver)); err != nil {
			t.Fatalf("PTRACE_CONT: %v", err)
		}
	}
}

// walkProcess unwinds the stopped thread pid.
func walkProcess(t testing.TB, pid int, regs *unix.PtraceRegs, cache *Cache) ([]Frame, error) {
	t.Helper()
	maps, err := procfs.Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem := ProcessMem(pid)
	mods := LoadModules(maps, MapFilesOpener(pid), mem, cache)
	for _, err := range mods.Errors() {
		t.Logf("module: %v", err)
	}
	return Unwind(FromPtrace(regs), mem, mods, Options{})
}

func isLibc(path string) bool { return strings.HasPrefix(filepath.Base(path), "libc.so") }

// names renders the frames for failure messages.
func names(frames []Frame) string {
	var b strings.Builder
	for _, f := range frames {
		name := f.Function
		if name == "" {
			name = "?"
		}
		if f.Signal {
			name += "[signal]"
		}
		b.WriteString("\n\t")
		b.WriteString(filepath.Base(f.Module) + "!" + name)
	}
	return b.String()
}
