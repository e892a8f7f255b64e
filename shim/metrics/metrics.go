// Package metrics exposes the counters of a node's assure supervisors to
// Prometheus. Supervisors live and die with their containers, each behind
// its control socket (recovery/control); a Collector asks every one of
// them at scrape time, so a single endpoint per node serves all
// containers, as cAdvisor and node_exporter do.
package metrics

import (
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/assure-rt/assure/recovery/control"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// askTimeout bounds the answer of one supervisor to a scrape.
const askTimeout = 2 * time.Second

var (
	containerLabels = []string{"namespace", "container"}
	siteLabels      = []string{"namespace", "container", "binary", "function"}

	descInfo = prometheus.NewDesc("assure_supervisor_info",
		"A supervisor serving the container (value 1), with its pid.", append(containerLabels, "pid"), nil)
	descShadow = prometheus.NewDesc("assure_shadow_bytes",
		"Memory the supervisor holds for checkpoints of the container (shadow copy and undo logs).", containerLabels, nil)
	descParked = prometheus.NewDesc("assure_parked_total",
		"System calls with an effect outside the process held while another thread's checkpoint was active.", containerLabels, nil)
	descWentAhead = prometheus.NewDesc("assure_went_ahead_total",
		"Threads let past another thread's checkpoint after waiting too long (a rollback to it reports what it cannot undo).", containerLabels, nil)
	descCalls = prometheus.NewDesc("assure_rescue_point_calls_total",
		"Entries into the rescue point.", siteLabels, nil)
	descInProcess = prometheus.NewDesc("assure_checkpoints_in_process_total",
		"Checkpoints taken inside the process by the fast path's injected code (not in assure_checkpoint_duration_seconds, which times the supervisor's).", siteLabels, nil)
	descRecoveries = prometheus.NewDesc("assure_recoveries_total",
		"Faults recovered into the rescue point.", siteLabels, nil)
	descCrashes = prometheus.NewDesc("assure_crashes_total",
		"Faults delivered to the program inside the rescue point, or outside any (binary and function empty).", siteLabels, nil)
	descArmed = prometheus.NewDesc("assure_rescue_point_armed",
		"Processes of the container in which the rescue point is armed.", siteLabels, nil)
	descCheckpoint = prometheus.NewDesc("assure_checkpoint_duration_seconds",
		"Time taken by checkpoints at the rescue point's entry.", siteLabels, nil)
	descRecovery = prometheus.NewDesc("assure_recovery_duration_seconds",
		"Time taken by recoveries into the rescue point.", siteLabels, nil)
)

// Collector collects the metrics of every supervisor whose control socket
// is in Dir (control.Dir when empty), optionally only those of one
// containerd namespace.
type Collector struct {
	Dir       string
	Namespace string
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descShadow, descParked, descWentAhead, descCalls, descInProcess, descRecoveries, descCrashes, descArmed, descCheckpoint, descRecovery} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it asks the supervisors in
// parallel. One that does not answer (it is starting, stopping, or its
// socket was left by a supervisor killed) is skipped.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, snap := range c.Snapshots() {
		emit(ch, snap)
	}
}

// Snapshots asks every supervisor for its counters.
func (c *Collector) Snapshots() []supervisor.MetricsSnapshot {
	var wg sync.WaitGroup
	dir := c.Dir
	if dir == "" {
		dir = control.Dir
	}
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	out := make([]*supervisor.MetricsSnapshot, len(socks))
	for i, sock := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ask(sock)
		}()
	}
	wg.Wait()
	var snaps []supervisor.MetricsSnapshot
	for _, s := range out {
		if s != nil && (c.Namespace == "" || s.Namespace == c.Namespace) {
			snaps = append(snaps, *s)
		}
	}
	return snaps
}

func ask(sock string) *supervisor.MetricsSnapshot {
	cl, err := control.Dial(sock, 0)
	if err != nil {
		return nil
	}
	defer cl.Close()
	cl.SetDeadline(time.Now().Add(askTimeout))
	var s supervisor.MetricsSnapshot
	if cl.Metrics(&s) != nil {
		return nil
	}
	return &s
}

func emit(ch chan<- prometheus.Metric, s supervisor.MetricsSnapshot) {
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, s.Namespace, s.Container, strconv.Itoa(s.Supervisor))
	ch <- prometheus.MustNewConstMetric(descShadow, prometheus.GaugeValue, float64(s.ShadowBytes), s.Namespace, s.Container)
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.CounterValue, float64(s.Parked), s.Namespace, s.Container)
	ch <- prometheus.MustNewConstMetric(descWentAhead, prometheus.CounterValue, float64(s.WentAhead), s.Namespace, s.Container)
	for _, m := range s.Sites {
		lv := []string{s.Namespace, s.Container, m.Binary, m.Function}
		ch <- prometheus.MustNewConstMetric(descCalls, prometheus.CounterValue, float64(m.Calls), lv...)
		ch <- prometheus.MustNewConstMetric(descInProcess, prometheus.CounterValue, float64(m.InProcess), lv...)
		ch <- prometheus.MustNewConstMetric(descRecoveries, prometheus.CounterValue, float64(m.Recoveries), lv...)
		ch <- prometheus.MustNewConstMetric(descCrashes, prometheus.CounterValue, float64(m.Crashes), lv...)
		ch <- prometheus.MustNewConstMetric(descArmed, prometheus.GaugeValue, float64(m.Armed), lv...)
		ch <- histogram(descCheckpoint, m.Checkpoint, lv)
		ch <- histogram(descRecovery, m.Recovery, lv)
	}
}

// histogram converts the supervisor's µs buckets into a Prometheus
// histogram in seconds (cumulative buckets).
func histogram(d *prometheus.Desc, h supervisor.Histogram, lv []string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(supervisor.HistogramBoundsMicros))
	var cum uint64
	for i, bound := range supervisor.HistogramBoundsMicros {
		if i < len(h.Buckets) {
			cum += h.Buckets[i]
		}
		buckets[bound/1e6] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, float64(h.SumMicros)/1e6, buckets, lv...)
}

// Write writes what g gathers in Prometheus' text exposition format.
func Write(w io.Writer, g prometheus.Gatherer) error {
	families, err := g.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}
