package checkpoint

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd and PAGEMAP_SCAN definitions from linux/userfaultfd.h and
// linux/fs.h. The headers on these machines predate the kernel, and
// x/sys/unix does not carry them, so they are written out here.
const (
	uffdAPI = 0xaa

	// Flags of the userfaultfd(2) system call.
	UffdUserModeOnly = 1
	UffdFlags        = unix.O_CLOEXEC | unix.O_NONBLOCK | UffdUserModeOnly

	featureWPHugetlbfsShmem = 1 << 12
	featureWPUnpopulated    = 1 << 13
	featureWPAsync          = 1 << 15

	registerModeWP = 1 << 1

	// _IOWR(0xAA, nr, size)
	uffdioAPI      = 0xc018aa3f
	uffdioRegister = 0xc020aa00

	// _IOWR('f', 16, struct pm_scan_arg)
	pagemapScan = 0xc0606610

	pmScanWPMatching = 1 << 0

	pageIsWPAllowed = 1 << 0
	pageIsWritten   = 1 << 1
	pageIsFile      = 1 << 2
	pageIsPresent   = 1 << 3
	pageIsSwapped   = 1 << 4
	pageIsPFNZero   = 1 << 5
)

type uffdioAPIArg struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

type uffdioRegisterArg struct {
	Start, Len uint64
	Mode       uint64
	Ioctls     uint64
}

type pmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}

