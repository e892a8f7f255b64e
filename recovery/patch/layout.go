package patch

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// FlagsOffset is where the flags word (Flag*) is in the control block,
// for programs that wait for the fast path to protect them (hack/bench).
const FlagsOffset = ctlFlags

// Offsets in the control block (layout_amd64.h has the same numbers for
// the injected code; TestLayoutMatchesHeader keeps them in step).
const (
	ctlMagic    = 0
	ctlVersion  = 8
	ctlFlags    = 12
	ctlAlive    = 16
	ctlPmfd     = 20
	ctlShadow   = 24
	ctlVec      = 32
	ctlVecLen   = 40
	ctlTramp    = 48
	ctlDepth    = 56
	ctlFrp      = 60
	ctlFslot    = 64
	ctlFret     = 72
	ctlFrbx     = 80
	ctlFrbp     = 88
	ctlFr12     = 96
	ctlFr13     = 104
	ctlFr14     = 112
	ctlFr15     = 120
	ctlFmxcsr   = 128
	ctlFfcw     = 132
	ctlSelector = 136
	ctlPkeyMask = 140
	ctlStackLo  = 144
	ctlCalls    = 152
	ctlPages    = 160
	ctlUnprot   = 168
	ctlSlow     = 176
	ctlCommits  = 184
	ctlLongjmps = 192
	ctlScanErr  = 200
	ctlNRanges  = 208
	ctlRobust   = 216 // unused: the robust list entry lives before the block, out of the program's reach
	ctlCodeBase = 224
	ctlCodeLen  = 232
	ctlOwner    = 240 // thread pointer (fs base) of the one thread taking checkpoints here
	ctlFrax     = 256 // rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11 follow
	ctlRanges   = 1024

	rangeStart  = 0
	rangeEnd    = 8
	rangeOff    = 16
	rangeFlags  = 24
	rangeSize   = 32
	MaxRanges   = 200
	ctlRPTab    = 8192
	rpBack      = 0
	rpTrap      = 8
	rpCalls     = 16
	rpCkpts     = 24
	rpShift     = 5
	MaxRescue   = 1024
	ctlScratch  = ctlRPTab + MaxRescue<<rpShift // strings for injected calls
	ctlVecStart = ctlScratch + 4096
	vecEntries  = 128
	vecEntry    = 24

	// CtlSize is the size of the control block (a multiple of the page
	// size; the scan vector ends before it).
	CtlSize = 64 << 10
)

// Flags of the control block.
const (
	FlagFast   = 1  // entries may take checkpoints in the process
	FlagReady  = 2  // the shadow holds the memory as of the last scan
	FlagBroken = 4  // a scan failed: the shadow must be rebuilt
	FlagPkey   = 8  // the shadow is guarded by a protection key
	FlagStale  = 16 // a scan found written pages outside every range
	FlagLayout = 32 // the program called a function that maps memory
	FlagMT     = 64 // other threads exist: only the owner thread checkpoints here

	RangeShared = 1

	futexOwnerDied = 0x40000000
)

// Magic identifies a control block ("ASSUREC1").
var Magic = [8]byte{'A', 'S', 'S', 'U', 'R', 'E', 'C', '1'}

// Version of the layout.
const Version = 1

// Ctl is the supervisor's view of a process's control block: a mapping of
// the memfd the injected code uses too. Fields the injected code writes
// are read with atomic loads; it runs concurrently.
type Ctl struct {
	b []byte
}

// NewCtl wraps a mapping of CtlSize bytes.
func NewCtl(b []byte) *Ctl { return &Ctl{b: b[:CtlSize:CtlSize]} }

// Bytes is the whole block.
func (c *Ctl) Bytes() []byte { return c.b }

func (c *Ctl) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&c.b[off])) }
func (c *Ctl) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&c.b[off])) }

func (c *Ctl) load64(off int) uint64     { return atomic.LoadUint64(c.u64(off)) }
func (c *Ctl) store64(off int, v uint64) { atomic.StoreUint64(c.u64(off), v) }
func (c *Ctl) load32(off int) uint32     { return atomic.LoadUint32(c.u32(off)) }
func (c *Ctl) store32(off int, v uint32) { atomic.StoreUint32(c.u32(off), v) }

