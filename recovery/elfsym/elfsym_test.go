package elfsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newSample(t *testing.T, o sampleOpts) *File {
	t.Helper()
	b := sampleELF(o)
	f, err := NewFile(bytes.NewReader(b.data), int64(len(b.data)), "sample")
	if err != nil {
		t.Fatalf("NewFile(sample %+v): %v", o, err)
	}
	return f
}

func TestSampleSymbols(t *testing.T) {
	f := newSample(t, sampleOpts{})
	if !f.PIE() || f.Interp() != "" || f.Name() != "sample" {
		t.Errorf("PIE %v Interp %q Name %q", f.PIE(), f.Interp(), f.Name())
	}
	want := []Func{
		{Name: "f1", Addr: sampleText, Size: 0x30, Source: SourceSymtab},
		{Name: "f2", Addr: sampleText + 0x40, Size: 0x10, Source: SourceSymtab},
	}
	if got := f.Funcs(); !reflect.DeepEqual(got, want) {
		t.Errorf("Funcs() = %+v, want %+v", got, want)
	}
	// Funcs returns a copy.
	f.Funcs()[0].Name = "changed"
	if f.Funcs()[0].Name != "f1" {
		t.Error("Funcs() exposes internal state")
	}

	fn, err := f.Lookup("f2")
	if err != nil || fn != want[1] {
		t.Errorf("Lookup(f2) = %+v, %v", fn, err)
	}
	for _, tc := range []struct {
		name string
		is   error
		msg  string
	}{
		{"nosuch", ErrNotFound, `no function "nosuch" in sample (stripped? use "address")`},
		{"obj", ErrNotFunction, `"obj" in sample is not a function (symbol type STT_OBJECT)`},
		{"imp", ErrUndefined, `function "imp" is imported, not defined, in sample`},
		{"f1@V1", ErrNotFound, `no function "f1@V1" in sample (stripped? use "address")`},
	} {
		_, err := f.Lookup(tc.name)
		if !errors.Is(err, tc.is) || err.Error() != tc.msg {
			t.Errorf("Lookup(%q) = %v, want %q (%v)", tc.name, err, tc.msg, tc.is)
		}
	}

	for _, tc := range []struct {
		addr uint64
		name string
		off  uint64
		ok   bool
	}{
		{sampleText, "f1", 0, true},
		{sampleText + 0x2f, "f1", 0x2f, true},
		{sampleText + 0x30, "", 0, false}, // past f1's size
		{sampleText + 0x41, "f2", 1, true},
		{sampleText + 0x80, "", 0, false}, // unnamed: not in the symbol table
		{sampleText - 1, "", 0, false},
		{0, "", 0, false},
		{^uint64(0), "", 0, false},
	} {
		name, off, ok := f.Symbolize(tc.addr)
		if name != tc.name || off != tc.off || ok != tc.ok {
			t.Errorf("Symbolize(0x%x) = %q, 0x%x, %v; want %q, 0x%x, %v", tc.addr, name, off, ok, tc.name, tc.off, tc.ok)
		}
	}
}

