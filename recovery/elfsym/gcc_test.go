package elfsym

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// These tests compile small C programs and compare what the package finds
// with what binutils (nm, readelf) say about the same files.

const progC = `
#include <stdio.h>
#include <stdlib.h>

int global_data = 42;
int dup_a(int);

int handle_request(int x) {
	if (x < 0)
		abort();
	return x * 2 + global_data;
}

static int helper(int x) { return x + 1; }

static int ifn_impl(void) { return 7; }
static void *resolve_ifn(void) { return (void *)ifn_impl; }
int ifn(void) __attribute__((ifunc("resolve_ifn")));

int main(int argc, char **argv) {
	(void)argv;
	printf("%d\n", handle_request(helper(argc)) + dup_a(argc) + ifn());
	return 0;
}
`

const dup1C = `
int dup_b(int);
static int dup(int x) { return x + 3; }
int dup_a(int x) { return dup(x) + dup_b(x); }
`

const dup2C = `
static int dup(int x) { return x * 5; }
int dup_b(int x) { return dup(x); }
`

const libC = `
static int lib_helper(const char *s) { return s[0]; }
int parse_header(const char *s) { return lib_helper(s) - 1; }
int old_vfunc(void) { return 1; }
int new_vfunc(void) { return 2; }
__asm__(".symver old_vfunc,vfunc@V1");
__asm__(".symver new_vfunc,vfunc@@V2");
`

const libMap = `
V1 { global: parse_header; vfunc; local: *; };
V2 { global: vfunc; } V1;
`

type binaries struct {
	pie, noPIE, lib                         string
	pieStripped, noPIEStripped, libStripped string
}

// buildBinaries compiles the test programs into a temporary directory, or
// skips the test when the toolchain is missing.
func buildBinaries(t testing.TB) binaries {
	t.Helper()
	for _, tool := range []string{"gcc", "nm", "strip", "readelf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	for name, src := range map[string]string{"prog.c": progC, "dup1.c": dup1C, "dup2.c": dup2C, "lib.c": libC, "lib.map": libMap} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := binaries{
		pie: filepath.Join(dir, "prog_pie"), noPIE: filepath.Join(dir, "prog_nopie"), lib: filepath.Join(dir, "libparse.so.1"),
	}
	b.pieStripped, b.noPIEStripped, b.libStripped = b.pie+".stripped", b.noPIE+".stripped", b.lib+".stripped"
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	srcs := []string{"prog.c", "dup1.c", "dup2.c"}
	run("gcc", append([]string{"-O0", "-fPIE", "-pie", "-o", b.pie}, srcs...)...)
	run("gcc", append([]string{"-O0", "-fno-pie", "-no-pie", "-o", b.noPIE}, srcs...)...)
	run("gcc", "-O0", "-shared", "-fPIC", "-Wl,--version-script=lib.map", "-o", b.lib, "lib.c")
	run("strip", "-o", b.pieStripped, b.pie)
	run("strip", "-o", b.noPIEStripped, b.noPIE)
	run("strip", "-o", b.libStripped, b.lib)
	return b
}

// nmSym is a line of nm output.
type nmSym struct {
	addr uint64
	typ  byte
	name string
}

func nm(t *testing.T, args ...string) []nmSym {
	t.Helper()
	out, err := exec.Command("nm", args...).Output()
	if err != nil {
		t.Fatalf("nm %v: %v", args, err)
	}
	var syms []nmSym
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // undefined symbols have no address
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			t.Fatalf("nm line %q: %v", line, err)
		}
		syms = append(syms, nmSym{addr: addr, typ: f[1][0], name: f[2]})
	}
	return syms
}

// W (weak) is left out: nm uses it for weak data too (data_start).
func isNMFunc(typ byte) bool { return strings.IndexByte("Tti", typ) >= 0 }

// nmFuncs returns the function names nm lists, with their addresses.
func nmFuncs(t *testing.T, args ...string) map[string][]uint64 {
	m := map[string][]uint64{}
	for _, s := range nm(t, args...) {
		if isNMFunc(s.typ) && s.addr != 0 {
			m[s.name] = append(m[s.name], s.addr)
		}
	}
	return m
}

