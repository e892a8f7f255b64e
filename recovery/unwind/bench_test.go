package unwind

import (
	"runtime"
	"testing"

	"github.com/assure-rt/assure/recovery/procfs"
)

// benchSetup stops the -O2 build in its SIGSEGV handler (10 frames) and
// returns what a walk needs.
func benchSetup(b *testing.B) (Regs, *Modules, ReadMem, fakeMem) {
	bins := buildProg(b)
	pid, pregs := stopped(b, bins["O2-nofp"], "1")
	maps, err := procfs.Maps(pid)
	if err != nil {
		b.Fatal(err)
	}
	live := ProcessMem(pid)
	mods := LoadModules(maps, MapFilesOpener(pid), live, nil)
	snap := fakeMem{}
	for _, m := range maps {
		if m.Path == "[stack]" {
			buf := make([]byte, m.Size())
			if err := live(m.Start, buf); err != nil {
				b.Fatal(err)
			}
			snap[m.Start] = buf
		}
	}
	regs := FromPtrace(&pregs)
	frames, err := Unwind(regs, snap.read, mods, Options{})
	if err != nil || len(frames) != 10 {
		b.Fatalf("%d frames, %v:%s", len(frames), err, names(frames))
	}
	return regs, mods, live, snap
}

// BenchmarkUnwind walks 10 frames with the modules parsed: from a memory
// snapshot (the unwinder's own cost) and through process_vm_readv.
func BenchmarkUnwind(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	regs, mods, live, snap := benchSetup(b)
	for _, bc := range []struct {
		name string
		mem  ReadMem
	}{{"snapshot", snap.read}, {"process_vm_readv", live}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Unwind(regs, bc.mem, mods, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadModules is the one-time cost: parsing the program, libc
// and ld.so (symbols and unwind tables), then the same from the cache.
func BenchmarkLoadModules(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	bins := buildProg(b)
	pid, _ := stopped(b, bins["O2-nofp"], "0")
	maps, err := procfs.Maps(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			LoadModules(maps, MapFilesOpener(pid), ProcessMem(pid), nil)
		}
	})
	b.Run("cached", func(b *testing.B) {
		cache := NewCache()
		for b.Loop() {
			LoadModules(maps, MapFilesOpener(pid), ProcessMem(pid), cache)
		}
	})
}
