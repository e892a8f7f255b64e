package supervisor

import (
	"bytes"
	"encoding/binary"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
)

// The frame table keeps, in the injected page itself, the return addresses
// the trampoline replaced. A supervisor started after this one died (the
// shim restarts it) finds the page and the table, and can still send the
// threads that were inside rescue points back to their callers; without
// it they would return into the trampoline with no one knowing where to.
const (
	frameTableOffset = 1024
	frameEntrySize   = 24 // tid u32, rescue point index u32, slot u64, ret u64
	frameTableEnd    = patch.RoutinesAt
	maxTableFrames   = (frameTableEnd - frameTableOffset - 16) / frameEntrySize
)

var frameMagic = []byte("ASSUREF1")

// saveFrames writes p's active rescue-point calls into its page.
func (s *Supervisor) saveFrames(p *process) {
	if p.scratch == 0 || p.sharedMM {
		return
	}
	buf := make([]byte, 16, 16+frameEntrySize*8)
	copy(buf, frameMagic)
	n := 0
	le := binary.LittleEndian
	for _, t := range p.threads {
		for _, f := range t.frames {
			if n == maxTableFrames {
				break
			}
			var e [frameEntrySize]byte
			le.PutUint32(e[0:], uint32(t.tid))
			le.PutUint32(e[4:], uint32(s.rpIndex(f.rp)))
			le.PutUint64(e[8:], f.slot)
			le.PutUint64(e[16:], f.ret)
			buf = append(buf, e[:]...)
			n++
		}
	}
	le.PutUint32(buf[8:], uint32(n))
	if err := p.writeMem(p.scratch+frameTableOffset, buf); err != nil {
		s.logf("save frames of %d: %v", p.pid, err)
	}
}

func (s *Supervisor) rpIndex(rp *rescuePoint) int {
	for i, r := range s.rps {
		if r == rp {
			return i
		}
	}
	return -1
}

// adoptLeftovers takes over the page and frame table an earlier
// supervisor left in p, if any. The frames have no checkpoint (it died
// with that supervisor): a fault in them is not recovered, but the
// return is.
func (s *Supervisor) adoptLeftovers(p *process) {
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return
	}
	s.takeOverFast(p, maps)
	le := binary.LittleEndian
	for _, m := range maps {
		if m.Size() != codeSize || m.Inode != 0 || m.Perms != "r-xp" || !hasDataPage(maps, m.End) {
			continue
		}
		head, err := p.readMem(m.Start, len(arch.SyscallInsn))
		if err != nil || !bytes.Equal(head, arch.SyscallInsn) {
			continue
		}
		table, err := p.readMem(m.Start+frameTableOffset, frameTableEnd-frameTableOffset)
		if err != nil || !bytes.Equal(table[:len(frameMagic)], frameMagic) {
			continue
		}
		p.scratch = m.Start
		n := int(le.Uint32(table[8:]))
		for i := 0; i < n && i < maxTableFrames; i++ {
			e := table[16+i*frameEntrySize:]
			tid, idx := int(le.Uint32(e[0:])), int(le.Uint32(e[4:]))
			t := p.threads[tid]
			if t == nil || idx < 0 || idx >= len(s.rps) {
				continue
			}
			t.frames = append(t.frames, frame{rp: s.rps[idx], slot: le.Uint64(e[8:]), ret: le.Uint64(e[16:])})
		}
		s.logf("process %d: took over the code page at %#x and %d rescue-point calls of an earlier supervisor", p.pid, m.Start, n)
		return
	}
}

// hasDataPage reports whether the injected data page follows a code page
// that ends at end.
func hasDataPage(maps []procfs.Mapping, end uint64) bool {
	m, ok := covering(maps, end)
	return ok && m.Start == end && m.Inode == 0 && m.Perms == "rw-p"
}