func nmAddr(t *testing.T, bin, name string) uint64 {
	t.Helper()
	addrs := nmFuncs(t, bin)[name]
	if len(addrs) != 1 {
		t.Fatalf("nm %s: %s at %x", bin, name, addrs)
	}
	return addrs[0]
}

func open(t *testing.T, path string) *File {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// loadSeg is a PT_LOAD line of readelf -lW.
type loadSeg struct {
	off, vaddr, filesz, memsz uint64
	exec                      bool
}

func readelfLoads(t *testing.T, path string) (loads []loadSeg, interp string) {
	t.Helper()
	out, err := exec.Command("readelf", "-lW", path).Output()
	if err != nil {
		t.Fatalf("readelf -lW %s: %v", path, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if _, after, ok := strings.Cut(line, "[Requesting program interpreter: "); ok {
			interp = strings.TrimSuffix(strings.TrimSpace(after), "]")
		}
		f := strings.Fields(line)
		if len(f) < 7 || f[0] != "LOAD" {
			continue
		}
		var n [5]uint64
		for i := range n {
			if n[i], err = strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64); err != nil {
				t.Fatalf("readelf line %q: %v", line, err)
			}
		}
		flags := strings.Join(f[6:len(f)-1], "")
		loads = append(loads, loadSeg{off: n[0], vaddr: n[1], filesz: n[3], memsz: n[4], exec: strings.Contains(flags, "E")})
	}
	return loads, interp
}

// firstBytes reads the n bytes at vaddr through the section holding it,
// an independent path from FileOffset's program headers.
func firstBytes(t *testing.T, path string, vaddr uint64, n int) []byte {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, s := range ef.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_ALLOC != 0 && vaddr >= s.Addr && vaddr+uint64(n) <= s.Addr+s.Size {
			b := make([]byte, n)
			if _, err := s.ReadAt(b, int64(vaddr-s.Addr)); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no section holds 0x%x", vaddr)
	return nil
}

func TestCompiledExecutables(t *testing.T) {
	bins := buildBinaries(t)
	for _, tc := range []struct {
		path string
		pie  bool
	}{{bins.pie, true}, {bins.noPIE, false}} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			f := open(t, tc.path)
			loads, interp := readelfLoads(t, tc.path)
			if f.PIE() != tc.pie {
				t.Errorf("PIE() = %v", f.PIE())
			}
			if f.Interp() != interp || interp == "" {
				t.Errorf("Interp() = %q, readelf says %q", f.Interp(), interp)
			}
			checkAgainstNM(t, f, tc.path)
			checkOffsets(t, f, tc.path, loads)

			// Lookup errors on a real file.
			for name, is := range map[string]error{
				"printf":      ErrUndefined,
				"abort":       ErrUndefined,
				"global_data": ErrNotFunction,
				"nosuch":      ErrNotFound,
				"dup":         ErrAmbiguous,
				"ifn":         ErrIndirect,
			} {
				if _, err := f.Lookup(name); !errors.Is(err, is) || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("Lookup(%q) = %v, want %v naming the file", name, err, is)
				}
			}
			data := nmAddr(t, tc.path, "main")
			if name, off, ok := f.Symbolize(data + 3); name != "main" || off != 3 || !ok {
				t.Errorf("Symbolize(main+3) = %q, %d, %v", name, off, ok)
			}
			for _, s := range nm(t, tc.path) {
				if s.name == "global_data" && f.IsExecAddr(s.addr) {
					t.Errorf("IsExecAddr(global_data) = true")
				}
			}
		})
	}
}

