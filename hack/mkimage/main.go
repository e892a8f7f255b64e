// Command mkimage builds an OCI image tarball from host files plus labels
// (no registry, no Docker) and optionally imports it into containerd.
//
//	go run ./hack/mkimage -name assure.test/redis:1 -o redis.tar \
//	    -add /usr/bin/redis-server:/usr/bin/redis-server -libs -dir /tmp \
//	    -label dev.assure.manifest="$(cat manifest.json)" \
//	    -entrypoint '["/usr/bin/redis-server"]' \
//	    -import -address /tmp/ctrd/containerd.sock -namespace assure-test
//
// -add SRC:DST[:MODE] copies a host file (MODE in octal; default the host
// file's); -symlink DST:TARGET adds a symlink; -entrypoint and -cmd take a
// JSON array, or a plain string that becomes a one-element list.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/assure-rt/assure/hack/image"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var (
		name                              = fs.String("name", "", "image name, e.g. assure.test/redis:1 (required)")
		out                               = fs.String("o", "", "output tarball (required)")
		libs                              = fs.Bool("libs", false, "also add the dynamic loader and shared libraries of each ELF file, at their host paths")
		entrypoint                        = fs.String("entrypoint", "", `entrypoint: JSON array ('["/bin/sh","-c"]') or one path`)
		cmd                               = fs.String("cmd", "", `command: JSON array or one word`)
		workdir                           = fs.String("workdir", "", "working directory")
		doImport                          = fs.Bool("import", false, "import the tarball with ctr after building it")
		address                           = fs.String("address", os.Getenv("CONTAINERD_ADDRESS"), "containerd socket for -import ($CONTAINERD_ADDRESS)")
		namespace                         = fs.String("namespace", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace for -import ($CONTAINERD_NAMESPACE)")
		labels, adds, dirs, symlinks, env multi
	)
	fs.Var(&labels, "label", "image config label K=V (repeatable)")
	fs.Var(&adds, "add", "host file SRC:DST[:MODE] (repeatable)")
	fs.Var(&dirs, "dir", "empty directory in the image (repeatable)")
	fs.Var(&symlinks, "symlink", "symlink DST:TARGET (repeatable)")
	fs.Var(&env, "env", "environment variable K=V (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *name == "" || *out == "" {
		return fmt.Errorf("-name and -o are required")
	}
	spec := image.Spec{
		Name:       *name,
		WithLibs:   *libs,
		Dirs:       dirs,
		Env:        env,
		WorkingDir: *workdir,
		Labels:     map[string]string{},
		Symlinks:   map[string]string{},
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q: want K=V", l)
		}
		spec.Labels[k] = v
	}
	for _, a := range adds {
		f, err := parseAdd(a)
		if err != nil {
			return err
		}
		spec.Files = append(spec.Files, f)
	}
	for _, s := range symlinks {
		dst, tgt, ok := strings.Cut(s, ":")
		if !ok || dst == "" || tgt == "" {
			return fmt.Errorf("-symlink %q: want DST:TARGET", s)
		}
		spec.Symlinks[dst] = tgt
	}
	var err error
	if spec.Entrypoint, err = parseList("entrypoint", *entrypoint); err != nil {
		return err
	}
	if spec.Cmd, err = parseList("cmd", *cmd); err != nil {
		return err
	}
	if err := image.Build(spec, *out); err != nil {
		return err
	}
	if *doImport {
		if *address == "" {
			return fmt.Errorf("-import needs -address (or $CONTAINERD_ADDRESS)")
		}
		if err := image.Import(*address, *namespace, *out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "mkimage: imported %s into %s (namespace %s)\n", *name, *address, *namespace)
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parseAdd parses SRC:DST[:MODE].
func parseAdd(a string) (image.File, error) {
	parts := strings.Split(a, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return image.File{}, fmt.Errorf("-add %q: want SRC:DST[:MODE]", a)
	}
	f := image.File{Src: parts[0], Dst: parts[1]}
	if len(parts) == 3 {
		m, err := strconv.ParseUint(parts[2], 8, 32)
		if err != nil || m > 0o7777 {
			return image.File{}, fmt.Errorf("-add %q: mode %q is not octal permission bits", a, parts[2])
		}
		f.Mode = os.FileMode(m & 0o777)
		if m&0o4000 != 0 {
			f.Mode |= os.ModeSetuid
		}
		if m&0o2000 != 0 {
			f.Mode |= os.ModeSetgid
		}
		if m&0o1000 != 0 {
			f.Mode |= os.ModeSticky
		}
	}
	return f, nil
}

// parseList takes a JSON array of strings, or a plain string as one element.
func parseList(flagName, v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	if strings.HasPrefix(strings.TrimSpace(v), "[") {
		var l []string
		if err := json.Unmarshal([]byte(v), &l); err != nil {
			return nil, fmt.Errorf("-%s %q: not a JSON array of strings: %w", flagName, v, err)
		}
		return l, nil
	}
	return []string{v}, nil
}
