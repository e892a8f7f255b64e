package supervisor

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Site names a rescue point in metrics: its binary as the manifest names
// it and its function, or its address ("0x1a2b0") when the manifest gives
// one. The zero Site stands for "outside any rescue point".
type Site struct {
	Binary   string `json:"binary"`
	Function string `json:"function"`
}

func (rp *rescuePoint) site() Site {
	if rp == nil {
		return Site{}
	}
	if rp.Function != "" {
		return Site{Binary: rp.Binary, Function: rp.Function}
	}
	return Site{Binary: rp.Binary, Function: fmt.Sprintf("%#x", rp.Address)}
}

// HistogramBoundsMicros are the upper bounds, in µs, of the buckets of
// the checkpoint and recovery histograms (a last, unbounded bucket
// follows): from the in-process fast path's few µs to a large process's
// rollback.
var HistogramBoundsMicros = []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1e6}

// Histogram counts durations into HistogramBoundsMicros.
type Histogram struct {
	Count     uint64 `json:"count"`
	SumMicros int64  `json:"sumMicros"`
	// Buckets[i] counts the durations in (bound[i-1], bound[i]], the last
	// one those above every bound (not cumulative).
	Buckets []uint64 `json:"buckets"`
}

func (h *Histogram) observe(d time.Duration) {
	if h.Buckets == nil {
		h.Buckets = make([]uint64, len(HistogramBoundsMicros)+1)
	}
	us := d.Microseconds()
	i := sort.SearchFloat64s(HistogramBoundsMicros, float64(us))
	h.Buckets[i]++
	h.Count++
	h.SumMicros += us
}

// SiteMetrics are the counters of one rescue point.
type SiteMetrics struct {
	Site
	Calls uint64 `json:"calls"`
	// InProcess are the checkpoints the fast path's injected code took
	// (Checkpoint times only the supervisor's).
	InProcess  uint64 `json:"inProcess"`
	Recoveries uint64 `json:"recoveries"`
	// Crashes are faults delivered to the program while it was inside
	// the rescue point (maxRecoveries reached, a failed rollback, a
	// signal not recovered); for the zero Site, faults outside any.
	Crashes uint64 `json:"crashes"`
	// Armed is the number of processes in which the rescue point is
	// armed now.
	Armed      int64     `json:"armed"`
	Checkpoint Histogram `json:"checkpoint"`
	Recovery   Histogram `json:"recovery"`
}

// MetricsSnapshot is what a supervisor answers to a control "metrics"
// request. Namespace and Container are filled in by whoever knows them
// (the supervise command).
type MetricsSnapshot struct {
	Namespace   string `json:"namespace,omitempty"`
	Container   string `json:"container,omitempty"`
	Supervisor  int    `json:"supervisor"` // its pid
	ShadowBytes int64  `json:"shadowBytes"`
	// Parked counts system calls held at the gate (another thread's
	// checkpoint was active); WentAhead, threads let past it after
	// waiting too long (a rollback of that checkpoint cannot undo them).
	Parked    uint64        `json:"parked"`
	WentAhead uint64        `json:"wentAhead"`
	Sites     []SiteMetrics `json:"sites"`
}

// Metrics counts what a supervisor does, per rescue point. The tracer
// thread (and later the fast path's bookkeeping) updates it; the control
// server reads it: safe for concurrent use.
type Metrics struct {
	mu     sync.Mutex
	sites  map[Site]*SiteMetrics
	shadow map[int]int64 // bytes of shadow copy, per process
	// sources are counts kept elsewhere (the injected code's, per
	// process), read when asked.
	sources map[any]func() SourceCounts
	// parked, wentAhead: see MetricsSnapshot.
	parked, wentAhead uint64
}

// SourceCounts are what a source of counts kept elsewhere holds: calls
// and in-process checkpoints per rescue point, and its shadow's size.
type SourceCounts struct {
	Calls, InProcess map[Site]uint64
	ShadowBytes      int64
}

func newMetrics() *Metrics {
	return &Metrics{sites: make(map[Site]*SiteMetrics), shadow: make(map[int]int64), sources: make(map[any]func() SourceCounts)}
}

// AddSource adds a source of counts (key names it for DropSource). f must
// be safe to call from any goroutine.
func (m *Metrics) AddSource(key any, f func() SourceCounts) {
	m.mu.Lock()
	m.sources[key] = f
	m.mu.Unlock()
}

// DropSource removes a source, keeping what it counted.
func (m *Metrics) DropSource(key any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.sources[key]
	if f == nil {
		return
	}
	delete(m.sources, key)
	c := f()
	for s, n := range c.Calls {
		m.site(s).Calls += n
	}
	for s, n := range c.InProcess {
		m.site(s).InProcess += n
	}
}

