package candidates

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// Options tune Find. The zero value is ready to use.
type Options struct {
	// ExternalCallers is evidence from other files' calls through their
	// PLT or GOT, by symbol name: the Imports of the reports of the
	// programs that load this library (see MergeImports). It is added to
	// the evidence of this file's function of that name. Without it a
	// library function called only from the main program has no direct
	// callers.
	ExternalCallers map[string]*CallerEvidence
	// MinSize is the smallest function considered, in bytes; 0 means
	// DefaultMinSize.
	MinSize uint64
	// MaxCode bounds the bytes of executable sections read; 0 means
	// DefaultMaxCode.
	MaxCode int64
	// MaxTime bounds the decoding; functions not reached by then are
	// counted as ReasonNotExamined. 0 means DefaultMaxTime.
	MaxTime time.Duration
}

// Defaults for Options.
const (
	DefaultMinSize = 8         // mov eax,-1; ret is 6 bytes and cannot fault
	DefaultMaxCode = 512 << 20 // far above any real program's code
	DefaultMaxTime = 30 * time.Second
)

func (o Options) withDefaults() Options {
	if o.MinSize == 0 {
		o.MinSize = DefaultMinSize
	}
	if o.MaxCode <= 0 {
		o.MaxCode = DefaultMaxCode
	}
	if o.MaxTime <= 0 {
		o.MaxTime = DefaultMaxTime
	}
	return o
}

// Find analyses the ELF file at path. Only regular files are read, as
// elfsym.Open does, so that a FIFO planted in an image cannot block it.
func Find(path string, opts Options) (*Report, error) {
	sym, err := elfsym.Open(path)
	if err != nil {
		return nil, fmt.Errorf("candidates: %w", err)
	}
	defer sym.Close()
	fd, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("candidates: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("candidates: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("candidates: %s: not a regular file", path)
	}
	return Analyze(sym, fd, st.Size(), opts)
}

// Analyze is Find for a file already opened with elfsym (the supervisor
// keeps them): sym gives the functions, r (size bytes) the same file's
// code and relocations. It never panics on malformed input: what cannot
// be read is skipped and counted in the report.
func Analyze(sym *elfsym.File, r io.ReaderAt, size int64, opts Options) (rep *Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			rep, err = nil, fmt.Errorf("candidates: %s: internal error on malformed input: %v", sym.Name(), p)
		}
	}()
	start := time.Now()
	opts = opts.withDefaults()
	img, err := loadImage(r, size, opts.MaxCode)
	if err != nil {
		return nil, fmt.Errorf("candidates: %s: %w", sym.Name(), err)
	}
	a := newAnalysis(sym, img, opts)
	a.run(start.Add(opts.MaxTime))
	rep = a.report()
	rep.Stats.Elapsed = time.Since(start)
	return rep, nil
}
