package oci

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/resolve"
)

// Image label keys, which are also the OCI annotation keys that override
// them on a container's runtime spec.
const (
	// LabelManifest holds a manifest inline (JSON).
	LabelManifest = "dev.assure.manifest"
	// LabelManifestFile names a manifest file inside the image's root
	// filesystem, by its absolute path in the container.
	LabelManifestFile = "dev.assure.manifest.file"
)

// MaxLabelSize is containerd's limit on a label, key and value together:
// ctr run and the CRI plugin copy an image's labels onto the container,
// and containerd refuses the container when one is larger.
const MaxLabelSize = 4096

// CheckLabelSize refuses a label that containerd would refuse, with an
// error that says what to do about an assure manifest:
//
//	label dev.assure.manifest: 5123 bytes with its key; containerd refuses labels over 4096 bytes (key and value): put the manifest in a file in the image and name it with label dev.assure.manifest.file
func CheckLabelSize(key, value string) error {
	n := len(key) + len(value)
	if n <= MaxLabelSize {
		return nil
	}
	hint := ""
	if key == LabelManifest {
		hint = ": put the manifest in a file in the image and name it with label " + LabelManifestFile
	}
	return fmt.Errorf("label %s: %d bytes with its key; containerd refuses labels over %d bytes (key and value)%s", key, n, MaxLabelSize, hint)
}

// Found is a manifest and where it came from.
type Found struct {
	Manifest *manifest.Manifest
	// Source says where the manifest came from, for logs:
	// "label dev.assure.manifest" or
	// "annotation dev.assure.manifest.file (/etc/assure.json)".
	Source string

	prefix string // "label dev.assure.manifest.file", for errors
	file   string // the manifest file's path in the container, or ""
}

// FindManifest finds the manifest of a container from its image's labels
// and its runtime spec's annotations, reading a manifest file from the
// root filesystem at rootfs (which is only used for the file key).
//
// If either key is an annotation, the annotations are used and the labels
// ignored entirely: annotations are how a Kubernetes pod annotation
// reaches the runtime, and an annotation must be able to replace an
// image's manifest whatever form the image gives it. Within the source
// used, setting both keys is an error. With neither key in either source,
// FindManifest returns (nil, nil): the container has no manifest and runs
// as under plain runc.
//
// Errors name the label or annotation and the problem:
//
//	label dev.assure.manifest: manifest: invalid JSON at line 1, column 2 (offset 1): invalid character 'x' looking for beginning of object key string
//	annotation dev.assure.manifest.file: /etc/../../../etc/shadow: escapes the container root filesystem (".." above /)
//	label dev.assure.manifest.file: manifest /etc/assure.json: rescuePoints[0] (handle in /srv/app): field "scope": must be "process" or "container", got "global"
//
// Manifest problems are *manifest.Error values and path problems
// *PathError values, wrapped.
func FindManifest(labels, annotations map[string]string, rootfs string) (*Found, error) {
	kind, values := source(labels, annotations)
	inline, hasInline := values[LabelManifest]
	file, hasFile := values[LabelManifestFile]
	switch {
	case hasInline && hasFile:
		return nil, fmt.Errorf("%s %s and %s %s are both set: use one or the other",
			kind, LabelManifest, kind, LabelManifestFile)
	case hasInline:
		if kind == "label" {
			// containerd refuses such a label on a container; one that
			// reached us from the image's config alone gets the same rule.
			if err := CheckLabelSize(LabelManifest, inline); err != nil {
				return nil, err
			}
		}
		return parseInline(kind+" "+LabelManifest, inline)
	case hasFile:
		return loadFile(kind+" "+LabelManifestFile, file, rootfs)
	}
	return nil, nil
}

// source picks where the manifest comes from: annotations override labels.
func source(labels, annotations map[string]string) (string, map[string]string) {
	if _, ok := annotations[LabelManifest]; ok {
		return "annotation", annotations
	}
	if _, ok := annotations[LabelManifestFile]; ok {
		return "annotation", annotations
	}
	return "label", labels
}