func TestSampleSegments(t *testing.T) {
	b := sampleELF(sampleOpts{})
	f := newSample(t, sampleOpts{})
	for _, tc := range []struct {
		vaddr uint64
		off   uint64
		ok    bool
	}{
		{sampleText, b.off[".text"], true},
		{sampleText + 0xff, b.off[".text"] + 0xff, true},
		{sampleText + 0x100, 0, false},
		{0x2004, b.off[".eh_frame"] + 4, true},
		{sampleData + 8, b.off[".data"] + 8, true},
		{sampleData + 0x20, 0, false}, // bss part: in memory, not in the file
		{0, 0, false},
	} {
		off, err := f.FileOffset(tc.vaddr)
		if (err == nil) != tc.ok || off != tc.off {
			t.Errorf("FileOffset(0x%x) = 0x%x, %v; want 0x%x ok=%v", tc.vaddr, off, err, tc.off, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "sample") {
			t.Errorf("FileOffset error does not name the file: %v", err)
		}
	}
	for addr, want := range map[uint64]bool{
		sampleText: true, sampleText + 0xff: true, sampleText + 0x100: false,
		0x2000: false, sampleData: false, 0: false,
	} {
		if got := f.IsExecAddr(addr); got != want {
			t.Errorf("IsExecAddr(0x%x) = %v", addr, got)
		}
	}
}

func TestSampleStripped(t *testing.T) {
	want := []Func{
		{Addr: sampleText, Size: 0x30, Source: SourceEHFrame},
		{Addr: sampleText + 0x40, Size: 0x10, Source: SourceEHFrame},
		{Addr: sampleText + 0x80, Size: 0x8, Source: SourceEHFrame},
	}
	for _, o := range []sampleOpts{{noSymtab: true}, {noSections: true}} {
		f := newSample(t, o)
		if got := f.Funcs(); !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: Funcs() = %+v, want %+v", o, got, want)
		}
		name, off, ok := f.Symbolize(sampleText + 0x81)
		if name != "0x1080" || off != 1 || !ok {
			t.Errorf("%+v: Symbolize = %q, %d, %v", o, name, off, ok)
		}
		if _, err := f.Lookup("f1"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "stripped?") {
			t.Errorf("%+v: Lookup(f1) = %v", o, err)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sample")
	if err := os.WriteFile(path, sampleELF(sampleOpts{}).data, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != path || len(f.Funcs()) != 2 {
		t.Errorf("Name %q, %d funcs", f.Name(), len(f.Funcs()))
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}

	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(dir) = %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err == nil {
		if _, err := Open(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open(fifo) = %v", err)
		}
	}
	text := filepath.Join(dir, "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(text); !errors.Is(err, ErrNotELF) || err.Error() != text+": not an ELF file" {
		t.Errorf("Open(script) = %v", err)
	}
}

// patch returns a copy of data with v written at off.
func patch(data []byte, off uint64, v any) []byte {
	out := bytes.Clone(data)
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
		panic(err)
	}
	copy(out[off:], buf.Bytes())
	return out
}

// shdr returns the offset of field (byte offset within a 64-bit section
// header) of the section called name.
func shdr(b builtELF, name string, field uint64) uint64 {
	ef, err := elf.NewFile(bytes.NewReader(b.data))
	if err != nil {
		panic(err)
	}
	for i, s := range ef.Sections {
		if s.Name == name {
			return b.shoff + uint64(i)*64 + field
		}
	}
	panic("no section " + name)
}

const (
	shType   = 4
	shFlags  = 8
	shOffset = 24
	shSize   = 32
	shLink   = 40
	shEnt    = 56
)

func TestMalformed(t *testing.T) {
	good := sampleELF(sampleOpts{})
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not an ELF file"},
		{"short magic", []byte("\x7fEL"), "not an ELF file"},
		{"magic only", []byte("\x7fELF"), "truncated ELF header"},
		{"text", []byte("hello, world, this is not an ELF file at all, no no no no no no no no"), "not an ELF file"},
		{"bad class", patch(good.data, elf.EI_CLASS, uint8(9)), "unknown ELF class"},
		{"core file", patch(good.data, 16, uint16(elf.ET_CORE)), "unsupported ELF type ET_CORE"},
		{"relocatable", patch(good.data, 16, uint16(elf.ET_REL)), "unsupported ELF type ET_REL"},
		{"truncated headers", good.data[:100], "malformed ELF file"},
		{"symtab past EOF", patch(good.data, shdr(good, ".symtab", shSize), uint64(1<<40)), "section .symtab: extent"},
		{"symtab offset past EOF", patch(good.data, shdr(good, ".symtab", shOffset), uint64(1<<62)), "section .symtab: extent"},
		{"symtab entsize", patch(good.data, shdr(good, ".symtab", shEnt), uint64(7)), "section .symtab: entry size 7, want 24"},
		{"symtab bad link", patch(good.data, shdr(good, ".symtab", shLink), uint32(999)), "invalid string table index 999"},
		{"symtab link to itself", patch(good.data, shdr(good, ".symtab", shLink), uint32(5)), "is not an uncompressed string table"},
		{"strtab past EOF", patch(good.data, shdr(good, ".strtab", shSize), uint64(1<<40)), "string table: extent"},
		{"compressed symtab", patch(good.data, shdr(good, ".symtab", shFlags), uint64(elf.SHF_COMPRESSED)), "compressed"},
		{"compressed shstrtab", patch(good.data, shdr(good, ".shstrtab", shFlags), uint64(elf.SHF_COMPRESSED)), "compressed section name table"},
		{"compressed shstrtab via SHN_XINDEX", patch(patch(patch(good.data, shdr(good, ".shstrtab", shFlags), uint64(elf.SHF_COMPRESSED)),
			62, uint16(elf.SHN_XINDEX)), good.shoff+shLink, uint32(7)), "compressed section name table"},
		{"PT_LOAD past EOF", patch(good.data, 64+8, uint64(1<<40)), "program header 0 (PT_LOAD): extent"},
		{"filesz > memsz", patch(good.data, 64+40, uint64(1)), "invalid PT_LOAD extent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFile(bytes.NewReader(tc.data), int64(len(tc.data)), "bad")
			if err == nil {
				t.Fatalf("NewFile succeeded: %d funcs", len(f.Funcs()))
			}
			if !strings.HasPrefix(err.Error(), "bad: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to start with the name and contain %q", err, tc.want)
			}
		})
	}
}

