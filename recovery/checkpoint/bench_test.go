package checkpoint_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/checkpoint"
)

// BenchmarkCheckpoint measures the engine on a target with 4 MiB and
// 64 MiB of touched memory, 16 pages written between operations: each
// iteration writes 16 pages, takes a checkpoint (which copies them),
// writes 16 other pages and rolls back (which restores those). The
// target stays stopped throughout; the writes go through /proc/PID/mem
// and are not timed. Reported: ckpt-ns/op and rollback-ns/op (means),
// the best of each (the machine's figures in DESIGN.md are bests), and
// the pages each copied.
func BenchmarkCheckpoint(b *testing.B) {
	for _, size := range []int{4 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			tg := startTarget(b)
			region := tg.mmap(uint64(size), 0)
			tg.write(region, 1, size)
			tg.stop()
			maps := tg.maps()
			// The first checkpoint arms everything and copies it all.
			if _, err := tg.d.Checkpoint(1, maps); err != nil {
				b.Fatal(err)
			}
			tg.d.Commit(1)

			pages := uint64(size / pg)
			next := uint64(0)
			touch := func(v byte) {
				for i := 0; i < 16; i++ {
					// Spread over the region: a prime stride.
					next = (next + 97) % pages
					tg.writeMem(region+next*pg, []byte{v})
				}
			}
			var ckpt, rb time.Duration
			ckptMin, rbMin := time.Hour, time.Hour
			var ckptPages, rbPages int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := checkpoint.ID(i + 2)
				touch(byte(i))
				t0 := time.Now()
				st, err := tg.d.Checkpoint(id, maps)
				el := time.Since(t0)
				ckpt += el
				ckptMin = min(ckptMin, el)
				if err != nil {
					b.Fatal(err)
				}
				ckptPages += st.Pages
				touch(byte(i + 1))
				t0 = time.Now()
				st, err = tg.d.Rollback(id, false)
				el = time.Since(t0)
				rb += el
				rbMin = min(rbMin, el)
				if err != nil {
					b.Fatal(err)
				}
				rbPages += st.Pages
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(ckpt.Nanoseconds())/n, "ckpt-ns/op")
			b.ReportMetric(float64(rb.Nanoseconds())/n, "rollback-ns/op")
			b.ReportMetric(float64(ckptMin.Nanoseconds()), "ckpt-best-ns")
			b.ReportMetric(float64(rbMin.Nanoseconds()), "rollback-best-ns")
			b.ReportMetric(float64(ckptPages)/n, "ckpt-pages/op")
			b.ReportMetric(float64(rbPages)/n, "rollback-pages/op")
			tg.cont()
		})
	}
}
