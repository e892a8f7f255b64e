package candidates

// Reason says why a function is not a candidate. Report.Dropped counts
// functions by Reason; every examined function that is not a candidate
// has exactly one, the first that applies in the order below.
type Reason string

const (
	// ReasonStartup: _start, _init, _fini or the entry point. Nothing
	// calls them that could handle an error.
	ReasonStartup Reason = "startup code (_start, _init, _fini, entry point)"
	// ReasonPLT: a PLT stub. It only jumps to the imported function;
	// that function, in its own file, is the candidate.
	ReasonPLT Reason = "PLT stub"
	// ReasonRefused: elfsym.CheckRescuePoint refuses the address for
	// another reason (not executable, not a function start).
	ReasonRefused Reason = "refused by CheckRescuePoint"
	// ReasonUnreadable: the function's bytes are not in an executable
	// section of the file (truncated file, bogus symbol).
	ReasonUnreadable Reason = "code not readable from the file"
	// ReasonTooShort: smaller than Options.MinSize. A function of a few
	// bytes (return a constant, jump elsewhere) has nothing that could
	// fault, and a breakpoint on it costs more than it protects.
	ReasonTooShort Reason = "too short"
	// ReasonUndecodable: too much of the function does not decode as
	// x86-64 (data in code, or a damaged file); nothing read from it
	// can be trusted.
	ReasonUndecodable Reason = "does not decode as x86-64"
	// ReasonNoDirectCallers: no direct call or jump reaches it in this
	// file (nor, for a library, through the PLT of the files given in
	// ExternalCallers). Also listed in Report.NoDirectCallers.
	ReasonNoDirectCallers Reason = "no direct callers"
	// ReasonTailCallsOnly: only reached by tail jumps (jmp f). Its
	// result goes straight back to the jumping function's callers,
	// which this analysis does not follow.
	ReasonTailCallsOnly Reason = "reached only by tail calls"
	// ReasonUnchecked: no call site tests the result and branches on
	// it. The result is ignored, or the function is void: without
	// types the two look the same, since a compiler never tests eax
	// after a call to a void function.
	ReasonUnchecked Reason = "result never tested by a caller (ignored, or void)"
	// ReasonNoErrorValue: callers test the result but neither their
	// tests nor the function's return paths single out an error value.
	ReasonNoErrorValue Reason = "no error value could be inferred"
	// ReasonNotExamined: the time limit (Options.MaxTime) was reached
	// before the function was decoded.
	ReasonNotExamined Reason = "not examined (time limit)"
)
