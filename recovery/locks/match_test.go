package locks

import (
	"encoding/binary"
	"testing"

	"github.com/assure-rt/assure/recovery/procfs"
)

// These tests pin down the checks on bytes laid out as glibc leaves them;
// locks_test.go checks the same against a real glibc.

const tid = 4242

// me is the thread the checks look for: tid, in a process of 8 threads.
var me = thread{tid: tid, threads: 8}

type mutexFields struct {
	lock, count, owner, nusers, kind uint32
	spins, elision                   int16
	prev, next                       uint64
}

func (f mutexFields) bytes() []byte {
	b := make([]byte, mutexSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], f.lock)
	le.PutUint32(b[4:], f.count)
	le.PutUint32(b[8:], f.owner)
	le.PutUint32(b[12:], f.nusers)
	le.PutUint32(b[16:], f.kind)
	le.PutUint16(b[20:], uint16(f.spins))
	le.PutUint16(b[22:], uint16(f.elision))
	le.PutUint64(b[24:], f.prev)
	le.PutUint64(b[32:], f.next)
	return b
}

func TestMutexHeld(t *testing.T) {
	const list = 0x7f00_0000_1000
	for _, c := range []struct {
		name string
		f    mutexFields
	}{
		{"normal", mutexFields{lock: 1, owner: tid, nusers: 1}},
		{"normal contended", mutexFields{lock: 2, owner: tid, nusers: 3}},
		{"normal shared, many users", mutexFields{lock: 2, owner: tid, nusers: 100, kind: kindPshared}},
		{"normal settype", mutexFields{lock: 1, owner: tid, nusers: 1, kind: kindNoElision}},
		{"recursive", mutexFields{lock: 1, count: 5, owner: tid, nusers: 1, kind: kindRecursive}},
		{"errorcheck", mutexFields{lock: 1, owner: tid, nusers: 1, kind: 2}},
		{"adaptive", mutexFields{lock: 1, owner: tid, nusers: 1, kind: kindAdaptive, spins: 12}},
		{"pi", mutexFields{lock: tid, count: 1, owner: tid, nusers: 1, kind: kindPI}},
		{"pi waiters", mutexFields{lock: tid | futexWaiters, count: 1, owner: tid, nusers: 2, kind: kindPI}},
		{"pp", mutexFields{lock: 1<<19 | 1, count: 1, owner: tid, nusers: 1, kind: kindPP}},
		{"robust", mutexFields{lock: tid, count: 1, owner: tid, nusers: 1, kind: kindRobust | kindPshared, prev: list, next: list + 40}},
		{"robust pi list bit", mutexFields{lock: tid, count: 1, owner: tid, nusers: 1, kind: kindRobust | kindPshared, prev: list, next: list + 41}},
		{"robust inconsistent", mutexFields{lock: tid, count: 1, owner: ownerInconsistent, nusers: 1, kind: kindRobust | kindPshared, prev: list, next: list}},
		{"elision", mutexFields{lock: 1, owner: tid, nusers: 1, kind: kindElision, elision: 3}},
	} {
		if !mutexHeldBy(c.f.bytes(), me) {
			t.Errorf("%s: not held", c.name)
		}
		if mutexHeldBy(c.f.bytes(), thread{tid: tid + 1, threads: 8}) {
			t.Errorf("%s: held by another thread", c.name)
		}
	}
}

