// Package procfs reads the parts of /proc the supervisor needs. The
// standard library has no parser for these files, so this small one is
// written by hand.
package procfs

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // e.g. "rw-p"
	Offset     uint64
	Major      uint32
	Minor      uint32
	Inode      uint64
	Path       string
}

// Readable, Writable, Executable and Shared decode Perms.
func (m Mapping) Readable() bool   { return len(m.Perms) > 0 && m.Perms[0] == 'r' }
func (m Mapping) Writable() bool   { return len(m.Perms) > 1 && m.Perms[1] == 'w' }
func (m Mapping) Executable() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }
func (m Mapping) Shared() bool     { return len(m.Perms) > 3 && m.Perms[3] == 's' }

// Anonymous reports whether no file backs the mapping (heap, stack, anon mmap).
func (m Mapping) Anonymous() bool { return m.Inode == 0 }

// Size is the length of the mapping in bytes.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// Contains reports whether addr lies in the mapping.
func (m Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Maps parses /proc/PID/maps.
func Maps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	return ParseMaps(data)
}

// ParseMaps parses the text of a maps file.
func ParseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		m, err := parseMapsLine(string(line))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	f := strings.Fields(line)
	if len(f) < 5 {
		return m, fmt.Errorf("maps line %q: too few fields", line)
	}
	se := strings.SplitN(f[0], "-", 2)
	if len(se) != 2 {
		return m, fmt.Errorf("maps line %q: bad range", line)
	}
	var err error
	if m.Start, err = strconv.ParseUint(se[0], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	if m.End, err = strconv.ParseUint(se[1], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Perms = f[1]
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	dev := strings.SplitN(f[3], ":", 2)
	if len(dev) == 2 {
		maj, _ := strconv.ParseUint(dev[0], 16, 32)
		min, _ := strconv.ParseUint(dev[1], 16, 32)
		m.Major, m.Minor = uint32(maj), uint32(min)
	}
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	if len(f) > 5 {
		m.Path = pathField(line)
	}
	return m, nil
}

// pathField returns what follows the five fixed columns of a maps line:
// the path, which may itself contain spaces.
func pathField(line string) string {
	rest := line
	for i := 0; i < 5; i++ {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			return ""
		}
		rest = rest[j:]
	}
	return strings.TrimLeft(rest, " ")
}

// Tasks lists the thread ids of a process.
func Tasks(pid int) ([]int, error) {
	return numericDir(fmt.Sprintf("/proc/%d/task", pid))
}

// FDs lists the open file descriptors of a process.
func FDs(pid int) ([]int, error) {
	return numericDir(fmt.Sprintf("/proc/%d/fd", pid))
}

func numericDir(dir string) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(names))
	for _, n := range names {
		if v, err := strconv.Atoi(n); err == nil {
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out, nil
}

// Status holds fields of /proc/PID/status.
type Status struct {
	Tgid      int
	PPid      int
	TracerPid int
	SigCgt    uint64 // signals with a handler installed
	SigPnd    uint64 // signals pending for this thread
	ShdPnd    uint64 // signals pending for the process
	SigBlk    uint64 // signals blocked by this thread
	SigIgn    uint64 // signals ignored by the process
	// NSpid is the thread's id in each PID namespace it is in, outermost
	// first: the last is its id as the processes beside it see it.
	NSpid   []int
	State   byte
	RssAnon uint64 // bytes of resident anonymous memory
	Umask   uint32
}

// ReadStatus parses /proc/PID/status (works for thread ids too).
func ReadStatus(pid int) (Status, error) {
	var st Status
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Tgid":
			st.Tgid, _ = strconv.Atoi(v)
		case "PPid":
			st.PPid, _ = strconv.Atoi(v)
		case "TracerPid":
			st.TracerPid, _ = strconv.Atoi(v)
		case "ShdPnd":
			st.ShdPnd, _ = strconv.ParseUint(v, 16, 64)
		case "SigBlk":
			st.SigBlk, _ = strconv.ParseUint(v, 16, 64)
		case "SigPnd":
			st.SigPnd, _ = strconv.ParseUint(v, 16, 64)
		case "SigCgt":
			st.SigCgt, _ = strconv.ParseUint(v, 16, 64)
		case "SigIgn":
			st.SigIgn, _ = strconv.ParseUint(v, 16, 64)
		case "NSpid":
			for _, f := range strings.Fields(v) {
				if n, err := strconv.Atoi(f); err == nil {
					st.NSpid = append(st.NSpid, n)
				}
			}
		case "Umask":
			u, _ := strconv.ParseUint(v, 8, 32)
			st.Umask = uint32(u)
		case "State":
			if len(v) > 0 {
				st.State = v[0]
			}
		case "RssAnon":
			if kb, err := strconv.ParseUint(strings.TrimSuffix(v, " kB"), 10, 64); err == nil {
				st.RssAnon = kb << 10
			}
		}
	}
	return st, sc.Err()
}

// Auxv reads the ELF auxiliary vector of a process.
func Auxv(pid int) (map[uint64]uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]uint64)
	for i := 0; i+16 <= len(data); i += 16 {
		k := binary.LittleEndian.Uint64(data[i:])
		if k == 0 {
			break
		}
		out[k] = binary.LittleEndian.Uint64(data[i+8:])
	}
	return out, nil
}

// AT_ENTRY is the auxv key of the program entry point.
const AT_ENTRY = 9

// StartBrk returns start_brk (field 47 of /proc/PID/stat).
func StartBrk(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Skip "pid (comm)": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of %d: malformed", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); start_brk is field 47.
	const idx = 47 - 3
	if len(f) <= idx {
		return 0, fmt.Errorf("stat of %d: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[idx], 10, 64)
}