// TestDamagedEHFrame: a stripped file whose unwind table is damaged
// still opens, with the functions found before the damage, and says why
// the rest is missing.
func TestDamagedEHFrame(t *testing.T) {
	stripped := sampleELF(sampleOpts{noSymtab: true})
	whole, err := NewFile(bytes.NewReader(stripped.data), int64(len(stripped.data)), "good")
	if err != nil || whole.Incomplete() != nil {
		t.Fatalf("undamaged: %v, %v", err, whole.Incomplete())
	}
	ehOff := stripped.off[".eh_frame"]
	le := binary.LittleEndian
	second := ehOff + 4 + uint64(le.Uint32(stripped.data[ehOff:])) // after the CIE
	third := second + 4 + uint64(le.Uint32(stripped.data[second:]))
	for _, tc := range []struct {
		name string
		data []byte
		want string
		fdes int // functions from .eh_frame still found
	}{
		{"eh_frame past EOF", patch(stripped.data, shdr(stripped, ".eh_frame", shSize), uint64(1<<40)), ".eh_frame: extent", 0},
		{"eh_frame entry too long", patch(stripped.data, ehOff, uint32(0x7fffffff)), ".eh_frame: entry at offset 0x0: length 0x7fffffff exceeds", 0},
		{"eh_frame 64-bit length", patch(patch(stripped.data, ehOff, uint32(0xffffffff)), ehOff+4, uint64(1<<63)), ".eh_frame: entry at offset 0x0: length 0x8000000000000000 exceeds", 0},
		{"damage after the first FDE", patch(stripped.data, third, uint32(0x7fffffff)), fmt.Sprintf(".eh_frame: entry at offset 0x%x: length 0x7fffffff exceeds", third-ehOff), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFile(bytes.NewReader(tc.data), int64(len(tc.data)), "bad")
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			if inc := f.Incomplete(); inc == nil || !strings.Contains(inc.Error(), tc.want) {
				t.Errorf("Incomplete() = %v, want it to contain %q", inc, tc.want)
			}
			n := 0
			for _, fn := range f.Funcs() {
				if fn.Source == SourceEHFrame {
					n++
				}
			}
			if n != tc.fdes {
				t.Errorf("%d functions from .eh_frame, want %d", n, tc.fdes)
			}
		})
	}
}

func TestTruncatedAndGarbage(t *testing.T) {
	for _, o := range []sampleOpts{{}, {noSymtab: true}, {noSections: true}} {
		data := sampleELF(o).data
		for n := 0; n < len(data); n++ {
			f, err := NewFile(bytes.NewReader(data[:n]), int64(n), "cut")
			if n < 64 && err == nil {
				t.Fatalf("%+v: %d bytes: no error", o, n)
			}
			if err == nil && f == nil {
				t.Fatalf("nil file without error")
			}
		}
		// Random byte flips must never panic.
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 2000; i++ {
			d := bytes.Clone(data)
			for j := 0; j < 1+rng.Intn(8); j++ {
				d[rng.Intn(len(d))] = byte(rng.Intn(256))
			}
			if f, err := NewFile(bytes.NewReader(d), int64(len(d)), "flip"); err == nil {
				f.Funcs()
				f.Symbolize(sampleText + 1)
				f.Lookup("f1")
			}
		}
	}
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 1000; i++ {
		d := make([]byte, rng.Intn(4096))
		rng.Read(d)
		if i%2 == 0 && len(d) >= 4 {
			copy(d, elf.ELFMAG)
		}
		if _, err := NewFile(bytes.NewReader(d), int64(len(d)), "garbage"); err == nil {
			t.Logf("garbage %d parsed", i)
		}
	}
}

// A reader that claims more data than exists must not make NewFile read
// or allocate past the stated size.
func TestSizeBoundsReads(t *testing.T) {
	b := sampleELF(sampleOpts{})
	big := patch(b.data, shdr(b, ".strtab", shSize), uint64(1<<30))
	r := &countingReader{data: big}
	if _, err := NewFile(r, int64(len(big)), "big"); err == nil {
		t.Fatal("no error")
	}
	if r.max > int64(len(big)) {
		t.Errorf("read up to %d, beyond the size %d", r.max, len(big))
	}
}

type countingReader struct {
	data []byte
	max  int64
}

