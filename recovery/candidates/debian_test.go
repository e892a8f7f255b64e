package candidates

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Debian's own servers, when installed. The binaries have no .symtab:
// the names come from .dynsym (redis and nginx export most of their
// functions for modules), the rest from .eh_frame.

// maxAnalysis is the time one of these files may take. They take well
// under 200 ms on a laptop; the bound leaves room for a loaded machine.
const maxAnalysis = 2 * time.Second

// debian runs Find on path, or skips when it is not installed.
func debian(t *testing.T, path string) *Report {
	t.Helper()
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Skipf("%s not installed", path)
	}
	if _, err := os.Stat(real); err != nil {
		t.Skipf("%s not installed", path)
	}
	rep, err := Find(real, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTotals(t, rep)
	unnamed := 0
	for _, c := range rep.Candidates {
		if c.Function == "" {
			unnamed++
		}
	}
	t.Logf("%s: %d functions, %d candidates (%d unnamed), %d without direct callers, %d instructions in %s",
		real, rep.Functions, len(rep.Candidates), unnamed, len(rep.NoDirectCallers), rep.Stats.Instructions, rep.Stats.Elapsed)
	t.Logf("dropped: %v", rep.Dropped)
	for i, c := range rep.Candidates {
		if i == 5 {
			break
		}
		t.Logf("  %s -> %d (%s): %s", c.Label(), *c.Return, c.Confidence, c.ReturnEvidence)
	}
	if limit := maxAnalysis * raceScale; rep.Stats.Elapsed > limit {
		t.Errorf("took %s, want under %s", rep.Stats.Elapsed, limit)
	}
	return rep
}

func byName(rep *Report) map[string]*Candidate {
	m := make(map[string]*Candidate)
	for i := range rep.Candidates {
		if n := rep.Candidates[i].Function; n != "" {
			m[n] = &rep.Candidates[i]
		}
	}
	return m
}

// TestRedis checks functions known from redis's source to return C_ERR
// (-1) on error, to callers that check it: the command path
// (processCommand, the request parsers) and the RDB loader
// (rdbLoadLen returns RDB_LENERR, (uint64_t)-1).
func TestRedis(t *testing.T) {
	rep := debian(t, "/usr/bin/redis-server")
	got := byName(rep)
	for _, name := range []string{"processCommand", "processInlineBuffer", "processMultibulkBuffer", "rdbLoadLen", "rdbLoadLenByRef", "rdbLoadType", "aeCreateFileEvent"} {
		c := got[name]
		if c == nil {
			t.Errorf("%s is not a candidate", name)
			continue
		}
		if *c.Return != -1 {
			t.Errorf("%s: return %d, want -1 (%s)", name, *c.Return, c.ReturnEvidence)
		}
		t.Logf("%s -> %d (%s): %s", name, *c.Return, c.Confidence, c.ReturnEvidence)
	}
}

// TestNginx: nginx is stripped; its static functions have no name and
// must still be found through .eh_frame. NGX_ERROR is -1.
func TestNginx(t *testing.T) {
	rep := debian(t, "/usr/sbin/nginx")
	unnamed := 0
	for _, c := range rep.Candidates {
		if c.Function == "" {
			unnamed++
		}
	}
	if unnamed == 0 {
		t.Error("no unnamed candidates in stripped nginx")
	}
	if c := byName(rep)["ngx_http_parse_request_line"]; c != nil {
		t.Logf("ngx_http_parse_request_line -> %d: %s", *c.Return, c.ReturnEvidence)
	}
}

func TestMemcached(t *testing.T) {
	if rep := debian(t, "/usr/bin/memcached"); len(rep.Candidates) == 0 {
		t.Error("no candidates in memcached")
	}
}

// TestLibc: a shared library, most of whose calls to itself are direct
// (hidden aliases), and whose callers elsewhere come in through Imports.
func TestLibc(t *testing.T) {
	rep := debian(t, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	if c := byName(rep)["malloc"]; c == nil || *c.Return != 0 {
		t.Errorf("malloc: %+v, want a candidate returning NULL", c)
	}
}

// TestProgramAndLibrary pools the evidence of redis's calls into libc,
// as a caller analysing a whole program would.
func TestProgramAndLibrary(t *testing.T) {
	const redis, libc = "/usr/bin/redis-server", "/usr/lib/x86_64-linux-gnu/libc.so.6"
	for _, p := range []string{redis, libc} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s not installed", p)
		}
	}
	exe, err := Find(redis, Options{})
	if err != nil {
		t.Fatal(err)
	}
	alone, err := Find(libc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pooled, err := Find(libc, Options{ExternalCallers: MergeImports(exe)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("libc: %d candidates alone, %d with redis's %d imported names", len(alone.Candidates), len(pooled.Candidates), len(exe.Imports))
	if len(pooled.Candidates) < len(alone.Candidates) {
		t.Error("pooling evidence lost candidates")
	}
}
