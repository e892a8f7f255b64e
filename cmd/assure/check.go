package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/manifest"
)

// checkBinaries resolves, before the program starts, every rescue point
// whose binary is an absolute path present on this machine, so that a
// misspelt function fails at once rather than when the module is mapped.
// Bare library names are resolved when the program maps them.
func checkBinaries(m *manifest.Manifest) error {
	var errs []error
	for i, rp := range m.RescuePoints {
		if !filepath.IsAbs(rp.Binary) {
			continue
		}
		if _, err := os.Stat(rp.Binary); err != nil {
			errs = append(errs, fmt.Errorf("manifest: rescuePoints[%d] (%s): field \"binary\": %w", i, rp, err))
			continue
		}
		f, err := elfsym.Open(rp.Binary)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifest: rescuePoints[%d] (%s): field \"binary\": %w", i, rp, err))
			continue
		}
		if rp.HasAddress {
			if !f.IsExecAddr(rp.Address) {
				errs = append(errs, fmt.Errorf("manifest: rescuePoints[%d] (%s): field \"address\": %#x is not in executable code of %s", i, rp, rp.Address, rp.Binary))
			}
		} else if _, err := f.Lookup(rp.Function); err != nil {
			errs = append(errs, fmt.Errorf("manifest: rescuePoints[%d] (%s): field \"function\": %w", i, rp, err))
		}
		f.Close()
	}
	return errors.Join(errs...)
}
