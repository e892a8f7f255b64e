package manifest

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// recoverable lists, in canonical order, the signals a manifest may ask to
// recover from: the synchronous faults a bug in the current function can
// raise (plus SIGABRT for assert/abort). Asynchronous signals such as
// SIGTERM or SIGKILL say nothing about the function that happens to run
// when they arrive, so rolling it back would be wrong.
var recoverable = []unix.Signal{
	unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS,
}

// defaultSignals is what a manifest without "signals" recovers from.
var defaultSignals = []unix.Signal{unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT}

// DefaultSignals returns the signals recovered from when a manifest has no
// "signals" field.
func DefaultSignals() []unix.Signal {
	return append([]unix.Signal(nil), defaultSignals...)
}

// SignalName returns the conventional name of s ("SIGSEGV"), or "signal N"
// for a number without one.
func SignalName(s unix.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}

// ParseSignal returns the signal with the given standard name. It accepts
// any name the kernel defines, with or without the "SIG" prefix and in any
// letter case ("SIGTERM", "term"). Manifests are stricter: see Parse.
func ParseSignal(name string) (unix.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if s := unix.SignalNum(n); s != 0 {
		return s, nil
	}
	return 0, fmt.Errorf("unknown signal %q", name)
}

func isRecoverable(s unix.Signal) bool {
	for _, r := range recoverable {
		if r == s {
			return true
		}
	}
	return false
}

func recoverableNames() string {
	names := make([]string, len(recoverable))
	for i, s := range recoverable {
		names[i] = SignalName(s)
	}
	return strings.Join(names, ", ")
}

// parseManifestSignal checks one entry of "signals": the exact canonical
// name of a recoverable signal.
func parseManifestSignal(name string) (unix.Signal, error) {
	s, err := ParseSignal(name)
	if err != nil || name == "" {
		return 0, fmt.Errorf("unknown signal %q", name)
	}
	if canonical := SignalName(s); canonical != name {
		return 0, fmt.Errorf("signal %q must be written %q", name, canonical)
	}
	if !isRecoverable(s) {
		return 0, fmt.Errorf("signal %s cannot be recovered from (allowed: %s)", name, recoverableNames())
	}
	return s, nil
}
