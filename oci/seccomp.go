package oci

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// InjectedSyscalls are the system calls the supervisor makes container
// processes execute (syscall injection): mapping its code page and
// restoring mappings and brk at a rollback, closing fds opened since a
// checkpoint, ending threads created since, fork snapshots, and creating
// the userfaultfd that dirty-page tracking uses. They run under the
// container's seccomp filter, so AllowInjectedSyscalls makes the filter
// allow them.
var InjectedSyscalls = []string{
	"mmap", "munmap", "mprotect", "brk", "close", "exit", "clone", "userfaultfd",
}

// cloneNamespaceFlags are the clone flags that create namespaces:
// CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|
// CLONE_NEWPID|CLONE_NEWNET, 0x7e020000, the mask of the conditional clone
// rule of Docker's and containerd's default profiles. (CLONE_NEWTIME,
// 0x80, is only meaningful to clone3; in clone's flags that bit belongs to
// the exit signal.)
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// AllowInjectedSyscalls changes the seccomp profile of s, if it has one,
// so that the InjectedSyscalls are allowed, changing nothing else, and
// returns the names whose treatment it changed (in InjectedSyscalls
// order), for the shim's log line; nil when there was nothing to do.
//
// What "allowed" means. The supervisor needs each injected call allowed
// with any arguments, except clone: it never injects a clone that creates
// namespaces, so clone is only made allowed for flags without
// cloneNamespaceFlags, and an allow for clone is never made unconditional.
// This is the one place where "allow exactly what is injected" is
// narrower than the system call: an unconditional clone would let any
// process in the container create user (and other) namespaces, which the
// default profiles deny without CAP_SYS_ADMIN because a user namespace
// opens much of the kernel's attack surface to unprivileged code. Docker's
// and containerd's default profiles already allow clone with exactly that
// condition, so for them nothing changes about clone at all. The cost: if
// the supervisor ever injects a namespace-creating clone (it has no reason
// to), the filter denies it.
//
// The shape of the change, which runc (through libseccomp) loads as is:
//
//   - Every rule whose action does not allow (SCMP_ACT_ERRNO, KILL*, TRAP,
//     TRACE, NOTIFY) and that may match a call the supervisor needs loses
//     the injected names from its "names"; the rest of the rule is kept,
//     and a rule left with no names is dropped. (This matters for both
//     kinds of default action: libseccomp also refuses conflicting actions
//     for one system call.) A conditional rule for clone that only matches
//     namespace-creating flags does not conflict and is kept. A rule that
//     denied clone more widely is replaced, for clone, by rules that deny
//     what it denied among namespace-creating clones, with its action (see
//     namespaceCloneRules), so that dropping clone from it does not let
//     the container create namespaces it could not create before.
//   - If the default action does not allow, one rule
//     {"names": [the injected calls not already allowed unconditionally],
//     "action": "SCMP_ACT_ALLOW"} is appended, and, if clone is not
//     already allowed for all flags without namespace bits, a second one,
//     the same as Docker's:
//     {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
//     "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}.
//
// SCMP_ACT_ALLOW and SCMP_ACT_LOG count as allowing. Calling it again
// changes nothing and returns nil.
func AllowInjectedSyscalls(s *specs.Spec) (added []string) {
	if s == nil || s.Linux == nil || s.Linux.Seccomp == nil {
		return nil
	}
	sc := s.Linux.Seccomp
	changed := make(map[string]bool)

	// Drop the injected names from the rules that would deny them.
	rules := make([]specs.LinuxSyscall, 0, len(sc.Syscalls)+2)
	modified := false
	for _, r := range sc.Syscalls {
		if allows(r.Action) {
			rules = append(rules, r)
			continue
		}
		var keep []string
		narrowClone := false
		for _, name := range r.Names {
			if isInjected(name) && mayMatchNeeded(name, r) {
				changed[name] = true
				narrowClone = narrowClone || name == "clone"
				continue
			}
			keep = append(keep, name)
		}
		switch {
		case len(keep) == len(r.Names):
			rules = append(rules, r)
		case len(keep) == 0:
			modified = true // the rule only denied injected calls
		default:
			r.Names = keep // a new slice: r.Names may be shared
			rules = append(rules, r)
			modified = true
		}
		if narrowClone {
			rules = append(rules, namespaceCloneRules(r)...)
		}
	}

	// With a denying default action, allow what is not allowed yet.
	if !allows(sc.DefaultAction) {
		var missing []string
		cloneMissing := false
		for _, name := range InjectedSyscalls {
			if allowedForInjection(name, rules) {
				continue
			}
			changed[name] = true
			if name == "clone" {
				cloneMissing = true
				continue
			}
			missing = append(missing, name)
		}
		if len(missing) > 0 {
			rules = append(rules, specs.LinuxSyscall{Names: missing, Action: specs.ActAllow})
			modified = true
		}
		if cloneMissing {
			rules = append(rules, specs.LinuxSyscall{
				Names:  []string{"clone"},
				Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{
					Index: 0,
					Value: cloneNamespaceFlags,
					Op:    specs.OpMaskedEqual,
				}},
			})
			modified = true
		}
	}

	if modified {
		sc.Syscalls = rules
	}
	for _, name := range InjectedSyscalls {
		if changed[name] {
			added = append(added, name)
		}
	}
	return added
}

