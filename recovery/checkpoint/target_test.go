package checkpoint_test

// The harness shared by the tests of this package: a real target process
// (testdata/target.c, built with gcc) with a userfaultfd it created
// itself, taken with pidfd_getfd, and helpers to drive it, stop it, and
// compare its memory with snapshots.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/procfs"
)

const pg = checkpoint.PageSize

// Region sizes, as in testdata/target.c.
const (
	heapLen     = 16 * pg
	anonPages   = 16
	sharedPages = 8
	filePages   = 8
	unpopPages  = 16
)

// waitLimit bounds every wait on the target.
const waitLimit = 10 * time.Second

// userLimit is the end of the user address space (4-level paging); the
// [vsyscall] page above it is not the process's memory.
const userLimit = 1 << 47

var (
	buildOnce sync.Once
	buildDir  string
	targetBin string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// requireTarget skips unless the tests can run here and returns the path
// of the built target program.
func requireTarget(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: pidfd_getfd of another process and /proc/PID/mem")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found")
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		var major, minor int
		fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
		if major < 6 || major == 6 && minor < 7 {
			t.Skipf("kernel %d.%d has no PAGEMAP_SCAN (needs 6.7)", major, minor)
		}
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "checkpoint-target-"); buildErr != nil {
			return
		}
		targetBin = filepath.Join(buildDir, "target")
		out, err := exec.Command("gcc", "-O2", "-Wall", "-o", targetBin, filepath.Join("testdata", "target.c")).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("gcc testdata/target.c: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return targetBin
}

// target is one running instance of testdata/target.c with a Mirror
// tracker over it.
type target struct {
	t        testing.TB
	pid      int
	cmd      *exec.Cmd
	in, out  *os.File
	rd       *bufio.Reader
	mem      *os.File
	pagemap  *os.File
	peekFD   int
	d        *checkpoint.Mirror
	dir      string
	dataFile string
	stderr   string
	stopped  bool
	exited   bool

	heap, anon, shared, file, unpop uint64
}