// checkAgainstNM compares Lookup and Funcs with nm's function list.
func checkAgainstNM(t *testing.T, f *File, path string) {
	t.Helper()
	byName := nmFuncs(t, path)
	byAddr := map[uint64][]string{}
	for name, addrs := range byName {
		for _, a := range addrs {
			base, _, _ := strings.Cut(name, "@")
			byAddr[a] = append(byAddr[a], base)
		}
	}
	syms := nm(t, path)
	typeOf := map[string]byte{}
	for _, s := range syms {
		typeOf[s.name] = s.typ
	}
	checked := 0
	for name, addrs := range byName {
		fn, err := f.Lookup(name)
		switch {
		case len(addrs) > 1:
			if !errors.Is(err, ErrAmbiguous) {
				t.Errorf("Lookup(%q) = %+v, %v; nm lists it at %x", name, fn, err, addrs)
			}
		case typeOf[name] == 'i':
			if !errors.Is(err, ErrIndirect) {
				t.Errorf("Lookup(IFUNC %q) = %+v, %v", name, fn, err)
			}
		case err != nil:
			t.Errorf("Lookup(%q): %v (nm: 0x%x)", name, err, addrs[0])
		case fn.Addr != addrs[0]:
			t.Errorf("Lookup(%q) = 0x%x, nm says 0x%x", name, fn.Addr, addrs[0])
		default:
			checked++
		}
	}
	if checked < 5 {
		t.Errorf("only %d functions cross-checked", checked)
	}
	funcs := f.Funcs()
	seen := map[uint64]bool{}
	for i, fn := range funcs {
		if i > 0 && fn.Addr <= funcs[i-1].Addr {
			t.Fatalf("Funcs not sorted/unique at %d: %+v after %+v", i, fn, funcs[i-1])
		}
		seen[fn.Addr] = true
		if names, ok := byAddr[fn.Addr]; ok && !contains(names, fn.Name) {
			t.Errorf("Funcs names 0x%x %q, nm says %v", fn.Addr, fn.Name, names)
		}
	}
	for addr, names := range byAddr {
		if !seen[addr] {
			t.Errorf("Funcs lacks 0x%x (%v)", addr, names)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkOffsets checks FileOffset against readelf's segments and against
// the bytes the sections hold at each function.
func checkOffsets(t *testing.T, f *File, path string, loads []loadSeg) {
	t.Helper()
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range f.Funcs() {
		off, err := f.FileOffset(fn.Addr)
		if err != nil {
			t.Errorf("FileOffset(%s 0x%x): %v", fn.Name, fn.Addr, err)
			continue
		}
		want, exec := uint64(0), false
		for _, l := range loads {
			if fn.Addr >= l.vaddr && fn.Addr < l.vaddr+l.filesz {
				want, exec = l.off+fn.Addr-l.vaddr, l.exec
				break
			}
		}
		if off != want {
			t.Errorf("FileOffset(%s 0x%x) = 0x%x, readelf -l gives 0x%x", fn.Name, fn.Addr, off, want)
		}
		if f.IsExecAddr(fn.Addr) != exec || !exec {
			t.Errorf("IsExecAddr(%s 0x%x) = %v, readelf says %v", fn.Name, fn.Addr, f.IsExecAddr(fn.Addr), exec)
		}
		n := 4
		if got, want := file[off:off+uint64(n)], firstBytes(t, path, fn.Addr, n); !bytes.Equal(got, want) {
			t.Errorf("bytes at FileOffset(%s) = % x, section has % x", fn.Name, got, want)
		}
	}
}

func TestCompiledStripped(t *testing.T) {
	bins := buildBinaries(t)
	for _, tc := range []struct{ full, stripped string }{
		{bins.pie, bins.pieStripped}, {bins.noPIE, bins.noPIEStripped},
	} {
		t.Run(filepath.Base(tc.stripped), func(t *testing.T) {
			f := open(t, tc.stripped)
			if n := len(nm(t, tc.stripped)); n != 0 {
				t.Fatalf("nm still lists %d symbols", n)
			}
			funcs := map[uint64]Func{}
			for _, fn := range f.Funcs() {
				funcs[fn.Addr] = fn
			}
			for _, name := range []string{"main", "handle_request", "helper", "dup_a", "dup_b", "ifn_impl", "resolve_ifn"} {
				addr := nmAddr(t, tc.full, name)
				fn, ok := funcs[addr]
				if !ok || fn.Source != SourceEHFrame || fn.Name != "" || fn.Size == 0 {
					t.Errorf("Funcs of stripped file: %s at 0x%x: %+v, %v", name, addr, fn, ok)
				}
				if _, err := f.Lookup(name); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `(stripped? use "address")`) {
					t.Errorf("Lookup(%s) = %v", name, err)
				}
			}
			main := nmAddr(t, tc.full, "main")
			if name, off, ok := f.Symbolize(main + 1); name != fmt.Sprintf("0x%x", main) || off != 1 || !ok {
				t.Errorf("Symbolize(main+1) = %q, %d, %v", name, off, ok)
			}
			full := open(t, tc.full)
			if f.Interp() != full.Interp() || f.PIE() != full.PIE() {
				t.Errorf("stripping changed Interp/PIE")
			}
		})
	}
}

func TestCompiledLibrary(t *testing.T) {
	bins := buildBinaries(t)
	f := open(t, bins.lib)
	if !f.PIE() || f.Interp() != "" {
		t.Errorf("PIE %v Interp %q", f.PIE(), f.Interp())
	}
	loads, _ := readelfLoads(t, bins.lib)
	checkOffsets(t, f, bins.lib, loads)

	v1, v2 := nmAddr(t, bins.lib, "vfunc@V1"), nmAddr(t, bins.lib, "vfunc@@V2")
	for name, want := range map[string]uint64{
		"parse_header": nmAddr(t, bins.lib, "parse_header"),
		"lib_helper":   nmAddr(t, bins.lib, "lib_helper"),
		"vfunc":        v2,
		"vfunc@@V2":    v2,
		"vfunc@V1":     v1,
	} {
		if fn, err := f.Lookup(name); err != nil || fn.Addr != want || fn.Source != SourceSymtab {
			t.Errorf("Lookup(%q) = %+v, %v; want 0x%x", name, fn, err, want)
		}
	}

	s := open(t, bins.libStripped)
	// The dynamic symbols survive stripping, with their versions.
	dyn := nmFuncs(t, "-D", bins.libStripped)
	for name, want := range map[string]uint64{
		"parse_header": dyn["parse_header@@V1"][0],
		"vfunc":        dyn["vfunc@@V2"][0],
	} {
		if fn, err := s.Lookup(name); err != nil || fn.Addr != want || fn.Source != SourceDynsym {
			t.Errorf("stripped Lookup(%q) = %+v, %v; want 0x%x from dynsym", name, fn, err, want)
		}
	}
	if _, err := s.Lookup("lib_helper"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stripped Lookup(lib_helper) = %v", err)
	}
	// The static helper is still found, unnamed, through .eh_frame.
	helper := nmAddr(t, bins.lib, "lib_helper")
	var found bool
	for _, fn := range s.Funcs() {
		if fn.Addr == helper {
			found = fn.Source == SourceEHFrame && fn.Name == ""
		}
	}
	if !found {
		t.Errorf("stripped Funcs lacks lib_helper at 0x%x: %+v", helper, s.Funcs())
	}
	if name, off, ok := s.Symbolize(dyn["parse_header@@V1"][0] + 2); name != "parse_header" || off != 2 || !ok {
		t.Errorf("Symbolize(parse_header+2) = %q, %d, %v", name, off, ok)
	}
}

func TestCompiledTruncated(t *testing.T) {
	bins := buildBinaries(t)
	for _, path := range []string{bins.pie, bins.libStripped} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		step := len(data)/500 + 1
		for n := 0; n < len(data); n += step {
			f, err := NewFile(bytes.NewReader(data[:n]), int64(n), "cut")
			if err == nil && f == nil {
				t.Fatal("nil file without error")
			}
		}
		// Cut in the middle of the section headers: always an error.
		if _, err := NewFile(bytes.NewReader(data[:len(data)-10]), int64(len(data)-10), "cut"); err == nil {
			t.Errorf("%s: truncated section headers accepted", path)
		}
	}
}
