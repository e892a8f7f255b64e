package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/oci"
	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/resolve"
)

// libraryDirs are searched, under --root, for a rescue point whose binary
// is a bare file name. At run time such a binary matches whatever mapped
// module has that base name; this search only lets validate check the
// function against the library the image most likely loads.
var libraryDirs = []string{
	"/lib", "/usr/lib", "/lib64", "/usr/lib64",
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib",
}

func manifestCommand() *cli.Command {
	return &cli.Command{
		Name:        "manifest",
		Usage:       "work with rescue-point manifests",
		Subcommands: []*cli.Command{manifestValidateCommand()},
	}
}

func manifestValidateCommand() *cli.Command {
	return &cli.Command{
		Name:      "validate",
		Usage:     "check a manifest and resolve its rescue points against their binaries",
		ArgsUsage: "FILE [--root DIR]",
		Description: "Parses FILE, then opens every rescue point's binary under --root and checks that its " +
			"\"function\" is defined there, or that its \"address\" is in executable code. A bare library " +
			"name is looked for in the usual library directories; if it is not found it is reported as " +
			"resolved at run time. Prints a table of the resolved rescue points, or exits with status 1 " +
			"and a message naming each entry and field at fault.",
		Flags: []cli.Flag{&cli.StringFlag{
			Name:  "root",
			Value: "/",
			Usage: "resolve absolute binary paths and library names inside `DIR` (e.g. an image's root file system)",
		}},
		Action: func(c *cli.Context) error {
			file, root, err := validateArgs(c.Args().Slice(), c.String("root"))
			if err != nil {
				return cli.Exit("manifest validate: "+err.Error(), 2)
			}
			return validateManifest(c.App.Writer, c.App.ErrWriter, file, root)
		},
	}
}

// validateArgs takes FILE and an optional --root from args. urfave/cli
// stops parsing flags at the first argument, so "validate FILE --root DIR"
// (the documented form) leaves the flag among the arguments.
func validateArgs(args []string, root string) (file, rootDir string, err error) {
	var files []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			files = append(files, args[i+1:]...)
			i = len(args)
		case a == "--root" || a == "-root":
			if i+1 == len(args) {
				return "", "", errors.New("flag --root needs a value")
			}
			root = args[i+1]
			i++
		case strings.HasPrefix(a, "--root=") || strings.HasPrefix(a, "-root="):
			_, root, _ = strings.Cut(a, "=")
		case len(a) > 1 && a[0] == '-':
			return "", "", fmt.Errorf("unknown flag %s", a)
		default:
			files = append(files, a)
		}
	}
	if len(files) != 1 {
		return "", "", fmt.Errorf("expected exactly one manifest FILE, got %d arguments", len(files))
	}
	if root == "" {
		return "", "", errors.New("--root must not be empty")
	}
	rootDir, err = filepath.Abs(root)
	if err != nil {
		return "", "", fmt.Errorf("--root %s: %w", root, err)
	}
	st, err := os.Stat(rootDir)
	if err != nil {
		return "", "", fmt.Errorf("--root %s: %w", root, unwrapPath(err))
	}
	if !st.IsDir() {
		return "", "", fmt.Errorf("--root %s: not a directory", root)
	}
	return files[0], rootDir, nil
}

// resolution is the outcome of checking one rescue point.
type resolution struct {
	rp      manifest.RescuePoint
	path    string // the in-root path checked, "" if resolved at run time
	addr    uint64
	funcCol string // FUNCTION column
}

func validateManifest(stdout, stderr io.Writer, file, root string) error {
	m, rows, err := resolveManifest(stderr, file, root)
	if err != nil {
		return err
	}
	if err := writeResolutions(stdout, rows); err != nil {
		return cli.Exit(fmt.Sprintf("manifest validate: %v", err), 1)
	}
	fmt.Fprintln(stdout, summary(file, m, rows))
	if compact, err := m.JSON(); err == nil {
		if err := oci.CheckLabelSize(oci.LabelManifest, string(compact)); err != nil {
			fmt.Fprintf(stderr, "assure: note: as an image label: %v\n", err)
		}
	}
	return nil
}

// resolveManifest loads a manifest and resolves every rescue point against
// its binary under root. When several fail, each is listed on stderr; the error, a cli exit
// error, names the entries that failed. run and attach use it too, so that
// a misspelt function fails before the program starts.
func resolveManifest(stderr io.Writer, file, root string) (*manifest.Manifest, []resolution, error) {
	m, err := manifest.Load(file)
	if err != nil {
		return nil, nil, cli.Exit(err.Error(), 1)
	}
	return checkManifest(stderr, m, file, root)
}

