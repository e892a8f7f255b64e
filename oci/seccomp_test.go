package oci

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// dockerLikeProfile is an excerpt of the default seccomp profile of Docker
// and containerd's CRI plugin, for a container without CAP_SYS_ADMIN or
// CAP_SYS_PTRACE: deny by default, an allow list without userfaultfd,
// clone allowed only without namespace flags, clone3 answered with ENOSYS.
const dockerLikeProfile = `{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    {"names": ["accept", "brk", "close", "epoll_wait", "execve", "exit", "exit_group", "futex",
               "mmap", "mprotect", "munmap", "openat", "read", "rt_sigreturn", "write"],
     "action": "SCMP_ACT_ALLOW"},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
  ]
}`

// permissiveProfile allows by default and denies a few things, some of
// them injected calls.
const permissiveProfile = `{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["kexec_load", "userfaultfd", "ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["userfaultfd"], "action": "SCMP_ACT_KILL_PROCESS"},
    {"names": ["mmap", "mprotect"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 268435456, "valueTwo": 268435456, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["bpf"], "action": "SCMP_ACT_TRACE"}
  ]
}`

func spec(t *testing.T, profile string) *specs.Spec {
	t.Helper()
	var sc specs.LinuxSeccomp
	if err := json.Unmarshal([]byte(profile), &sc); err != nil {
		t.Fatal(err)
	}
	return &specs.Spec{Version: "1.1.0", Linux: &specs.Linux{Seccomp: &sc}}
}

func clone(t *testing.T, s *specs.Spec) *specs.Spec {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var c specs.Spec
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// verdict evaluates a call against a profile the way runc loads it into
// libseccomp: rules whose action is the default action are skipped; a
// rule's conditions are ANDed unless an argument index repeats, in which
// case each condition is a rule of its own; when rules with different
// actions match one call, libseccomp would refuse the filter, reported
// here as "CONFLICT".
func verdict(sc *specs.LinuxSeccomp, name string, args ...uint64) specs.LinuxSeccompAction {
	var a [6]uint64
	copy(a[:], args)
	holds := func(c specs.LinuxSeccompArg) bool {
		v := a[c.Index]
		switch c.Op {
		case specs.OpEqualTo:
			return v == c.Value
		case specs.OpNotEqual:
			return v != c.Value
		case specs.OpLessThan:
			return v < c.Value
		case specs.OpLessEqual:
			return v <= c.Value
		case specs.OpGreaterThan:
			return v > c.Value
		case specs.OpGreaterEqual:
			return v >= c.Value
		case specs.OpMaskedEqual:
			return v&c.Value == c.ValueTwo
		}
		panic("unknown op " + c.Op)
	}
	matched := map[specs.LinuxSeccompAction]bool{}
	for _, r := range sc.Syscalls {
		if r.Action == sc.DefaultAction || !hasName(r, name) {
			continue
		}
		match := true
		if argsORed(r.Args) {
			match = false
			for _, c := range r.Args {
				match = match || holds(c)
			}
		} else {
			for _, c := range r.Args {
				match = match && holds(c)
			}
		}
		if match {
			matched[r.Action] = true
		}
	}
	switch len(matched) {
	case 0:
		return sc.DefaultAction
	case 1:
		for a := range matched {
			return a
		}
	}
	return "CONFLICT"
}

const (
	sigchld     = uint64(unix.SIGCHLD)
	threadFlags = uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID)
	protExec = uint64(unix.PROT_READ | unix.PROT_EXEC)
)

type call struct {
	name string
	args []uint64
}

// injected are calls the supervisor makes, with the arguments it uses.
var injected = []call{
	{"mmap", []uint64{0, 4096, protExec, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS}},
	{"mmap", []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS}},
	{"munmap", []uint64{0x7f0000000000, 4096}},
	{"mprotect", []uint64{0x7f0000000000, 4096, protExec}},
	{"brk", []uint64{0x555555560000}},
	{"close", []uint64{7}},
	{"exit", []uint64{0}},
	{"clone", []uint64{sigchld}},       // fork
	{"clone", []uint64{threadFlags}},   // a thread
	{"clone", []uint64{unix.CLONE_VM}}, // anything without namespaces
	{"userfaultfd", []uint64{unix.O_CLOEXEC | unix.O_NONBLOCK | 1}},
}

