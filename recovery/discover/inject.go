package discover

import (
	"fmt"
	"os"

	"golang.org/x/arch/x86/x86asm"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// maxFuncRead bounds the bytes of a function decoded to place a fault.
const maxFuncRead = 64 << 10

// injectionPlace returns where, inside the function at vaddr of the ELF
// file at path, a thread is made to fault, and how to say it: just after
// the function's first call returns (the function has done part of its
// work: what it changed must be undone), else its second instruction
// (the checkpoint is taken, nothing else has happened yet).
func injectionPlace(path string, sym *elfsym.File, vaddr uint64) (uint64, string, error) {
	fn, ok := sym.FunctionAt(vaddr)
	if !ok || fn.Addr != vaddr {
		return 0, "", fmt.Errorf("no function starts at %#x", vaddr)
	}
	size := fn.Size
	if size == 0 || size > maxFuncRead {
		size = maxFuncRead
	}
	code, err := readCode(path, sym, vaddr, size)
	if err != nil {
		return 0, "", err
	}
	var second uint64
	for off := 0; off < len(code); {
		in, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			break
		}
		next := off + in.Len
		if off > 0 && second == 0 {
			second = vaddr + uint64(off)
		}
		if in.Op == x86asm.CALL && next < len(code) {
			return vaddr + uint64(next), "after the first call returns", nil
		}
		if in.Op == x86asm.RET || in.Op == x86asm.JMP && off > 0 {
			break // the straight line ends: what follows may not run
		}
		off = next
	}
	if second == 0 {
		return 0, "", fmt.Errorf("function at %#x: nothing to decode past its first instruction", vaddr)
	}
	return second, "at the second instruction (no call on the straight path)", nil
}

// secondInstruction returns the address of the function's second
// instruction: reached by every call, after the checkpoint.
func secondInstruction(path string, sym *elfsym.File, vaddr uint64) (uint64, error) {
	code, err := readCode(path, sym, vaddr, 16)
	if err != nil {
		return 0, err
	}
	in, err := x86asm.Decode(code, 64)
	if err != nil {
		return 0, fmt.Errorf("function at %#x: %w", vaddr, err)
	}
	return vaddr + uint64(in.Len), nil
}

// readCode reads n bytes of the function at vaddr from the file.
func readCode(path string, sym *elfsym.File, vaddr, n uint64) ([]byte, error) {
	off, err := sym.FileOffset(vaddr)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, int64(off))
	if m == 0 {
		return nil, fmt.Errorf("read %s at %#x: %w", path, off, err)
	}
	return buf[:m], nil
}