func TestMutexNotHeld(t *testing.T) {
	normal := mutexFields{lock: 1, owner: tid, nusers: 1}
	robust := mutexFields{lock: tid, count: 1, owner: tid, nusers: 1, kind: kindRobust | kindPshared, prev: 0x1000, next: 0x2000}
	for _, c := range []struct {
		name string
		f    mutexFields
		edit func(*mutexFields)
	}{
		{"unlocked", normal, func(f *mutexFields) { f.lock = 0 }},
		{"lock 3", normal, func(f *mutexFields) { f.lock = 3 }},
		{"no users", normal, func(f *mutexFields) { f.nusers = 0 }},
		{"more users than threads", normal, func(f *mutexFields) { f.nusers = 9 }},
		{"shared users", normal, func(f *mutexFields) { f.kind, f.nusers = kindPshared, maxUsers+1 }},
		{"count", normal, func(f *mutexFields) { f.count = 1 }},
		{"recursive count 0", normal, func(f *mutexFields) { f.kind = kindRecursive }},
		{"unknown kind", normal, func(f *mutexFields) { f.kind = 4 }},
		{"pi and pp", normal, func(f *mutexFields) { f.kind = kindPI | kindPP }},
		{"spins", normal, func(f *mutexFields) { f.spins = 1 }},
		{"negative spins", normal, func(f *mutexFields) { f.kind, f.spins = kindAdaptive, -1 }},
		{"elision count", normal, func(f *mutexFields) { f.elision = 1 }},
		{"elision recursive", normal, func(f *mutexFields) { f.kind, f.count = kindElision|kindRecursive, 1 }},
		{"list", normal, func(f *mutexFields) { f.next = 0x1000 }},
		{"pi lock", normal, func(f *mutexFields) { f.kind, f.count = kindPI, 1 }},
		{"pp lock", normal, func(f *mutexFields) { f.kind, f.count, f.lock = kindPP, 1, 1<<19|4 }},
		{"robust not pshared", robust, func(f *mutexFields) { f.kind = kindRobust }},
		{"robust pp", robust, func(f *mutexFields) { f.kind |= kindPP }},
		{"robust owner died", robust, func(f *mutexFields) { f.lock |= futexOwnerDied }},
		{"robust no list", robust, func(f *mutexFields) { f.prev = 0 }},
		{"robust odd list", robust, func(f *mutexFields) { f.prev = 0x1004 }},
		{"robust kernel list", robust, func(f *mutexFields) { f.next = 0xffff_8000_0000_0000 }},
		{"robust other owner", robust, func(f *mutexFields) { f.owner = tid + 1 }},
		{"inconsistent other lock", robust, func(f *mutexFields) { f.owner, f.lock = ownerInconsistent, tid+1 }},
		{"inconsistent not robust", normal, func(f *mutexFields) { f.owner = ownerInconsistent }},
	} {
		f := c.f
		c.edit(&f)
		if mutexHeldBy(f.bytes(), me) {
			t.Errorf("%s: held", c.name)
		}
	}
}

type rwlockFields struct {
	readers, writers, wrphase, wfutex, pad3, pad4, curWriter, shared uint32
	pad1, pad2                                                       uint64
	flags                                                            uint32
}

func (f rwlockFields) bytes() []byte {
	b := make([]byte, rwlockSize)
	le := binary.LittleEndian
	for i, v := range []uint32{f.readers, f.writers, f.wrphase, f.wfutex, f.pad3, f.pad4, f.curWriter, f.shared} {
		le.PutUint32(b[4*i:], v)
	}
	le.PutUint64(b[32:], f.pad1)
	le.PutUint64(b[40:], f.pad2)
	le.PutUint32(b[48:], f.flags)
	return b
}

func TestRWLock(t *testing.T) {
	held := rwlockFields{readers: rwWrPhase | rwWrLocked, wrphase: 1, wfutex: 1, curWriter: tid}
	for _, c := range []struct {
		name string
		edit func(*rwlockFields)
		want bool
	}{
		{"held", func(*rwlockFields) {}, true},
		{"readers waiting", func(f *rwlockFields) { f.readers |= 3 << rwReaderShift; f.wrphase |= rwFutexUsed }, true},
		{"writers waiting", func(f *rwlockFields) { f.writers, f.wfutex, f.flags = 2, 1|rwFutexUsed, 1 }, true},
		{"more writers than threads", func(f *rwlockFields) { f.writers = 9 }, false},
		{"shared, many writers", func(f *rwlockFields) { f.writers, f.shared = 9, 1 }, true},
		{"shared", func(f *rwlockFields) { f.shared = 1 }, true},
		{"other writer", func(f *rwlockFields) { f.curWriter = tid + 1 }, false},
		{"read phase", func(f *rwlockFields) { f.readers = rwWrLocked }, false},
		{"not write-locked", func(f *rwlockFields) { f.readers = rwWrPhase }, false},
		{"writers futex", func(f *rwlockFields) { f.wfutex = 0 }, false},
		{"pad", func(f *rwlockFields) { f.pad3 = 1 }, false},
		{"pad1", func(f *rwlockFields) { f.pad1 = 1 << 8 }, false},
		{"pad2", func(f *rwlockFields) { f.pad2 = 1 }, false},
		{"flags", func(f *rwlockFields) { f.flags = 3 }, false},
		{"shared 2", func(f *rwlockFields) { f.shared = 2 }, false},
	} {
		f := held
		c.edit(&f)
		if got := rwlockWriteHeldBy(f.bytes(), me); got != c.want {
			t.Errorf("%s: held %v, want %v", c.name, got, c.want)
		}
	}
}

