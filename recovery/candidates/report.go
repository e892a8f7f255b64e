package candidates

import (
	"fmt"
	"sort"
	"time"
)

// Report is what Find learned about one ELF file.
type Report struct {
	// Binary is the path the file was read from.
	Binary string
	// PIE is true for position-independent files (PIE executables and
	// shared libraries): addresses are relative to a load bias.
	PIE bool
	// Functions is the number of functions examined: every start that
	// elfsym found (.symtab, .dynsym, .eh_frame). Each one ends up either
	// in Candidates or counted in Dropped, so that nothing is lost
	// silently.
	Functions int
	// Candidates are the rescue-point candidates, best evidence first.
	Candidates []Candidate
	// NoDirectCallers are the functions that no direct call or jump in
	// this file reaches. They may still be called through pointers
	// (callbacks, vtables, the PLT of another file), which static
	// analysis cannot see; they are listed so that a dynamic phase can
	// look at them. Sorted by address.
	NoDirectCallers []Function
	// Dropped counts the functions that are not candidates, by reason.
	Dropped map[Reason]int
	// Imports is the evidence from calls in this file to functions it
	// imports, through the PLT or the GOT, by symbol name (no version).
	// Pass it as Options.ExternalCallers when analysing the library that
	// defines them, so that a library function called only from the
	// main program can still be a candidate.
	Imports map[string]*CallerEvidence
	// Stats are counters about the decoding itself.
	Stats Stats
	// Incomplete says why the analysis may have missed functions or
	// call sites (a damaged unwind table, the time limit), or is "".
	Incomplete string

	// reasons is why each examined function was dropped, sorted by
	// address ("" for candidates), for Reason.
	reasons []funcReason
}

type funcReason struct {
	addr   uint64
	reason Reason
}

// Reason says why the function at addr is not a candidate: "" with ok
// for a candidate, ok false when no examined function starts at addr.
func (r *Report) Reason(addr uint64) (reason Reason, ok bool) {
	i := sort.Search(len(r.reasons), func(i int) bool { return r.reasons[i].addr >= addr })
	if i < len(r.reasons) && r.reasons[i].addr == addr {
		return r.reasons[i].reason, true
	}
	return "", false
}

// Function names a function of the file.
type Function struct {
	Name    string // "" when unnamed (a stripped file's .eh_frame entry)
	Address uint64 // ELF virtual address, as nm prints it
}

// Label is the name, or the address as manifests write it ("0x1139").
func (f Function) Label() string {
	if f.Name != "" {
		return f.Name
	}
	return fmt.Sprintf("0x%x", f.Address)
}

// Stats count what the decoder saw. They are for judging the quality of
// a result (many undecodable bytes mean data in code, or a damaged file)
// and for tuning, not for decisions.
type Stats struct {
	Instructions   int           // instructions decoded
	BadBytes       int           // bytes skipped because they did not decode
	Calls          int           // direct calls (call rel32) decoded
	CallsToStarts  int           // ... whose target is a function start
	CallsToImports int           // ... whose target is a PLT stub, plus call [GOT]
	CallsElsewhere int           // ... whose target is neither (e.g. inside a function)
	Overlaps       int           // functions whose size runs into the next function
	PLTStubs       int           // PLT stubs resolved to an imported name
	Elapsed        time.Duration // time spent in Find
}

// Candidate is a function that looks like a rescue point: its callers
// test the value it returns and branch on it, and an error value could
// be inferred. It is a candidate only: whether the program really
// survives an error return from it is for fault injection to tell.
type Candidate struct {
	Binary   string // the file, as given to Find
	Function string // symbol name; "" when unnamed (stripped)
	Address  uint64 // ELF virtual address, as nm prints it
	// Return is the inferred error value. It is never nil: void
	// functions are not offered (see the package documentation); the
	// pointer matches manifest.RescuePoint.Return.
	Return *int64
	// Confidence grades the inference of Return.
	Confidence Confidence
	// ReturnEvidence says in words where Return was inferred from.
	ReturnEvidence string
	// CallSites is the number of direct call sites (this file, plus
	// ExternalCallers); CheckedSites how many of them test the result
	// and branch on it or, weaker, feed the test to a setcc/cmovcc.
	CallSites, CheckedSites int
	// Callers details what the call sites do with the result.
	Callers CallerEvidence
	// Returns details the values the function's return paths set.
	Returns ReturnSummary
}

// Label is the function's name, or its address as manifests write it.
func (c Candidate) Label() string {
	return Function{Name: c.Function, Address: c.Address}.Label()
}

// Confidence grades how well an error value is supported.
type Confidence int

// Confidence levels, higher is better.
const (
	// Low: the callers test the result, but the value rests on a
	// convention (0 for a boolean, -1 for a sign test without a
	// constant return).
	Low Confidence = iota + 1
	// Medium: the function returns the value as a constant, or the
	// callers compare against it, but not both.
	Medium
	// High: the function returns the value as a constant and the
	// callers' tests single it out.
	High
)

func (c Confidence) String() string {
	switch c {
	case Low:
		return "low"
	case Medium:
		return "medium"
	case High:
		return "high"
	}
	return fmt.Sprintf("Confidence(%d)", int(c))
}