func (m *Metrics) site(s Site) *SiteMetrics {
	sm := m.sites[s]
	if sm == nil {
		sm = &SiteMetrics{Site: s}
		m.sites[s] = sm
	}
	return sm
}

func (m *Metrics) update(s Site, f func(*SiteMetrics)) {
	m.mu.Lock()
	f(m.site(s))
	m.mu.Unlock()
}

// Parked counts a system call held at the gate.
func (m *Metrics) Parked() { m.mu.Lock(); m.parked++; m.mu.Unlock() }

// WentAhead counts a thread let past the gate after waiting too long.
func (m *Metrics) WentAhead() { m.mu.Lock(); m.wentAhead++; m.mu.Unlock() }

// RescueCall counts an entry into the rescue point.
func (m *Metrics) RescueCall(s Site) { m.update(s, func(sm *SiteMetrics) { sm.Calls++ }) }

// Checkpointed records the time a checkpoint at the rescue point took.
func (m *Metrics) Checkpointed(s Site, d time.Duration) {
	m.update(s, func(sm *SiteMetrics) { sm.Checkpoint.observe(d) })
}

// Recovered records a recovery into the rescue point and its time.
func (m *Metrics) Recovered(s Site, d time.Duration) {
	m.update(s, func(sm *SiteMetrics) { sm.Recoveries++; sm.Recovery.observe(d) })
}

// Crashed counts a fault delivered to the program inside the rescue
// point, or outside any for the zero Site.
func (m *Metrics) Crashed(s Site) { m.update(s, func(sm *SiteMetrics) { sm.Crashes++ }) }

// Armed adds delta to the number of processes where the rescue point is
// armed (+1 when planted, -1 when removed or its process is gone).
func (m *Metrics) Armed(s Site, delta int) {
	m.update(s, func(sm *SiteMetrics) { sm.Armed += int64(delta) })
}

// Shadow sets the size of the shadow copy kept for process pid (0 when it
// is gone).
func (m *Metrics) Shadow(pid int, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if bytes == 0 {
		delete(m.shadow, pid)
	} else {
		m.shadow[pid] = bytes
	}
}

// Snapshot copies the counters, rescue points in a stable order.
func (m *Metrics) Snapshot() MetricsSnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := MetricsSnapshot{Parked: m.parked, WentAhead: m.wentAhead}
	for _, b := range m.shadow {
		out.ShadowBytes += b
	}
	calls, inProcess := map[Site]uint64{}, map[Site]uint64{}
	for _, f := range m.sources {
		c := f()
		for s, n := range c.Calls {
			calls[s] += n
			m.site(s)
		}
		for s, n := range c.InProcess {
			inProcess[s] += n
			m.site(s)
		}
		out.ShadowBytes += c.ShadowBytes
	}
	for _, sm := range m.sites {
		c := *sm
		c.Calls += calls[sm.Site]
		c.InProcess += inProcess[sm.Site]
		c.Checkpoint.Buckets = append([]uint64(nil), sm.Checkpoint.Buckets...)
		c.Recovery.Buckets = append([]uint64(nil), sm.Recovery.Buckets...)
		out.Sites = append(out.Sites, c)
	}
	sort.Slice(out.Sites, func(i, j int) bool {
		a, b := out.Sites[i].Site, out.Sites[j].Site
		return a.Binary < b.Binary || a.Binary == b.Binary && a.Function < b.Function
	})
	return out
}

// shadowSizer is a checkpoint engine that can tell the size of its copy.
type shadowSizer interface{ ShadowBytes() int64 }

// noteShadow records the shadow size of p's tracker.
func (s *Supervisor) noteShadow(p *process) {
	if p.fast != nil {
		return // its source reports it
	}
	if sz, ok := p.tracker.(shadowSizer); ok {
		s.metrics.Shadow(p.pid, sz.ShadowBytes())
	}
}

// forgetMetrics drops what a process that is gone contributed to the
// gauges.
func (s *Supervisor) forgetMetrics(p *process) {
	for _, bp := range p.breakpoints {
		if bp.kind == bpRescue {
			s.metrics.Armed(bp.rp.site(), -1)
		}
	}
	s.metrics.Shadow(p.pid, 0)
}

// MetricsSnapshot returns the supervisor's counters. Safe to call from
// any goroutine.
func (s *Supervisor) MetricsSnapshot() MetricsSnapshot { return s.metrics.Snapshot() }

// Counters is where the supervisor's counters are kept, for code that
// feeds them from elsewhere (the in-process fast path).
func (s *Supervisor) Counters() *Metrics { return s.metrics }
