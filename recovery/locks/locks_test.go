package locks

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/procfs"
)

// holder is a started testdata/holder.c, stopped with its locks held.
type holder struct {
	pid     int
	threads map[string]holderThread
	held    map[string][]Held // by thread name
	free    []Held
	// unreadable is how many bytes of its writable memory fail to read.
	unreadable int64
}

type holderThread struct {
	tid  int
	self uint64
}

// buildC compiles testdata/NAME.c into a temporary directory.
func buildC(t *testing.T, name string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(gcc, "-O2", "-pthread", "-Wall", "-o", bin, filepath.Join("testdata", name+".c")).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, out)
	}
	return bin
}

// startHolder runs the holder and waits until it has stopped itself. It
// is killed when the test ends.
func startHolder(t *testing.T, bin string) *holder {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	h := &holder{pid: cmd.Process.Pid, threads: map[string]holderThread{}, held: map[string][]Held{}}
	done := make(chan error, 1)
	go func() { done <- h.parse(bufio.NewScanner(stdout)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("holder output: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("holder did not get ready")
	}
	waitStopped(t, h.pid)
	return h
}

func (h *holder) parse(sc *bufio.Scanner) error {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "ready":
			return nil
		case len(f) == 2 && f[0] == "pid":
			// Known from cmd already.
		case len(f) == 4 && f[0] == "thread":
			tid, err1 := strconv.Atoi(f[2])
			self, err2 := strconv.ParseUint(strings.TrimPrefix(f[3], "0x"), 16, 64)
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("%q: %w", sc.Text(), err)
			}
			h.threads[f[1]] = holderThread{tid: tid, self: self}
		case len(f) == 4 && f[0] == "held":
			addr, err := strconv.ParseUint(strings.TrimPrefix(f[3], "0x"), 16, 64)
			if err != nil {
				return fmt.Errorf("%q: %w", sc.Text(), err)
			}
			h.held[f[1]] = append(h.held[f[1]], Held{Addr: addr, Kind: f[2]})
		case len(f) == 3 && f[0] == "beyond-eof":
			// How many bytes the process itself cannot read.
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				return fmt.Errorf("%q: %w", sc.Text(), err)
			}
			h.unreadable = n
		case len(f) == 3 && f[0] == "free":
			addr, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64)
			if err != nil {
				return fmt.Errorf("%q: %w", sc.Text(), err)
			}
			h.free = append(h.free, Held{Addr: addr, Kind: f[1]})
		default:
			return fmt.Errorf("unexpected line %q", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("no ready line")
}

// waitStopped waits until every thread of pid is in a stopped state.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if allStopped(pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allStopped(pid int) bool {
	tids, err := procfs.Tasks(pid)
	if err != nil || len(tids) == 0 {
		return false
	}
	for _, tid := range tids {
		st, err := procfs.ReadStatus(tid)
		if err != nil || (st.State != 'T' && st.State != 't') {
			return false
		}
	}
	return true
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := procfs.FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// touched reads pid's pagemap entry for addr.
func touched(t *testing.T, pid int, addr uint64) bool {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/pageSize*8)); err != nil {
		t.Fatal(err)
	}
	return le64(b[:])&(pmPresent|pmSwapped) != 0
}

func sorted(hs []Held) []Held {
	out := append([]Held(nil), hs...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Addr < out[i].Addr {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestHeldByHolder(t *testing.T) {
	h := startHolder(t, buildC(t, "holder"))
	want := func(name string) []Held { return sorted(h.held[name]) }
	for _, name := range []string{"a", "b", "edge", "file", "heir", "stdio"} {
		if len(h.held[name]) == 0 {
			t.Fatalf("holder reported no locks for thread %s", name)
		}
	}
	// The edge mutex is meant to end in a page not present; the
	// all-pages scan below faults it in, so look first.
	edge := h.held["edge"][0].Addr + mutexSize - 1
	if touched(t, h.pid, edge) {
		t.Errorf("page of %#x, the end of the edge mutex, is present", edge)
	}
	for _, mode := range []struct {
		name      string
		noPagemap bool
	}{{"pagemap", false}, {"all-pages", true}} {
		t.Run(mode.name, func(t *testing.T) {
			for name, th := range h.threads {
				var st Stats
				got, err := HeldBy(h.pid, th.tid, Options{FSBase: th.self, NoPagemap: mode.noPagemap, Stats: &st})
				if err != nil {
					t.Fatalf("thread %s: %v", name, err)
				}
				if w := want(name); !reflect.DeepEqual(got, w) && !(len(got) == 0 && len(w) == 0) {
					t.Errorf("thread %s (tid %d): got %s, want %s", name, th.tid, format(got), format(w))
				}
				t.Logf("thread %-6s: %d locks; %s", name, len(got), st)
				if mode.noPagemap && st.Unreadable != h.unreadable {
					t.Errorf("thread %s: %d bytes unreadable, want %d", name, st.Unreadable, h.unreadable)
				}
			}
			if !mode.noPagemap && touched(t, h.pid, edge) {
				t.Errorf("scan faulted in the page of %#x", edge)
			}
		})
	}
	t.Run("fsbase", func(t *testing.T) {
		// pthread_self is what a tracer finds in fs_base.
		th := h.threads["stdio"]
		if fs := fsBase(t, th.tid); fs != th.self {
			t.Errorf("fs_base %#x, pthread_self %#x", fs, th.self)
		}
		waitStopped(t, h.pid)
	})
	t.Run("fds", func(t *testing.T) {
		before := openFDs(t)
		for i := 0; i < 20; i++ {
			if _, err := HeldBy(h.pid, h.threads["a"].tid, Options{}); err != nil {
				t.Fatal(err)
			}
		}
		if after := openFDs(t); after != before {
			t.Errorf("%d open fds before, %d after", before, after)
		}
	})
	t.Run("no-fsbase", func(t *testing.T) {
		// Without its fs base, the stdio thread's FILE lock is not seen.
		got, err := HeldBy(h.pid, h.threads["stdio"].tid, Options{})
		if err != nil || len(got) != 0 {
			t.Errorf("got %s, %v; want nothing", format(got), err)
		}
	})
	t.Run("other-tid", func(t *testing.T) {
		// An id no thread of the process has owns nothing.
		got, err := HeldBy(h.pid, h.threads["main"].tid+100000, Options{})
		if err != nil || len(got) != 0 {
			t.Errorf("got %s, %v; want nothing", format(got), err)
		}
	})
	t.Run("budget", func(t *testing.T) {
		_, err := HeldBy(h.pid, h.threads["a"].tid, Options{MaxBytes: 1 << 16})
		if !errors.Is(err, ErrBudget) {
			t.Errorf("got %v, want ErrBudget", err)
		}
	})
}

func TestHeldByGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	if _, err := HeldBy(cmd.Process.Pid, cmd.Process.Pid, Options{}); err == nil {
		t.Error("no error for a process that is gone")
	}
	if _, err := HeldBy(os.Getpid(), 0, Options{}); err == nil {
		t.Error("no error for tid 0")
	}
}

func format(hs []Held) string {
	var b strings.Builder
	b.WriteString("[")
	for i, h := range hs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s@%#x", h.Kind, h.Addr)
	}
	b.WriteString("]")
	return b.String()
}