// others are calls whose verdict must not change.
var others = []call{
	{"clone", []uint64{unix.CLONE_NEWUSER | sigchld}},
	{"clone", []uint64{unix.CLONE_NEWNET}},
	{"clone", []uint64{unix.CLONE_NEWNS | unix.CLONE_NEWPID}},
	{"clone3", nil},
	{"unshare", []uint64{unix.CLONE_NEWUSER}},
	{"unshare", []uint64{unix.CLONE_FILES}},
	{"ptrace", nil},
	{"kexec_load", nil},
	{"bpf", nil},
	{"read", nil},
	{"personality", []uint64{0}},
	{"personality", []uint64{1}},
	{"exit_group", nil},
	{"mount", nil},
}

// namespaceClones are clones with namespace flags, which the supervisor
// never injects: every namespace bit alone, with the flags of a fork and
// of a thread, and pairs.
func namespaceClones() []call {
	var out []call
	bits := namespaceBits()
	for i, b := range bits {
		out = append(out,
			call{"clone", []uint64{b}},
			call{"clone", []uint64{b | sigchld}},
			call{"clone", []uint64{b | threadFlags}},
			call{"clone", []uint64{b | bits[(i+1)%len(bits)] | sigchld}})
	}
	return out
}

func allowed(v specs.LinuxSeccompAction) bool { return v == specs.ActAllow || v == specs.ActLog }

// checkAllowed checks that after AllowInjectedSyscalls every injected call
// is allowed, without conflicts, and that no other verdict changed.
func checkAllowed(t *testing.T, before, after *specs.Spec) {
	t.Helper()
	checkVerdicts(t, before, after, true)
}

// checkVerdicts is checkAllowed; with exact false, the verdicts of other
// calls may change only from allowed to denied.
func checkVerdicts(t *testing.T, before, after *specs.Spec, exact bool) {
	t.Helper()
	b, a := before.Linux.Seccomp, after.Linux.Seccomp
	for _, c := range injected {
		if v := verdict(a, c.name, c.args...); !allowed(v) {
			t.Errorf("%s%x: %s after AllowInjectedSyscalls, want allowed", c.name, c.args, v)
		}
	}
	for _, c := range append(others, namespaceClones()...) {
		vb, va := verdict(b, c.name, c.args...), verdict(a, c.name, c.args...)
		switch {
		case va == "CONFLICT":
			t.Errorf("%s%x: conflicting rules after", c.name, c.args)
		case vb == va:
		case exact || allowed(va):
			t.Errorf("%s%x: %s before, %s after", c.name, c.args, vb, va)
		}
	}
}

func TestAllowInjectedSyscallsDockerLike(t *testing.T) {
	s := spec(t, dockerLikeProfile)
	before := clone(t, s)
	if v := verdict(before.Linux.Seccomp, "userfaultfd"); v != specs.ActErrno {
		t.Fatalf("the profile allows userfaultfd already (%s)", v)
	}

	added := AllowInjectedSyscalls(s)
	if want := []string{"userfaultfd"}; !reflect.DeepEqual(added, want) {
		t.Errorf("added = %q, want %q", added, want)
	}
	// Exactly one rule more, at the end; everything else as it was.
	want := clone(t, before)
	want.Linux.Seccomp.Syscalls = append(want.Linux.Seccomp.Syscalls,
		specs.LinuxSyscall{Names: []string{"userfaultfd"}, Action: specs.ActAllow})
	if !reflect.DeepEqual(s, want) {
		t.Errorf("spec after:\n%s\nwant:\n%s", marshal(t, s.Linux.Seccomp), marshal(t, want.Linux.Seccomp))
	}
	checkAllowed(t, before, s)

	// Idempotent.
	again := clone(t, s)
	if added := AllowInjectedSyscalls(again); added != nil {
		t.Errorf("second call added %q", added)
	}
	if !reflect.DeepEqual(again, s) {
		t.Error("second call changed the spec")
	}
}

