package events

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
)

// Dir is where container supervisors keep their events files.
const Dir = "/run/assure/events"

// ContainerFile is the events file of a container: one directory per
// containerd instance (its socket address, hashed), one per namespace.
func ContainerFile(address, namespace, id string) string {
	sum := sha256.Sum256([]byte(address))
	return filepath.Join(Dir, hex.EncodeToString(sum[:6]), filepath.Base(namespace), filepath.Base(id)+".jsonl")
}
