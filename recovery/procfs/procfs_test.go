package procfs

import (
	"os"
	"testing"
)

func TestParseMaps(t *testing.T) {
	data := []byte("55e3e3e3e000-55e3e3f5f000 rw-p 00000000 00:00 0                          [heap]\n" +
		"7f4c8982e000-7f4c89831000 r-xp 00001000 fd:01 1311  /usr/lib/my lib.so\n" +
		"7f4c89831000-7f4c89832000 rw-s 00000000 00:01 42 /dev/zero (deleted)\n" +
		"7f4c89900000-7f4c89901000 rw-p 00000000 00:00 0 \n")
	maps, err := ParseMaps(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x55e3e3e3e000, End: 0x55e3e3f5f000, Perms: "rw-p", Path: "[heap]"},
		{Start: 0x7f4c8982e000, End: 0x7f4c89831000, Perms: "r-xp", Offset: 0x1000, Major: 0xfd, Minor: 1, Inode: 1311, Path: "/usr/lib/my lib.so"},
		{Start: 0x7f4c89831000, End: 0x7f4c89832000, Perms: "rw-s", Minor: 1, Inode: 42, Path: "/dev/zero (deleted)"},
		{Start: 0x7f4c89900000, End: 0x7f4c89901000, Perms: "rw-p"},
	}
	if len(maps) != len(want) {
		t.Fatalf("got %d mappings, want %d", len(maps), len(want))
	}
	for i := range want {
		if maps[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, maps[i], want[i])
		}
	}
	if !maps[2].Shared() || !maps[2].Writable() || maps[1].Writable() || !maps[1].Executable() {
		t.Errorf("permission accessors disagree with %q/%q", maps[1].Perms, maps[2].Perms)
	}
}

func TestParseMapsRejectsGarbage(t *testing.T) {
	for _, bad := range []string{"zz-10 rw-p 0 00:00 0\n", "10 rw-p 0 00:00 0\n", "1-2 rw-p\n"} {
		if _, err := ParseMaps([]byte(bad)); err == nil {
			t.Errorf("ParseMaps(%q) accepted garbage", bad)
		}
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	maps, err := Maps(pid)
	if err != nil || len(maps) == 0 {
		t.Fatalf("Maps(self) = %d mappings, %v", len(maps), err)
	}
	tasks, err := Tasks(pid)
	if err != nil || len(tasks) == 0 {
		t.Fatalf("Tasks(self) = %v, %v", tasks, err)
	}
	st, err := ReadStatus(pid)
	if err != nil || st.Tgid != pid {
		t.Fatalf("ReadStatus(self) = %+v, %v", st, err)
	}
	auxv, err := Auxv(pid)
	if err != nil || auxv[AT_ENTRY] == 0 {
		t.Fatalf("Auxv(self) has no AT_ENTRY: %v", err)
	}
	if b, err := StartBrk(pid); err != nil || b == 0 {
		t.Fatalf("StartBrk(self) = %#x, %v", b, err)
	}
}

func TestQueryMatchesText(t *testing.T) {
	pid := os.Getpid()
	q, err := NewMapsQuerier(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	fast, err := q.Maps()
	if err != nil {
		t.Skipf("PROCMAP_QUERY unavailable: %v", err)
	}
	text, err := Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	// The text lists [vsyscall] above user space; the query stops below it.
	var want []Mapping
	for _, m := range text {
		if m.Path != "[vsyscall]" {
			m.Path = ""
			want = append(want, m)
		}
	}
	// Our own goroutines may map memory between the two reads; compare the
	// mappings that both see at the same place.
	index := make(map[uint64]Mapping)
	for _, m := range fast {
		index[m.Start] = m
	}
	same := 0
	for _, m := range want {
		if f, ok := index[m.Start]; ok {
			if f != m {
				t.Errorf("mapping at %#x: query %+v, text %+v", m.Start, f, m)
			}
			same++
		}
	}
	if same < len(want)*9/10 {
		t.Errorf("only %d of %d mappings found by the query", same, len(want))
	}
}

func TestFDLister(t *testing.T) {
	l, err := NewFDLister(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before, err := l.FDs()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	newFD := int(f.Fd())
	after, err := l.FDs()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before)+1 {
		t.Fatalf("fds before %v after %v: want one more", before, after)
	}
	found := false
	for _, fd := range after {
		found = found || fd == newFD
	}
	if !found {
		t.Errorf("fd %d of /dev/null not listed in %v", newFD, after)
	}
}
