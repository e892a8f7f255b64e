package elfsym

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

func FuzzNewFile(f *testing.F) {
	for _, o := range []sampleOpts{{}, {noSymtab: true}, {noSections: true}} {
		f.Add(sampleELF(o).data)
	}
	// Many symbols and names across string-table windows, many FDEs, and
	// a table damaged part way.
	f.Add(largeELF(300, false))
	f.Add(largeELF(300, true))
	st := sampleELF(sampleOpts{noSymtab: true})
	f.Add(patch(st.data, st.off[".eh_frame"]+0x20, uint32(0x7fffffff)))
	// A real compiler's output, when one is installed.
	haveTools := true
	for _, tool := range []string{"gcc", "nm", "strip", "readelf"} {
		if _, err := exec.LookPath(tool); err != nil {
			haveTools = false
		}
	}
	if haveTools {
		bins := buildBinaries(f)
		for _, p := range []string{bins.pieStripped, bins.libStripped} {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if quick, err := NewSymbols(bytes.NewReader(data), int64(len(data)), "fuzz"); err == nil {
			for _, name := range []string{"main", "mmap", "", "@", "a@@b"} {
				quick.Lookup(name)
			}
		} else if quick != nil {
			t.Fatal("file and error")
		}
		file, err := NewFile(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			if file != nil {
				t.Fatal("file and error")
			}
			return
		}
		funcs := file.Funcs()
		for i, fn := range funcs {
			if i > 0 && fn.Addr <= funcs[i-1].Addr {
				t.Fatalf("Funcs not sorted and unique at %d", i)
			}
			if fn.Addr == 0 {
				t.Fatal("function at address 0")
			}
			if i < 64 {
				file.CheckRescuePoint(fn.Addr)
				file.CheckRescuePoint(fn.Addr + 1)
				file.Symbolize(fn.Addr)
				file.Symbolize(fn.Addr + fn.Size)
				file.FileOffset(fn.Addr)
				file.IsExecAddr(fn.Addr)
				if fn.Name != "" {
					file.Lookup(fn.Name)
				}
			}
		}
		for _, name := range []string{"main", "f1", "", "@", "a@@b"} {
			file.Lookup(name)
		}
		file.Incomplete()
		file.CheckRescuePoint(0)
		file.CheckRescuePoint(^uint64(0))
		file.Symbolize(0)
		file.Symbolize(^uint64(0))
		file.FileOffset(^uint64(0))
	})
}

func FuzzEHFrame(f *testing.F) {
	f.Add(sampleELF(sampleOpts{}).data[sampleELF(sampleOpts{}).off[".eh_frame"]:])
	f.Add(oneFDE("zPLR", []byte{0x9b, 0, 0, 0, 0, 0x1b, 0x1b}, func(uint64) []byte { return make([]byte, 13) }))
	f.Add(oneFDE("zR", []byte{peAligned}, func(uint64) []byte { return make([]byte, 24) }))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ptr := range []int{4, 8} {
			for _, lenient := range []bool{false, true} {
				eh := newEH(data)
				eh.ptrSize, eh.lenient = ptr, lenient
				eh.hasText, eh.hasData = true, true
				parseEHFrame(eh)
			}
		}
	})
}