// checkManifest resolves every rescue point of m (read from file) in the
// binaries under root, as resolveManifest does.
func checkManifest(stderr io.Writer, m *manifest.Manifest, file, root string) (*manifest.Manifest, []resolution, error) {
	r := &resolver{root: root, files: map[string]*binaryFile{}}
	defer r.close() // a supervisor must not hold the container's root open
	var (
		rows []resolution
		errs []error
		seen = map[string]int{} // resolved file and address -> entry
	)
	for i, rp := range m.RescuePoints {
		res, field, err := r.resolve(rp)
		if err == nil && res.path != "" {
			key := res.path + "\x00" + strconv.FormatUint(res.addr, 16)
			if first, dup := seen[key]; dup {
				field = fieldName(rp)
				err = fmt.Errorf("resolves to 0x%x in %s, like rescuePoints[%d]", res.addr, res.path, first)
			} else {
				seen[key] = i
			}
		}
		if err != nil {
			errs = append(errs, manifest.EntryError(file, i, rp, field, err))
			continue
		}
		rows = append(rows, res)
	}
	if m.Heal != nil {
		// Candidates are armed by a crash, later: they must name what
		// is in these binaries now, like the rescue points.
		for i, c := range m.Heal.Candidates {
			if _, field, err := r.resolve(c); err != nil {
				e := manifest.EntryError(file, i, c, field, err)
				e.List = "heal.candidates"
				errs = append(errs, e)
			}
		}
	}
	switch len(errs) {
	case 0:
		return m, rows, nil
	case 1:
		return nil, nil, cli.Exit(errs[0].Error(), 1)
	}
	for _, e := range errs {
		fmt.Fprintf(stderr, "assure: %v\n", e)
	}
	what, total := "rescue points", len(m.RescuePoints)
	if m.Heal != nil && len(m.Heal.Candidates) > 0 {
		what, total = "rescue points and healing candidates", total+len(m.Heal.Candidates)
	}
	return nil, nil, cli.Exit(fmt.Sprintf("manifest %s: %d of %d %s failed to resolve", file, len(errs), total, what), 1)
}

func fieldName(rp manifest.RescuePoint) string {
	if rp.HasAddress {
		return "address"
	}
	return "function"
}

func summary(file string, m *manifest.Manifest, rows []resolution) string {
	late := 0
	for _, r := range rows {
		if r.path == "" {
			late++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "manifest %s: valid: %d rescue points", file, len(m.RescuePoints))
	if late > 0 {
		fmt.Fprintf(&b, " (%d resolved at run time)", late)
	}
	names := make([]string, len(m.Signals))
	for i, s := range m.Signals {
		names[i] = manifest.SignalName(s)
	}
	fmt.Fprintf(&b, "; signals %s; maxRecoveries %d", strings.Join(names, ","), m.MaxRecoveries)
	if m.MaxRecoveries == 0 {
		b.WriteString(" (never recovers)")
	}
	return b.String()
}

func writeResolutions(w io.Writer, rows []resolution) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BINARY\tFUNCTION\tADDRESS\tRETURN\tSCOPE")
	for _, r := range rows {
		bin := resolve.Printable(r.rp.Binary)
		if r.path != "" && r.path != r.rp.Binary {
			bin += " (" + resolve.Printable(r.path) + ")"
		}
		addr := "(run time)"
		if r.path != "" {
			addr = fmt.Sprintf("0x%x", r.addr)
		}
		ret := "void"
		if r.rp.Return != nil {
			ret = strconv.FormatInt(*r.rp.Return, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", bin, r.funcCol, addr, ret, r.rp.Scope)
	}
	return tw.Flush()
}

// resolver opens binaries under a root directory, each once.
type resolver struct {
	root  string
	dir   *resolve.Root          // opened at the first binary
	files map[string]*binaryFile // by in-root path
}

type binaryFile struct {
	f   *elfsym.File
	err error
}

// resolve checks rp against its binary. On error it also returns the
// manifest field the error is about.
func (r *resolver) resolve(rp manifest.RescuePoint) (resolution, string, error) {
	res := resolution{rp: rp, funcCol: displayName(rp.Name())}
	f, inRoot, err := r.open(rp.Binary)
	if err != nil {
		return res, "binary", err
	}
	if f == nil {
		return res, "", nil // a library not in the image's usual places
	}
	res.path = inRoot
	res.addr = rp.Address
	field := "address"
	if !rp.HasAddress {
		fn, err := f.Lookup(rp.Function)
		if err != nil {
			return res, "function", err
		}
		res.addr, field = fn.Addr, "function"
	}
	if err := f.CheckRescuePoint(res.addr); err != nil {
		return res, field, err
	}
	if rp.HasAddress {
		res.funcCol = "-"
		if name, _, ok := f.Symbolize(rp.Address); ok {
			res.funcCol = displayName(name)
		}
	}
	return res, "", nil
}

// open opens the binary a rescue point names: an absolute path under the
// root, or a bare name searched for in libraryDirs. It returns a nil File
// and no error for a bare name that is not found.
func (r *resolver) open(binary string) (*elfsym.File, string, error) {
	if filepath.IsAbs(binary) {
		f, err := r.openInRoot(binary)
		return f, binary, err
	}
	for _, dir := range libraryDirs {
		inRoot := path.Join(dir, binary)
		f, err := r.openInRoot(inRoot)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		return f, inRoot, err
	}
	return nil, "", nil
}

// openInRoot opens inRoot, a path inside the image, confined to the root
// as every path of a manifest is (recovery/resolve): symlinks resolved as
// in the container, ".." above the root refused.
func (r *resolver) openInRoot(inRoot string) (*elfsym.File, error) {
	if b, ok := r.files[inRoot]; ok {
		return b.f, b.err
	}
	f, err := r.openUncached(inRoot)
	r.files[inRoot] = &binaryFile{f: f, err: err}
	return f, err
}

func (r *resolver) close() {
	if r.dir != nil {
		r.dir.Close()
	}
}

func (r *resolver) openUncached(inRoot string) (*elfsym.File, error) {
	if r.dir == nil {
		d, err := resolve.OpenRoot(r.root)
		if err != nil {
			return nil, &resolve.PathError{Path: inRoot, Err: err}
		}
		r.dir = d
	}
	fd, res, err := r.dir.Open(inRoot)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	// Named by its in-image path: that is what the manifest says and what
	// the user can act on.
	return elfsym.NewFile(fd, res.Stat.Size, inRoot)
}

// unwrapPath drops the path from an *fs.PathError when the message
// already names the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
