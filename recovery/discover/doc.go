// Package discover finds a program's rescue points and tests them: the
// engine of `assure discover`.
//
// It works in three steps, each on the real program under supervision:
//
//  1. Candidates, statically (package candidates): functions of the
//     program and the libraries it links whose callers test the value
//     they return, with the error value inferred.
//  2. The request path, dynamically: the program runs under a supervisor
//     with a probe on every candidate (a breakpoint that counts calls,
//     walks the stack with the unwind tables to see which other
//     candidates are on it, and removes itself after a few hundred
//     calls) while the user's workload runs; the candidates it reaches
//     are the hot ones, with their calls per workload run, their depth,
//     and which candidates call which.
//  3. Triage by fault injection: for each hot candidate, a fresh
//     instance of the program runs with that candidate as its only
//     rescue point; once the workload passes, a thread is made to fault
//     inside the candidate, partway through a call (just after the
//     function's first call returns, else at its second instruction).
//     The candidate is accepted when the fault is recovered, the program
//     still runs, the workload passes again, and the program's
//     descriptors, threads and memory are back to what they were;
//     otherwise it is rejected with the reason.
//
// Of accepted candidates that nest (an outer one whose calls nearly all
// reach an inner one), the innermost is kept: it undoes less. The
// result is a version 1 manifest of the kept rescue points and a report
// on every candidate that was looked at.
package discover
