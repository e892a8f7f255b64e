package unwind

import "fmt"

// stackOp runs the operations on the stack alone: stack manipulation,
// arithmetic and comparisons. DWARF compares as signed values.
func stackOp(op byte, r *reader, st *exprStack) error {
	switch op {
	case 0x12: // DW_OP_dup
		return pick(st, 0)
	case 0x14: // DW_OP_over
		return pick(st, 1)
	case 0x15: // DW_OP_pick
		return pick(st, int(r.u8()))
	case 0x13: // DW_OP_drop
		_, err := st.pop()
		return err
	case 0x16: // DW_OP_swap
		return swap(st)
	case 0x17: // DW_OP_rot
		if st.n < 3 {
			return fmt.Errorf("%w: expression stack underflow", ErrMalformed)
		}
		v := st.v[st.n-3 : st.n]
		v[0], v[1], v[2] = v[2], v[0], v[1]
		return nil
	case 0x23: // DW_OP_plus_uconst
		return unary(st, func(a uint64) uint64 { return a + r.uleb() })
	case 0x1f: // DW_OP_neg
		return unary(st, func(a uint64) uint64 { return -a })
	case 0x20: // DW_OP_not
		return unary(st, func(a uint64) uint64 { return ^a })
	case 0x19: // DW_OP_abs
		return unary(st, func(a uint64) uint64 {
			if int64(a) < 0 {
				return -a
			}
			return a
		})
	}
	if f, ok := binaryOps[op]; ok {
		return binop(st, f)
	}
	return fmt.Errorf("%w: DWARF expression opcode 0x%02x", ErrUnsupported, op)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// binaryOps pop b then a and push f(a, b). Division by zero is an error.
var binaryOps = map[byte]func(a, b uint64) (uint64, error){
	0x1a: func(a, b uint64) (uint64, error) { return a & b, nil },                        // DW_OP_and
	0x1c: func(a, b uint64) (uint64, error) { return a - b, nil },                        // DW_OP_minus
	0x1e: func(a, b uint64) (uint64, error) { return a * b, nil },                        // DW_OP_mul
	0x21: func(a, b uint64) (uint64, error) { return a | b, nil },                        // DW_OP_or
	0x22: func(a, b uint64) (uint64, error) { return a + b, nil },                        // DW_OP_plus
	0x24: func(a, b uint64) (uint64, error) { return a << (b & 63), nil },                // DW_OP_shl
	0x25: func(a, b uint64) (uint64, error) { return a >> (b & 63), nil },                // DW_OP_shr
	0x26: func(a, b uint64) (uint64, error) { return uint64(int64(a) >> (b & 63)), nil }, // DW_OP_shra
	0x27: func(a, b uint64) (uint64, error) { return a ^ b, nil },                        // DW_OP_xor
	0x29: func(a, b uint64) (uint64, error) { return b2u(a == b), nil },                  // DW_OP_eq
	0x2e: func(a, b uint64) (uint64, error) { return b2u(a != b), nil },                  // DW_OP_ne
	0x2a: func(a, b uint64) (uint64, error) { return b2u(int64(a) >= int64(b)), nil },    // DW_OP_ge
	0x2b: func(a, b uint64) (uint64, error) { return b2u(int64(a) > int64(b)), nil },     // DW_OP_gt
	0x2c: func(a, b uint64) (uint64, error) { return b2u(int64(a) <= int64(b)), nil },    // DW_OP_le
	0x2d: func(a, b uint64) (uint64, error) { return b2u(int64(a) < int64(b)), nil },     // DW_OP_lt
	0x1b: func(a, b uint64) (uint64, error) { // DW_OP_div (signed)
		if b == 0 || int64(b) == -1 && int64(a) == -1<<63 {
			return 0, fmt.Errorf("%w: division overflow", ErrMalformed)
		}
		return uint64(int64(a) / int64(b)), nil
	},
	0x1d: func(a, b uint64) (uint64, error) { // DW_OP_mod
		if b == 0 {
			return 0, fmt.Errorf("%w: modulo by zero", ErrMalformed)
		}
		return a % b, nil
	},
}

func binop(st *exprStack, f func(a, b uint64) (uint64, error)) error {
	b, err := st.pop()
	if err != nil {
		return err
	}
	a, err := st.pop()
	if err != nil {
		return err
	}
	v, err := f(a, b)
	if err != nil {
		return err
	}
	return st.push(v)
}

func unary(st *exprStack, f func(uint64) uint64) error {
	a, err := st.pop()
	if err != nil {
		return err
	}
	return st.push(f(a))
}

// pick pushes the i-th entry from the top.
func pick(st *exprStack, i int) error {
	if i >= st.n {
		return fmt.Errorf("%w: expression stack underflow", ErrMalformed)
	}
	return st.push(st.v[st.n-1-i])
}

func swap(st *exprStack) error {
	if st.n < 2 {
		return fmt.Errorf("%w: expression stack underflow", ErrMalformed)
	}
	st.v[st.n-1], st.v[st.n-2] = st.v[st.n-2], st.v[st.n-1]
	return nil
}
