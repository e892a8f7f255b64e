package checkpoint

import "golang.org/x/sys/unix"

// Test-only views of the engine's internals.

// ShadowPages is the number of pages the shadow file holds.
func (m *Mirror) ShadowPages() int {
	var st unix.Stat_t
	if unix.Fstat(m.shadowFd, &st) != nil {
		return -1
	}
	return int(st.Blocks * 512 / PageSize)
}

// UndoPages is the number of pages held in the logs of nested levels.
func (m *Mirror) UndoPages() int {
	n := 0
	for _, l := range m.levels {
		n += len(l.log)
	}
	return n
}

// Levels is the number of active checkpoints.
func (m *Mirror) Levels() int { return len(m.levels) }

// StalePages is 0: the mirror keeps no stale pages.
func (m *Mirror) StalePages() int { return 0 }
