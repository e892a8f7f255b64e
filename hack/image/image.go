// Package image builds OCI image tarballs from host files plus labels, with
// no registry and no Docker, and imports them into containerd with `ctr`.
// The tests and the demo use it to make small images (busybox, redis-server
// with its libraries) whose config labels carry assure manifests.
//
// The tarball is an OCI image layout in a tar (oci-layout, index.json,
// blobs/sha256/...), the format containerd 1.6's `ctr images import`
// documents as "oci.v1". Its index names the image with the annotation
// io.containerd.image.name, which containerd uses as the image name as it is,
// and org.opencontainers.image.ref.name (the tag), for other tools.
package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/assure-rt/assure/oci"
)

// File is a host file copied into the image.
type File struct {
	Src  string      // on the host; symlinks are followed
	Dst  string      // absolute, in the image
	Mode os.FileMode // 0: the host file's permission bits
}

// Spec describes an image.
type Spec struct {
	Name  string // e.g. "assure.test/redis:1"
	Files []File
	// WithLibs also adds, for each ELF file of Files, its dynamic loader and
	// its shared libraries (transitively) at their host paths, with the
	// symlinks on the way kept as symlinks (as /lib -> usr/lib).
	WithLibs   bool
	Symlinks   map[string]string // Dst -> target
	Dirs       []string          // empty directories (/tmp and /var/tmp get mode 1777, others 0755)
	Entrypoint []string
	Cmd        []string
	Env        []string // PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin when it sets no PATH
	WorkingDir string
	Labels     map[string]string
}

// Annotation keys of the index entry.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build writes the image described by spec to out as an OCI image layout
// tarball. The image has one layer (gzip) with the files, directories and
// symlinks; its config carries the labels, entrypoint, command, environment
// and working directory; its platform is linux and the architecture Go was
// built for (amd64 here), as the host files it copies are.
func Build(spec Spec, out string) error {
	if err := build(spec, out); err != nil {
		return fmt.Errorf("image %s: %w", spec.Name, err)
	}
	return nil
}

func build(spec Spec, out string) error {
	ref, err := name.ParseReference(spec.Name, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("invalid image name: %w", err)
	}
	for k, v := range spec.Labels {
		if err := oci.CheckLabelSize(k, v); err != nil {
			return err
		}
	}
	t, err := layerTree(spec)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	layerTar := filepath.Join(work, "layer.tar")
	if err := writeTree(t, layerTar); err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(layerTar, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "assure hack/image"},
	})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        withPath(spec.Env),
		WorkingDir: spec.WorkingDir,
		Labels:     spec.Labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}

	dir := filepath.Join(work, "oci")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := map[string]string{AnnotationImageName: ref.Name()}
	if tag, ok := ref.(name.Tag); ok {
		ann[AnnotationRefName] = tag.TagStr()
	}
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if err := lp.AppendImage(img, layout.WithAnnotations(ann), layout.WithPlatform(platform)); err != nil {
		return err
	}
	return tarDir(dir, out)
}

func withPath(env []string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return env
		}
	}
	return append([]string{defaultPath}, env...)
}

// layerTree lays out the layer's filesystem: libraries first (so that the
// host's directory symlinks, as /lib -> usr/lib, are in place before the
// files that go below them), then files, symlinks and directories.
func layerTree(spec Spec) (*tree, error) {
	t := newTree()
	if spec.WithLibs {
		for _, f := range spec.Files {
			libs, err := sharedDeps(f.Src)
			if err != nil {
				return nil, err
			}
			for _, l := range libs {
				if err := addHostPath(t, l); err != nil {
					return nil, fmt.Errorf("library %s of %s: %w", l, f.Src, err)
				}
			}
		}
	}
	for _, f := range spec.Files {
		st, err := os.Stat(f.Src)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", f.Src)
		}
		mode := f.Mode
		if mode == 0 {
			mode = st.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid)
		}
		if err := t.addFile(f.Dst, f.Src, mode); err != nil {
			return nil, err
		}
	}
	links := make([]string, 0, len(spec.Symlinks))
	for dst := range spec.Symlinks {
		links = append(links, dst)
	}
	sort.Strings(links)
	for _, dst := range links {
		if err := t.addSymlink(dst, spec.Symlinks[dst]); err != nil {
			return nil, err
		}
	}
	for _, d := range spec.Dirs {
		mode := os.FileMode(0o755)
		if c := path.Clean(d); c == "/tmp" || c == "/var/tmp" {
			mode = 0o777 | os.ModeSticky
		}
		if err := t.addDir(d, mode); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func writeTree(t *tree, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := t.writeTar(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tarDir writes the files under dir to a tar at out (written to a temporary
// name and renamed, so out is never half written).
func tarDir(dir, out string) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".mkimage-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	t := newTree()
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		if fi.IsDir() {
			return t.addDir(rel, 0o755)
		}
		return t.addFile(rel, p, 0o644)
	})
	if err == nil {
		err = t.writeTar(tmp)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// Import imports the tarball into containerd at address, in namespace, with
// `ctr images import`, which also unpacks it for the namespace's default
// snapshotter. The image is named by the tarball itself (see Build).
func Import(address, namespace, tarball string) error {
	ctr, err := exec.LookPath(ctrBin())
	if err != nil {
		return fmt.Errorf("import %s: ctr not found: %w", tarball, err)
	}
	if sock := strings.TrimPrefix(address, "unix://"); strings.HasPrefix(sock, "/") {
		if _, err := os.Stat(sock); err != nil {
			return fmt.Errorf("import %s: no containerd socket: %w", tarball, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"--address", address, "--namespace", namespace, "images", "import", tarball}
	cmd := exec.CommandContext(ctx, ctr, args...)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("import %s: ctr %s: %w\n%s", tarball, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ctrBin is the ctr command: $CTR_BIN (as for hack/containerd.sh, e.g. a
// containerd 2.x ctr), else ctr on PATH.
func ctrBin() string {
	if b := os.Getenv("CTR_BIN"); b != "" {
		return b
	}
	return "ctr"
}