// NeedsRootfs reports whether the manifest is a file in the image (the
// source FindManifest would use names one), so that it can be read only
// once the root filesystem is mounted.
func NeedsRootfs(labels, annotations map[string]string) bool {
	_, values := source(labels, annotations)
	_, hasFile := values[LabelManifestFile]
	return hasFile
}

func parseInline(source, value string) (*Found, error) {
	// Checked before converting: a huge label is not copied.
	if len(value) > manifest.MaxSize {
		return nil, fmt.Errorf("%s: manifest is %d bytes, larger than the limit of %d", source, len(value), manifest.MaxSize)
	}
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%s: is empty: set it to a manifest, or remove it", source)
	}
	m, err := manifest.Parse([]byte(value))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &Found{Manifest: m, Source: source, prefix: source}, nil
}

func loadFile(source, p, rootfs string) (*Found, error) {
	if err := checkFileValue(p); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	m, err := readManifest(rootfs, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &Found{Manifest: m, Source: source + " (" + p + ")", prefix: source, file: p}, nil
}

// checkFileValue checks the value of a file key before it is looked up.
// Control characters are legal in a Linux path but would let an image
// forge lines in logs, and are refused, so that the path can be printed as
// it is afterwards.
func checkFileValue(p string) error {
	switch {
	case p == "":
		return errors.New("is empty: it must name a manifest file inside the image, such as /etc/assure.json")
	case len(p) > resolve.MaxPathLen:
		return fmt.Errorf("path is %d bytes long (limit %d)", len(p), resolve.MaxPathLen)
	case strings.IndexFunc(p, unicode.IsControl) >= 0 || strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %s contains control characters", resolve.Printable(p))
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("must be an absolute path inside the image, got %s", resolve.Printable(p))
	}
	return nil
}

// readManifest reads and parses the manifest file at p inside the root
// filesystem rootfs: confined to rootfs, a regular file only, at most
// manifest.MaxSize bytes.
func readManifest(rootfs, p string) (*manifest.Manifest, error) {
	r, err := resolve.OpenRoot(rootfs)
	if err != nil {
		return nil, &PathError{Path: p, Err: err}
	}
	defer r.Close()
	f, _, err := r.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return nil, &PathError{Path: p, Err: fmt.Errorf("read: %w", resolve.Errno(err))}
	}
	if len(data) > manifest.MaxSize {
		return nil, &PathError{Path: p, Err: fmt.Errorf("larger than the limit of %d bytes", manifest.MaxSize)}
	}
	m, err := manifest.Parse(data)
	if err != nil {
		var me *manifest.Error
		if errors.As(err, &me) {
			me.File = p
			return nil, me
		}
		return nil, &manifest.Error{File: p, Index: -1, Elem: -1, Err: err}
	}
	return m, nil
}

// CheckBinaries runs CheckBinaries on the manifest found, with errors
// that also say where the manifest came from:
//
//	label dev.assure.manifest: manifest: rescuePoints[2] (handle in /usr/bin/server): field "binary": /usr/bin/server does not exist in the image
//	annotation dev.assure.manifest.file: manifest /etc/assure.json: rescuePoints[0] (...): field "binary": ...
func (f *Found) CheckBinaries(rootfs string) error {
	err := CheckBinaries(f.Manifest, rootfs)
	if err == nil {
		return nil
	}
	var me *manifest.Error
	if f.file != "" && errors.As(err, &me) {
		me.File = f.file
	}
	prefix := f.prefix
	if prefix == "" {
		prefix = f.Source
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// Declares reports whether the labels or annotations name a manifest at
// all (valid or not): a container that does not has nothing to supervise.
func Declares(labels, annotations map[string]string) bool {
	_, values := source(labels, annotations)
	_, inline := values[LabelManifest]
	_, file := values[LabelManifestFile]
	return inline || file
}
