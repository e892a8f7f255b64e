package events

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// MaxFileSize bounds an events file: past it the file is rotated (File),
// so a supervisor's events take at most twice this on disk.
const MaxFileSize = 4 << 20

// File is an events file bounded in size. When a line would take it past
// its limit, it is renamed to PATH.1 (replacing the older one) and a new
// PATH is started: readers read PATH.1, then PATH (ReadFiles).
type File struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

// OpenFile opens (appending) or creates the events file at path, rotated
// at max bytes (MaxFileSize when max is 0).
func OpenFile(path string, max int64) (*File, error) {
	if max <= 0 {
		max = MaxFileSize
	}
	ef := &File{path: path, max: max}
	if err := ef.open(); err != nil {
		return nil, err
	}
	return ef, nil
}

func (ef *File) open() error {
	f, err := os.OpenFile(ef.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("events file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("events file: %w", err)
	}
	ef.f, ef.size = f, st.Size()
	return nil
}

// Rotated is the name the previous part of an events file has.
func Rotated(path string) string { return path + ".1" }

// Write appends p, which holds whole lines, rotating the file first when
// p would take it past its limit.
func (ef *File) Write(p []byte) (int, error) {
	ef.mu.Lock()
	defer ef.mu.Unlock()
	if ef.f == nil {
		return 0, os.ErrClosed
	}
	if ef.size > 0 && ef.size+int64(len(p)) > ef.max {
		if err := ef.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := ef.f.Write(p)
	ef.size += int64(n)
	return n, err
}

func (ef *File) rotate() error {
	ef.f.Close()
	ef.f = nil
	if err := os.Rename(ef.path, Rotated(ef.path)); err != nil {
		return fmt.Errorf("rotate events file: %w", err)
	}
	return ef.open()
}

// Close closes the file.
func (ef *File) Close() error {
	ef.mu.Lock()
	defer ef.mu.Unlock()
	if ef.f == nil {
		return nil
	}
	err := ef.f.Close()
	ef.f = nil
	return err
}

// ReadFiles returns the contents of an events file, its rotated part
// first. It fails only when neither exists.
func ReadFiles(path string) ([]byte, error) {
	old, oerr := os.ReadFile(Rotated(path))
	cur, err := os.ReadFile(path)
	if err != nil && oerr != nil {
		return nil, err
	}
	if oerr != nil && !errors.Is(oerr, os.ErrNotExist) {
		return nil, oerr
	}
	return append(old, cur...), nil
}

// Journal is the name of the note a supervisor leaves beside its events
// file while it does something that must not be left half done (a
// rollback): if the note is still there when the file is opened again,
// the supervisor died in the middle of it.
func Journal(path string) string { return path + ".inflight" }

// Begin leaves the note what; the function returned removes it.
func (ef *File) Begin(what string) func() {
	j := Journal(ef.path)
	if err := os.WriteFile(j, []byte(what), 0o644); err != nil {
		return func() {}
	}
	return func() { os.Remove(j) }
}

// TakeJournal returns the note a supervisor that died left beside the
// events file at path, and removes it; "" when there is none.
func TakeJournal(path string) string {
	j := Journal(path)
	data, err := os.ReadFile(j)
	if err != nil {
		return ""
	}
	os.Remove(j)
	if len(data) > 1024 {
		data = data[:1024]
	}
	return string(data)
}

// Remove removes an events file with its rotated part and its journal:
// for a new task, which must not inherit the events of an old one.
func Remove(path string) {
	for _, p := range []string{path, Rotated(path), Journal(path)} {
		os.Remove(p)
	}
}
