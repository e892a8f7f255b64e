package oci

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/resolve"
)

// Paths inside the container are resolved by recovery/resolve; its errors
// are known here by these names too.
type PathError = resolve.PathError

// ErrEscapesRoot is wrapped by errors about a path whose lookup climbs
// above the container's root with "..".
var ErrEscapesRoot = resolve.ErrEscapesRoot

// ResolveBinary resolves binary inside the container's root filesystem
// (resolve.ResolveBinary).
func ResolveBinary(rootfs, binary string) (string, unix.Stat_t, error) {
	return resolve.ResolveBinary(rootfs, binary)
}

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// CheckBinaries checks that every rescue point of m whose binary is an
// absolute path names, in the root filesystem at rootfs, a regular ELF
// file (by its 4-byte magic), resolved as ResolveBinary does. Bare names
// ("libc.so.6") are not checked: they match libraries as they are mapped
// at run time. The error, a *manifest.Error, names the first rescue point
// at fault:
//
//	manifest: rescuePoints[2] (handle in /usr/bin/server): field "binary": /usr/bin/server does not exist in the image
//
// Its File is empty; callers add where the manifest came from (see
// Found.CheckBinaries).
func CheckBinaries(m *manifest.Manifest, rootfs string) error {
	var r *resolve.Root
	checked := make(map[string]error)
	for i, rp := range m.RescuePoints {
		if !filepath.IsAbs(rp.Binary) {
			continue
		}
		err, done := checked[rp.Binary]
		if !done {
			if r == nil {
				var oerr error
				if r, oerr = resolve.OpenRoot(rootfs); oerr != nil {
					return manifest.EntryError("", i, rp, "binary", &PathError{Path: rp.Binary, Err: oerr})
				}
				defer r.Close()
			}
			err = checkELF(r, rp.Binary)
			checked[rp.Binary] = err
		}
		if err != nil {
			return manifest.EntryError("", i, rp, "binary", err)
		}
	}
	return nil
}

func checkELF(r *resolve.Root, p string) error {
	f, _, err := r.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, len(elfMagic))
	n, err := io.ReadFull(f, magic)
	switch {
	case err == nil && string(magic) == string(elfMagic):
		return nil
	case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
		return &PathError{Path: p, Err: fmt.Errorf("read: %w", resolve.Errno(err))}
	case n >= 2 && magic[0] == '#' && magic[1] == '!':
		return &PathError{Path: p, Err: errors.New("is a script, not an ELF file: name the binary that runs the function")}
	case n < len(elfMagic):
		return &PathError{Path: p, Err: fmt.Errorf("not an ELF file (%d bytes long)", n)}
	}
	return &PathError{Path: p, Err: fmt.Errorf("not an ELF file (starts with %s)", strconv.Quote(string(magic)))}
}