// allows reports whether a seccomp action lets the system call run.
func allows(a specs.LinuxSeccompAction) bool {
	return a == specs.ActAllow || a == specs.ActLog
}

func isInjected(name string) bool {
	for _, n := range InjectedSyscalls {
		if n == name {
			return true
		}
	}
	return false
}

// allowedForInjection reports whether some allowing rule already allows
// every call of name the supervisor needs.
func allowedForInjection(name string, rules []specs.LinuxSyscall) bool {
	for _, r := range rules {
		if !allows(r.Action) || !hasName(r, name) {
			continue
		}
		if len(r.Args) == 0 {
			return true
		}
		if name == "clone" && coversCloneWithoutNamespaces(r.Args) {
			return true
		}
	}
	return false
}

func hasName(r specs.LinuxSyscall, name string) bool {
	for _, n := range r.Names {
		if n == name {
			return true
		}
	}
	return false
}

// How runc turns a rule's "args" into libseccomp conditions: when no
// argument index appears twice, the conditions are ANDed in one rule;
// when one does, each condition becomes a rule of its own, so they are
// ORed.
func argsORed(args []specs.LinuxSeccompArg) bool {
	seen := make(map[uint]bool, len(args))
	for _, a := range args {
		if seen[a.Index] {
			return true
		}
		seen[a.Index] = true
	}
	return false
}

// coversCloneWithoutNamespaces reports whether conditions args provably
// hold for every clone whose flags (argument 0) have no namespace bit.
func coversCloneWithoutNamespaces(args []specs.LinuxSeccompArg) bool {
	covers := func(a specs.LinuxSeccompArg) bool {
		// (flags & mask) == 0 holds for every such flags iff mask only
		// has namespace bits.
		return a.Index == 0 && a.Op == specs.OpMaskedEqual && a.ValueTwo == 0 &&
			a.Value&^uint64(cloneNamespaceFlags) == 0
	}
	if argsORed(args) {
		for _, a := range args {
			if covers(a) {
				return true
			}
		}
		return false
	}
	for _, a := range args {
		if !covers(a) {
			return false
		}
	}
	return true
}

// mayMatchNeeded reports whether rule r may match a call of name that the
// supervisor needs: any call but clone, unconditionally or not, and for
// clone any conditions that do not provably require a namespace bit.
func mayMatchNeeded(name string, r specs.LinuxSyscall) bool {
	if len(r.Args) == 0 || name != "clone" {
		return true
	}
	// never reports whether a condition cannot hold for flags without
	// namespace bits.
	never := func(a specs.LinuxSeccompArg) bool {
		if a.Index != 0 {
			return false
		}
		const ns = uint64(cloneNamespaceFlags)
		switch a.Op {
		case specs.OpEqualTo:
			return a.Value&ns != 0
		case specs.OpMaskedEqual:
			// (flags & mask) == datum needs the datum's bits set (and
			// within the mask).
			return a.ValueTwo&ns != 0 || a.ValueTwo&^a.Value != 0
		}
		return false
	}
	if argsORed(r.Args) {
		for _, a := range r.Args {
			if !never(a) {
				return true
			}
		}
		return false
	}
	for _, a := range r.Args {
		if never(a) {
			return false
		}
	}
	return true
}

