package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/containerd/containerd/pkg/atomicfile"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// specFile is the runtime spec's file name in a bundle.
const specFile = "config.json"

// SpecFromBundle reads the runtime spec (config.json) of the OCI bundle
// at bundle.
func SpecFromBundle(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, specFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read runtime spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse runtime spec %s: %w", p, err)
	}
	return &s, nil
}

// WriteSpec replaces the runtime spec (config.json) of the bundle at
// bundle with s, atomically: it writes a temporary file in the bundle,
// syncs it, and renames it over config.json, so that runc never sees a
// partial spec. The file's mode is 0644. Fields of the old file that
// specs.Spec does not know are not kept.
func WriteSpec(bundle string, s *specs.Spec) (err error) {
	if s == nil {
		return errors.New("write runtime spec: nil spec")
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	// atomicfile writes a temporary file, syncs it and renames it over
	// the spec (its mode is not subject to the umask).
	f, err := atomicfile.New(filepath.Join(bundle, specFile), 0o644)
	if err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Cancel()
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	// Make the rename itself durable.
	if d, derr := os.Open(bundle); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
