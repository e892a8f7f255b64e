package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ---- helpers: reading a built tarball back ----

// ociTar is a built OCI layout tarball, read back.
type ociTar struct {
	files map[string][]byte // name in the tarball -> content
}

func readOCITar(t *testing.T, file string) *ociTar {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := &ociTar{files: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			o.files[h.Name] = b
		}
	}
	return o
}

func (o *ociTar) blob(t *testing.T, digest string) []byte {
	t.Helper()
	b, ok := o.files["blobs/"+strings.Replace(digest, ":", "/", 1)]
	if !ok {
		t.Fatalf("blob %s missing from the tarball", digest)
	}
	return b
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

// image returns the index entry, the manifest, the config and the layer's
// entries of the tarball's only image.
func (o *ociTar) image(t *testing.T) (descriptor, map[string]any, imageConfig, map[string]*tar.Header) {
	t.Helper()
	if _, ok := o.files["oci-layout"]; !ok {
		t.Fatal("no oci-layout in the tarball")
	}
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(o.files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	d := idx.Manifests[0]
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	raw := o.blob(t, d.Digest)
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	var manAny map[string]any
	_ = json.Unmarshal(raw, &manAny)
	var cfg imageConfig
	if err := json.Unmarshal(o.blob(t, man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(man.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(man.Layers))
	}
	zr, err := gzip.NewReader(bytes.NewReader(o.blob(t, man.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]*tar.Header{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimSuffix(h.Name, "/")
		if _, dup := entries[name]; dup {
			t.Errorf("layer has %s twice", name)
		}
		if parent := path.Dir(name); parent != "/" {
			if p, ok := entries[parent]; !ok || p.Typeflag != tar.TypeDir {
				t.Errorf("layer has %s before (or without) its parent directory", name)
			}
		}
		entries[name] = h
	}
	return d, manAny, cfg, entries
}

type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Env        []string          `json:"Env"`
		WorkingDir string            `json:"WorkingDir"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

// resolve follows symlinks in the layer's entries as the kernel would in
// the container, and returns the regular file p leads to.
func resolve(entries map[string]*tar.Header, p string) (string, error) {
	links := 0
	cur := "/"
	parts := split(path.Clean(p))
	for i := 0; i < len(parts); i++ {
		next := path.Join(cur, parts[i])
		h, ok := entries[next]
		if !ok {
			return "", fmt.Errorf("%s: not in the layer", next)
		}
		if h.Typeflag == tar.TypeSymlink {
			if links++; links > maxLinks {
				return "", errors.New("symlink loop")
			}
			tgt := h.Linkname
			if !path.IsAbs(tgt) {
				tgt = path.Join(cur, tgt)
			}
			rest := append(split(path.Clean(tgt)), parts[i+1:]...)
			parts, cur, i = rest, "/", -1
			continue
		}
		cur = next
	}
	if h := entries[cur]; h == nil || h.Typeflag != tar.TypeReg {
		return "", fmt.Errorf("%s leads to %s, not a regular file", p, cur)
	}
	return cur, nil
}

// ---- unit tests (no root, no containerd) ----

func TestBuildLayoutAndConfig(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hello.sh")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	spec := Spec{
		Name: "assure.test/unit:2",
		Files: []File{
			{Src: src, Dst: "/usr/local/bin/hello"},
			{Src: src, Dst: "/etc/hello.conf", Mode: 0o600},
		},
		Symlinks:   map[string]string{"/bin": "usr/local/bin", "/usr/bin/hi": "/bin/hello"},
		Dirs:       []string{"/tmp", "/var/lib/unit", "/bin"},
		Entrypoint: []string{"/bin/hello"},
		Cmd:        []string{"a", "b"},
		Env:        []string{"X=1"},
		WorkingDir: "/var/lib/unit",
		Labels:     map[string]string{"dev.assure.manifest": `{"version":1}`},
	}
	if err := Build(spec, out); err != nil {
		t.Fatal(err)
	}
	d, _, cfg, entries := readOCITar(t, out).image(t)
	if got := d.Annotations[AnnotationImageName]; got != "assure.test/unit:2" {
		t.Errorf("image name annotation %q", got)
	}
	if got := d.Annotations[AnnotationRefName]; got != "2" {
		t.Errorf("ref name annotation %q", got)
	}
	if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture == "" {
		t.Errorf("platform %+v", d.Platform)
	}
	if cfg.OS != "linux" || cfg.Config.Labels["dev.assure.manifest"] != `{"version":1}` ||
		strings.Join(cfg.Config.Entrypoint, " ") != "/bin/hello" || strings.Join(cfg.Config.Cmd, " ") != "a b" ||
		cfg.Config.WorkingDir != "/var/lib/unit" || len(cfg.Config.Env) != 2 || cfg.Config.Env[1] != "X=1" ||
		!strings.HasPrefix(cfg.Config.Env[0], "PATH=") {
		t.Errorf("config %+v", cfg)
	}
	want := map[string]struct {
		typ  byte
		mode int64
	}{
		"/usr":                 {tar.TypeDir, 0o755},
		"/usr/local/bin/hello": {tar.TypeReg, 0o750},
		"/etc/hello.conf":      {tar.TypeReg, 0o600},
		"/bin":                 {tar.TypeSymlink, 0o777},
		"/usr/bin/hi":          {tar.TypeSymlink, 0o777},
		"/tmp":                 {tar.TypeDir, 0o1777},
		"/var/lib/unit":        {tar.TypeDir, 0o755},
	}
	for p, w := range want {
		h, ok := entries[p]
		if !ok {
			t.Errorf("%s missing from the layer", p)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: type %c mode %o uid %d, want type %c mode %o uid 0", p, h.Typeflag, h.Mode, h.Uid, w.typ, w.mode)
		}
	}
	if f, err := resolve(entries, "/usr/bin/hi"); err != nil || f != "/usr/local/bin/hello" {
		t.Errorf("/usr/bin/hi resolves to %q, %v", f, err)
	}

	// The same spec gives the same bytes: fixed times, sorted entries.
	out2 := filepath.Join(dir, "img2.tar")
	if err := Build(spec, out2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same spec differ")
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "f")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	if err := os.WriteFile(out+".src2", []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Spec{
		"bad name":          {Name: "UPPER/Case::", Files: []File{{Src: src, Dst: "/f"}}},
		"relative dst":      {Name: "a/b:1", Files: []File{{Src: src, Dst: "f"}}},
		"missing src":       {Name: "a/b:1", Files: []File{{Src: filepath.Join(dir, "nope"), Dst: "/f"}}},
		"file under a file": {Name: "a/b:1", Files: []File{{Src: src, Dst: "/f"}, {Src: src, Dst: "/f/g"}}},
		"two sources":       {Name: "a/b:1", Files: []File{{Src: src, Dst: "/f"}, {Src: out + ".src2", Dst: "/f"}}},
		"symlink over file": {Name: "a/b:1", Files: []File{{Src: src, Dst: "/f"}}, Symlinks: map[string]string{"/f": "x"}},
		"dir is root":       {Name: "a/b:1", Dirs: []string{"/"}},
		"dir src":           {Name: "a/b:1", Files: []File{{Src: dir, Dst: "/d"}}},
		"label over 4096":   {Name: "a/b:1", Labels: map[string]string{"dev.assure.manifest": strings.Repeat(" ", 4096)}},
	}
	for name, spec := range cases {
		if err := Build(spec, out); err == nil {
			t.Errorf("%s: Build succeeded", name)
		} else if !strings.Contains(err.Error(), "image "+spec.Name) {
			t.Errorf("%s: error does not name the image: %v", name, err)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed build left %s behind", out)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".mkimage-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibc.so.6 => /etc/hostname (0x00007f)\n" +
		"\tlibgone.so.1 => not found\n" +
		"\t/etc/passwd (0x00007f)\n"
	got := parseLdd(out)
	if strings.Join(got, " ") != "/etc/hostname /etc/passwd" {
		t.Errorf("parseLdd: %q", got)
	}
}

// dynBinary is a dynamically linked program on this host: redis-server
// when installed (the demo's server), else ls.
func dynBinary(t *testing.T) (string, []string, string) {
	if p, err := filepath.EvalSymlinks("/usr/bin/redis-server"); err == nil {
		if info, err := readELF(p); err == nil && info != nil && info.interp != "" {
			return "/usr/bin/redis-server", []string{"/usr/bin/redis-server", "--version"}, "Redis server v="
		}
	}
	for _, p := range []string{"/bin/ls", "/usr/bin/ls"} {
		if info, err := readELF(p); err == nil && info != nil && info.interp != "" {
			return p, []string{p, "/"}, "lib"
		}
	}
	t.Skip("no dynamically linked redis-server or ls on this host")
	return "", nil, ""
}

// The walker finds everything ldd finds, and what it finds exists.
func TestSharedDepsCoverLdd(t *testing.T) {
	bin, _, _ := dynBinary(t)
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		t.Skip("ldd not installed")
	}
	out, err := exec.Command(ldd, bin).Output()
	if err != nil {
		t.Skipf("ldd %s: %v", bin, err)
	}
	fromLdd := parseLdd(string(out))
	if len(fromLdd) == 0 {
		t.Fatalf("ldd reported no libraries for %s:\n%s", bin, out)
	}
	// Only the ELF walk, without ldd's additions.
	t.Setenv("PATH", "/nonexistent")
	deps, err := sharedDeps(bin)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, d := range deps {
		r, err := filepath.EvalSymlinks(d)
		if err != nil {
			t.Errorf("%s: %v", d, err)
		}
		have[r] = true
	}
	for _, l := range fromLdd {
		r, _ := filepath.EvalSymlinks(l)
		if !have[r] {
			t.Errorf("ldd lists %s (%s), the ELF walk did not find it; found %v", l, r, deps)
		}
	}
	if st, err := os.Stat("/bin/busybox"); err == nil && st.Mode().IsRegular() {
		if info, _ := readELF("/bin/busybox"); info != nil && info.interp == "" {
			if d, err := sharedDeps("/bin/busybox"); err != nil || len(d) != 0 {
				t.Errorf("static busybox: deps %v, %v", d, err)
			}
		}
	}
}

func TestWithLibsLayer(t *testing.T) {
	bin, _, _ := dynBinary(t)
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := Build(Spec{Name: "assure.test/libs:1", WithLibs: true, Files: []File{{Src: bin, Dst: bin}}}, out); err != nil {
		t.Fatal(err)
	}
	_, _, _, entries := readOCITar(t, out).image(t)
	deps, err := sharedDeps(bin)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := readELF(bin)
	checkLibs(t, entries, bin, info.interp, deps)
}

// checkLibs checks that the layer has the loader and each library at its
// host path, reaching the same file content size, with the host's symlinks
// kept as symlinks.
func checkLibs(t *testing.T, entries map[string]*tar.Header, bin, interp string, deps []string) {
	t.Helper()
	if _, err := resolve(entries, bin); err != nil {
		t.Errorf("binary: %v", err)
	}
	if interp == "" {
		t.Fatal("no dynamic loader")
	}
	for _, p := range append([]string{interp}, deps...) {
		f, err := resolve(entries, p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if entries[f].Size != st.Size() {
			t.Errorf("%s -> %s: size %d, host %d", p, f, entries[f].Size, st.Size())
		}
		// Each host symlink on the way is a symlink in the image.
		cur := "/"
		for _, c := range split(p) {
			next := path.Join(cur, c)
			if fi, err := os.Lstat(next); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				if h := entries[next]; h == nil || h.Typeflag != tar.TypeSymlink {
					t.Errorf("%s is a symlink on the host but not in the image", next)
				}
				break
			}
			cur = next
		}
	}
}

// ---- with a private containerd (root, containerd, ctr, runc) ----

const testNamespace = "assure-test"

type privateContainerd struct {
	dir, address string
}

// startContainerd starts a private containerd with hack/containerd.sh in a
// new directory under /tmp; t.Cleanup stops it, removes the directory and
// checks that no mount is left under it.
// env is added to the script's environment.
func startContainerd(t *testing.T, env ...string) *privateContainerd {
	t.Helper()
	needContainerd(t)
	script := scriptPath(t)
	dir, err := os.MkdirTemp("/tmp", "assure-image-")
	if err != nil {
		t.Fatal(err)
	}
	pc := &privateContainerd{dir: dir, address: filepath.Join(dir, "containerd.sock")}
	t.Cleanup(func() {
		out, err := exec.Command("bash", script, "stop", dir).CombinedOutput()
		if err != nil {
			t.Errorf("containerd.sh stop: %v\n%s", err, out)
		}
		if m := mountsUnder(t, dir); len(m) > 0 {
			t.Errorf("mounts left under %s: %v", dir, m)
		}
		if p := processesOf(dir); len(p) > 0 {
			t.Errorf("processes left that name %s: %v", dir, p)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after stop", dir)
			os.RemoveAll(dir)
		}
	})
	start := time.Now()
	cmd := exec.Command("bash", script, "start", dir)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("containerd.sh start: %v\n%s", err, out)
	}
	t.Logf("private containerd in %s answered after %v", dir, time.Since(start).Round(time.Millisecond))
	return pc
}

// needContainerd skips the test unless it runs as root with containerd, ctr
// and runc installed.
func needContainerd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containerd, mounts, runc")
	}
	for _, c := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s not installed (hack/install-deps.sh --containerd installs it)", c)
		}
	}
}

func scriptPath(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs("../containerd.sh")
	if err != nil {
		t.Fatal(err)
	}
	return script
}

func (pc *privateContainerd) ctr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("ctr", append([]string{"--address", pc.address, "--namespace", testNamespace, "--timeout", "60s"}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

func (pc *privateContainerd) mustCtr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := pc.ctr(t, args...)
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// mountsUnder lists the mount points under dir in /proc/self/mountinfo.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := strings.ReplaceAll(fields[4], `\040`, " ")
		if p == dir || strings.HasPrefix(p, dir+"/") {
			ms = append(ms, p)
		}
	}
	return ms
}

// processesOf lists the processes whose command line names dir (the
// private containerd and its shims).
func processesOf(dir string) []string {
	var ps []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err == nil && bytes.Contains(b, []byte(dir+"/")) {
			ps = append(ps, strings.TrimSuffix(strings.TrimPrefix(c, "/proc/"), "/cmdline")+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return ps
}

// busybox returns a busybox binary, installing busybox-static when absent.
func busybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		out, err := exec.Command("apt-get", "install", "-y", "-q", "busybox-static").CombinedOutput()
		if err != nil {
			t.Skipf("/bin/busybox missing and apt-get install busybox-static failed (run hack/install-deps.sh --containerd): %v\n%s", err, out)
		}
	}
	return "/bin/busybox"
}

// imageConfigFromContainerd reads the image's config back from containerd's
// content store: the manifest digest from `ctr images ls`, then the
// manifest and the config with `ctr content get`.
func (pc *privateContainerd) imageConfig(t *testing.T, name string) imageConfig {
	t.Helper()
	var digest string
	for _, line := range strings.Split(pc.mustCtr(t, "images", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == name {
			digest = f[2]
		}
	}
	if digest == "" {
		t.Fatalf("ctr images ls does not list %s", name)
	}
	var man struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(pc.mustCtr(t, "content", "get", digest)), &man); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal([]byte(pc.mustCtr(t, "content", "get", man.Config.Digest)), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestContainerdBusybox(t *testing.T) {
	pc := startContainerd(t)
	bb := busybox(t)
	info, err := readELF(bb)
	if err != nil || info == nil {
		t.Fatalf("%s: not ELF: %v", bb, err)
	}
	const name = "assure.test/busybox:1"
	manifest := `{"version":1,"rescue_points":[{"binary":"/bin/busybox","function":"main"}]}`
	out := filepath.Join(pc.dir, "busybox.tar")
	err = Build(Spec{
		Name:     name,
		Files:    []File{{Src: bb, Dst: "/bin/busybox"}},
		WithLibs: info.interp != "", // a dynamic busybox (Debian's busybox package) needs its libraries
		Symlinks: map[string]string{"/bin/sh": "busybox"},
		Dirs:     []string{"/tmp"},
		Cmd:      []string{"/bin/sh"},
		Labels:   map[string]string{"dev.assure.manifest": manifest},
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := Import(pc.address, testNamespace, out); err != nil {
		t.Fatal(err)
	}
	// Importing again replaces the image: no error.
	if err := Import(pc.address, testNamespace, out); err != nil {
		t.Fatalf("second import: %v", err)
	}
	if ls := pc.mustCtr(t, "images", "ls", "-q"); strings.TrimSpace(ls) != name {
		t.Errorf("ctr images ls -q: %q, want %q", ls, name)
	}
	if check := pc.mustCtr(t, "images", "check"); !strings.Contains(check, "complete") {
		t.Errorf("ctr images check:\n%s", check)
	}
	cfg := pc.imageConfig(t, name)
	if got := cfg.Config.Labels["dev.assure.manifest"]; got != manifest {
		t.Errorf("label read back from containerd: %q, want %q", got, manifest)
	}

	got := pc.mustCtr(t, "run", "--rm", "--runtime", "io.containerd.runc.v2", name, "test1", "/bin/busybox", "echo", "hello")
	if strings.TrimSpace(got) != "hello" {
		t.Errorf("ctr run output %q, want hello", got)
	}
	// The symlink and the image's Cmd work too; /tmp is writable.
	got = pc.mustCtr(t, "run", "--rm", name, "test2", "/bin/sh", "-c", "echo x > /tmp/x && cat /tmp/x && readlink /bin/sh")
	if strings.Join(strings.Fields(got), " ") != "x busybox" {
		t.Errorf("ctr run sh: %q", got)
	}

	// A container left running is killed by `containerd.sh stop` (in
	// t.Cleanup), which must then leave no mount and no shim behind.
	pc.mustCtr(t, "run", "-d", name, "left-running", "/bin/busybox", "sleep", "600")
	if m := mountsUnder(t, pc.dir); len(m) == 0 {
		t.Error("no mount under the directory while a container runs: is the mount check blind?")
	}

	// A failing import names the file and carries ctr's message.
	bad := filepath.Join(pc.dir, "bad.tar")
	if err := os.WriteFile(bad, []byte("not a tarball"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Import(pc.address, testNamespace, bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "ctr") {
		t.Errorf("import of garbage: %v", err)
	} else {
		t.Logf("import of garbage: %v", err)
	}
}

func TestContainerdWithLibs(t *testing.T) {
	bin, args, want := dynBinary(t)
	// The native snapshotter here (bind mounts), overlayfs in the busybox test.
	pc := startContainerd(t, "ASSURE_SNAPSHOTTER=native")
	const name = "assure.test/dyn:1"
	out := filepath.Join(pc.dir, "dyn.tar")
	if err := Build(Spec{Name: name, WithLibs: true, Files: []File{{Src: bin, Dst: bin}}, Dirs: []string{"/tmp"}}, out); err != nil {
		t.Fatal(err)
	}
	_, _, _, entries := readOCITar(t, out).image(t)
	deps, err := sharedDeps(bin)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := readELF(bin)
	checkLibs(t, entries, bin, info.interp, deps)
	var names []string
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)
	t.Logf("%s: %d layer entries, %d libraries", bin, len(entries), len(deps))

	if err := Import(pc.address, testNamespace, out); err != nil {
		t.Fatal(err)
	}
	got := pc.mustCtr(t, append([]string{"run", "--rm", "--runtime", "io.containerd.runc.v2", name, "dyn1"}, args...)...)
	if !strings.Contains(got, want) {
		t.Errorf("%s in the container: %q, want it to contain %q\nlayer: %v", strings.Join(args, " "), got, want, names)
	}
}

// hack/containerd.sh: refusals, idempotent start, env, status, stop.
func TestContainerdScript(t *testing.T) {
	needContainerd(t)
	script := scriptPath(t)
	run := func(args ...string) (string, error) {
		out, err := exec.Command("bash", append([]string{script}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("start", "/var/tmp/assure-nope"); err == nil || !strings.Contains(out, "not under /tmp") {
		t.Errorf("start outside /tmp: %v\n%s", err, out)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(full, "/tmp/") {
		if out, err := run("start", full); err == nil || !strings.Contains(out, "not empty") {
			t.Errorf("start in a non-empty directory: %v\n%s", err, out)
		}
		if out, err := run("stop", full); err == nil || !strings.Contains(out, "not hold a containerd") {
			t.Errorf("stop of a directory it did not make: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(full, "x")); err != nil {
			t.Errorf("refused stop removed files: %v", err)
		}
	}
	if out, err := run("stop", "/tmp/assure-image-does-not-exist"); err != nil {
		t.Errorf("stop of a missing directory: %v\n%s", err, out)
	}

	pc := startContainerd(t)
	pid, _ := os.ReadFile(filepath.Join(pc.dir, "containerd.pid"))
	if out, err := run("start", pc.dir); err != nil || !strings.Contains(out, "already running") {
		t.Errorf("second start: %v\n%s", err, out)
	}
	if pid2, _ := os.ReadFile(filepath.Join(pc.dir, "containerd.pid")); !bytes.Equal(pid, pid2) {
		t.Errorf("second start changed the pid: %s -> %s", pid, pid2)
	}
	if out, err := run("status", pc.dir); err != nil || !strings.Contains(out, "running") {
		t.Errorf("status: %v\n%s", err, out)
	}
	out, err := run("env", pc.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"export ", "CONTAINERD_ADDRESS=" + pc.address, "CONTAINERD_NAMESPACE=" + testNamespace} {
		if !strings.Contains(out, want) {
			t.Errorf("env: %q lacks %q", out, want)
		}
	}
	// The environment it prints is enough for ctr.
	sh := exec.Command("bash", "-c", "eval \"$(bash "+script+" env "+pc.dir+")\" && ctr version && ctr namespaces ls -q")
	if out, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(out), testNamespace) {
		t.Errorf("ctr with the printed environment: %v\n%s", err, out)
	}
	for _, f := range []string{"config.toml", "containerd.log", "containerd.sock", "root", "state"} {
		if _, err := os.Stat(filepath.Join(pc.dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(pc.dir, "config.toml"))
	if !strings.Contains(string(cfg), "version = 2") || !strings.Contains(string(cfg), `root = "`+pc.dir+`/root"`) {
		t.Errorf("config.toml:\n%s", cfg)
	}
}
