package unwind

import "fmt"

// This file evaluates DWARF expressions (DWARF 5, 2.5) in the forms CFI
// uses: a value computed from registers, constants and memory. GCC emits
// them for PLT entries (the CFA depends on where in the 16-byte entry rip
// is), for stack-realigning prologues and in glibc's signal trampoline.
// Location descriptions (DW_OP_reg*, DW_OP_piece) mean nothing here and
// are refused.

// Bounds on one evaluation: branches can loop, and the stack is fixed.
const (
	maxExprSteps = 1024
	maxExprStack = 64
)

// exprEnv is what an expression reads.
type exprEnv struct {
	regs *regset
	mem  *memory
}

type exprStack struct {
	v [maxExprStack]uint64
	n int
}

func (s *exprStack) push(v uint64) error {
	if s.n == maxExprStack {
		return fmt.Errorf("%w: expression stack deeper than %d", ErrUnsupported, maxExprStack)
	}
	s.v[s.n] = v
	s.n++
	return nil
}

func (s *exprStack) pop() (uint64, error) {
	if s.n == 0 {
		return 0, fmt.Errorf("%w: expression stack underflow", ErrMalformed)
	}
	s.n--
	return s.v[s.n], nil
}

// eval runs code with the initial stack values and returns the top.
func (env exprEnv) eval(code []byte, initial ...uint64) (uint64, error) {
	var st exprStack
	for _, v := range initial {
		if err := st.push(v); err != nil {
			return 0, err
		}
	}
	r := reader{b: code}
	for steps := 0; r.more(); steps++ {
		if steps == maxExprSteps {
			return 0, fmt.Errorf("%w: expression runs more than %d steps", ErrUnsupported, maxExprSteps)
		}
		at := r.off
		err := env.op(&r, &st)
		if err == nil && r.err != nil {
			err = fmt.Errorf("%w: %w", ErrMalformed, r.err)
		}
		if err != nil {
			return 0, fmt.Errorf("expression byte %d (0x%02x): %w", at, code[at], err)
		}
	}
	return st.pop()
}

// op runs one operation.
func (env exprEnv) op(r *reader, st *exprStack) error {
	op := r.u8()
	switch {
	case op >= 0x30 && op <= 0x4f: // DW_OP_lit0..31
		return st.push(uint64(op - 0x30))
	case op >= 0x70 && op <= 0x8f: // DW_OP_breg0..31
		return env.breg(uint64(op-0x70), r.sleb(), st)
	case op == 0x92: // DW_OP_bregx
		reg := r.uleb()
		return env.breg(reg, r.sleb(), st)
	case op == 0x06: // DW_OP_deref
		return env.deref(st, 8)
	case op == 0x94: // DW_OP_deref_size
		return env.deref(st, int(r.u8()))
	case op == 0x96: // DW_OP_nop
		return nil
	case op == 0x2f || op == 0x28: // DW_OP_skip, DW_OP_bra
		return branch(op, r, st)
	}
	if v, ok := constant(op, r); ok {
		return st.push(v)
	}
	return stackOp(op, r, st)
}

// constant decodes the operations that push an operand.
func constant(op byte, r *reader) (uint64, bool) {
	switch op {
	case 0x03: // DW_OP_addr
		return r.fixed(8), true
	case 0x08: // DW_OP_const1u
		return r.fixed(1), true
	case 0x09: // DW_OP_const1s
		return uint64(int8(r.fixed(1))), true
	case 0x0a: // DW_OP_const2u
		return r.fixed(2), true
	case 0x0b: // DW_OP_const2s
		return uint64(int16(r.fixed(2))), true
	case 0x0c: // DW_OP_const4u
		return r.fixed(4), true
	case 0x0d: // DW_OP_const4s
		return uint64(int32(r.fixed(4))), true
	case 0x0e, 0x0f: // DW_OP_const8u, DW_OP_const8s
		return r.fixed(8), true
	case 0x10: // DW_OP_constu
		return r.uleb(), true
	case 0x11: // DW_OP_consts
		return uint64(r.sleb()), true
	}
	return 0, false
}

func (env exprEnv) breg(reg uint64, off int64, st *exprStack) error {
	if reg >= nregs {
		return fmt.Errorf("%w: register %d", ErrUnsupported, reg)
	}
	v, ok := env.regs.get(Reg(reg))
	if !ok {
		return fmt.Errorf("expression reads %v, whose value is unknown here", Reg(reg))
	}
	return st.push(v + uint64(off))
}

func (env exprEnv) deref(st *exprStack, size int) error {
	addr, err := st.pop()
	if err != nil {
		return err
	}
	if size < 1 || size > 8 {
		return fmt.Errorf("%w: deref_size %d", ErrMalformed, size)
	}
	v, err := env.mem.read(addr, size)
	if err != nil {
		return err
	}
	return st.push(v)
}

// branch runs DW_OP_skip and DW_OP_bra; the target must be inside the
// expression (its end included).
func branch(op byte, r *reader, st *exprStack) error {
	delta := int16(r.fixed(2))
	if r.err != nil {
		return nil // reported by the caller
	}
	if op == 0x28 {
		v, err := st.pop()
		if err != nil || v == 0 {
			return err
		}
	}
	to := r.off + int(delta)
	if to < 0 || to > len(r.b) {
		return fmt.Errorf("%w: branch outside the expression", ErrMalformed)
	}
	r.off = to
	return nil
}
