package shim

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
)

// handoffFile, in a task's bundle, holds what the start command asked
// containerd about the container (containerInfo) (delegate.go), for the daemon
// that serves the task. The bundle is containerd's own directory, made
// for this task and removed with it, so nothing from the image can put
// the file there.
const handoffFile = "assure-labels.json"

// maxHandoff bounds what is read back: containerd refuses a label over
// 4 KiB, and an image config has a few hundred at most.
const maxHandoff = 4 << 20

func writeHandoff(bundle string, info *containerInfo) {
	data, err := json.Marshal(info)
	if err != nil {
		return
	}
	// Best effort: without it the daemon asks containerd.
	os.WriteFile(filepath.Join(bundle, handoffFile), data, 0o600)
}

func hasHandoff(bundle string) bool {
	_, err := os.Lstat(filepath.Join(bundle, handoffFile))
	return err == nil
}

func readHandoff(bundle string) (*containerInfo, bool) {
	f, err := os.Open(filepath.Join(bundle, handoffFile))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHandoff+1))
	if err != nil || len(data) > maxHandoff {
		return nil, false
	}
	var info containerInfo
	if json.Unmarshal(data, &info) != nil || info.Labels == nil {
		return nil, false
	}
	return &info, true
}