// Header is what the supervisor writes once.
type Header struct {
	Pmfd       int
	Shadow     uint64 // address of the shadow in the process
	Vec        uint64 // address of the scan vector in the process
	Trampoline uint64
	PkeyMask   uint32
	// CodeBase and CodeLen are the code region, where system calls are
	// always allowed by syscall user dispatch.
	CodeBase, CodeLen uint64
}

// Init writes the header of a fresh block (flags clear: nothing enabled).
func (c *Ctl) Init(h Header, vecAddr uint64) {
	copy(c.b[ctlMagic:], Magic[:])
	c.store32(ctlVersion, Version)
	c.store32(ctlPmfd, uint32(h.Pmfd))
	c.store64(ctlShadow, h.Shadow)
	c.store64(ctlVec, vecAddr)
	c.store64(ctlVecLen, vecEntries)
	c.store64(ctlTramp, h.Trampoline)
	c.store32(ctlPkeyMask, h.PkeyMask)
	c.store64(ctlCodeBase, h.CodeBase)
	c.store64(ctlCodeLen, h.CodeLen)
}

// Valid reports whether the block carries this layout.
func (c *Ctl) Valid() bool {
	return [8]byte(c.b[ctlMagic:ctlMagic+8]) == Magic && c.load32(ctlVersion) == Version
}

// Flags returns the flags.
func (c *Ctl) Flags() uint32 { return c.load32(ctlFlags) }

// SetFlags sets and clears flags (atomically: the injected code sets
// FlagBroken concurrently).
func (c *Ctl) SetFlags(set, clear uint32) {
	for {
		old := c.load32(ctlFlags)
		if atomic.CompareAndSwapUint32(c.u32(ctlFlags), old, (old|set)&^clear) {
			return
		}
	}
}

// SetAlive writes the supervisor's liveness word: its thread id, which
// the kernel marks FUTEX_OWNER_DIED when that thread dies.
func (c *Ctl) SetAlive(tid int) { c.store32(ctlAlive, uint32(tid)) }

// Alive is the liveness word.
func (c *Ctl) Alive() uint32 { return c.load32(ctlAlive) }

// AliveOffset places the liveness word.
const AliveOffset = ctlAlive

// StackLo sets where the checkpointing thread's stack mapping starts.
func (c *Ctl) SetStackLo(a uint64) { c.store64(ctlStackLo, a) }

// Frame is the active in-process checkpoint, if any.
type Frame struct {
	Active    bool
	RP        int
	Slot, Ret uint64 // where the return address is, and what it was
	Rbx, Rbp  uint64
	R12, R13  uint64
	R14, R15  uint64
	// The caller-saved registers at entry: rax, rcx, rdx, rsi, rdi, r8,
	// r9, r10, r11.
	Scratch    [9]uint64
	Mxcsr      uint32
	Fcw        uint16
	Generation uint64 // ctlCalls when it was taken: tells frames apart
}

// Frame reads the active frame. Call it with the process stopped.
func (c *Ctl) Frame() Frame {
	le := binary.LittleEndian
	b := c.b
	return Frame{
		Active: le.Uint32(b[ctlDepth:]) != 0, RP: int(le.Uint32(b[ctlFrp:])),
		Slot: le.Uint64(b[ctlFslot:]), Ret: le.Uint64(b[ctlFret:]),
		Rbx: le.Uint64(b[ctlFrbx:]), Rbp: le.Uint64(b[ctlFrbp:]),
		R12: le.Uint64(b[ctlFr12:]), R13: le.Uint64(b[ctlFr13:]),
		R14: le.Uint64(b[ctlFr14:]), R15: le.Uint64(b[ctlFr15:]),
		Mxcsr: le.Uint32(b[ctlFmxcsr:]), Fcw: le.Uint16(b[ctlFfcw:]),
		Generation: le.Uint64(b[ctlCalls:]),
		Scratch:    scratchRegs(b[ctlFrax:]),
	}
}

