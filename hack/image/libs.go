package image

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// elfInfo is what the dynamic loader reads from an ELF file.
type elfInfo struct {
	class   elf.Class
	machine elf.Machine
	interp  string   // PT_INTERP, "" for none
	needed  []string // DT_NEEDED
	rpath   []string // DT_RPATH (used only without DT_RUNPATH)
	runpath []string // DT_RUNPATH
}

// readELF returns nil, nil when the file is not ELF.
func readELF(file string) (*elfInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, nil
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	defer ef.Close()
	info := &elfInfo{class: ef.Class, machine: ef.Machine}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: PT_INTERP: %w", file, err)
			}
			info.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if ef.Section(".dynamic") == nil && !hasDynamic(ef) {
		return info, nil
	}
	// A file without a dynamic section gives an error here, which is fine:
	// it needs nothing.
	if info.needed, err = ef.DynString(elf.DT_NEEDED); err != nil {
		return info, nil
	}
	rp, _ := ef.DynString(elf.DT_RPATH)
	rn, _ := ef.DynString(elf.DT_RUNPATH)
	info.rpath = splitPaths(rp)
	info.runpath = splitPaths(rn)
	return info, nil
}

func hasDynamic(ef *elf.File) bool {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_DYNAMIC {
			return true
		}
	}
	return false
}

func splitPaths(v []string) []string {
	var out []string
	for _, s := range v {
		for _, p := range strings.Split(s, ":") {
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// ldconfigDirs returns the directories of /etc/ld.so.conf (with its
// includes) followed by the loader's built-in ones, as ldconfig would put
// them in /etc/ld.so.cache.
func ldconfigDirs(machine elf.Machine) []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	var read func(file string, depth int)
	read = func(file string, depth int) {
		if depth > 8 {
			return
		}
		f, err := os.Open(file)
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			line = strings.TrimSpace(line)
			switch {
			case line == "":
			case strings.HasPrefix(line, "include"):
				for _, pat := range strings.Fields(line)[1:] {
					if !filepath.IsAbs(pat) {
						pat = filepath.Join(filepath.Dir(file), pat)
					}
					ms, _ := filepath.Glob(pat)
					sort.Strings(ms)
					for _, m := range ms {
						read(m, depth+1)
					}
				}
			case strings.HasPrefix(line, "/"):
				add(strings.Fields(line)[0])
			}
		}
	}
	read("/etc/ld.so.conf", 0)
	var triplet string
	switch machine {
	case elf.EM_X86_64:
		triplet = "x86_64-linux-gnu"
	case elf.EM_AARCH64:
		triplet = "aarch64-linux-gnu"
	}
	if triplet != "" {
		add("/lib/" + triplet)
		add("/usr/lib/" + triplet)
	}
	for _, d := range []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		add(d)
	}
	return dirs
}

// compatible reports whether file is an ELF object the loader of want
// would accept (the same class and machine).
func compatible(file string, want *elfInfo) bool {
	st, err := os.Stat(file)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	info, err := readELF(file)
	return err == nil && info != nil && info.class == want.class && info.machine == want.machine
}

func expandOrigin(dir, origin string) string {
	dir = strings.ReplaceAll(dir, "${ORIGIN}", origin)
	return strings.ReplaceAll(dir, "$ORIGIN", origin)
}

// findLib finds the library name as the loader would for the object at
// obj (realpath) whose executable's DT_RPATH is exeRpath.
func findLib(name string, obj string, info *elfInfo, exeRpath []string, sys []string) (string, bool) {
	if strings.Contains(name, "/") {
		return name, compatible(name, info)
	}
	origin := filepath.Dir(obj)
	var dirs []string
	if len(info.runpath) == 0 {
		for _, d := range info.rpath {
			dirs = append(dirs, expandOrigin(d, origin))
		}
		dirs = append(dirs, exeRpath...)
	}
	for _, d := range info.runpath {
		dirs = append(dirs, expandOrigin(d, origin))
	}
	dirs = append(dirs, sys...)
	for _, d := range dirs {
		c := filepath.Join(d, name)
		if compatible(c, info) {
			return c, true
		}
	}
	return "", false
}

