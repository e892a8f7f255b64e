package unwind

import (
	"errors"
	"fmt"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// This file runs CFA programs: the CIE's initial instructions, then the
// FDE's, up to the address being unwound, giving the row of the unwind
// table in effect there (DWARF 5, 6.4.1): how to compute the CFA and
// where each register of the caller was saved.

var (
	// ErrMalformed is CFI that breaks the format's rules.
	ErrMalformed = errors.New("malformed CFI")
	// ErrUnsupported is valid CFI this unwinder does not interpret.
	ErrUnsupported = errors.New("unsupported CFI")
)

// ruleKind says how a register of the caller is recovered.
type ruleKind uint8

const (
	// ruleSame is the zero value: on x86-64 an unmentioned register
	// keeps its value across the call (GCC's unwinder assumes the same);
	// for caller-saved registers that means "unknown" (callerSaved).
	ruleSame ruleKind = iota
	ruleUndefined
	ruleOffset        // saved at CFA+off
	ruleValOffset     // the value is CFA+off
	ruleRegister      // held in register reg
	ruleExpression    // saved at the address expr computes (CFA pushed)
	ruleValExpression // the value is what expr computes (CFA pushed)
)

type rule struct {
	kind ruleKind
	reg  Reg
	off  int64
	expr exprRef
}

// cfaRule is CFA = reg+off, or the value of expr when isExpr.
type cfaRule struct {
	set    bool
	isExpr bool
	reg    Reg
	off    int64
	expr   exprRef
}

// exprRef locates an expression in the CIE's or the FDE's program.
// Rows hold no pointers, so that copying them (remember_state, restore,
// a new walk) is a plain memory move, without the garbage collector's
// write barriers.
type exprRef struct {
	from, to int32 // maxProgram fits
	inCIE    bool
}

// row is one row of the unwind table.
type row struct {
	cfa  cfaRule
	regs [nregs]rule
}

// Bounds on what a program may ask. Real FDEs are tens of bytes (a few
// KiB for the largest functions) and nest remember_state a level or two.
const (
	maxProgram  = 64 << 10
	maxRemember = 64
)

// interp runs the programs of one FDE. It is reused across frames so
// that unwinding allocates nothing per frame.
type interp struct {
	cie     *elfsym.CIE
	code    []byte // the FDE's instructions
	row     row
	initial row   // the row after the CIE's program, for DW_CFA_restore
	stack   []row // DW_CFA_remember_state
	loc, pc uint64
	done    bool // the next row starts past pc
}

// rowAt returns the row in effect at vaddr, an ELF address inside fde.
// The result points into in and is valid until the next call.
func (in *interp) rowAt(fde elfsym.FDE, vaddr uint64) (*row, error) {
	if fde.CIE == nil {
		return nil, fmt.Errorf("%w: FDE at 0x%x has no CIE", ErrMalformed, fde.Start)
	}
	if len(fde.CIE.Initial)+len(fde.Instructions) > maxProgram {
		return nil, fmt.Errorf("%w: FDE at 0x%x: program longer than %d bytes", ErrUnsupported, fde.Start, maxProgram)
	}
	if fde.CIE.ReturnReg != uint64(RIP) {
		return nil, fmt.Errorf("%w: return address in column %d", ErrUnsupported, fde.CIE.ReturnReg)
	}
	if vaddr < fde.Start || vaddr-fde.Start >= fde.Size {
		return nil, fmt.Errorf("address 0x%x is outside the FDE [0x%x, +0x%x)", vaddr, fde.Start, fde.Size)
	}
	in.cie, in.code, in.loc, in.pc, in.done = fde.CIE, fde.Instructions, fde.Start, vaddr, false
	in.row, in.stack = row{}, in.stack[:0]
	if err := in.run(fde.CIE.Initial, true); err != nil {
		return nil, fmt.Errorf("CIE of the FDE at 0x%x: %w", fde.Start, err)
	}
	in.initial = in.row
	if err := in.run(fde.Instructions, false); err != nil {
		return nil, fmt.Errorf("FDE at 0x%x: %w", fde.Start, err)
	}
	if !in.row.cfa.set {
		return nil, fmt.Errorf("%w: FDE at 0x%x defines no CFA at 0x%x", ErrMalformed, fde.Start, vaddr)
	}
	return &in.row, nil
}

func (in *interp) run(code []byte, inCIE bool) error {
	r := reader{b: code}
	for !in.done && r.more() {
		at := r.off
		err := in.step(&r, inCIE)
		if err == nil && r.err != nil {
			err = fmt.Errorf("%w: %w", ErrMalformed, r.err)
		}
		if err != nil {
			return fmt.Errorf("instruction at byte %d (0x%02x): %w", at, code[at], err)
		}
	}
	return nil
}

// step runs one instruction. The top two bits of the opcode select the
// three instructions with an operand packed in the low six.
func (in *interp) step(r *reader, inCIE bool) error {
	op := r.u8()
	low := uint64(op & 0x3f)
	switch op >> 6 {
	case 1: // DW_CFA_advance_loc
		return in.advance(low, inCIE)
	case 2: // DW_CFA_offset
		return in.setRule(low, rule{kind: ruleOffset, off: in.factored(r.uleb())})
	case 3: // DW_CFA_restore
		return in.restore(low, inCIE)
	}
	if op <= 0x04 || (op >= 0x0a && op <= 0x0f) || op == 0x12 || op == 0x13 || op == 0x2e {
		return in.controlOp(op, r, inCIE)
	}
	return in.registerOp(op, r, inCIE)
}

// factored scales an unsigned factored offset by the data alignment.
func (in *interp) factored(v uint64) int64 { return int64(v) * in.cie.DataAlign }

// controlOp runs the instructions that move the location, define the CFA
// or save and restore whole rows.
func (in *interp) controlOp(op byte, r *reader, inCIE bool) error {
	switch op {
	case 0x00: // DW_CFA_nop
	case 0x01: // DW_CFA_set_loc: its operand's encoding (the FDE's) is not
		// exposed, and no x86-64 toolchain emits it.
		return fmt.Errorf("%w: DW_CFA_set_loc", ErrUnsupported)
	case 0x02: // DW_CFA_advance_loc1
		return in.advance(r.fixed(1), inCIE)
	case 0x03: // DW_CFA_advance_loc2
		return in.advance(r.fixed(2), inCIE)
	case 0x04: // DW_CFA_advance_loc4
		return in.advance(r.fixed(4), inCIE)
	case 0x0a: // DW_CFA_remember_state
		if len(in.stack) == maxRemember {
			return fmt.Errorf("%w: remember_state nested deeper than %d", ErrUnsupported, maxRemember)
		}
		in.stack = append(in.stack, in.row)
	case 0x0b: // DW_CFA_restore_state
		if len(in.stack) == 0 {
			return fmt.Errorf("%w: restore_state without remember_state", ErrMalformed)
		}
		in.row = in.stack[len(in.stack)-1]
		in.stack = in.stack[:len(in.stack)-1]
	case 0x0c: // DW_CFA_def_cfa
		return in.defCFA(r.uleb(), int64(r.uleb()))
	case 0x12: // DW_CFA_def_cfa_sf
		return in.defCFA(r.uleb(), r.sleb()*in.cie.DataAlign)
	case 0x0d: // DW_CFA_def_cfa_register
		return in.setCFA(func(c *cfaRule) error { return setReg(&c.reg, r.uleb()) })
	case 0x0e: // DW_CFA_def_cfa_offset
		return in.setCFA(func(c *cfaRule) error { c.off = int64(r.uleb()); return nil })
	case 0x13: // DW_CFA_def_cfa_offset_sf
		return in.setCFA(func(c *cfaRule) error { c.off = r.sleb() * in.cie.DataAlign; return nil })
	case 0x0f: // DW_CFA_def_cfa_expression
		in.row.cfa = cfaRule{set: true, isExpr: true, expr: block(r, inCIE)}
	case 0x2e: // DW_CFA_GNU_args_size: only landing pads need it
		r.uleb()
	}
	return nil
}

// advance moves the location by delta code units, or ends the program
// when the next row would start past pc.
func (in *interp) advance(delta uint64, inCIE bool) error {
	if inCIE {
		return fmt.Errorf("%w: advance_loc in a CIE", ErrMalformed)
	}
	step := delta * in.cie.CodeAlign
	if in.cie.CodeAlign != 0 && step/in.cie.CodeAlign != delta || step > in.pc-in.loc {
		in.done = true // past pc, or past the address space
		return nil
	}
	in.loc += step
	return nil
}

func (in *interp) defCFA(reg uint64, off int64) error {
	in.row.cfa = cfaRule{set: true, off: off}
	return setReg(&in.row.cfa.reg, reg)
}

// setCFA changes one half of a register+offset CFA rule, which must exist.
func (in *interp) setCFA(change func(*cfaRule) error) error {
	if !in.row.cfa.set || in.row.cfa.isExpr {
		return fmt.Errorf("%w: CFA offset or register changed without a register rule", ErrMalformed)
	}
	return change(&in.row.cfa)
}

// block reads an expression operand and returns where it is.
func block(r *reader, inCIE bool) exprRef {
	from, to := r.blockRange()
	return exprRef{from: int32(from), to: int32(to), inCIE: inCIE}
}

// expr returns the bytes of an expression of the current programs.
func (in *interp) expr(e exprRef) []byte {
	code := in.code
	if e.inCIE {
		code = in.cie.Initial
	}
	return code[e.from:e.to]
}

// setReg stores a register number used to compute values: it must be
// one this unwinder tracks.
func setReg(dst *Reg, reg uint64) error {
	if reg >= nregs {
		return fmt.Errorf("%w: register %d", ErrUnsupported, reg)
	}
	*dst = Reg(reg)
	return nil
}
