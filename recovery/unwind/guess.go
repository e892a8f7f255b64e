package unwind

import "fmt"

// guess finds the caller through the frame-pointer chain (rbp points at
// the saved rbp, the return address above it), when the walk may and the
// chain looks sane; otherwise it returns why, the reason the walk stops.
func (w *walker) guess(f *Frame, cur *regset, why error) (regset, stepKind, error) {
	if !w.opt.FramePointers {
		return regset{}, 0, why
	}
	rbp, ok := cur.get(RBP)
	rsp, _ := cur.get(RSP)
	if !ok || rbp%8 != 0 || rbp < rsp || rbp+16 < rbp {
		return regset{}, 0, fmt.Errorf("%w, and rbp (0x%x) is no frame pointer", why, rbp)
	}
	saved, err := w.mem.word(rbp)
	if err != nil {
		return regset{}, 0, fmt.Errorf("%w, and the frame pointer chain: %w", why, err)
	}
	ra, err := w.mem.word(rbp + 8)
	if err != nil {
		return regset{}, 0, fmt.Errorf("%w, and the frame pointer chain: %w", why, err)
	}
	f.CFA = rbp + 16
	var next regset
	next.set(RBP, saved)
	next.set(RSP, rbp+16)
	next.set(RIP, ra)
	return next, stepGuessed, nil
}
