package recovery_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2ELearnFromCrash: with a manifest that heals, a crash outside every
// rescue point arms the innermost candidate on the faulting stack (a
// "learned" event) and --learn FILE keeps it: the next run, from FILE, has
// it armed from the start and survives the same fault. Candidates are
// named in the manifest (crash.c's void process_item) or derived by
// static analysis (bugs.c's handle_request, -1), whose recovered run
// prints exactly what the native run that rejects the bad requests does.
func TestE2ELearnFromCrash(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	for _, tc := range []struct {
		name, prog, heal, learned string
		args                      []string
	}{
		{"named", "crash", `{"candidates":[{"binary":"` + bin("crash") + `","function":"process_item"}]}`, "process_item", []string{"plain"}},
		{"derived", "bugs", `{}`, "handle_request", []string{"null", "100", "25"}},
		// No symbols: the candidate is found and kept by its address.
		{"stripped", "bugs-stripped", `{}`, "", []string{"null", "100", "25"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			learn := filepath.Join(t.TempDir(), "learned.json")
			m := `{"version":1,"heal":` + tc.heal + `}`
			first := run(t, runSpec{manifest: m, prog: tc.prog, args: tc.args, runArgs: []string{"--learn", learn}})
			wantSignalDeath(t, first, syscall.SIGSEGV)
			l := first.ofType("learned")
			if len(l) != 1 || l[0].RescuePoint == nil || l[0].RescuePoint.Function != tc.learned || l[0].Signal != "SIGSEGV" {
				t.Fatalf("learned events %+v, want one for %s%s", l, tc.learned, first)
			}
			want := `"function": "` + tc.learned + `"`
			if tc.learned == "" {
				if l[0].RescuePoint.Address == "" || l[0].RescuePoint.Address == "0x0" {
					t.Fatalf("learned event without an address: %+v", l[0].RescuePoint)
				}
				want = `"address": "` + l[0].RescuePoint.Address + `"`
			}
			data, err := os.ReadFile(learn)
			if err != nil || !strings.Contains(string(data), want) {
				t.Fatalf("--learn file: %v, want %s in\n%s", err, want, data)
			}
			second := run(t, runSpec{manifest: m, prog: tc.prog, args: tc.args, runArgs: []string{"--learn", learn}})
			wantStatus(t, second, 0)
			if n := len(second.ofType("recovered")); n == 0 {
				t.Errorf("the second run recovered nothing%s", second)
			}
			if tc.prog != "crash" {
				if ref := runNative(t, "bugs", "none", "100", "25"); second.Stdout != ref.Stdout {
					t.Errorf("recovered output:\n%s\nwant the native rejecting run's:\n%s", second.Stdout, ref.Stdout)
				}
			}
		})
	}
}