func TestIOLock(t *testing.T) {
	const self = 0x7f12_3456_7000
	b := func(lock, cnt uint32, owner uint64) []byte {
		out := make([]byte, ioLockSize)
		binary.LittleEndian.PutUint32(out[0:], lock)
		binary.LittleEndian.PutUint32(out[4:], cnt)
		binary.LittleEndian.PutUint64(out[8:], owner)
		return out
	}
	for _, c := range []struct {
		name      string
		lock, cnt uint32
		owner     uint64
		want      bool
	}{
		{name: "held", lock: 1, cnt: 1, owner: self, want: true},
		{name: "held contended, recursively", lock: 2, cnt: 3, owner: self, want: true},
		{name: "unlocked", lock: 0, cnt: 0, owner: 0},
		{name: "no count", lock: 1, cnt: 0, owner: self},
		{name: "lock 3", lock: 3, cnt: 1, owner: self},
		{name: "other owner", lock: 1, cnt: 1, owner: self + 0x1000},
	} {
		if got := ioLockHeldBy(b(c.lock, c.cnt, c.owner), self); got != c.want {
			t.Errorf("%s: held %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSegments(t *testing.T) {
	maps, err := procfs.ParseMaps([]byte(`55d0c0000000-55d0c0001000 r--p 00000000 fe:00 1 /bin/x
55d0c0001000-55d0c0002000 rw-p 00001000 fe:00 1 /bin/x
55d0c0002000-55d0c0004000 rw-p 00000000 00:00 0
55d0c0004000-55d0c0005000 ---p 00000000 00:00 0
55d0c0005000-55d0c0006000 rw-s 00000000 00:01 7 /dev/zero (deleted)
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 [stack]
7ffd00001000-7ffd00002000 r--p 00000000 00:00 0 [vvar]
`))
	if err != nil {
		t.Fatal(err)
	}
	segs := segments(maps)
	// .data and .bss join, so a struct may straddle them.
	want := [][2]uint64{{0x55d0c0001000, 0x55d0c0004000}, {0x55d0c0005000, 0x55d0c0006000}, {0x7ffd00000000, 0x7ffd00001000}}
	if len(segs) != len(want) {
		t.Fatalf("got %d segments, want %d", len(segs), len(want))
	}
	for i, s := range segs {
		if s.start != want[i][0] || s.end != want[i][1] {
			t.Errorf("segment %d: %#x-%#x, want %#x-%#x", i, s.start, s.end, want[i][0], want[i][1])
		}
	}
	if segs[0].anonymous(0x55d0c0001000) || !segs[0].anonymous(0x55d0c0002000) || segs[1].anonymous(0x55d0c0005000) {
		t.Error("anonymous: wrong for .data, .bss or shared memory")
	}
}

func TestFileBefore(t *testing.T) {
	const lock = 0x5555_0000_1000
	file := func(before int, flags uint32, ptr uint64) []byte {
		b := make([]byte, fileMaxBefore)
		f := b[len(b)-before:]
		binary.LittleEndian.PutUint32(f, flags)
		binary.LittleEndian.PutUint64(f[fileLockOff:], ptr)
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"fopen", file(224, fileMagic|0x2084, lock), true},
		{"fopencookie", file(264, fileMagic|0x2084, lock), true},
		{"no magic", file(224, 0x2084, lock), false},
		{"other lock", file(224, fileMagic, lock+16), false},
		{"too close", file(216, fileMagic, lock), false},
		{"short", file(224, fileMagic, lock)[300:], false},
	} {
		if got := fileBefore(c.b, lock); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestExcluded(t *testing.T) {
	maps := []procfs.Mapping{{Start: 0x1000, End: 0x2000}, {Start: 0x2000, End: 0x5000}, {Start: 0x8000, End: 0x9000}}
	got := excluded(maps, []Range{{Start: 0x3000, End: 0x4000}})
	if len(got) != 2 || got[0].Start != 0x1000 || got[1].Start != 0x8000 {
		t.Errorf("excluded = %+v, want the mappings at 0x1000 and 0x8000", got)
	}
	if got := excluded(maps, nil); len(got) != 3 {
		t.Errorf("excluded without ranges = %+v", got)
	}
}
