package oci

import (
	"encoding/json"
	"errors"
	"fmt"
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
	tmp, err := os.CreateTemp(bundle, "."+specFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600; Chmod is not subject to the umask.
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	if err = os.Rename(tmp.Name(), filepath.Join(bundle, specFile)); err != nil {
		return fmt.Errorf("write runtime spec: %w", err)
	}
	// Make the rename itself durable.
	if d, derr := os.Open(bundle); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