// Without Docker's conditional clone rule, clone is allowed with the same
// condition, never unconditionally.
func TestAllowInjectedSyscallsCloneCondition(t *testing.T) {
	s := spec(t, dockerLikeProfile)
	rules := s.Linux.Seccomp.Syscalls[:0]
	for _, r := range s.Linux.Seccomp.Syscalls {
		if !hasName(r, "clone") {
			rules = append(rules, r)
		}
	}
	s.Linux.Seccomp.Syscalls = rules
	// munmap and exit only allowed under conditions: not enough.
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{
		Names: []string{"set_robust_list"}, Action: specs.ActAllow,
	})
	removeName(s, "munmap")
	removeName(s, "exit")
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{
		Names: []string{"munmap", "exit"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 1, Value: 4096, Op: specs.OpEqualTo}},
	})
	before := clone(t, s)

	added := AllowInjectedSyscalls(s)
	if want := []string{"munmap", "exit", "clone", "userfaultfd"}; !reflect.DeepEqual(added, want) {
		t.Errorf("added = %q, want %q", added, want)
	}
	n := len(before.Linux.Seccomp.Syscalls)
	got := s.Linux.Seccomp.Syscalls
	if !reflect.DeepEqual(got[:n], before.Linux.Seccomp.Syscalls) {
		t.Error("existing rules changed")
	}
	wantJSON := `[{"names":["munmap","exit","userfaultfd"],"action":"SCMP_ACT_ALLOW"},` +
		`{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"op":"SCMP_CMP_MASKED_EQ"}]}]`
	if j := compact(t, got[n:]); j != wantJSON {
		t.Errorf("added rules:\n got %s\nwant %s", j, wantJSON)
	}
	checkAllowed(t, before, s)
}

func removeName(s *specs.Spec, name string) {
	for i, r := range s.Linux.Seccomp.Syscalls {
		var keep []string
		for _, n := range r.Names {
			if n != name {
				keep = append(keep, n)
			}
		}
		s.Linux.Seccomp.Syscalls[i].Names = keep
	}
}

func TestAllowInjectedSyscallsPermissive(t *testing.T) {
	s := spec(t, permissiveProfile)
	before := clone(t, s)

	added := AllowInjectedSyscalls(s)
	if want := []string{"mmap", "mprotect", "userfaultfd"}; !reflect.DeepEqual(added, want) {
		t.Errorf("added = %q, want %q", added, want)
	}
	// No rule added (everything is allowed by default); the injected names
	// are gone from the rules that denied them, and the rest is kept. The
	// clone rule only denies CLONE_NEWUSER and stays as it is.
	want := `[{"names":["kexec_load","ptrace"],"action":"SCMP_ACT_ERRNO","errnoRet":1},` +
		`{"names":["clone","unshare"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]},` +
		`{"names":["bpf"],"action":"SCMP_ACT_TRACE"}]`
	if j := compact(t, s.Linux.Seccomp.Syscalls); j != want {
		t.Errorf("rules:\n got %s\nwant %s", j, want)
	}
	if s.Linux.Seccomp.DefaultAction != specs.ActAllow {
		t.Error("default action changed")
	}
	checkAllowed(t, before, s)
}

