package checkpoint

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// iovMax is the kernel's limit on iovecs per process_vm_readv call.
const iovMax = 1024

var zeroPage = make([]byte, PageSize)

// readPages copies pages (sorted) from the process into the shadow. With
// fresh, new buffers are used even where the shadow has one, because an
// undo log still refers to the old buffer.
func (d *Dirty) readPages(pages []uint64, fresh bool) error {
	return d.readInto(pages, fresh, false)
}

// readPagesLenient is readPages for a whole new mapping: pages that cannot
// be read (past the end of the file) are left out of the shadow.
func (d *Dirty) readPagesLenient(pages []uint64) error {
	return d.readInto(pages, true, true)
}

func (d *Dirty) readInto(pages []uint64, fresh, lenient bool) error {
	if len(pages) == 0 {
		return nil
	}
	var slab []byte
	bufs := make([][]byte, len(pages))
	for i, p := range pages {
		if b, ok := d.shadow[p]; ok && !fresh && b != nil {
			bufs[i] = b
			continue
		}
		if len(slab) == 0 {
			slab = make([]byte, PageSize*min(len(pages)-i, 4096))
		}
		bufs[i], slab = slab[:PageSize:PageSize], slab[PageSize:]
	}
	failed, err := d.transfer(pages, bufs, false, lenient)
	if err != nil {
		return err
	}
	for i, p := range pages {
		if failed[p] {
			d.forget(p)
			continue
		}
		d.shadow[p] = bufs[i]
	}
	return nil
}

// writePages writes the given contents (nil: zero page) into the process,
// skipping pages not mapped writable. A page that is not writable in the
// layout rolled back to cannot have changed since the checkpoint but
// through a call that the supervisor's journal restores (an mprotect, a
// munmap); the shadow may lack it, or hold older contents, and must not
// overwrite it.
func (d *Dirty) writePages(want map[uint64][]byte) error {
	pages := make([]uint64, 0, len(want))
	for p := range want {
		if d.isWritable(p) {
			pages = append(pages, p)
		}
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	bufs := make([][]byte, len(pages))
	for i, p := range pages {
		if bufs[i] = want[p]; bufs[i] == nil {
			bufs[i] = zeroPage
		}
	}
	// A page with no contents recorded that cannot be written either lies
	// past the end of a mapped file: nothing to restore there.
	failed, err := d.transfer(pages, bufs, true, true)
	if err != nil {
		return err
	}
	for p := range failed {
		if want[p] != nil {
			return fmt.Errorf("write page %#x of %d: not writable", p, d.pid)
		}
	}
	return nil
}

// transfer moves whole pages between the tracee and bufs in batches with
// process_vm_readv/writev, one remote iovec per run of adjacent pages.
// Pages those calls cannot reach (protection changed under us) go through
// /proc/PID/mem, which the kernel lets a tracer write regardless. With
// lenient, pages that still fail are returned instead of an error.
func (d *Dirty) transfer(pages []uint64, bufs [][]byte, write, lenient bool) (map[uint64]bool, error) {
	var failed map[uint64]bool
	for i := 0; i < len(pages); {
		local := make([]unix.Iovec, 0, iovMax)
		var remote []unix.RemoteIovec
		j := i
		for ; j < len(pages) && len(local) < iovMax; j++ {
			local = append(local, unix.Iovec{Base: &bufs[j][0], Len: PageSize})
			if n := len(remote); n > 0 && uint64(remote[n-1].Base)+uint64(remote[n-1].Len) == pages[j] {
				remote[n-1].Len += PageSize
			} else if n < iovMax {
				remote = append(remote, unix.RemoteIovec{Base: uintptr(pages[j]), Len: PageSize})
			} else {
				break
			}
		}
		var n int
		var err error
		if write {
			n, err = unix.ProcessVMWritev(d.pid, local, remote, 0)
		} else {
			n, err = unix.ProcessVMReadv(d.pid, local, remote, 0)
		}
		if err != nil || n != (j-i)*PageSize {
			bad, err := d.slowTransfer(pages[i:j], bufs[i:j], write, lenient)
			if err != nil {
				return nil, err
			}
			for _, p := range bad {
				if failed == nil {
					failed = make(map[uint64]bool)
				}
				failed[p] = true
			}
		}
		i = j
	}
	return failed, nil
}

func (d *Dirty) slowTransfer(pages []uint64, bufs [][]byte, write, lenient bool) ([]uint64, error) {
	var bad []uint64
	for i, p := range pages {
		var err error
		if write {
			_, err = d.mem.WriteAt(bufs[i], int64(p))
		} else {
			_, err = d.mem.ReadAt(bufs[i], int64(p))
		}
		if err != nil {
			if lenient {
				bad = append(bad, p)
				continue
			}
			op := "read"
			if write {
				op = "write"
			}
			return nil, fmt.Errorf("%s page %#x of %d: %w", op, p, d.pid, err)
		}
	}
	return bad, nil
}

func sameLayout(a, b []procfs.Mapping) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Start != b[i].Start || a[i].End != b[i].End || a[i].Inode != b[i].Inode || a[i].Perms != b[i].Perms {
			return false
		}
	}
	return true
}

func overlaps(spans []span, start, end uint64) bool {
	for _, s := range spans {
		if s.start < end && start < s.end {
			return true
		}
	}
	return false
}
