package locks

import (
	"math/rand"
	"testing"
)

// BenchmarkMatch measures the word scan alone, on 1 MiB of random bytes
// and of zeros, the commonest content of memory.
func BenchmarkMatch(b *testing.B) {
	random := make([]byte, chunkSize+overlap)
	rand.New(rand.NewSource(1)).Read(random)
	zeros := make([]byte, chunkSize+overlap)
	for _, c := range []struct {
		name string
		data []byte
		self uint64
	}{{"random", random, 0x7f0000001000}, {"zeros", zeros, 0}, {"zeros-fsbase", zeros, 0x7f0000001000}} {
		b.Run(c.name, func(b *testing.B) { benchMatch(b, c.data, c.self) })
	}
}

func benchMatch(b *testing.B, data []byte, self uint64) {
	s := &scanner{thread: thread{tid: 12345, threads: 8}, self: self, stats: &Stats{}}
	b.SetBytes(chunkSize)
	for i := 0; i < b.N; i++ {
		s.match(0x10000000, data, 0x10000000+chunkSize)
	}
}
