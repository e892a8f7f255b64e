package oci

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// execCalls are the system calls that start a program.
var execCalls = []string{"execve", "execveat"}

// NotifyExecs makes every execve and execveat of the container's
// processes wait for the seccomp listener at listenerPath (runc hands it
// the filter's notification fd, for the init and for each process started
// with exec): the shim uses it to hand a process started with `ctr task
// exec` (CRI Exec, ExecSync) to the container's supervisor before that
// process runs its program's first instruction, and lets every call go on
// unchanged (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the profile denies
// nothing more than before.
//
// A container without a seccomp profile gets one that allows everything
// else. NotifyExecs reports false, and changes nothing, when the profile
// does not allow the exec calls unconditionally (then there is nothing to
// watch, or conditions it would have to keep).
func NotifyExecs(s *specs.Spec, listenerPath string) bool {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Seccomp == nil {
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		}
	}
	sc := s.Linux.Seccomp
	if sc.ListenerPath != "" && sc.ListenerPath != listenerPath {
		return false // someone else's agent listens
	}
	rules := make([]specs.LinuxSyscall, 0, len(sc.Syscalls)+1)
	allowed := allows(sc.DefaultAction)
	for _, r := range sc.Syscalls {
		var keep []string
		for _, name := range r.Names {
			if !isExecCall(name) {
				keep = append(keep, name)
				continue
			}
			switch {
			case r.Action == specs.ActNotify:
				return sc.ListenerPath == listenerPath // done before
			case len(r.Args) > 0:
				return false
			case allows(r.Action):
				allowed = true
			default:
				return false // denied: no exec to watch
			}
		}
		if len(keep) == len(r.Names) {
			rules = append(rules, r)
		} else if len(keep) > 0 {
			r.Names = keep
			rules = append(rules, r)
		}
	}
	if !allowed {
		return false
	}
	sc.Syscalls = append(rules, specs.LinuxSyscall{Names: append([]string(nil), execCalls...), Action: specs.ActNotify})
	sc.ListenerPath = listenerPath
	return true
}

func isExecCall(name string) bool { return name == "execve" || name == "execveat" }
