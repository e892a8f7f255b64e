package candidates

import (
	"bytes"
	"debug/elf"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// analyzeBytes runs the analysis on an image in memory, as the fuzzer
// and the corruption test do. An error is fine (the file is bad); a
// panic caught by Analyze is a bug in this package, and so is a report
// that does not account for every function.
func analyzeBytes(t *testing.T, data []byte) {
	t.Helper()
	sym, err := elfsym.NewFile(bytes.NewReader(data), int64(len(data)), "corrupt")
	if err != nil {
		return
	}
	rep, err := Analyze(sym, bytes.NewReader(data), int64(len(data)), Options{MaxTime: 5 * time.Second})
	if err != nil {
		if strings.Contains(err.Error(), "internal error") {
			t.Fatalf("Analyze panicked: %v", err)
		}
		return
	}
	checkTotals(t, rep)
	for _, c := range rep.Candidates {
		if c.Return == nil {
			t.Fatalf("candidate %s without a return value", c.Label())
		}
	}
}

// sectionRange returns the file extent of the named section, or 0, 0.
func sectionRange(data []byte, name string) (int, int) {
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return 0, 0
	}
	s := ef.Section(name)
	if s == nil || s.Type == elf.SHT_NOBITS || s.Offset+s.Size > uint64(len(data)) {
		return 0, 0
	}
	return int(s.Offset), int(s.Offset + s.Size)
}

// TestCorrupt damages real binaries: truncated at many lengths, random
// bytes over the code, the relocations, the symbols and the headers,
// and code replaced by garbage. Nothing may panic, and what is left must
// still be reported consistently.
func TestCorrupt(t *testing.T) {
	buildAll(t)
	for _, path := range []string{builds.variants[4].path, builds.variants[5].path, builds.lib, builds.exe} {
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewSource(1))
		for n := 0; n < len(orig); n += len(orig)/64 + 1 {
			analyzeBytes(t, orig[:n])
		}
		for _, sec := range []string{".text", ".plt", ".plt.sec", ".rela.plt", ".rela.dyn", ".dynsym", ".dynstr", ".eh_frame", ".symtab", ""} {
			lo, hi := sectionRange(orig, sec)
			if sec == "" {
				lo, hi = 0, 0x40+64*14 // ELF header and the first program headers
			}
			if hi <= lo {
				continue
			}
			for trial := 0; trial < 40; trial++ {
				data := bytes.Clone(orig)
				for k := 0; k < 1+rng.Intn(8); k++ {
					data[lo+rng.Intn(hi-lo)] = byte(rng.Intn(256))
				}
				analyzeBytes(t, data)
			}
		}
		lo, hi := sectionRange(orig, ".text")
		garbage := bytes.Clone(orig)
		rng.Read(garbage[lo:hi])
		analyzeBytes(t, garbage)
	}
}

// FuzzAnalyze feeds arbitrary images to the analysis. Seeds are the
// test programs when gcc is installed.
func FuzzAnalyze(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	if _, err := os.Stat("/usr/bin/gcc"); err == nil {
		buildAll(f)
		for _, p := range []string{builds.variants[4].path, builds.variants[5].path, builds.lib} {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		analyzeBytes(t, data)
	})
}