func (r *countingReader) ReadAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > r.max {
		r.max = end
	}
	return bytes.NewReader(r.data).ReadAt(p, off)
}

func TestLookupRules(t *testing.T) {
	const text = 0x1000
	tab, str := symtab([]testSym{
		{name: "dup", value: text, size: 4, typ: elf.STT_FUNC, bind: elf.STB_LOCAL, shndx: 1},
		{name: "dup", value: text + 0x10, size: 4, typ: elf.STT_FUNC, bind: elf.STB_LOCAL, shndx: 1},
		{name: "alias_a", value: text + 0x20, size: 4, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "__alias_b", value: text + 0x20, size: 4, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "weak_c", value: text + 0x20, size: 0, typ: elf.STT_FUNC, bind: elf.STB_WEAK, shndx: 1},
		{name: "ifn", value: text + 0x30, size: 4, typ: elf.STT_GNU_IFUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "vf@V1", value: text + 0x40, size: 4, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "vf@@V2", value: text + 0x50, size: 4, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "nosize", value: text + 0x60, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "puts@GLIBC_2.2.5", typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: elf.SHN_UNDEF},
		{name: "tls", value: 8, typ: elf.STT_TLS, bind: elf.STB_GLOBAL, shndx: 1},
		{name: "zero", value: 0, size: 4, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
	})
	secs := []testSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: text, data: make([]byte, 0x100)},
		{name: ".symtab", typ: elf.SHT_SYMTAB, data: tab, link: 3, entsize: elf.Sym64Size},
		{name: ".strtab", typ: elf.SHT_STRTAB, data: str},
	}
	b := buildELF(elf.ET_EXEC, secs, []testProg{{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}}}, false)
	f, err := NewFile(bytes.NewReader(b.data), int64(len(b.data)), "rules")
	if err != nil {
		t.Fatal(err)
	}
	if f.PIE() {
		t.Error("ET_EXEC is PIE")
	}
	wantFuncs := []Func{
		{Name: "dup", Addr: text, Size: 4, Source: SourceSymtab},
		{Name: "dup", Addr: text + 0x10, Size: 4, Source: SourceSymtab},
		{Name: "alias_a", Addr: text + 0x20, Size: 4, Source: SourceSymtab},
		{Name: "ifn", Addr: text + 0x30, Size: 4, Source: SourceSymtab},
		{Name: "vf", Addr: text + 0x40, Size: 4, Source: SourceSymtab},
		{Name: "vf", Addr: text + 0x50, Size: 4, Source: SourceSymtab},
		{Name: "nosize", Addr: text + 0x60, Size: 0, Source: SourceSymtab},
	}
	if got := f.Funcs(); !reflect.DeepEqual(got, wantFuncs) {
		t.Errorf("Funcs() =\n%+v\nwant\n%+v", got, wantFuncs)
	}
	for _, tc := range []struct {
		name string
		addr uint64
		is   error
		msg  string
	}{
		{name: "dup", is: ErrAmbiguous, msg: `2 functions named "dup" in rules (at 0x1000, 0x1010); use "address"`},
		{name: "ifn", is: ErrIndirect, msg: `"ifn" in rules is an indirect function (STT_GNU_IFUNC) whose address is its resolver`},
		{name: "vf", addr: text + 0x50},
		{name: "vf@@V2", addr: text + 0x50},
		{name: "vf@V1", addr: text + 0x40},
		{name: "vf@V3", is: ErrNotFound},
		{name: "weak_c", addr: text + 0x20},
		{name: "__alias_b", addr: text + 0x20},
		{name: "puts", is: ErrUndefined, msg: `function "puts" is imported, not defined, in rules`},
		{name: "tls", is: ErrNotFunction, msg: `"tls" in rules is not a function (symbol type STT_TLS)`},
		{name: "zero", is: ErrNotFound},
		{name: "", is: ErrNotFound},
		{name: "v", is: ErrNotFound},
	} {
		fn, err := f.Lookup(tc.name)
		if tc.is != nil {
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Lookup(%q) = %+v, %v; want %v %q", tc.name, fn, err, tc.is, tc.msg)
			}
			continue
		}
		if err != nil || fn.Addr != tc.addr {
			t.Errorf("Lookup(%q) = %+v, %v; want 0x%x", tc.name, fn, err, tc.addr)
		}
	}
	// A size-0 function extends to the end of its executable segment.
	if name, off, ok := f.Symbolize(text + 0x90); name != "nosize" || off != 0x30 || !ok {
		t.Errorf("Symbolize(size 0) = %q, 0x%x, %v", name, off, ok)
	}
	if _, _, ok := f.Symbolize(text + 0x100); ok {
		t.Error("Symbolize past the segment succeeded")
	}
}

