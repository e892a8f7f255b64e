package image

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// maxLinks bounds symlink resolution, as the kernel's ELOOP does.
const maxLinks = 40

type kind int

const (
	kindDir kind = iota
	kindFile
	kindSymlink
)

// node is one entry of the image's filesystem.
type node struct {
	kind     kind
	mode     os.FileMode // permission bits (and setuid/setgid/sticky)
	src      string      // kindFile: the host file to copy
	target   string      // kindSymlink
	children map[string]*node
}

// tree is the layer's filesystem, built in memory and written as a tar.
// Paths inside it are resolved as the kernel would resolve them in the
// container: a symlink met on the way to an entry's parent is followed
// (absolute targets from the image root), so an entry added under /lib
// when /lib is a symlink to usr/lib lands in /usr/lib.
type tree struct {
	root *node
}

func newTree() *tree {
	return &tree{root: &node{kind: kindDir, mode: 0o755, children: map[string]*node{}}}
}

// cleanAbs checks that p is absolute and returns it cleaned.
func cleanAbs(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q in the image is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("path %q names the image root", p)
	}
	return c, nil
}

func split(p string) []string {
	return strings.Split(strings.TrimPrefix(p, "/"), "/")
}

// walk resolves the directory p (absolute, clean), following symlinks;
// with create, missing directories are made (mode 0755). It returns the
// directory node and its resolved path.
func (t *tree) walk(p string, create bool, links *int) (*node, string, error) {
	cur, curPath := t.root, "/"
	if p == "/" {
		return cur, curPath, nil
	}
	parts := split(p)
	for i, name := range parts {
		child, ok := cur.children[name]
		if !ok {
			if !create {
				return nil, "", fmt.Errorf("%s: no such directory in the image", path.Join(curPath, name))
			}
			child = &node{kind: kindDir, mode: 0o755, children: map[string]*node{}}
			cur.children[name] = child
		}
		switch child.kind {
		case kindDir:
			cur, curPath = child, path.Join(curPath, name)
		case kindFile:
			return nil, "", fmt.Errorf("%s: is a file in the image, not a directory", path.Join(curPath, name))
		case kindSymlink:
			*links++
			if *links > maxLinks {
				return nil, "", fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			tgt := child.target
			if !path.IsAbs(tgt) {
				tgt = path.Join(curPath, tgt)
			}
			rest := path.Join(append([]string{path.Clean(tgt)}, parts[i+1:]...)...)
			return t.walk(rest, create, links)
		}
	}
	return cur, curPath, nil
}

// slot cleans image path p and resolves its parent directory, creating
// missing directories: where an entry named name goes.
func (t *tree) slot(p string) (clean string, d *node, name string, err error) {
	if clean, err = cleanAbs(p); err != nil {
		return "", nil, "", err
	}
	links := 0
	dir, name := path.Split(clean)
	d, _, err = t.walk(path.Clean(dir), true, &links)
	return clean, d, name, err
}

// addDir adds directory p (and its parents). An existing directory keeps its
// entries and takes mode; a symlink to a directory is accepted as is.
func (t *tree) addDir(p string, mode os.FileMode) error {
	p, d, name, err := t.slot(p)
	if err != nil {
		return err
	}
	if n, ok := d.children[name]; ok {
		switch n.kind {
		case kindDir:
			n.mode = mode
			return nil
		case kindSymlink:
			links := 0
			if _, _, err := t.walk(p, false, &links); err != nil {
				return fmt.Errorf("directory %s: is a symlink in the image that does not lead to a directory: %w", p, err)
			}
			return nil
		default:
			return fmt.Errorf("directory %s: already a file in the image", p)
		}
	}
	d.children[name] = &node{kind: kindDir, mode: mode, children: map[string]*node{}}
	return nil
}

// addFile adds regular file p with the content of host file src. Adding
// the same source at the same place again is not an error.
func (t *tree) addFile(p, src string, mode os.FileMode) error {
	p, d, name, err := t.slot(p)
	if err != nil {
		return err
	}
	if n, ok := d.children[name]; ok {
		if n.kind == kindFile && n.src == src {
			return nil
		}
		return fmt.Errorf("file %s: already in the image (%s)", p, n.describe())
	}
	d.children[name] = &node{kind: kindFile, mode: mode, src: src}
	return nil
}

// addSymlink adds symlink p -> target. The same link again is not an error.
func (t *tree) addSymlink(p, target string) error {
	p, d, name, err := t.slot(p)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("symlink %s: empty target", p)
	}
	if n, ok := d.children[name]; ok {
		if n.kind == kindSymlink && n.target == target {
			return nil
		}
		return fmt.Errorf("symlink %s -> %s: already in the image (%s)", p, target, n.describe())
	}
	d.children[name] = &node{kind: kindSymlink, mode: 0o777, target: target}
	return nil
}

func (n *node) describe() string {
	switch n.kind {
	case kindDir:
		return "a directory"
	case kindSymlink:
		return "a symlink to " + n.target
	default:
		return "a file from " + n.src
	}
}

// epoch is the modification time of every entry: the layer's digest then
// depends only on its content.
var epoch = time.Unix(0, 0).UTC()

// writeTar writes the tree as a tar stream: parents before children, names
// in sorted order, owner root, fixed times.
func (t *tree) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	if err := t.writeNode(tw, "", t.root); err != nil {
		return err
	}
	return tw.Close()
}

func (t *tree) writeNode(tw *tar.Writer, name string, n *node) error {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(modeBits(n.mode)),
		ModTime: epoch,
		Format:  tar.FormatPAX,
	}
	switch n.kind {
	case kindDir:
		if name != "" {
			hdr.Typeflag = tar.TypeDir
			hdr.Name = name + "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
		names := make([]string, 0, len(n.children))
		for c := range n.children {
			names = append(names, c)
		}
		sort.Strings(names)
		for _, c := range names {
			if err := t.writeNode(tw, path.Join(name, c), n.children[c]); err != nil {
				return err
			}
		}
		return nil
	case kindSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = n.target
		return tw.WriteHeader(hdr)
	default:
		return writeFile(tw, hdr, n.src)
	}
}

func writeFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if n != st.Size() {
		return fmt.Errorf("%s: changed size while being read", src)
	}
	return nil
}

// modeBits converts an os.FileMode to the tar/Unix permission bits.
func modeBits(m os.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
