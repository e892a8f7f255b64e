package unwind

import "fmt"

// registerOp runs the instructions that set the rule of one register.
func (in *interp) registerOp(op byte, r *reader, inCIE bool) error {
	switch op {
	case 0x05: // DW_CFA_offset_extended
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleOffset, off: in.factored(r.uleb())})
	case 0x11: // DW_CFA_offset_extended_sf
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleOffset, off: r.sleb() * in.cie.DataAlign})
	case 0x2f: // DW_CFA_GNU_negative_offset_extended
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleOffset, off: -in.factored(r.uleb())})
	case 0x14: // DW_CFA_val_offset
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleValOffset, off: in.factored(r.uleb())})
	case 0x15: // DW_CFA_val_offset_sf
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleValOffset, off: r.sleb() * in.cie.DataAlign})
	case 0x06: // DW_CFA_restore_extended
		return in.restore(r.uleb(), inCIE)
	case 0x07: // DW_CFA_undefined
		return in.setRule(r.uleb(), rule{kind: ruleUndefined})
	case 0x08: // DW_CFA_same_value
		return in.setRule(r.uleb(), rule{kind: ruleSame})
	case 0x09: // DW_CFA_register
		reg, src := r.uleb(), r.uleb()
		if src >= nregs {
			// Held in a register not tracked: as good as lost.
			return in.setRule(reg, rule{kind: ruleUndefined})
		}
		return in.setRule(reg, rule{kind: ruleRegister, reg: Reg(src)})
	case 0x10: // DW_CFA_expression
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleExpression, expr: block(r, inCIE)})
	case 0x16: // DW_CFA_val_expression
		reg := r.uleb()
		return in.setRule(reg, rule{kind: ruleValExpression, expr: block(r, inCIE)})
	default:
		// DW_CFA_GNU_window_save (SPARC, AArch64 pointer authentication),
		// MIPS and vendor extensions: none applies to x86-64.
		return fmt.Errorf("%w: opcode 0x%02x", ErrUnsupported, op)
	}
}

// setRule sets the rule of a register; rules for untracked registers are
// dropped once their operands are read.
func (in *interp) setRule(reg uint64, ru rule) error {
	if reg < nregs {
		in.row.regs[reg] = ru
	}
	return nil
}

// restore resets a register to its rule after the CIE's program. In the
// CIE itself there is no such rule yet: it becomes the default.
func (in *interp) restore(reg uint64, inCIE bool) error {
	if reg >= nregs {
		return nil
	}
	if inCIE {
		in.row.regs[reg] = rule{}
		return nil
	}
	in.row.regs[reg] = in.initial.regs[reg]
	return nil
}
