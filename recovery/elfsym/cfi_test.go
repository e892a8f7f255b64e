package elfsym

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

func TestCFILookup(t *testing.T) {
	for _, o := range []sampleOpts{{}, {noSymtab: true}, {noSections: true}} {
		s := sampleELF(o)
		c, err := NewCFI(bytes.NewReader(s.data), int64(len(s.data)), "sample")
		if err != nil || c.Incomplete() != nil {
			t.Fatalf("%+v: NewCFI: %v, %v", o, err, c.Incomplete())
		}
		if c.Len() != 3 {
			t.Errorf("%+v: %d FDEs, want 3", o, c.Len())
		}
		for _, tc := range []struct {
			vaddr, start, size uint64
		}{{sampleText, sampleText, 0x30}, {sampleText + 0x2f, sampleText, 0x30}, {sampleText + 0x41, sampleText + 0x40, 0x10}, {sampleText + 0x87, sampleText + 0x80, 8}} {
			d, ok := c.Lookup(tc.vaddr)
			if !ok || d.Start != tc.start || d.Size != tc.size {
				t.Errorf("%+v: Lookup(0x%x) = %+v, %v; want [0x%x, +0x%x)", o, tc.vaddr, d, ok, tc.start, tc.size)
				continue
			}
			cie := d.CIE
			if cie.CodeAlign != 1 || cie.DataAlign != -8 || cie.ReturnReg != 16 || cie.Augmentation != "zR" || cie.Signal {
				t.Errorf("%+v: CIE %+v", o, cie)
			}
			// The sample CIE's program is DW_CFA_def_cfa rsp+8, padded
			// with DW_CFA_nop; the FDEs have only padding.
			if !bytes.HasPrefix(cie.Initial, []byte{0x0c, 0x07, 0x08}) || len(bytes.Trim(cie.Initial[3:], "\x00")) != 0 {
				t.Errorf("%+v: initial instructions % x", o, cie.Initial)
			}
			if len(bytes.Trim(d.Instructions, "\x00")) != 0 {
				t.Errorf("%+v: instructions % x", o, d.Instructions)
			}
		}
		for _, v := range []uint64{0, sampleText - 1, sampleText + 0x30, sampleText + 0x88, ^uint64(0)} {
			if d, ok := c.Lookup(v); ok {
				t.Errorf("%+v: Lookup(0x%x) = %+v, want none", o, v, d)
			}
		}
	}
}

func TestCFISignalAndDamage(t *testing.T) {
	e := &ehBuilder{addr: ehAddr}
	sig := e.cie("zRS", []byte{peUdata4})
	e.fde(sig, func(uint64) []byte { return append(append(le32(0x1000), le32(0x10)...), 0, 0x0a) })
	// No room for the augmentation data length 'z' requires.
	e.fde(sig, func(uint64) []byte { return append(le32(0x2000), le32(0x10)...) })
	e.fde(sig, func(uint64) []byte { return append(append(le32(0x3000), le32(0x10)...), 0) })
	c := &CFI{name: "t"}
	c.index(newEH(e.b))
	if err := c.Incomplete(); err == nil || !strings.Contains(err.Error(), "augmentation data") {
		t.Errorf("damaged table: Incomplete() = %v", err)
	}
	d, ok := c.Lookup(0x1004)
	if !ok || !d.CIE.Signal || d.CIE.Augmentation != "zRS" || !bytes.HasPrefix(d.Instructions, []byte{0x0a}) {
		t.Fatalf("Lookup = %+v, %v", d, ok)
	}
	// The FDEs from the damage on are not indexed.
	for _, v := range []uint64{0x2004, 0x3004} {
		if d, ok := c.Lookup(v); ok {
			t.Errorf("Lookup(0x%x) = %+v after the damage", v, d)
		}
	}
}

func TestCFIRejects(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("not an ELF file"), sampleELF(sampleOpts{}).data[:100]} {
		if c, err := NewCFI(bytes.NewReader(data), int64(len(data)), "bad"); err == nil {
			t.Errorf("NewCFI(%d bytes) = %v, want an error", len(data), c)
		}
	}
}

// TestCFIGCC checks the index against readelf on compiler output.
func TestCFIGCC(t *testing.T) {
	bins := buildBinaries(t)
	for _, p := range []string{bins.pie, bins.noPIEStripped, bins.libStripped, "/lib/x86_64-linux-gnu/libc.so.6"} {
		c, err := OpenCFI(p)
		if err != nil {
			if strings.HasPrefix(p, "/lib") {
				t.Logf("%s: %v", p, err)
				continue
			}
			t.Fatal(err)
		}
		// readelf exits 1 on libc without saying why; its output is whole.
		out, err := exec.Command("readelf", "--debug-dump=frames", p).Output()
		if err != nil && len(out) == 0 {
			t.Fatalf("readelf %s: %v", p, err)
		}
		n := 0
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 6 && f[3] == "FDE" && strings.HasPrefix(f[5], "pc=") {
				n++
				lo, _, _ := strings.Cut(strings.TrimPrefix(f[5], "pc="), "..")
				var start uint64
				if _, err := fmtSscanHex(lo, &start); err != nil {
					t.Fatalf("readelf line %q: %v", line, err)
				}
				if d, ok := c.Lookup(start); !ok || d.Start != start {
					t.Errorf("%s: Lookup(0x%x) = %+v, %v", p, start, d, ok)
				}
			}
		}
		if c.Len() != n || n == 0 {
			t.Errorf("%s: %d FDEs indexed, readelf lists %d", p, c.Len(), n)
		}
	}
}

func fmtSscanHex(s string, v *uint64) (int, error) { return fmt.Sscanf(s, "%x", v) }

// FuzzCFI feeds whole files to NewCFI and raw tables to the index.
func FuzzCFI(f *testing.F) {
	for _, o := range []sampleOpts{{}, {noSections: true}} {
		f.Add(sampleELF(o).data)
	}
	s := sampleELF(sampleOpts{})
	f.Add(s.data[s.off[".eh_frame"]:])
	f.Add(oneFDE("zPLR", []byte{0x9b, 0, 0, 0, 0, 0x1b, 0x1b}, func(uint64) []byte { return make([]byte, 13) }))
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := NewCFI(bytes.NewReader(data), int64(len(data)), "fuzz"); err == nil {
			checkLookups(t, c)
		}
		for _, lenient := range []bool{false, true} {
			eh := newEH(data)
			eh.lenient, eh.hasText, eh.hasData = lenient, true, true
			c := &CFI{name: "fuzz"}
			c.index(eh)
			checkLookups(t, c)
		}
	})
}

func checkLookups(t *testing.T, c *CFI) {
	for _, d := range c.fdes {
		for _, v := range []uint64{d.start, d.start + d.size - 1} {
			got, ok := c.Lookup(v)
			if !ok || v < got.Start || v-got.Start >= got.Size || got.CIE == nil {
				t.Fatalf("Lookup(0x%x) = %+v, %v", v, got, ok)
			}
		}
	}
	for _, v := range []uint64{0, sampleText, ^uint64(0)} {
		if d, ok := c.Lookup(v); ok && (v < d.Start || v-d.Start >= d.Size || d.CIE == nil) {
			t.Fatalf("Lookup(0x%x) = %+v", v, d)
		}
	}
}