type pageRegion struct {
	Start, End, Categories uint64
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// enableAsyncWP negotiates asynchronous write-protect on a fresh
// userfaultfd: writes to protected pages resolve in the kernel, marking
// the page written, and nobody has to read fault messages.
func enableAsyncWP(uffd int) error {
	arg := uffdioAPIArg{API: uffdAPI, Features: featureWPAsync | featureWPUnpopulated | featureWPHugetlbfsShmem}
	if _, err := ioctl(uffd, uffdioAPI, unsafe.Pointer(&arg)); err != nil {
		// Shared-memory support is optional on some kernels; retry without.
		arg = uffdioAPIArg{API: uffdAPI, Features: featureWPAsync | featureWPUnpopulated}
		if _, err2 := ioctl(uffd, uffdioAPI, unsafe.Pointer(&arg)); err2 != nil {
			return fmt.Errorf("UFFDIO_API with async write-protect: %w", err)
		}
	}
	return nil
}

func registerWP(uffd int, start, end uint64) error {
	arg := uffdioRegisterArg{Start: start, Len: end - start, Mode: registerModeWP}
	_, err := ioctl(uffd, uffdioRegister, unsafe.Pointer(&arg))
	return err
}

// scanner runs PAGEMAP_SCAN over one process.
type scanner struct {
	fd  int
	vec []pageRegion
}

// addressSpaceEnd is TASK_SIZE_MAX on x86-64 (4-level paging): PAGEMAP_SCAN
// rejects ranges past it.
const addressSpaceEnd = 1<<47 - 4096

// scan calls fn for each run of pages in [start, end) matching the
// query; with pmScanWPMatching, the pages reported written are
// write-protected again in the same walk.
func (s *scanner) scan(start, end, flags, inverted, mask, ret uint64, fn func(start, end uint64)) error {
	return s.scanAny(start, end, flags, inverted, mask, 0, ret, fn)
}

// scanAny is scan with an any-of category mask as well.
func (s *scanner) scanAny(start, end, flags, inverted, mask, anyof, ret uint64, fn func(start, end uint64)) error {
	if s.vec == nil {
		s.vec = make([]pageRegion, 512)
	}
	for start < end {
		arg := pmScanArg{
			Size:              uint64(unsafe.Sizeof(pmScanArg{})),
			Flags:             flags,
			Start:             start,
			End:               end,
			Vec:               uint64(uintptr(unsafe.Pointer(&s.vec[0]))),
			VecLen:            uint64(len(s.vec)),
			CategoryInverted:  inverted,
			CategoryMask:      mask,
			CategoryAnyofMask: anyof,
			ReturnMask:        ret,
		}
		n, err := ioctl(s.fd, pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return fmt.Errorf("PAGEMAP_SCAN: %w", err)
		}
		for _, r := range s.vec[:n] {
			fn(r.Start, r.End)
		}
		if arg.WalkEnd <= start || arg.WalkEnd >= end {
			return nil
		}
		start = arg.WalkEnd
	}
	return nil
}

// written reports the pages written since the last call and protects
// them again, atomically per page.
func (s *scanner) written(fn func(start, end uint64)) error {
	return s.scan(0, addressSpaceEnd, pmScanWPMatching, 0, pageIsWritten, pageIsWritten, fn)
}

// unprotectable reports the ranges of [start, end) in which
// write-protect is not armed: memory mapped since the last registration
// (or never registrable). Armed mappings are skipped whole, so a scan
// limited to writable mappings costs next to nothing when all are armed.
//
// The kernel walks a mapping page by page when it is not skipped whole,
// which a query for the unarmed pages of a large new mapping was (some
// 5 ms for 1 GiB, with the process held). Armed and unarmed parts are
// whole mappings (registration splits them), so each run is found with
// two queries of one page: the first unarmed page (armed mappings are
// skipped whole) and the first armed page after it (unarmed ones are).
func (s *scanner) unprotectable(start, end uint64, fn func(start, end uint64)) error {
	for start < end {
		a, ok, err := s.first(start, end, pageIsWPAllowed)
		if err != nil || !ok {
			return err
		}
		b, ok, err := s.first(a, end, 0)
		if err != nil {
			return err
		}
		if !ok {
			b = end
		}
		if a < start || b <= a {
			// Not what two queries of a stopped layout return; never
			// loop on it.
			return fmt.Errorf("PAGEMAP_SCAN: unarmed page %#x, armed page %#x, after %#x", a, b, start)
		}
		fn(a, b)
		start = b
	}
	return nil
}

// first returns the first page of [start, end) whose write-protect state
// is armed (inverted 0) or not (inverted pageIsWPAllowed).
func (s *scanner) first(start, end, inverted uint64) (uint64, bool, error) {
	// The vector is the scanner's heap buffer, as in scanAny: the kernel
	// writes it through an address the compiler does not see as a
	// pointer, so a local array could be read back as the zeros it was
	// declared with.
	if s.vec == nil {
		s.vec = make([]pageRegion, 512)
	}
	s.vec[0] = pageRegion{}
	arg := pmScanArg{
		Size: uint64(unsafe.Sizeof(pmScanArg{})), Start: start, End: end,
		Vec: uint64(uintptr(unsafe.Pointer(&s.vec[0]))), VecLen: 1, MaxPages: 1,
		CategoryInverted: inverted, CategoryMask: pageIsWPAllowed, ReturnMask: pageIsWPAllowed,
	}
	n, err := ioctl(s.fd, pagemapScan, unsafe.Pointer(&arg))
	if err != nil {
		return 0, false, fmt.Errorf("PAGEMAP_SCAN: %w", err)
	}
	if n == 0 {
		return 0, false, nil
	}
	return s.vec[0].Start, true, nil
}

// populated reports the pages of [start, end) that hold contents (present
// or swapped out).
func (s *scanner) populated(start, end uint64, fn func(start, end uint64)) error {
	return s.scanAny(start, end, 0, 0, 0, pageIsPresent|pageIsSwapped, pageIsPresent|pageIsSwapped, fn)
}

// OwnPages calls fn for each run of pages in [start, end) of the process
// whose pagemap is open as pagemapFD that hold contents of the process's
// own: present or swapped out, neither a page of the file or shared
// memory mapped there nor the shared zero page. These are what a private
// mapping loses when it is unmapped (anonymous memory, and the pages of a
// private file mapping that were written). Any mapping can be scanned:
// no userfaultfd is needed to ask.
func OwnPages(pagemapFD int, start, end uint64, fn func(start, end uint64)) error {
	s := scanner{fd: pagemapFD}
	const not = pageIsFile | pageIsPFNZero
	return s.scanAny(start, end, 0, not, not, pageIsPresent|pageIsSwapped, pageIsPresent|pageIsSwapped, fn)
}
