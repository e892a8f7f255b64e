package unwind

import (
	"sort"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// FDELookup finds the unwind entry covering an ELF virtual address.
// *elfsym.CFI is one; an interface so that tests (and, one day, other
// tables such as .debug_frame) can supply their own.
type FDELookup interface {
	Lookup(vaddr uint64) (elfsym.FDE, bool)
}

// Module is a loaded ELF file.
type Module struct {
	Path string
	File *elfsym.File // symbols; nil: frames in it are not named
	CFI  FDELookup    // unwind table; nil: the walk stops in it
}

// Modules maps run-time code addresses to modules: one range per
// executable mapping, with the load bias (run-time address minus ELF
// virtual address) of its file. Read-only once built: safe for
// concurrent walks.
type Modules struct {
	ranges []modRange // sorted by start, not overlapping
	errs   []error
}

type modRange struct {
	start, end uint64 // run-time [start, end)
	bias       uint64
	mod        *Module
}

// Add records that [start, end) holds code of m loaded with bias. A range
// overlapping one already added replaces nothing and is ignored.
func (ms *Modules) Add(start, end, bias uint64, m *Module) {
	if end <= start || m == nil {
		return
	}
	i := sort.Search(len(ms.ranges), func(i int) bool { return ms.ranges[i].start >= start })
	if i > 0 && ms.ranges[i-1].end > start || i < len(ms.ranges) && ms.ranges[i].start < end {
		return
	}
	ms.ranges = append(ms.ranges, modRange{})
	copy(ms.ranges[i+1:], ms.ranges[i:])
	ms.ranges[i] = modRange{start: start, end: end, bias: bias, mod: m}
}

// Errors returns why some mappings have no module (a file that could
// not be opened or parsed), as LoadModules recorded them.
func (ms *Modules) Errors() []error { return ms.errs }

// find returns the range holding pc.
func (ms *Modules) find(pc uint64) (*modRange, bool) {
	if ms == nil {
		return nil, false
	}
	rs := ms.ranges
	i := sort.Search(len(rs), func(i int) bool { return rs[i].start > pc }) - 1
	if i < 0 || pc >= rs[i].end {
		return nil, false
	}
	return &rs[i], true
}
