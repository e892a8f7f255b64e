package elfsym

import (
	"debug/elf"
	"errors"
	"os"
	"testing"
)

// NewSymbols answers Lookup through .gnu.hash exactly as NewFile does by
// reading every symbol: for every name of the dynamic symbol table of the
// system's stripped libraries (functions, objects, imports, versioned
// duplicates, IFUNCs) and for names that are not there.
func TestNewSymbolsLookupAsNewFile(t *testing.T) {
	for _, path := range []string{"/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"} {
		full, err := Open(path)
		if err != nil {
			t.Skipf("%s: %v", path, err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := fh.Stat()
		quick, err := NewSymbols(fh, st.Size(), path)
		fh.Close()
		if err != nil {
			t.Fatalf("NewSymbols(%s): %v", path, err)
		}
		if quick.dyn == nil {
			t.Skipf("%s has a .symtab or no .gnu.hash: read as NewFile reads it", path)
		}
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		syms, err := ef.DynamicSymbols()
		ef.Close()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{"no_such_function_here": true, "": true, "mmap@GLIBC_2.2.5": true}
		for _, s := range syms {
			names[s.Name] = true
		}
		same := 0
		for name := range names {
			a, errA := full.Lookup(name)
			b, errB := quick.Lookup(name)
			if kind(errA) != kind(errB) || errA == nil && (a.Addr != b.Addr || a.Size != b.Size || a.Name != b.Name) {
				t.Errorf("%s: Lookup(%q): NewFile %+v, %v; NewSymbols %+v, %v", path, name, a, errA, b, errB)
				continue
			}
			same++
		}
		t.Logf("%s: %d names looked up alike", path, same)
	}
}

func kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrNotFunction, ErrUndefined, ErrAmbiguous, ErrIndirect} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}
