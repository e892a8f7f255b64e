package unwind

import "errors"

// errTruncated is a program or expression that ends inside an operand.
var errTruncated = errors.New("truncated operand")

// reader decodes the operands of CFA instructions and DWARF expressions.
// The first error sticks; later reads return zero, so callers check once
// after an instruction. (elfsym has the same for the table's framing; its
// cursor is not exported, and this one is a few lines.)
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) more() bool { return r.err == nil && r.off < len(r.b) }

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) u8() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail(errTruncated)
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

// fixed reads an n-byte little-endian value (n <= 8).
func (r *reader) fixed(n int) uint64 {
	if r.err != nil || n > len(r.b)-r.off {
		r.fail(errTruncated)
		return 0
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(r.b[r.off+i])
	}
	r.off += n
	return v
}

// maxLEB128 is the longest encoding of a 64-bit value.
const maxLEB128 = 10

var errLEB128 = errors.New("LEB128 value longer than 64 bits")

func (r *reader) uleb() uint64 {
	var v uint64
	for i := 0; i < maxLEB128; i++ {
		b := r.u8()
		if r.err != nil {
			return 0
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v
		}
	}
	r.fail(errLEB128)
	return 0
}

func (r *reader) sleb() int64 {
	var v int64
	for i := 0; i < maxLEB128; i++ {
		b := r.u8()
		if r.err != nil {
			return 0
		}
		v |= int64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if shift := 7 * (i + 1); shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
	r.fail(errLEB128)
	return 0
}

// blockRange reads a uleb128 length and skips that many bytes, returning
// where they are.
func (r *reader) blockRange() (from, to int) {
	n := r.uleb()
	if r.err != nil || n > uint64(len(r.b)-r.off) {
		r.fail(errTruncated)
		return 0, 0
	}
	from = r.off
	r.off += int(n)
	return from, r.off
}