// Rules about clone are kept when they cannot match a clone without
// namespace flags, and lose clone otherwise.
func TestAllowInjectedSyscallsCloneDenyRules(t *testing.T) {
	newuser, newnet := uint64(unix.CLONE_NEWUSER), uint64(unix.CLONE_NEWNET)
	for _, c := range []struct {
		name   string
		args   []specs.LinuxSeccompArg
		kept   bool
		approx bool // namespace clones may be denied more than before
	}{
		{"unconditional", nil, false, false},
		{"EQ namespace flag", []specs.LinuxSeccompArg{{Index: 0, Value: newuser, Op: specs.OpEqualTo}}, true, false},
		{"EQ plain flags", []specs.LinuxSeccompArg{{Index: 0, Value: sigchld, Op: specs.OpEqualTo}}, false, false},
		{"MASKED_EQ needs a namespace bit", []specs.LinuxSeccompArg{{Index: 0, Value: newuser | newnet, ValueTwo: newnet, Op: specs.OpMaskedEqual}}, true, false},
		{"MASKED_EQ datum outside the mask", []specs.LinuxSeccompArg{{Index: 0, Value: 1, ValueTwo: 2, Op: specs.OpMaskedEqual}}, true, false},
		{"MASKED_EQ no namespace bit", []specs.LinuxSeccompArg{{Index: 0, Value: newuser, ValueTwo: 0, Op: specs.OpMaskedEqual}}, false, false},
		{"GT", []specs.LinuxSeccompArg{{Index: 0, Value: newuser, Op: specs.OpGreaterThan}}, false, true},
		{"NE", []specs.LinuxSeccompArg{{Index: 0, Value: sigchld, Op: specs.OpNotEqual}}, false, true},
		{"MASKED_EQ no namespace bit, and another argument", []specs.LinuxSeccompArg{
			{Index: 0, Value: newuser | unix.CLONE_VM, ValueTwo: unix.CLONE_VM, Op: specs.OpMaskedEqual}, {Index: 2, Value: 0, Op: specs.OpEqualTo}}, false, false},
		{"EQ plain flags, ORed with a namespace flag", []specs.LinuxSeccompArg{
			{Index: 0, Value: sigchld, Op: specs.OpEqualTo}, {Index: 0, Value: newnet | sigchld, Op: specs.OpEqualTo}}, false, false},
		{"ORed, other argument and a mask", []specs.LinuxSeccompArg{
			{Index: 1, Value: 0, Op: specs.OpEqualTo}, {Index: 1, Value: 8, Op: specs.OpEqualTo}, {Index: 0, Value: newuser, Op: specs.OpMaskedEqual}}, false, false},
		{"other argument", []specs.LinuxSeccompArg{{Index: 1, Value: 0, Op: specs.OpEqualTo}}, false, false},
		{"ANDed, one never", []specs.LinuxSeccompArg{
			{Index: 0, Value: newuser, Op: specs.OpEqualTo}, {Index: 1, Value: 0, Op: specs.OpEqualTo}}, true, false},
		{"ORed, both never", []specs.LinuxSeccompArg{
			{Index: 0, Value: newuser, Op: specs.OpEqualTo}, {Index: 0, Value: newnet, Op: specs.OpEqualTo}}, true, false},
		{"ORed, one may", []specs.LinuxSeccompArg{
			{Index: 0, Value: newuser, Op: specs.OpEqualTo}, {Index: 0, Value: sigchld, Op: specs.OpEqualTo}}, false, false},
	} {
		for _, def := range []specs.LinuxSeccompAction{specs.ActAllow, specs.ActErrno} {
			t.Run(c.name+"/"+string(def), func(t *testing.T) {
				s := &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{
					DefaultAction: def,
					Syscalls: []specs.LinuxSyscall{
						{Names: []string{"clone", "setns"}, Action: specs.ActKill, Args: c.args},
					},
				}}}
				if def == specs.ActErrno {
					s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{
						Names: []string{"mmap", "munmap", "mprotect", "brk", "close", "exit", "userfaultfd"}, Action: specs.ActAllow,
					}, specs.LinuxSyscall{
						Names: []string{"clone"}, Action: specs.ActAllow,
						Args: []specs.LinuxSeccompArg{{Index: 0, Value: uint64(cloneNamespaceFlags), Op: specs.OpMaskedEqual}},
					})
				}
				before := clone(t, s)
				added := AllowInjectedSyscalls(s)
				kept := reflect.DeepEqual(s.Linux.Seccomp.Syscalls[0].Names, []string{"clone", "setns"})
				if !kept && !reflect.DeepEqual(s.Linux.Seccomp.Syscalls[0].Names, []string{"setns"}) {
					t.Errorf("rule names now %q, want setns alone", s.Linux.Seccomp.Syscalls[0].Names)
				}
				if kept != c.kept {
					t.Errorf("rule names now %q; kept = %v, want %v", s.Linux.Seccomp.Syscalls[0].Names, kept, c.kept)
				}
				if c.kept != (added == nil) {
					t.Errorf("added = %q", added)
				}
				checkVerdicts(t, before, s, !c.approx)
			})
		}
	}
}

