// Package unwind walks the stack of a stopped x86-64 thread with the
// unwind tables of the loaded files (.eh_frame call frame information),
// not by scanning the stack for words that look like return addresses.
// Discovery samples the request path with it, and self-healing picks the
// innermost frame it can return from.
//
// The package does no ptrace itself: it takes the thread's registers, a
// function that reads the process's memory (process_vm_readv, a snapshot,
// /proc/PID/mem: ProcessMem is one) and the set of loaded modules with
// their load bias (LoadModules builds it from /proc/PID/maps). That keeps
// it testable and usable on a core dump or a snapshot.
//
// Go's standard library has no call frame information interpreter
// (debug/dwarf reads .debug_info and line tables only), and the
// third-party ones come with whole debuggers, so the DWARF CFA programs
// (cfa.go) and the small subset of DWARF expressions they use (expr.go)
// are interpreted here by hand, after the DWARF 5 specification section
// 6.4 and the LSB's .eh_frame extensions. elfsym finds and indexes the
// entries; this package runs them.
//
// Everything read is untrusted (the program may have overwritten its
// stack; the files come from an image): programs and expressions are
// bounded in length and steps, the walk in depth, each caller's CFA must
// lie above its callee's, and no input makes it panic.
//
// Signal frames are recognised by the 'S' augmentation of their FDE or,
// without unwind information, by the bytes of the x86-64 sigreturn
// trampoline (mov $15,%rax; syscall); the registers of the interrupted
// code are then read from the ucontext the kernel saved, so that a stack
// walked from a signal handler continues into the code the signal
// interrupted.
package unwind
