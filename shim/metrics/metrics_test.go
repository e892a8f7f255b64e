package metrics

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// fake answers the control protocol with fixed counters, as a container's
// supervisor would.
type fake struct{ snap supervisor.MetricsSnapshot }

func (f *fake) Adopt(int, bool) error { return nil }
func (f *fake) Stop()                 {}
func (f *fake) Metrics() any          { return f.snap }

func (f *fake) ArmManifest([]byte) error    { return nil }
func (f *fake) DisarmManifest([]byte) error { return nil }

func serve(t *testing.T, sock string, snap supervisor.MetricsSnapshot) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go control.Serve(l, &fake{snap})
}

// Two supervisors and a stale socket: the exposition parses, with
// per-container, per-rescue-point series and seconds-based histograms.
func TestExposition(t *testing.T) {
	dir := t.TempDir()
	hist := supervisor.Histogram{Count: 3, SumMicros: 600, Buckets: make([]uint64, len(supervisor.HistogramBoundsMicros)+1)}
	hist.Buckets[4] = 2 // (50, 100] µs
	hist.Buckets[6] = 1 // (250, 500] µs
	serve(t, filepath.Join(dir, "a.sock"), supervisor.MetricsSnapshot{
		Namespace: "k8s.io", Container: "c1", Supervisor: 42, ShadowBytes: 8192,
		Sites: []supervisor.SiteMetrics{
			{Site: supervisor.Site{Binary: "/usr/bin/redis-server", Function: "call"}, Calls: 10, Recoveries: 3, Armed: 1, Checkpoint: hist, Recovery: hist},
			{Crashes: 2}, // outside any rescue point
		},
	})
	serve(t, filepath.Join(dir, "b.sock"), supervisor.MetricsSnapshot{Namespace: "other", Container: "c2", Supervisor: 43})
	// A socket nobody serves (a supervisor killed).
	l, _ := net.Listen("unix", filepath.Join(dir, "c.sock"))
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&Collector{Dir: dir})
	var out strings.Builder
	start := time.Now()
	if err := Write(&out, reg); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > askTimeout {
		t.Errorf("a scrape took %v", time.Since(start))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(out.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, out.String())
	}
	get := func(name string, labels map[string]string) *dto.Metric {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no family %s in\n%s", name, out.String())
		}
	next:
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return m
		}
		t.Fatalf("no %s%v in\n%s", name, labels, out.String())
		return nil
	}
	redis := map[string]string{"namespace": "k8s.io", "container": "c1", "binary": "/usr/bin/redis-server", "function": "call"}
	if v := get("assure_rescue_point_calls_total", redis).GetCounter().GetValue(); v != 10 {
		t.Errorf("calls = %v, want 10", v)
	}
	if v := get("assure_recoveries_total", redis).GetCounter().GetValue(); v != 3 {
		t.Errorf("recoveries = %v, want 3", v)
	}
	if v := get("assure_crashes_total", map[string]string{"container": "c1", "function": ""}).GetCounter().GetValue(); v != 2 {
		t.Errorf("crashes outside = %v, want 2", v)
	}
	if v := get("assure_rescue_point_armed", redis).GetGauge().GetValue(); v != 1 {
		t.Errorf("armed = %v, want 1", v)
	}
	if v := get("assure_shadow_bytes", map[string]string{"container": "c1"}).GetGauge().GetValue(); v != 8192 {
		t.Errorf("shadow = %v, want 8192", v)
	}
	h := get("assure_recovery_duration_seconds", redis).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 0.0006 {
		t.Errorf("recovery histogram count %d sum %v, want 3 and 0.0006", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.Bucket {
		want := map[float64]uint64{0.00005: 0, 0.0001: 2, 0.00025: 2, 0.0005: 3, 1: 3}
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
	get("assure_supervisor_info", map[string]string{"namespace": "other", "container": "c2", "pid": "43"})

	// Only one namespace.
	if n := len((&Collector{Dir: dir, Namespace: "other"}).Snapshots()); n != 1 {
		t.Errorf("namespace filter: %d supervisors, want 1", n)
	}
}