func TestAllowInjectedSyscallsCloneAllowRules(t *testing.T) {
	ns := uint64(cloneNamespaceFlags)
	for _, c := range []struct {
		name   string
		args   []specs.LinuxSeccompArg
		covers bool
	}{
		{"unconditional", nil, true},
		{"docker", []specs.LinuxSeccompArg{{Index: 0, Value: ns, Op: specs.OpMaskedEqual}}, true},
		{"only CLONE_NEWUSER masked", []specs.LinuxSeccompArg{{Index: 0, Value: unix.CLONE_NEWUSER, Op: specs.OpMaskedEqual}}, true},
		{"mask with other bits", []specs.LinuxSeccompArg{{Index: 0, Value: ns | unix.CLONE_VM, Op: specs.OpMaskedEqual}}, false},
		{"datum set", []specs.LinuxSeccompArg{{Index: 0, Value: ns, ValueTwo: unix.CLONE_NEWNET, Op: specs.OpMaskedEqual}}, false},
		{"EQ", []specs.LinuxSeccompArg{{Index: 0, Value: sigchld, Op: specs.OpEqualTo}}, false},
		{"ANDed with another", []specs.LinuxSeccompArg{
			{Index: 0, Value: ns, Op: specs.OpMaskedEqual}, {Index: 1, Value: 0, Op: specs.OpEqualTo}}, false},
		{"ORed with another", []specs.LinuxSeccompArg{
			{Index: 0, Value: ns, Op: specs.OpMaskedEqual}, {Index: 0, Value: 17, Op: specs.OpEqualTo}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{
				DefaultAction: specs.ActKillProcess,
				Syscalls: []specs.LinuxSyscall{
					{Names: []string{"mmap", "munmap", "mprotect", "brk", "close", "exit", "userfaultfd"}, Action: specs.ActAllow},
					{Names: []string{"clone"}, Action: specs.ActAllow, Args: c.args},
				},
			}}}
			before := clone(t, s)
			added := AllowInjectedSyscalls(s)
			if c.covers != (added == nil) {
				t.Errorf("added = %q", added)
			}
			if !c.covers && !reflect.DeepEqual(added, []string{"clone"}) {
				t.Errorf("added = %q, want clone", added)
			}
			checkAllowed(t, before, s)
		})
	}
}

func TestAllowInjectedSyscallsNothingToDo(t *testing.T) {
	for name, s := range map[string]*specs.Spec{
		"nil spec":    nil,
		"no linux":    {},
		"no seccomp":  {Linux: &specs.Linux{}},
		"allow all":   {Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}}},
		"log all":     {Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActLog, Syscalls: []specs.LinuxSyscall{{Names: []string{"ptrace"}, Action: specs.ActErrno}}}}},
		"deny others": {Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: append([]string{"read"}, InjectedSyscalls...), Action: specs.ActAllow}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			var before *specs.Spec
			if s != nil {
				before = clone(t, s)
			}
			if added := AllowInjectedSyscalls(s); added != nil {
				t.Errorf("added %q", added)
			}
			if s != nil && !reflect.DeepEqual(s, before) {
				t.Error("spec changed")
			}
		})
	}
}

// A profile's rules may share their name lists with other data (a
// default profile kept by the caller): they are not modified in place.
func TestAllowInjectedSyscallsDoesNotAlias(t *testing.T) {
	names := []string{"ptrace", "userfaultfd", "kexec_load"}
	shared := []specs.LinuxSyscall{{Names: names, Action: specs.ActErrno}}
	s := &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: shared}}}
	AllowInjectedSyscalls(s)
	if !reflect.DeepEqual(names, []string{"ptrace", "userfaultfd", "kexec_load"}) || !reflect.DeepEqual(shared[0].Names, names) {
		t.Errorf("shared data modified: %q, %q", names, shared[0].Names)
	}
	if got := s.Linux.Seccomp.Syscalls[0].Names; !reflect.DeepEqual(got, []string{"ptrace", "kexec_load"}) {
		t.Errorf("names = %q", got)
	}
}

// The list the supervisor relies on.
func TestInjectedSyscalls(t *testing.T) {
	want := "mmap munmap mprotect brk close exit clone userfaultfd"
	if got := strings.Join(InjectedSyscalls, " "); got != want {
		t.Errorf("InjectedSyscalls = %s, want %s", got, want)
	}
	if cloneNamespaceFlags != 2114060288 {
		t.Errorf("cloneNamespaceFlags = %#x, want 0x7e020000", cloneNamespaceFlags)
	}
}

