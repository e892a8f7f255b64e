package supervisor

import (
	"testing"

	"github.com/assure-rt/assure/recovery/procfs"
)

func m(start, end uint64, perms string) procfs.Mapping {
	return procfs.Mapping{Start: start, End: end, Perms: perms}
}

func TestDiffLayout(t *testing.T) {
	old := []procfs.Mapping{
		m(0x1000, 0x3000, "r-xp"), // text
		m(0x10000, 0x14000, "rw-p"),
		m(0x20000, 0x22000, "rw-p"), // removed inside the rescue point
		m(0x30000, 0x40000, "rw-p"), // heap, moved with brk
		m(0x50000, 0x51000, "r-xp"), // the supervisor's pages
		m(0x51000, 0x52000, "rw-p"),
		m(0x70000, 0x72000, "---p"), // a reservation, removed
	}
	now := []procfs.Mapping{
		m(0x1000, 0x3000, "r-xp"),
		m(0x10000, 0x12000, "rw-p"),
		m(0x12000, 0x14000, "r--p"), // mprotect'ed
		m(0x30000, 0x48000, "rw-p"), // heap grew
		m(0x50000, 0x51000, "r-xp"),
		m(0x51000, 0x53000, "rw-p"), // the data page, merged with a new mapping
		m(0x60000, 0x68000, "rw-p"), // mapped inside the rescue point
	}
	got := diffLayout(old, now, []span{{0x50000, 0x52000}}, span{0x30000, 0x48000})
	want := []layoutChange{
		{kind: layoutProt, start: 0x12000, end: 0x14000, old: old[1]},
		{kind: layoutRemoved, start: 0x20000, end: 0x22000, old: old[2]},
		{kind: layoutAdded, start: 0x52000, end: 0x53000},
		{kind: layoutAdded, start: 0x60000, end: 0x68000},
		{kind: layoutRemoved, start: 0x70000, end: 0x72000, old: old[6]},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d changes %+v, want %+v", len(got), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if p := protOf(old[1]); p != 3 {
		t.Errorf("protOf(rw-p) = %d, want PROT_READ|PROT_WRITE", p)
	}
}

func TestDiffLayoutUnchanged(t *testing.T) {
	maps := []procfs.Mapping{m(0x1000, 0x2000, "r-xp"), m(0x2000, 0x5000, "rw-p")}
	if got := diffLayout(maps, maps, nil, span{}); len(got) != 0 {
		t.Errorf("identical layouts: %+v", got)
	}
}

// A file mapping replaced by another file, or the same file at another
// offset, or shared instead of private, is a replacement, not a change of
// protection.
func TestDiffLayoutReplaced(t *testing.T) {
	file := func(start, end, off, ino uint64, perms string) procfs.Mapping {
		return procfs.Mapping{Start: start, End: end, Perms: perms, Offset: off, Major: 8, Minor: 1, Inode: ino}
	}
	old := []procfs.Mapping{
		file(0x1000, 0x3000, 0, 7, "r--p"),
		file(0x3000, 0x4000, 0x2000, 7, "r--p"),
		file(0x5000, 0x6000, 0, 7, "r--p"),
	}
	now := []procfs.Mapping{
		file(0x1000, 0x3000, 0, 9, "r--p"),      // another file
		file(0x3000, 0x4000, 0x5000, 7, "r--p"), // another offset
		file(0x5000, 0x6000, 0, 7, "r--s"),      // shared now
	}
	got := diffLayout(old, now, nil, span{})
	if len(got) != 3 {
		t.Fatalf("got %+v, want three replacements", got)
	}
	for i, c := range got {
		if c.kind != layoutReplaced || c.old != old[i] {
			t.Errorf("change %d: %+v, want a replacement of %+v", i, c, old[i])
		}
	}
	same := []procfs.Mapping{file(0x1000, 0x2000, 0, 7, "r--p"), file(0x2000, 0x3000, 0x1000, 7, "r--p")}
	split := []procfs.Mapping{file(0x1000, 0x3000, 0, 7, "r--p")}
	if got := diffLayout(same, split, nil, span{}); len(got) != 0 {
		t.Errorf("the same file at the same offsets, merged: %+v", got)
	}
}

func TestHeapMapEnd(t *testing.T) {
	maps := []procfs.Mapping{
		m(0x1000, 0x2000, "r-xp"),
		m(0x4000, 0x6000, "rw-p"), // heap from start_brk
		m(0x6000, 0x9000, "rw-p"), // grown, not merged (different flags)
		m(0x20000, 0x21000, "rw-p"),
	}
	if got := heapMapEnd(maps, 0x4000); got != 0x9000 {
		t.Errorf("heapMapEnd = %#x, want 0x9000", got)
	}
	if got := heapMapEnd(maps, 0x3000); got != 0 {
		t.Errorf("no heap: heapMapEnd = %#x, want 0", got)
	}
}