func startTarget(t testing.TB) *target {
	t.Helper()
	bin := requireTarget(t)
	dir := t.TempDir()
	tg := &target{t: t, dir: dir, dataFile: filepath.Join(dir, "data"), stderr: filepath.Join(dir, "stderr"), peekFD: -1}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errF, err := os.Create(tg.stderr)
	if err != nil {
		t.Fatal(err)
	}
	tg.cmd = exec.Command(bin, tg.dataFile)
	tg.cmd.Stdin, tg.cmd.Stdout, tg.cmd.Stderr = inR, outW, errF
	err = tg.cmd.Start()
	inR.Close()
	outW.Close()
	errF.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		t.Fatal(err)
	}
	tg.pid = tg.cmd.Process.Pid
	tg.in, tg.out, tg.rd = inW, outR, bufio.NewReader(outR)
	t.Cleanup(tg.kill)

	// heap=ADDR anon=ADDR shared=ADDR file=ADDR unpop=ADDR uffd=FD
	uffdNum := -1
	for _, f := range strings.Fields(tg.readLine()) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			t.Fatalf("target header field %q: %v", f, err)
		}
		switch k {
		case "heap":
			tg.heap = n
		case "anon":
			tg.anon = n
		case "shared":
			tg.shared = n
		case "file":
			tg.file = n
		case "unpop":
			tg.unpop = n
		case "uffd":
			uffdNum = int(n)
		}
	}
	if tg.heap == 0 || tg.anon == 0 || tg.shared == 0 || tg.file == 0 || tg.unpop == 0 || uffdNum < 0 {
		t.Fatalf("incomplete target header")
	}

	if tg.mem, err = os.OpenFile(fmt.Sprintf("/proc/%d/mem", tg.pid), os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if tg.pagemap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", tg.pid)); err != nil {
		t.Fatal(err)
	}
	if tg.peekFD, err = unix.Open(fmt.Sprintf("/proc/%d/pagemap", tg.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(tg.pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	uffd, err := unix.PidfdGetfd(pidfd, uffdNum, 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatalf("pidfd_getfd of the target's userfaultfd: %v", err)
	}
	shadow, err := unix.MemfdCreate("assure-test-shadow", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if tg.d, err = checkpoint.NewMirror(tg.pid, uffd, shadow); err != nil {
		t.Fatalf("NewMirror: %v", err)
	}
	return tg
}

// kill ends the target and releases everything; it is a t.Cleanup.
func (tg *target) kill() {
	if tg.d != nil {
		tg.d.Close()
		tg.d = nil
	}
	if !tg.exited {
		unix.Kill(tg.pid, unix.SIGKILL)
		done := make(chan struct{})
		go func() { tg.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitLimit):
			tg.t.Errorf("target %d did not exit after SIGKILL", tg.pid)
		}
		tg.exited = true
	}
	for _, f := range []*os.File{tg.in, tg.out, tg.mem, tg.pagemap} {
		if f != nil {
			f.Close()
		}
	}
	if tg.peekFD >= 0 {
		unix.Close(tg.peekFD)
		tg.peekFD = -1
	}
}

func (tg *target) fatalf(format string, args ...any) {
	tg.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if b, err := os.ReadFile(tg.stderr); err == nil && len(b) > 0 {
		msg += "\ntarget stderr:\n" + string(b)
	}
	tg.t.Fatal(msg)
}

func (tg *target) readLine() string {
	tg.t.Helper()
	tg.out.SetReadDeadline(time.Now().Add(waitLimit))
	s, err := tg.rd.ReadString('\n')
	if err != nil {
		tg.fatalf("target %d: reading its output: %v", tg.pid, err)
	}
	return strings.TrimSuffix(s, "\n")
}

// do sends one command and returns what follows "ok" in the reply.
func (tg *target) do(format string, args ...any) string {
	tg.t.Helper()
	if tg.stopped {
		tg.t.Fatal("command sent to a stopped target")
	}
	line := fmt.Sprintf(format, args...)
	tg.in.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := tg.in.WriteString(line + "\n"); err != nil {
		tg.fatalf("target %d: sending %q: %v", tg.pid, line, err)
	}
	resp := tg.readLine()
	if resp != "ok" && !strings.HasPrefix(resp, "ok ") {
		tg.fatalf("target %d: %q: %q", tg.pid, line, resp)
	}
	return strings.TrimSpace(strings.TrimPrefix(resp, "ok"))
}

func (tg *target) write(addr uint64, b byte, n int) { tg.t.Helper(); tg.do("W %#x %d %d", addr, b, n) }
func (tg *target) munmap(addr, n uint64)            { tg.t.Helper(); tg.do("U %#x %d", addr, n) }
func (tg *target) madvise(addr, n uint64, advice int) {
	tg.t.Helper()
	tg.do("D %#x %d %d", addr, n, advice)
}

// pread has the kernel write into the target: pread(datafile, addr, n, off).
func (tg *target) pread(addr uint64, n, off int) {
	tg.t.Helper()
	if got := tg.do("P %#x %d %d", addr, n, off); got != strconv.Itoa(n) {
		tg.t.Fatalf("pread into %#x: %s bytes, want %d", addr, got, n)
	}
}

// mmap maps anonymous private memory in the target (at addr if not 0).
func (tg *target) mmap(n, addr uint64) uint64 {
	tg.t.Helper()
	return tg.parseAddr(tg.do("M %d %#x", n, addr))
}

// mapFile maps a file in the target, private or shared.
func (tg *target) mapFile(path string, n uint64, shared bool) uint64 {
	tg.t.Helper()
	mode := "p"
	if shared {
		mode = "s"
	}
	return tg.parseAddr(tg.do("O %s %d %s", path, n, mode))
}

func (tg *target) parseAddr(s string) uint64 {
	tg.t.Helper()
	a, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		tg.t.Fatalf("address %q: %v", s, err)
	}
	return a
}

// hash is the target's own FNV-1a hash of its memory.
func (tg *target) hash(addr uint64, n int) uint64 {
	tg.t.Helper()
	h, err := strconv.ParseUint(tg.do("R %#x %d", addr, n), 16, 64)
	if err != nil {
		tg.t.Fatal(err)
	}
	return h
}

func fnvHash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// stop stops the target while it waits for its next command, so that it
// is in the same state at every stop, and waits for the stop.
func (tg *target) stop() {
	tg.t.Helper()
	if tg.stopped {
		tg.t.Fatal("target already stopped")
	}
	path := fmt.Sprintf("/proc/%d/syscall", tg.pid)
	deadline := time.Now().Add(waitLimit)
	for {
		// "0 0x0 ...": blocked in read(0, ...).
		b, err := os.ReadFile(path)
		if err == nil && strings.HasPrefix(string(b), "0 0x0 ") {
			break
		}
		if time.Now().After(deadline) {
			tg.fatalf("target %d never blocked reading its input (%s: %q, %v)", tg.pid, path, b, err)
		}
		time.Sleep(20 * time.Microsecond)
	}
	if err := unix.Kill(tg.pid, unix.SIGSTOP); err != nil {
		tg.t.Fatal(err)
	}
	tg.waitState('T')
	tg.stopped = true
}

func (tg *target) cont() {
	tg.t.Helper()
	if err := unix.Kill(tg.pid, unix.SIGCONT); err != nil {
		tg.t.Fatal(err)
	}
	tg.stopped = false
}

// waitState polls /proc/PID/stat until the process is in state want.
func (tg *target) waitState(want byte) {
	tg.t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", tg.pid)
	deadline := time.Now().Add(waitLimit)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			tg.fatalf("target %d: %v", tg.pid, err)
		}
		// pid (comm) S ...: comm may hold anything, the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == want {
			return
		}
		if time.Now().After(deadline) {
			tg.fatalf("target %d not in state %c: %s", tg.pid, want, b)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

func (tg *target) maps() []procfs.Mapping {
	tg.t.Helper()
	m, err := procfs.Maps(tg.pid)
	if err != nil {
		tg.t.Fatal(err)
	}
	return m
}

func (tg *target) readMem(addr uint64, n int) []byte {
	tg.t.Helper()
	b := make([]byte, n)
	if _, err := tg.mem.ReadAt(b, int64(addr)); err != nil {
		tg.t.Fatalf("read %d bytes at %#x of %d: %v", n, addr, tg.pid, err)
	}
	return b
}

// writeMem writes through /proc/PID/mem, as a debugger would.
func (tg *target) writeMem(addr uint64, b []byte) {
	tg.t.Helper()
	if _, err := tg.mem.WriteAt(b, int64(addr)); err != nil {
		tg.t.Fatalf("write %d bytes at %#x of %d: %v", len(b), addr, tg.pid, err)
	}
}

// checkpoint stops the target, snapshots its writable memory, takes
// checkpoint id with the maps of that stop, and lets it run again.
func (tg *target) checkpoint(id checkpoint.ID) (image, checkpoint.Stats) {
	tg.t.Helper()
	tg.stop()
	img, st := tg.checkpointStopped(id)
	tg.cont()
	return img, st
}

func (tg *target) checkpointStopped(id checkpoint.ID) (image, checkpoint.Stats) {
	tg.t.Helper()
	maps := tg.maps()
	img := tg.snapshot(maps)
	st, err := tg.d.Checkpoint(id, maps)
	if err != nil {
		tg.t.Fatalf("Checkpoint(%d): %v", id, err)
	}
	if !tg.d.Active(id) {
		tg.t.Fatalf("Active(%d) false right after Checkpoint", id)
	}
	return img, st
}

// rollback stops the target, rolls back to id, checks that every page
// of want (a snapshot taken at checkpoint id) is back, lets the target
// run again and checks that it works and sees the restored memory.
func (tg *target) rollback(id checkpoint.ID, want image) checkpoint.Stats {
	tg.t.Helper()
	tg.stop()
	st := tg.rollbackStopped(id, want)
	tg.cont()
	tg.checkAlive(want)
	return st
}

func (tg *target) rollbackStopped(id checkpoint.ID, want image) checkpoint.Stats {
	tg.t.Helper()
	st, err := tg.d.Rollback(id, false)
	if err != nil {
		tg.t.Fatalf("Rollback(%d): %v", id, err)
	}
	if tg.d.Active(id) {
		tg.t.Errorf("Active(%d) still true after Rollback(%d)", id, id)
	}
	tg.expect(want, fmt.Sprintf("after Rollback(%d)", id))
	return st
}

// checkAlive checks that the running target answers and that its own
// view of the fixed regions matches want.
func (tg *target) checkAlive(want image) {
	tg.t.Helper()
	tg.do("S")
	for _, r := range tg.regions() {
		if !want.covers(r.start, r.end) {
			continue
		}
		if got, exp := tg.hash(r.start, int(r.end-r.start)), fnvHash(want.bytes(r.start, r.end)); got != exp {
			tg.t.Errorf("the target sees region %s with hash %016x, want %016x", r.name, got, exp)
		}
	}
}

type region struct {
	name       string
	start, end uint64
}

func (tg *target) regions() []region {
	return []region{
		{"heap", tg.heap, tg.heap + heapLen},
		{"anon", tg.anon, tg.anon + anonPages*pg},
		{"shared", tg.shared, tg.shared + sharedPages*pg},
		{"file", tg.file, tg.file + filePages*pg},
		{"unpop", tg.unpop, tg.unpop + unpopPages*pg},
	}
}

// testPages is the set of pages in the fixed regions.
func (tg *target) inRegions(p uint64) bool {
	for _, r := range tg.regions() {
		if p+pg > r.start && p < r.end {
			return true
		}
	}
	return false
}

func (tg *target) label(p uint64) string {
	for _, r := range tg.regions() {
		if p+pg > r.start && p < r.end {
			return fmt.Sprintf("%s page %d", r.name, (p-pageOf(r.start))/pg)
		}
	}
	return fmt.Sprintf("%#x", p)
}

func pageOf(a uint64) uint64 { return a &^ (pg - 1) }

// pagesOf is the set of pages [addr, addr+n) touches.
func pagesOf(addr uint64, n int) []uint64 {
	var out []uint64
	for p := pageOf(addr); p < addr+uint64(n); p += pg {
		out = append(out, p)
	}
	return out
}

// image is the contents of memory by page address.
type image map[uint64][]byte

var zeroPage = make([]byte, pg)

func (img image) covers(start, end uint64) bool {
	for p := pageOf(start); p < end; p += pg {
		if img[p] == nil {
			return false
		}
	}
	return true
}

func (img image) bytes(start, end uint64) []byte {
	var b []byte
	for p := pageOf(start); p < end; p += pg {
		b = append(b, img[p]...)
	}
	off := start - pageOf(start)
	return b[off : off+end-start]
}

// snapshot reads every page of the writable mappings among maps. An
// anonymous private page that is not populated reads as zero without
// being touched (reading it would populate it and change what the engine
// sees). Pages that cannot be read (a file mapping past the end of its
// file) are left out.
func (tg *target) snapshot(maps []procfs.Mapping) image {
	tg.t.Helper()
	img := make(image)
	for _, m := range maps {
		if !m.Writable() || m.End > userLimit {
			continue
		}
		n := int((m.End - m.Start) / pg)
		ents := make([]byte, 8*n)
		if _, err := tg.pagemap.ReadAt(ents, int64(m.Start/pg*8)); err != nil {
			tg.t.Fatalf("pagemap of %d at %#x: %v", tg.pid, m.Start, err)
		}
		buf := make([]byte, m.End-m.Start)
		skip := m.Anonymous() && !m.Shared()
		for i := 0; i < n; {
			e := binary.LittleEndian.Uint64(ents[8*i:])
			if skip && e&(3<<62) == 0 { // neither present nor swapped
				img[m.Start+uint64(i)*pg] = zeroPage
				i++
				continue
			}
			j := i + 1
			for j < n && (!skip || binary.LittleEndian.Uint64(ents[8*j:])&(3<<62) != 0) {
				j++
			}
			run := buf[i*pg : j*pg]
			if _, err := tg.mem.ReadAt(run, int64(m.Start+uint64(i)*pg)); err == nil {
				for k := i; k < j; k++ {
					img[m.Start+uint64(k)*pg] = buf[k*pg : (k+1)*pg]
				}
			} else {
				for k := i; k < j; k++ {
					b := buf[k*pg : (k+1)*pg]
					if _, err := tg.mem.ReadAt(b, int64(m.Start+uint64(k)*pg)); err == nil {
						img[m.Start+uint64(k)*pg] = b
					}
				}
			}
			i = j
		}
	}
	return img
}

// diff lists the pages of want whose contents differ now (or that are
// gone), with where they first differ.
func (tg *target) diff(want image) []string {
	tg.t.Helper()
	now := tg.snapshot(tg.maps())
	var pages []uint64
	for p := range want {
		pages = append(pages, p)
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	var out []string
	for _, p := range pages {
		got, ok := now[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s (%#x): not mapped or unreadable", tg.label(p), p))
			continue
		}
		if w := want[p]; !bytes.Equal(got, w) {
			i := 0
			for got[i] == w[i] {
				i++
			}
			out = append(out, fmt.Sprintf("%s (%#x): byte %d is %#02x, want %#02x", tg.label(p), p, i, got[i], w[i]))
		}
	}
	return out
}

// expect fails the test unless the memory of every page of want equals
// want.
func (tg *target) expect(want image, when string) {
	tg.t.Helper()
	if d := tg.diff(want); len(d) > 0 {
		if len(d) > 12 {
			d = append(d[:12], fmt.Sprintf("... and %d more", len(d)-12))
		}
		tg.t.Errorf("%s: %d pages differ from the checkpoint:\n\t%s", when, len(d), strings.Join(d, "\n\t"))
	}
}

// changed lists the pages that differ between two images.
func changed(a, b image) []uint64 {
	var out []uint64
	for p, x := range a {
		if y, ok := b[p]; ok && !bytes.Equal(x, y) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// peek returns the pages the kernel reports written since the engine's
// last scan in write-protect-armed memory. It is a PAGEMAP_SCAN of its
// own, written independently of the engine's, and it protects nothing
// again, so it leaves the engine's view unchanged.
func (tg *target) peek() map[uint64]bool {
	tg.t.Helper()
	const (
		pagemapScan     = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
		pageIsWPAllowed = 1 << 0
		pageIsWritten   = 1 << 1
	)
	type pmScanArg struct {
		Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages uint64
		CategoryInverted, CategoryMask, CategoryAnyofMask       uint64
		ReturnMask                                              uint64
	}
	type pageRegion struct{ Start, End, Categories uint64 }
	out := make(map[uint64]bool)
	vec := make([]pageRegion, 256)
	for start := uint64(0); start < userLimit-pg; {
		arg := pmScanArg{
			Size:         uint64(unsafe.Sizeof(pmScanArg{})),
			Start:        start,
			End:          userLimit - pg,
			Vec:          uint64(uintptr(unsafe.Pointer(&vec[0]))),
			VecLen:       uint64(len(vec)),
			CategoryMask: pageIsWritten | pageIsWPAllowed,
			ReturnMask:   pageIsWritten,
		}
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(tg.peekFD), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		runtime.KeepAlive(vec)
		if errno != 0 {
			tg.t.Fatalf("PAGEMAP_SCAN of %d: %v", tg.pid, errno)
		}
		for _, r := range vec[:n] {
			for p := r.Start; p < r.End; p += pg {
				out[p] = true
			}
		}
		if arg.WalkEnd <= start {
			break
		}
		start = arg.WalkEnd
	}
	return out
}

// isBug reports a known engine bug: the test stops here, skipped, with
// the evidence. When the bug is fixed the test runs to the end.
// mustNot fails the test when a condition that used to be a bug of the
// engine (each has a test named for it) comes back.
func mustNot(t testing.TB, bad bool, format string, args ...any) {
	t.Helper()
	if bad {
		t.Fatalf(format, args...)
	}
}

// knownLimit skips, naming a documented limit of the engine (README,
// Limits), when the condition shows it; the test then still documents
// the behaviour and will fail loudly in no other way.
func knownLimit(t testing.TB, hit bool, format string, args ...any) {
	t.Helper()
	if hit {
		t.Skipf("known limit (README): "+format, args...)
	}
}
