package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// load is what rp_call does besides its two stores, and what runs beside
// it (rpbench.c), and whether assure runs with its journal off
// (ASSURE_JOURNAL=off: threads under PTRACE_CONT inside rescue points too,
// nothing recorded).
type load struct {
	body       string // "plain", "syscalls", "journaled", "floor" (native only)
	idle       int    // threads waiting in read() all along
	journalOff bool
	slowPath   bool // ASSURE_FASTPATH=0: every entry stops for the supervisor
}

var (
	plain = load{body: "plain"}
	// floor is plain with, before each call, the kernel's part of an
	// in-process checkpoint done by the program itself.
	floor = load{body: "floor"}
	slow  = load{body: "plain", slowPath: true}
)

// captureVariants are the rescue-point bodies the capture cost is measured
// with: the journal's cost is nothing for a body without system calls, a
// syscall stop pair for each call it does not record, and the records for
// those it does; idle threads cost their syscall stops around each
// checkpoint.
var captureVariants = []struct {
	what string
	load load
}{
	{"two stores (as above)", plain},
	{"+ 4 × getppid() (not recorded)", load{body: "syscalls"}},
	{"+ sigaction, close(dup(fd)), lseek (recorded)", load{body: "journaled"}},
	{"two stores, 4 idle threads in read()", load{body: "plain", idle: 4}},
}

type captureRow struct {
	what             string
	native, off, on  float64 // ns per call (medians)
	nNative, nAssure int
}

// capture measures the cost of the journal side by side: each variant
// natively, under assure with the journal off and on, interleaved over
// rounds, at one heap size.
func (b *bench) capture(ctx context.Context, mem, rounds int, target time.Duration) ([]captureRow, error) {
	var rows []captureRow
	for _, v := range captureVariants {
		row := captureRow{what: v.what}
		cal, err := b.runNative(ctx, mem, 100_000, 0, v.load)
		if err != nil {
			return nil, fmt.Errorf("capture calibration (native, %s): %w", v.what, err)
		}
		row.nNative = callsFor(target, cal.nsPerCall)
		on := v.load
		cal, err = b.runAssure(ctx, mem, 100, 0, on)
		if err != nil {
			return nil, fmt.Errorf("capture calibration (assure, %s): %w", v.what, err)
		}
		row.nAssure = callsFor(target, cal.nsPerCall)
		off := v.load
		off.journalOff = true
		var native, offs, ons []float64
		for round := 0; round < rounds; round++ {
			r, err := b.runNative(ctx, mem, row.nNative, 0, v.load)
			if err != nil {
				return nil, err
			}
			native = append(native, r.nsPerCall)
			order := []load{off, on}
			if round%2 == 1 {
				order = []load{on, off}
			}
			for _, l := range order {
				r, err := b.runAssure(ctx, mem, row.nAssure, 0, l)
				if err != nil {
					return nil, err
				}
				if l.journalOff {
					offs = append(offs, r.nsPerCall)
				} else {
					ons = append(ons, r.nsPerCall)
				}
			}
		}
		row.native, row.off, row.on = median(native), median(offs), median(ons)
		rows = append(rows, row)
		b.log("capture %-48s native %.4g µs, journal off %.4g µs, on %.4g µs per call", v.what, row.native/1000, row.off/1000, row.on/1000)
	}
	return rows, nil
}

func captureMarkdown(rows []captureRow, mem, rounds int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "\nCost of the journal (%d MiB, µs per call of `rp_call` under `assure run`, journal off with `ASSURE_JOURNAL=off`):\n\n", mem)
	s.WriteString("| rescue point body | native | journal off | journal on | on − off |\n")
	s.WriteString("|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		d := "—"
		if !math.IsNaN(r.on) && !math.IsNaN(r.off) {
			d = num((r.on - r.off) / 1000)
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", r.what, num(r.native/1000), num(r.off/1000), num(r.on/1000), d)
	}
	fmt.Fprintf(&s, "\n- Median of %d round%s, journal off and on interleaved; figures below about ±20%% are noise on these machines.\n", rounds, plural(rounds))
	return s.String()
}
