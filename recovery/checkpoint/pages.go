package checkpoint

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// iovMax is the kernel's limit on iovecs per process_vm_readv call.
const iovMax = 1024

var zeroPage = make([]byte, PageSize)

// transferPages moves whole pages between the tracee and bufs in batches with
// process_vm_readv/writev, one remote iovec per run of adjacent pages.
// Pages those calls cannot reach (protection changed under us) go through
// /proc/PID/mem, which the kernel lets a tracer write regardless. With
// lenient, pages that still fail are returned instead of an error.
func transferPages(pid int, mem *os.File, pages []uint64, bufs [][]byte, write, lenient bool) (map[uint64]bool, error) {
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
			n, err = unix.ProcessVMWritev(pid, local, remote, 0)
		} else {
			n, err = unix.ProcessVMReadv(pid, local, remote, 0)
		}
		if err != nil || n != (j-i)*PageSize {
			bad, err := slowTransfer(pid, mem, pages[i:j], bufs[i:j], write, lenient)
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

func slowTransfer(pid int, mem *os.File, pages []uint64, bufs [][]byte, write, lenient bool) ([]uint64, error) {
	var bad []uint64
	for i, p := range pages {
		var err error
		if write {
			_, err = mem.WriteAt(bufs[i], int64(p))
		} else {
			_, err = mem.ReadAt(bufs[i], int64(p))
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
			return nil, fmt.Errorf("%s page %#x of %d: %w", op, p, pid, err)
		}
	}
	return bad, nil
}

type span struct{ start, end uint64 }

// debugRegister reports mappings that cannot be registered (ASSURE_DEBUG).
var debugRegister = os.Getenv("ASSURE_DEBUG") != ""

func overlaps(spans []span, start, end uint64) bool {
	for _, s := range spans {
		if s.start < end && start < s.end {
			return true
		}
	}
	return false
}