// namespaceCloneRules returns rules for clone alone that match what the
// denying rule r matches among clones with at least one namespace flag:
// r's conditions ANDed with "flags has bit b", for each namespace bit b.
// runc ORs a rule's conditions when an argument index repeats, and ANDs
// them otherwise, so:
//
//   - r unconditional: one rule whose conditions are the seven
//     {index 0, MASKED_EQ, value b, valueTwo b} (ORed);
//   - r's conditions ORed: each is a rule of its own, and is narrowed on
//     its own;
//   - no condition on the flags: per bit, r's conditions plus the bit;
//   - a condition on the flags: merged with the bit when that can be said
//     in one condition (MASKED_EQ m,d with bit b is MASKED_EQ m|b,d|b, or
//     never; EQ v with bit b is EQ v, or never). Other operators on the
//     flags (NE, LT, LE, GT, GE) cannot be merged: that condition is left
//     out, so the rule denies every clone with bit b (and r's other
//     conditions). That errs on the side of denying: namespace clones
//     that r did not deny may be denied now, never the other way round.
func namespaceCloneRules(r specs.LinuxSyscall) []specs.LinuxSyscall {
	rule := func(args []specs.LinuxSeccompArg) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{"clone"}, Action: r.Action, ErrnoRet: r.ErrnoRet, Args: args}
	}
	bits := namespaceBits()
	if len(r.Args) == 0 {
		args := make([]specs.LinuxSeccompArg, 0, len(bits))
		for _, b := range bits {
			args = append(args, specs.LinuxSeccompArg{Index: 0, Value: b, ValueTwo: b, Op: specs.OpMaskedEqual})
		}
		return []specs.LinuxSyscall{rule(args)}
	}
	var sets [][]specs.LinuxSeccompArg
	if argsORed(r.Args) {
		for _, a := range r.Args {
			sets = append(sets, []specs.LinuxSeccompArg{a})
		}
	} else {
		sets = append(sets, r.Args)
	}
	var out []specs.LinuxSyscall
	seen := make(map[string]bool)
	for _, set := range sets {
		for _, b := range bits {
			args, ok := withFlagBit(set, b)
			if !ok {
				continue
			}
			key := fmt.Sprint(args)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, rule(args))
		}
	}
	return out
}

// withFlagBit returns the conditions set (ANDed, at most one per argument
// index) ANDed with "argument 0 has bit b", as conditions runc ANDs, and
// false when they can never hold together.
func withFlagBit(set []specs.LinuxSeccompArg, b uint64) ([]specs.LinuxSeccompArg, bool) {
	bit := specs.LinuxSeccompArg{Index: 0, Value: b, ValueTwo: b, Op: specs.OpMaskedEqual}
	out := make([]specs.LinuxSeccompArg, 0, len(set)+1)
	merged := false
	for _, a := range set {
		if a.Index != 0 {
			out = append(out, a)
			continue
		}
		merged = true
		switch a.Op {
		case specs.OpMaskedEqual:
			if a.Value&b != 0 && a.ValueTwo&b == 0 {
				return nil, false
			}
			out = append(out, specs.LinuxSeccompArg{Index: 0, Value: a.Value | b, ValueTwo: a.ValueTwo | b, Op: specs.OpMaskedEqual})
		case specs.OpEqualTo:
			if a.Value&b == 0 {
				return nil, false
			}
			out = append(out, a)
		default:
			out = append(out, bit) // see namespaceCloneRules
		}
	}
	if !merged {
		out = append(out, bit)
	}
	return out, true
}

// namespaceBits returns the bits of cloneNamespaceFlags, lowest first.
func namespaceBits() []uint64 {
	var bits []uint64
	for b := uint64(1); b != 0; b <<= 1 {
		if uint64(cloneNamespaceFlags)&b != 0 {
			bits = append(bits, b)
		}
	}
	return bits
}