func TestMergeFuncs(t *testing.T) {
	named := []fentry{{addr: 0x10, sym: 0}, {addr: 0x30, size: 4, sym: 1}}
	fdes := []fentry{{addr: 0x10, size: 8, sym: -1}, {addr: 0x20, size: 8, sym: -1}, {addr: 0x40, size: 2, sym: -1}}
	want := []fentry{{addr: 0x10, size: 8, sym: 0}, {addr: 0x20, size: 8, sym: -1}, {addr: 0x30, size: 4, sym: 1}, {addr: 0x40, size: 2, sym: -1}}
	if got := mergeFuncs(named, fdes); !reflect.DeepEqual(got, want) {
		t.Errorf("mergeFuncs = %+v", got)
	}
}

// A string table without NULs, with every symbol naming a different
// offset in it, must be handled in linear time, not by scanning the rest
// of the table for every symbol.
func TestHostileStringTable(t *testing.T) {
	const n = 200000
	str := bytes.Repeat([]byte{'a'}, 4<<20)
	tab := make([]byte, elf.Sym64Size*(n+1))
	for i := 1; i <= n; i++ {
		e := tab[i*elf.Sym64Size:]
		binary.LittleEndian.PutUint32(e[0:], uint32(i))
		e[4] = elf.ST_INFO(elf.STB_GLOBAL, elf.STT_FUNC)
		binary.LittleEndian.PutUint16(e[6:], 1)
		binary.LittleEndian.PutUint64(e[8:], 0x1000)
	}
	secs := []testSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: 0x1000, data: make([]byte, 16)},
		{name: ".symtab", typ: elf.SHT_SYMTAB, data: tab, link: 3, entsize: elf.Sym64Size},
		{name: ".strtab", typ: elf.SHT_STRTAB, data: str},
	}
	b := buildELF(elf.ET_EXEC, secs, []testProg{{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}}}, false)
	start := time.Now()
	f, err := NewFile(bytes.NewReader(b.data), int64(len(b.data)), "hostile")
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("NewFile took %v", el)
	}
	if len(f.Funcs()) != 0 {
		t.Errorf("unterminated names became functions: %d", len(f.Funcs()))
	}

	// The same offsets with a NUL at the end name n distinct suffixes, of
	// which those up to maxSymbolName bytes long are kept.
	str = append(bytes.Repeat([]byte{'a'}, n+99), 0)
	secs[2].data = str
	b = buildELF(elf.ET_EXEC, secs, []testProg{{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}}}, false)
	start = time.Now()
	f, err = NewFile(bytes.NewReader(b.data), int64(len(b.data)), "hostile")
	if err != nil {
		t.Fatal(err)
	}
	// All at one address: one function, with the shortest name (at the
	// highest offset, n).
	if fs := f.Funcs(); len(fs) != 1 || fs[0].Name != strings.Repeat("a", 99) {
		t.Errorf("Funcs() = %d entries", len(fs))
	}
	long := strings.Repeat("a", maxSymbolName)
	if fn, err := f.Lookup(long); err != nil || fn.Addr != 0x1000 {
		t.Errorf("Lookup(%d bytes) = %v", len(long), err)
	}
	if _, err := f.Lookup(long + "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(%d bytes) = %v", len(long)+1, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("NewFile and Lookup took %v", el)
	}
}

func TestAmbiguityBounded(t *testing.T) {
	var syms []testSym
	for i := 0; i < 1000; i++ {
		syms = append(syms, testSym{name: "dup", value: 0x1000 + uint64(i)*4, size: 4, typ: elf.STT_FUNC, bind: elf.STB_LOCAL, shndx: 1})
	}
	tab, str := symtab(syms)
	secs := []testSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: 0x1000, data: make([]byte, 4000)},
		{name: ".symtab", typ: elf.SHT_SYMTAB, data: tab, link: 3, entsize: elf.Sym64Size},
		{name: ".strtab", typ: elf.SHT_STRTAB, data: str},
	}
	b := buildELF(elf.ET_EXEC, secs, []testProg{{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}}}, false)
	f, err := NewFile(bytes.NewReader(b.data), int64(len(b.data)), "many")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Lookup("dup")
	want := `more than 4 functions named "dup" in many (at 0x1000, 0x1004, 0x1008, 0x100c); use "address"`
	if !errors.Is(err, ErrAmbiguous) || err.Error() != want {
		t.Errorf("Lookup = %v\nwant %s", err, want)
	}
	if len(f.Funcs()) != 1000 {
		t.Errorf("%d funcs", len(f.Funcs()))
	}
}
