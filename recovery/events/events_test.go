package events

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEmitWritesLineAndJSON(t *testing.T) {
	var human, js bytes.Buffer
	s := NewSink(&human, &js)
	s.stamp = func() time.Time { return time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC) }
	ret := int64(-1)
	s.Emit(Event{
		Type: Recovered, Pid: 12, Tid: 13, Signal: "SIGSEGV", FaultAddress: "0x0",
		RescuePoint: &RescuePoint{Binary: "/srv/server", Function: "handle", Address: "0x1139"},
		Return:      &ret, RecoveryMicros: 42, PagesRestored: 3, ThreadsRolledBack: 2, ProcessesRolledBack: 1,
	})
	want := "assure: recovered SIGSEGV in handle (/srv/server) pid 12 tid 13: returned -1 after 42µs (3 pages, 2 threads, 1 processes)\n"
	if human.String() != want {
		t.Errorf("stderr line:\n got %q\nwant %q", human.String(), want)
	}
	var got map[string]any
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("events line is not JSON: %v: %q", err, js.String())
	}
	for k, v := range map[string]any{
		"time": "2026-01-02T15:04:05Z", "type": "recovered", "pid": 12.0, "tid": 13.0,
		"signal": "SIGSEGV", "faultAddress": "0x0", "return": -1.0, "recoveryMicros": 42.0,
		"pagesRestored": 3.0, "threadsRolledBack": 2.0, "processesRolledBack": 1.0,
	} {
		if got[k] != v {
			t.Errorf("field %q = %v, want %v", k, got[k], v)
		}
	}
	rp, _ := got["rescuePoint"].(map[string]any)
	if rp["binary"] != "/srv/server" || rp["function"] != "handle" || rp["address"] != "0x1139" {
		t.Errorf("rescuePoint = %v", got["rescuePoint"])
	}
	if strings.Count(js.String(), "\n") != 1 {
		t.Errorf("want exactly one JSON line, got %q", js.String())
	}
}

func TestCrashLineListsStack(t *testing.T) {
	line := Format(Event{Type: Crash, Pid: 5, Tid: 5, Signal: "SIGSEGV", FaultAddress: "0x10",
		Message: "outside any rescue point", Stack: []string{"f+0x4 (/bin/x)", "main+0x20 (/bin/x)"}})
	want := "assure: crash: SIGSEGV pid 5 tid 5 at 0x10: outside any rescue point\n    f+0x4 (/bin/x)\n    main+0x20 (/bin/x)"
	if line != want {
		t.Errorf("got %q\nwant %q", line, want)
	}
}

func TestVoidReturnAndNilSink(t *testing.T) {
	line := Format(Event{Type: Recovered, Signal: "SIGBUS", RescuePoint: &RescuePoint{Binary: "libx.so", Address: "0x10"}})
	if !strings.Contains(line, "in 0x10 (libx.so)") || !strings.Contains(line, "returned (void)") {
		t.Errorf("void rescue point by address: %q", line)
	}
	var s *Sink
	s.Emit(Event{Type: Error}) // a nil sink discards; must not panic
	var js bytes.Buffer
	NewSink(nil, &js).Emit(Event{Type: Attached, Pid: 3})
	if !strings.Contains(js.String(), `"type":"attached"`) || !strings.Contains(js.String(), `"pid":3`) {
		t.Errorf("attached event: %q", js.String())
	}
}

func TestContainerStamped(t *testing.T) {
	var human, js bytes.Buffer
	s := NewSink(&human, &js)
	s.Container = "redis"
	s.Emit(Event{Type: Attached, Pid: 9})
	if !strings.Contains(js.String(), `"container":"redis"`) {
		t.Errorf("JSON line lacks the container: %q", js.String())
	}
	if human.String() != "assure: container redis: attached pid 9\n" {
		t.Errorf("stderr line %q", human.String())
	}
	a := ContainerFile("/run/containerd/containerd.sock", "k8s.io", "redis")
	b := ContainerFile("/tmp/x/containerd.sock", "k8s.io", "redis")
	if a == b || !strings.HasPrefix(a, Dir+"/") || !strings.HasSuffix(a, "/k8s.io/redis.jsonl") {
		t.Errorf("ContainerFile: %s, %s", a, b)
	}
	if c := ContainerFile("/a", "../../etc", "../passwd"); !strings.HasPrefix(c, Dir+"/") || strings.Contains(c, "..") {
		t.Errorf("ContainerFile escapes %s: %s", Dir, c)
	}
}
