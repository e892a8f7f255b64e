package elfsym

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The cost of parsing a large valid ELF file: a child process parses it
// inside a memory cgroup whose limit is far below what the parser used to
// need, and reports its peak (VmHWM) and the heap it keeps.

const (
	largeFuncs = 600_000
	// largeLimit is the memory cgroup's limit: the old parser peaked at
	// about 6.5x the file size on such files (380 MiB for this one).
	largeLimit = 160 << 20
	childEnv   = "ELFSYM_LARGE_CHILD"
)

// largeELF is a valid ET_DYN file with n functions, named like C++
// symbols, in .symtab (or, stripped, only in .eh_frame), and objects.
func largeELF(n int, stripped bool) []byte {
	const text = 0x100000
	eh := &ehBuilder{addr: 0x10000000}
	c := eh.cie("zR", []byte{0x1b})
	var syms []testSym
	for i := 0; i < n; i++ {
		start := uint64(text + 16*i)
		if stripped {
			eh.fde(c, func(at uint64) []byte {
				b := le32(uint32(start - at))
				b = append(b, le32(16)...)
				return append(b, 0)
			})
			continue
		}
		syms = append(syms, testSym{name: fmt.Sprintf("_ZN7service7handler9function%08dEPKcm", i), value: start, size: 16,
			typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1})
		if i%4 == 0 {
			syms = append(syms, testSym{name: fmt.Sprintf("table_%08d", i), value: 0x20000000 + uint64(i), size: 8,
				typ: elf.STT_OBJECT, bind: elf.STB_LOCAL, shndx: 2})
		}
	}
	eh.terminate()
	secs := []testSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: text, data: bytes.Repeat([]byte{0xc3}, 16)},
		{name: ".eh_frame", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: eh.addr, data: eh.b},
	}
	if !stripped {
		tab, str := symtab(syms)
		secs = append(secs,
			testSection{name: ".symtab", typ: elf.SHT_SYMTAB, data: tab, link: 4, entsize: elf.Sym64Size},
			testSection{name: ".strtab", typ: elf.SHT_STRTAB, data: str})
	}
	progs := []testProg{
		{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}, memExtra: uint64(16 * n)},
		{typ: elf.PT_LOAD, flags: elf.PF_R, sections: []string{".eh_frame"}},
	}
	return buildELF(elf.ET_DYN, secs, progs, false).data
}

// TestLargeELFUnderMemoryLimit parses large files in a child confined to
// largeLimit bytes by a cgroup v1 memory controller.
func TestLargeELFUnderMemoryLimit(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child")
	}
	cg := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(cg, "memory.limit_in_bytes")); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and the cgroup v1 memory controller at " + cg)
	}
	for _, stripped := range []bool{false, true} {
		name := "symtab"
		if stripped {
			name = "stripped"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "large")
			data := largeELF(largeFuncs, stripped)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			size := len(data)
			data = nil
			dir := filepath.Join(cg, fmt.Sprintf("assure-elfsym-%d-%s", os.Getpid(), name))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(dir)
			for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(strconv.Itoa(largeLimit)), 0); err != nil && f == "memory.limit_in_bytes" {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestLargeELFChild$", "-test.v")
			cmd.Env = append(os.Environ(), childEnv+"="+path, "GOMAXPROCS=2")
			gate, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// In the cgroup before it parses anything.
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal(err)
			}
			gate.Write([]byte{1})
			gate.Close()
			err = cmd.Wait()
			failcnt, _ := os.ReadFile(filepath.Join(dir, "memory.failcnt"))
			if err != nil {
				t.Fatalf("child: %v (memory.failcnt %s)\n%s", err, strings.TrimSpace(string(failcnt)), out.String())
			}
			kv := map[string]int{}
			for _, line := range strings.Split(out.String(), "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
					kv[k], _ = strconv.Atoi(v)
				}
			}
			if kv["funcs"] != largeFuncs {
				t.Fatalf("child found %d functions, want %d\n%s", kv["funcs"], largeFuncs, out.String())
			}
			hwm, kept, base := kv["hwm"], kv["kept"], kv["base"]
			t.Logf("file %d MiB: peak %d MiB (%.1fx the file), keeps %d MiB, before parsing %d MiB",
				size>>20, hwm>>20, float64(hwm)/float64(size), kept>>20, base>>20)
			if hwm > largeLimit {
				t.Errorf("peak %d bytes above the limit %d", hwm, largeLimit)
			}
			if hwm-base > 3*kept+16<<20 {
				t.Errorf("parsing took %d MiB, more than 3x the %d MiB it keeps", (hwm-base)>>20, kept>>20)
			}
		})
	}
}

// TestLargeELFChild is the child of TestLargeELFUnderMemoryLimit.
func TestLargeELFChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("only run by TestLargeELFUnderMemoryLimit")
	}
	var b [1]byte
	os.Stdin.Read(b[:]) // wait until in the cgroup
	runtime.GC()
	base := vmHWM(t)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	hwm := vmHWM(t)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("funcs=%d\nhwm=%d\nbase=%d\nkept=%d\n", len(f.Funcs()), hwm, base, ms.HeapAlloc)
	runtime.KeepAlive(f)
}

func vmHWM(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