// TestE2ESurviveFirstFault: with heal.firstFault "return", the first
// fault in a candidate (server.c's handle_request, armed by nothing) is
// survived: the candidate returns -1 from its frame without a rollback
// (what it wrote before the fault stays: the total keeps BAD's 1000000),
// a recovered event says recovery "return", and the candidate is learned,
// so the second fault is rolled back as usual. A fault with a mutex held
// (LOCKBAD) is not survived: the server dies of it as without assure, and
// the crash event says why.
func TestE2ESurviveFirstFault(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	heal := `{"version":1,"heal":{"firstFault":"return","candidates":[{"binary":"` + bin("server") + `","function":"handle_request","return":-1}]}}`
	start := func(t *testing.T, heal string) (*attServer, string) {
		dir := t.TempDir()
		m, events := filepath.Join(dir, "heal.json"), filepath.Join(dir, "events.jsonl")
		os.WriteFile(m, []byte(heal), 0o644)
		p := startProc(t, "assure", true, assureBin, "run", "--manifest", m, "--events", events, "--", bin("server"), "serve")
		s := &attServer{attProc: p, extra: func() string { return "" }}
		if l := s.readLine("start", s.extra); l != "ready" {
			t.Fatalf("server said %q, want ready%s", l, s.describe())
		}
		return s, events
	}
	t.Run("survived", func(t *testing.T) {
		s, events := start(t, heal)
		s.want("GOOD 2", "ok 1")
		s.want("BAD", "error") // survived: returned -1 from its frame
		// A call that began before the candidate was armed survives as
		// the first did: the next BAD waits for the arming.
		waitEvent(t, events, 10*time.Second, "learned", func(e event) bool { return e.Type == "learned" }, s.describe)
		s.want("GOOD 3", "ok 3") // BAD's count stayed (no rollback)
		s.want("BAD", "error")   // learned: rolled back
		s.want("GOOD 4", "ok 4") // the second BAD's count was undone
		s.stdin.Write([]byte("STATS\n"))
		if st := s.readLine("STATS", s.extra); !strings.Contains(st, "requests=4 errors=2 total=1000009 ") {
			t.Fatalf("STATS %q, want requests=4 errors=2 total=1000009 (the first BAD's writes stay)", st)
		}
		s.want("QUIT", "bye")
		data, _ := os.ReadFile(events)
		var kinds []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			switch {
			case strings.Contains(l, `"type":"recovered"`) && strings.Contains(l, `"recovery":"return"`):
				kinds = append(kinds, "return")
			case strings.Contains(l, `"type":"recovered"`) && strings.Contains(l, `"recovery":"rollback"`):
				kinds = append(kinds, "rollback")
			case strings.Contains(l, `"type":"learned"`):
				kinds = append(kinds, "learned")
			case strings.Contains(l, `"type":"crash"`):
				kinds = append(kinds, "crash")
			}
		}
		if got := strings.Join(kinds, " "); got != "return learned rollback" {
			t.Errorf("events %q, want return learned rollback\n%s", got, data)
		}
	})
	t.Run("no candidate on the stack", func(t *testing.T) {
		// worker_main never runs in serve 0: no candidate on BAD's stack.
		other := strings.Replace(heal, `"handle_request"`, `"worker_main"`, 1)
		s, events := start(t, other)
		s.want("GOOD 2", "ok 1")
		diesOf(t, s, "BAD")
		data, _ := os.ReadFile(events)
		if !strings.Contains(string(data), `"type":"crash"`) || strings.Contains(string(data), `"type":"recovered"`) ||
			strings.Contains(string(data), `"type":"learned"`) || strings.Contains(string(data), "not survived") {
			t.Errorf("events: want one plain crash, nothing learned or recovered\n%s", data)
		}
	})
	t.Run("lock held", func(t *testing.T) {
		s, events := start(t, heal)
		s.want("GOOD 2", "ok 1")
		diesOf(t, s, "LOCKBAD")
		data, _ := os.ReadFile(events)
		if !strings.Contains(string(data), `"type":"crash"`) || !strings.Contains(string(data), "holds a mutex lock at") ||
			strings.Contains(string(data), `"type":"recovered"`) || !strings.Contains(string(data), `"type":"learned"`) {
			t.Errorf("events: want a crash naming the held mutex, a learned and no recovered one\n%s", data)
		}
	})
}

// diesOf sends req, which makes the server fault, and waits for assure to
// exit with the server's SIGSEGV, as without assure.
func diesOf(t *testing.T, s *attServer, req string) {
	t.Helper()
	s.stdin.Write([]byte(req + "\n"))
	select {
	case <-s.exited:
	case <-time.After(attExitTimeout):
		t.Fatalf("%s did not end the server%s", req, s.describe())
	}
	if st := s.ws.ExitStatus(); st != 128+int(syscall.SIGSEGV) {
		t.Errorf("assure exited %d, want %d (the server's SIGSEGV)%s", st, 128+int(syscall.SIGSEGV), s.describe())
	}
}

// TestE2ELearnPrefork: learning in a process tree. prefork's 3 workers
// each meet 4 bad requests, at the same moments; the manifest only heals
// (handle_request, "firstFault": "return"). The first fault teaches
// handle_request (one learned event), which is then armed in the parent
// and each worker in turn, one process held at a time; a fault in a
// worker not armed yet (or in a call that began before) is survived by a
// return too, every fault after arming is rolled back. Every worker exits
// 0, no crash, and the totals are those of the reference run that rejects
// the bad requests. Workers forked before the arming reached the parent
// but seen by the supervisor only after have the breakpoint too
// (syncInherited), and the lock scan leaves the fast path's shadow out.
func TestE2ELearnPrefork(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	const r, every = "200", "50"
	ref := runNative(t, "prefork", "validate", "0", r, every)
	m := `{"version":1,"heal":{"firstFault":"return","candidates":[{"binary":"` + bin("prefork") + `","function":"handle_request","return":-1}]}}`
	res := run(t, runSpec{manifest: m, prog: "prefork", args: []string{"fault", "0", r, every}})
	wantStatus(t, res, 0)
	kv, refKV := res.kv(), ref.kv()
	for _, k := range []string{"total", "ok", "errors", "rsum", "worker_status_0", "worker_status_1", "worker_status_2"} {
		if kv[k] != refKV[k] {
			t.Errorf("%s=%s, want %s as in the reference run%s", k, kv[k], refKV[k], res)
		}
	}
	returns, rollbacks := 0, 0
	for _, e := range res.ofType("recovered") {
		switch e.Recovery {
		case "return":
			returns++
		case "rollback":
			rollbacks++
		}
	}
	if n := len(res.ofType("learned")); n != 1 {
		t.Errorf("%d learned events, want 1%s", n, res)
	}
	if returns < 1 || returns+rollbacks != 12 || len(res.ofType("crash")) != 0 {
		t.Errorf("%d returns and %d rollbacks (want at least one return, 12 recoveries in all, no crash)%s", returns, rollbacks, res)
	}
}
