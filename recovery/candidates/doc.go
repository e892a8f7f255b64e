// Package candidates finds rescue-point candidates in an x86-64 ELF file
// by static analysis: functions whose callers test the value they return
// and branch on it, with the error value inferred from the function's
// own return paths and from what the callers compare it with. It is the
// static half of `assure discover`: what it offers is a candidate only,
// for fault injection to accept or reject.
//
// # What is read
//
// Function starts come from elfsym (.symtab and .dynsym, and .eh_frame
// for a stripped file, so stripped executables and libraries work; a
// function found only in .eh_frame has no name and is reported by
// address, as manifests name it). Each function is decoded linearly
// with x86asm, from its start to its size or the next function's start,
// whichever is first (overlapping functions are clipped and counted).
// Undecodable bytes are skipped one at a time and counted; a function
// with more than a quarter of them is data, not code, and is dropped.
// endbr64 is recognised (x86asm does not know it).
//
// # Call sites
//
// Every direct call (call rel32) whose target is a function start is a
// call site of that function. A call to a PLT stub is resolved to the
// imported name: the stubs in .plt, .plt.sec, .plt.got and .iplt are
// decoded, their jmp [rip+GOT] gives the GOT slot, and the slot's
// R_X86_64_JUMP_SLOT or R_X86_64_GLOB_DAT relocation gives the symbol
// (this copes with lazy, -z now and IBT layouts without assuming one);
// call [rip+GOT] (-fno-plt) is resolved the same way. Such calls are
// reported per name in Report.Imports, for the analysis of the library
// that defines the name (Options.ExternalCallers, MergeImports); when
// the file defines the name itself (a library calling its own exported,
// interposable function through its PLT), the call also counts here.
// Calls through other pointers are invisible: their targets are
// reported in Report.NoDirectCallers, not as candidates. Tail jumps
// (jmp f) are counted but are not call sites: the result goes to the
// jumping function's callers, which are not followed.
//
// # Is the result checked?
//
// After a call, the result is followed for up to 12 instructions through
// copies (mov ebx,eax; movsxd; spills to a stack slot and reloads, as at
// -O0) until one of its places is tested (test r,r / test r,imm / cmp
// r,imm / cmp with a variable) and a conditional jump follows; a setcc
// or cmovcc instead of a jump counts as weaker evidence. Moves between
// the test and the jump are allowed. It stops at another call, a return
// or a jump out of the function, or when every copy is overwritten; a
// direct jump inside the function is followed twice at most. What the
// test singles out is recorded: zero (test+je/jne, cmp 0), sign
// (js/jns, jl/jge against 0, jle/jg against -1, ja/jbe against -4096..-1
// as for syscalls), equality with a constant, other ordered compares.
//
// # Error value
//
// Each ret is traced back to the last write of eax/rax: through the
// blocks that jump to it (a shared epilogue), through register copies
// (mov eax,r12d: the value was decided long before), stack slots (-O0's
// return variable), cmov (both values), and a call (the callee's result:
// the callee's own constants are then inherited, a few levels deep, for
// a wrapper that has none). Constants are mov imm, xor/sub r,r (0), or
// r,-1 (-1), and the condition idioms setcc (0/1), neg of it and sbb r,r
// (0/-1, nginx's "rc == NGX_ERROR ? NGX_ERROR : NGX_OK"). 32-bit
// constants are read as signed ints. The rules (see infer) then choose:
// a constant callers compare with and the function returns; for sign
// tests the most common negative constant; for zero tests a negative
// constant beside 0 (C_ERR), or 0 beside computed values (NULL from a
// pointer function), or, graded low, 0 beside positive constants (a
// boolean) or beside arithmetic results (a comparator). ReturnEvidence
// says in numbers which rule applied and on what; Confidence grades it.
//
// # Not candidates
//
// Each examined function not offered gets one Reason, counted in
// Report.Dropped (Report.Reason tells it per address): startup code,
// PLT stubs, places elfsym.CheckRescuePoint refuses, functions under
// Options.MinSize, undecodable ones, no direct callers, tail calls only,
// no checked call site, no inferable value. Void functions are never
// offered: without types they look exactly like functions whose result
// is ignored (no compiler tests eax after a void call), and nothing
// static shows that a caller tolerates an early return; the dynamic
// phase may add them.
//
// # Limits
//
//   - Which side of a test is the error path is not analysed: for a
//     0/positive boolean, or a status where 0 is success and the errors
//     are positive (nginx's parser returns NGX_AGAIN -2 and error codes
//     10..12), the value can be wrong. Fault injection must decide.
//   - Comparators and counters whose callers test for zero are graded
//     low, but a pointer function returning base+offset computed with
//     sub would be too.
//   - Linear decoding misses code between functions that no symbol or
//     FDE covers, and jump tables in .text are decoded as instructions
//     (they are rare in x86-64 .text: gcc puts them in .rodata).
//   - Calls through pointers, vtables and callbacks are not seen; nor is
//     evidence propagated through wrappers from their callers.
//   - A call to a noreturn function (abort) ending a block looks like a
//     fall-through to the trace of a return value.
//
// # Cost
//
// One pass over the code, with per-function buffers reused; memory is
// the code sections (read once, bounded by Options.MaxCode) plus a few
// words per function. Debian 12's redis-server (1.1 MiB of text,
// 278,000 instructions) takes about 0.1 s, as does libc.so.6. Analyze
// never panics on malformed input: debug/elf's panics and the decoder's
// are caught, the latter per function.
package candidates
