package unwind

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/procfs"
)

// Opener opens the file behind a mapping of the target.
type Opener func(m procfs.Mapping) (*os.File, error)

// MapFilesOpener opens /proc/PID/map_files/START-END: exactly the file
// mapped, whatever the target's mount namespace or a later rename (it
// needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, which the supervisor
// has). Without them it falls back on the path in the target's root,
// accepted only if its inode is the mapping's.
func MapFilesOpener(pid int) Opener {
	return func(m procfs.Mapping) (*os.File, error) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
		if err == nil || !errors.Is(err, os.ErrPermission) {
			return f, err
		}
		return openInRoot(pid, m)
	}
}

func openInRoot(pid int, m procfs.Mapping) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/root%s", pid, m.Path))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != m.Inode {
		f.Close()
		return nil, fmt.Errorf("%s: not the mapped file (replaced since it was mapped?)", m.Path)
	}
	return f, nil
}

// maxVDSO bounds the vDSO image read from the target (it is two pages).
const maxVDSO = 1 << 20

// Cache keeps parsed modules across walks and processes, by device,
// inode and path: parsing libc's tables takes milliseconds, a walk
// microseconds. Failures are kept too. Safe for concurrent use.
type Cache struct {
	mu   sync.Mutex
	mods map[cacheKey]cached
}

type cacheKey struct {
	major, minor uint32
	inode, size  uint64 // size: for the vDSO, which has no inode
	path         string
}

type cached struct {
	mod *Module
	err error
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{mods: make(map[cacheKey]cached)} }

func (c *Cache) get(m procfs.Mapping, load func() (*Module, error)) (*Module, error) {
	if c == nil {
		return load()
	}
	key := cacheKey{major: m.Major, minor: m.Minor, inode: m.Inode, path: m.Path}
	if m.Inode == 0 {
		key.size = m.Size()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.mods[key]; ok {
		return e.mod, e.err
	}
	mod, err := load()
	c.mods[key] = cached{mod, err}
	return mod, err
}

// LoadModules builds the module set of a process from its maps: every
// executable mapping of a file, opened with open, and the vDSO, read with
// mem (nil: no vDSO). cache may be nil. A mapping whose file cannot be
// opened or parsed is left out and its error kept (Modules.Errors): the
// walk stops at a frame in it.
func LoadModules(maps []procfs.Mapping, open Opener, mem ReadMem, cache *Cache) *Modules {
	ms := &Modules{}
	for _, m := range maps {
		if !m.Executable() {
			continue
		}
		var load func() (*Module, error)
		switch {
		case m.Inode != 0 && m.Path != "":
			load = func() (*Module, error) { return openModule(m, open) }
		case m.Path == "[vdso]" && mem != nil:
			load = func() (*Module, error) { return readVDSO(m, mem) }
		default:
			continue // anonymous code (a JIT), [vsyscall]: no tables
		}
		mod, err := cache.get(m, load)
		if err == nil {
			err = ms.addMapping(m, mod)
		}
		if err != nil {
			ms.errs = append(ms.errs, fmt.Errorf("mapping 0x%x-0x%x (%s): %w", m.Start, m.End, m.Path, err))
		}
	}
	return ms
}

func openModule(m procfs.Mapping, open Opener) (*Module, error) {
	f, err := open(m)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", m.Path)
	}
	return parseModule(f, st.Size(), m.Path)
}

func readVDSO(m procfs.Mapping, mem ReadMem) (*Module, error) {
	if m.Size() > maxVDSO {
		return nil, fmt.Errorf("vDSO of %d bytes is larger than %d", m.Size(), maxVDSO)
	}
	img := make([]byte, m.Size())
	if err := mem(m.Start, img); err != nil {
		return nil, fmt.Errorf("read the vDSO: %w", err)
	}
	return parseModule(bytes.NewReader(img), int64(len(img)), m.Path)
}

func parseModule(r io.ReaderAt, size int64, path string) (*Module, error) {
	f, err := elfsym.NewFile(r, size, path)
	if err != nil {
		return nil, err
	}
	cfi, err := elfsym.NewCFI(r, size, path)
	if err != nil {
		return nil, err
	}
	return &Module{Path: path, File: f, CFI: cfi}, nil
}

// addMapping adds an executable mapping of mod, finding its load bias
// from an address the mapping holds.
func (ms *Modules) addMapping(m procfs.Mapping, mod *Module) error {
	// The mapping starts on a page boundary, its segment may not: probe
	// the start, the middle and the end of the mapping.
	for _, rel := range []uint64{0, m.Size() / 2, m.Size() - 1} {
		vaddr, ok := mod.File.VaddrOfOffset(m.Offset + rel)
		if ok && mod.File.IsExecAddr(vaddr) {
			ms.Add(m.Start, m.End, m.Start+rel-vaddr, mod)
			return nil
		}
	}
	return fmt.Errorf("%s: no executable segment at file offset 0x%x", m.Path, m.Offset)
}
