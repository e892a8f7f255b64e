package unwind

import (
	"fmt"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// cfiStep computes the caller's registers from the CFI row at vaddr.
func (w *walker) cfiStep(f *Frame, cur *regset, fde elfsym.FDE, vaddr uint64) (regset, stepKind, error) {
	rw, err := w.in.rowAt(fde, vaddr)
	if err != nil {
		return regset{}, 0, err
	}
	env := exprEnv{regs: cur, mem: &w.mem}
	cfa, err := w.in.cfa(env)
	if err != nil {
		return regset{}, 0, fmt.Errorf("CFA: %w", err)
	}
	f.CFA = cfa
	if rw.regs[RIP].kind == ruleUndefined {
		return regset{}, stepEnd, nil
	}
	next, err := w.in.apply(env, cfa)
	if err != nil {
		return regset{}, 0, err
	}
	if _, ok := next.get(RIP); !ok {
		return regset{}, 0, fmt.Errorf("%w: the return address is not recovered", ErrMalformed)
	}
	return next, stepCFI, nil
}

// cfa computes the CFA of the row rowAt found.
func (in *interp) cfa(env exprEnv) (uint64, error) {
	c := &in.row.cfa
	if c.isExpr {
		return env.eval(in.expr(c.expr))
	}
	v, ok := env.regs.get(c.reg)
	if !ok {
		return 0, fmt.Errorf("CFA is based on %v, whose value is unknown here", c.reg)
	}
	return v + uint64(c.off), nil
}

// apply recovers the caller's registers. rsp is the CFA by definition of
// the CFA on x86-64, whatever rule the row has for it.
func (in *interp) apply(env exprEnv, cfa uint64) (regset, error) {
	var next regset
	for reg := Reg(0); reg < nregs; reg++ {
		if reg == RSP {
			continue
		}
		v, ok, err := in.recoverReg(&in.row.regs[reg], reg, env, cfa)
		if err != nil {
			return next, fmt.Errorf("saved %v: %w", reg, err)
		}
		if ok {
			next.set(reg, v)
		}
	}
	next.set(RSP, cfa)
	return next, nil
}

// recoverReg applies one register's rule; ok is false when the value is
// unknown in the caller.
func (in *interp) recoverReg(r *rule, reg Reg, env exprEnv, cfa uint64) (v uint64, ok bool, err error) {
	switch r.kind {
	case ruleSame:
		if callerSaved(reg) {
			return 0, false, nil
		}
		v, ok = env.regs.get(reg)
		return v, ok, nil
	case ruleUndefined:
		return 0, false, nil
	case ruleOffset:
		v, err = env.mem.word(cfa + uint64(r.off))
	case ruleValOffset:
		v = cfa + uint64(r.off)
	case ruleRegister:
		v, ok = env.regs.get(r.reg)
		return v, ok, nil
	case ruleExpression:
		var addr uint64
		if addr, err = env.eval(in.expr(r.expr), cfa); err == nil {
			v, err = env.mem.word(addr)
		}
	case ruleValExpression:
		v, err = env.eval(in.expr(r.expr), cfa)
	}
	return v, err == nil, err
}

func lookupFDE(m *Module, vaddr uint64) (elfsym.FDE, bool) {
	if m.CFI == nil {
		return elfsym.FDE{}, false
	}
	return m.CFI.Lookup(vaddr)
}

// symbolize names the function holding vaddr (the looked-up address:
// pc-1 for a return address).
func symbolize(f *Frame, m *Module, vaddr uint64) {
	if m.File == nil {
		return
	}
	_, off, ok := m.File.Symbolize(vaddr)
	if !ok {
		return
	}
	f.FuncStart = vaddr - off
	f.Offset = f.Vaddr - f.FuncStart
	// Symbolize names an unnamed function (a stripped file's, from its
	// unwind table) by its address; a Frame leaves the name empty.
	if fn, ok := m.File.FunctionAt(f.FuncStart); ok {
		f.Function = fn.Name
	}
}