// sharedDeps returns the dynamic loader and every shared library that the
// ELF file bin needs, transitively, as host paths (not resolved through
// symlinks: the paths the loader opens). A file that is not ELF, or is
// static, needs nothing. It reads PT_INTERP and DT_NEEDED itself (nothing
// is executed); where `ldd` is installed, what it reports is added too, so
// that a library the loader would pick from elsewhere (hwcaps directories)
// is not missed.
func sharedDeps(bin string) ([]string, error) {
	info, err := readELF(bin)
	if err != nil || info == nil {
		return nil, err
	}
	if info.interp == "" && len(info.needed) == 0 {
		return nil, nil
	}
	sys := ldconfigDirs(info.machine)
	var out []string
	seen := map[string]bool{}
	if info.interp != "" {
		if _, err := os.Stat(info.interp); err != nil {
			return nil, fmt.Errorf("%s: dynamic loader: %w", bin, err)
		}
		out = append(out, info.interp)
		seen[info.interp] = true
	}
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, err
	}
	exeRpath := []string{}
	if len(info.runpath) == 0 {
		for _, d := range info.rpath {
			exeRpath = append(exeRpath, expandOrigin(d, filepath.Dir(real)))
		}
	}
	type item struct {
		path string // as the loader finds it
		info *elfInfo
	}
	queue := []item{{real, info}}
	loaded := map[string]bool{} // sonames already resolved
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		objReal, err := filepath.EvalSymlinks(it.path)
		if err != nil {
			return nil, err
		}
		for _, name := range it.info.needed {
			if loaded[name] {
				continue
			}
			lib, ok := findLib(name, objReal, it.info, exeRpath, sys)
			if !ok {
				return nil, fmt.Errorf("%s: shared library %s (needed by %s) not found", bin, name, it.path)
			}
			loaded[name] = true
			if !seen[lib] {
				seen[lib] = true
				out = append(out, lib)
			}
			li, err := readELF(lib)
			if err != nil {
				return nil, err
			}
			if li != nil {
				queue = append(queue, item{lib, li})
			}
		}
	}
	for _, lib := range lddDeps(bin) {
		if !seen[lib] {
			seen[lib] = true
			out = append(out, lib)
		}
	}
	return out, nil
}

// lddDeps returns the absolute paths `ldd bin` prints, or nothing when ldd
// is missing or fails.
func lddDeps(bin string) []string {
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ldd, bin).Output()
	if err != nil {
		return nil
	}
	return parseLdd(string(out))
}

// parseLdd extracts library paths from ldd's output:
//
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)
//	linux-vdso.so.1 (0x...)            (no file: skipped)
func parseLdd(out string) []string {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "=>"); i >= 0 {
			line = strings.TrimSpace(line[i+2:])
		}
		f := strings.Fields(line)
		if len(f) == 0 || !path.IsAbs(f[0]) {
			continue
		}
		if _, err := os.Stat(f[0]); err == nil {
			libs = append(libs, f[0])
		}
	}
	return libs
}

// addHostPath adds host path p at the same path in the image, preserving
// every symlink met on the way (in directories too, as /lib -> usr/lib) as a
// symlink, and the file it leads to as a regular file.
func addHostPath(t *tree, p string) error {
	links := 0
	return addHostPathN(t, filepath.Clean(p), &links)
}

func addHostPathN(t *tree, p string, links *int) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s: not an absolute path", p)
	}
	parts := split(p)
	cur := "/"
	for i, name := range parts {
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		last := i == len(parts)-1
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			*links++
			if *links > maxLinks {
				return fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			tgt, err := os.Readlink(next)
			if err != nil {
				return err
			}
			if err := t.addSymlink(next, tgt); err != nil {
				return err
			}
			if !filepath.IsAbs(tgt) {
				tgt = filepath.Join(cur, tgt)
			}
			return addHostPathN(t, filepath.Join(append([]string{tgt}, parts[i+1:]...)...), links)
		case fi.IsDir():
			if last {
				return t.addDir(next, fi.Mode()&(os.ModePerm|os.ModeSetgid|os.ModeSticky))
			}
			cur = next
		case fi.Mode().IsRegular():
			if !last {
				return fmt.Errorf("%s: not a directory", next)
			}
			return t.addFile(next, next, fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid))
		default:
			return errors.New(next + ": neither a file, a directory nor a symlink")
		}
	}
	return nil
}