func marshal(t *testing.T, v any) string {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func compact(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A permissive profile that forbids clone: clone is allowed for what the
// supervisor injects, and namespace-creating clones stay killed.
func TestAllowInjectedSyscallsNoFork(t *testing.T) {
	s := spec(t, `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
		{"names": ["fork", "clone", "vfork"], "action": "SCMP_ACT_KILL_PROCESS"}]}`)
	before := clone(t, s)
	added := AllowInjectedSyscalls(s)
	if want := []string{"clone"}; !reflect.DeepEqual(added, want) {
		t.Errorf("added = %q, want %q", added, want)
	}
	want := `[{"names":["fork","vfork"],"action":"SCMP_ACT_KILL_PROCESS"},` +
		`{"names":["clone"],"action":"SCMP_ACT_KILL_PROCESS","args":[` +
		`{"index":0,"value":131072,"valueTwo":131072,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":33554432,"valueTwo":33554432,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":67108864,"valueTwo":67108864,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":134217728,"valueTwo":134217728,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":536870912,"valueTwo":536870912,"op":"SCMP_CMP_MASKED_EQ"},` +
		`{"index":0,"value":1073741824,"valueTwo":1073741824,"op":"SCMP_CMP_MASKED_EQ"}]}]`
	if j := compact(t, s.Linux.Seccomp.Syscalls); j != want {
		t.Errorf("rules:\n got %s\nwant %s", j, want)
	}
	checkAllowed(t, before, s)
	if v := verdict(s.Linux.Seccomp, "fork"); v != specs.ActKillProcess {
		t.Errorf("fork: %s", v)
	}
	if added := AllowInjectedSyscalls(s); added != nil {
		t.Errorf("second call added %q", added)
	}
}

func TestNotifyExecs(t *testing.T) {
	const path = "/run/assure/control/x.exec"
	notify := func(sc *specs.LinuxSeccomp) []string {
		for _, r := range sc.Syscalls {
			if r.Action == specs.ActNotify {
				return r.Names
			}
		}
		return nil
	}
	// No profile: one that allows all but watches exec.
	s := &specs.Spec{}
	if !NotifyExecs(s, path) || s.Linux.Seccomp.DefaultAction != specs.ActAllow || s.Linux.Seccomp.ListenerPath != path ||
		fmt.Sprint(notify(s.Linux.Seccomp)) != "[execve execveat]" {
		t.Fatalf("no profile: %+v", s.Linux.Seccomp)
	}
	if !NotifyExecs(s, path) || len(s.Linux.Seccomp.Syscalls) != 1 {
		t.Errorf("a second call changed the profile: %+v", s.Linux.Seccomp.Syscalls)
	}
	// A denying profile that allows exec among others: exec moves to the
	// watched rule, the rest stays allowed.
	s = &specs.Spec{Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno,
		Syscalls: []specs.LinuxSyscall{{Names: []string{"read", "execve", "write", "execveat"}, Action: specs.ActAllow}}}}}
	if !NotifyExecs(s, path) {
		t.Fatal("denying profile allowing execve: not watched")
	}
	if got := s.Linux.Seccomp.Syscalls; len(got) != 2 || fmt.Sprint(got[0].Names) != "[read write]" || got[0].Action != specs.ActAllow {
		t.Errorf("rules %+v", got)
	}
	// Exec denied, conditioned, or another agent listening: unchanged.
	for name, sc := range map[string]*specs.LinuxSeccomp{
		"denied by default": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}},
		"denied by a rule":  {DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"execve"}, Action: specs.ActErrno}}},
		"conditions": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"execve"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: 0, Op: specs.OpEqualTo}}}}},
		"another listener": {DefaultAction: specs.ActAllow, ListenerPath: "/run/agent.sock"},
	} {
		before := fmt.Sprintf("%+v", *sc)
		if NotifyExecs(&specs.Spec{Linux: &specs.Linux{Seccomp: sc}}, path) || fmt.Sprintf("%+v", *sc) != before {
			t.Errorf("%s: watched, or changed: %+v", name, *sc)
		}
	}
}