func scratchRegs(b []byte) [9]uint64 {
	var r [9]uint64
	for i := range r {
		r[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return r
}

// EndFrame drops the active frame (after a rollback) and lets system
// calls through again.
func (c *Ctl) EndFrame() {
	c.store32(ctlDepth, 0)
	c.b[ctlSelector] = 0
}

// SelectorOffset is the syscall user dispatch selector byte.
const SelectorOffset = ctlSelector

// SetSelector sets the selector (0 allow, 1 block).
func (c *Ctl) SetSelector(block bool) {
	v := byte(0)
	if block {
		v = 1
	}
	c.b[ctlSelector] = v
}

// Range is one tracked range as the injected code sees it.
type Range struct {
	Start, End, Off uint64
	Shared          bool
}

// SetRanges writes the tracked ranges. Call it with every thread that
// could take a checkpoint stopped, or before FlagReady is set.
func (c *Ctl) SetRanges(rs []Range) bool {
	if len(rs) > MaxRanges {
		return false
	}
	le := binary.LittleEndian
	for i, r := range rs {
		e := c.b[ctlRanges+i*rangeSize:]
		le.PutUint64(e[rangeStart:], r.Start)
		le.PutUint64(e[rangeEnd:], r.End)
		le.PutUint64(e[rangeOff:], r.Off)
		var fl uint64
		if r.Shared {
			fl |= RangeShared
		}
		le.PutUint64(e[rangeFlags:], fl)
	}
	c.store32(ctlNRanges, uint32(len(rs)))
	return true
}

// SetRescue writes rescue point k's stub addresses: where its relocated
// first instructions are, and its breakpoint for the supervisor.
func (c *Ctl) SetRescue(k int, back, trap uint64) {
	e := c.b[ctlRPTab+k<<rpShift:]
	binary.LittleEndian.PutUint64(e[rpBack:], back)
	binary.LittleEndian.PutUint64(e[rpTrap:], trap)
}

// Counters of the injected code.
type Counters struct {
	Calls, Pages, Unprotected, Slow, Commits, Longjmps uint64
	ScanErr                                            int64
}

// Counters reads the counters.
func (c *Ctl) Counters() Counters {
	return Counters{
		Calls: c.load64(ctlCalls), Pages: c.load64(ctlPages), Unprotected: c.load64(ctlUnprot),
		Slow: c.load64(ctlSlow), Commits: c.load64(ctlCommits), Longjmps: c.load64(ctlLongjmps),
		ScanErr: int64(c.load64(ctlScanErr)),
	}
}

// RescueCalls is how many times rescue point k was entered.
func (c *Ctl) RescueCalls(k int) uint64 { return c.load64(ctlRPTab + k<<rpShift + rpCalls) }

// UncountCall takes back one entry of rescue point k: one the supervisor
// sends through the injected code a second time.
func (c *Ctl) UncountCall(k int) { atomic.AddUint64(c.u64(ctlRPTab+k<<rpShift+rpCalls), ^uint64(0)) }

// RescueCheckpoints is how many checkpoints the injected code took at
// rescue point k's entry.
func (c *Ctl) RescueCheckpoints(k int) uint64 { return c.load64(ctlRPTab + k<<rpShift + rpCkpts) }

// ScratchOffset is free space in the block for arguments of injected
// system calls (a path, a struct).
const ScratchOffset = ctlScratch

// VecOffset is where the scan vector lies in the block.
const VecOffset = ctlVecStart

// Header reads back what Init wrote (a supervisor taking over a block an
// earlier one made).
func (c *Ctl) Header() Header {
	return Header{
		Pmfd: int(c.load32(ctlPmfd)), Shadow: c.load64(ctlShadow), Trampoline: c.load64(ctlTramp),
		PkeyMask: c.load32(ctlPkeyMask), CodeBase: c.load64(ctlCodeBase), CodeLen: c.load64(ctlCodeLen),
	}
}

// Entry stub layout (EntryStub): the index pushed at 1, the trap at
// EntryTrap, the relocated instructions after it.
const (
	EntryIndexAt = 1
	EntryTrap    = 17
)

// Owner is the thread pointer of the thread that takes the in-process
// checkpoints of a multi-threaded process (0: none yet).
func (c *Ctl) Owner() uint64 { return c.load64(ctlOwner) }
