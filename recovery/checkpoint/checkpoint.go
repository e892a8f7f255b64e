// Package checkpoint saves and restores the memory of a supervised
// process. The supervisor owns everything else a rollback needs
// (registers, mappings, fds, threads); this package owns page contents.
package checkpoint

import "github.com/assure-rt/assure/recovery/procfs"

// ID names one checkpoint. A checkpoint taken for "container" scope has
// the same ID in every process it covers.
type ID uint64

// PageSize is the granularity of dirty tracking.
const PageSize = 4096

// Stats describes the work one operation did.
type Stats struct {
	// Pages copied: into the shadow at a checkpoint, back into the
	// process at a rollback.
	Pages int
}

// Tracker is a memory checkpoint engine for one process. Checkpoints
// nest: Rollback and Commit name any active checkpoint, not only the
// newest; rolling back to one discards every newer one.
//
// The supervisor calls these only while every thread of the process is
// stopped (Commit excepted: it touches no tracee memory).
type Tracker interface {
	// Checkpoint records the current contents of the process's writable
	// memory under id. maps is /proc/PID/maps read at the same stop.
	Checkpoint(id ID, maps []procfs.Mapping) (Stats, error)
	// Rollback writes back the contents recorded under id. The caller
	// has already restored the mapping layout of the checkpoint. Memory
	// shared with other processes is restored where this process wrote
	// it; with coordinated (every process sharing it rolls back to the
	// same checkpoint, "container" scope) it is restored whole, which also
	// undoes the writes of processes created since and ended by the
	// rollback.
	Rollback(id ID, coordinated bool) (Stats, error)
	// Commit forgets checkpoint id: its rescue point returned.
	Commit(id ID)
	// Active reports whether id is an active checkpoint here.
	Active(id ID) bool
	// Discarded tells the tracker that the process is about to discard
	// the contents of [start, end) (madvise MADV_DONTNEED, MADV_REMOVE,
	// MADV_FREE): the kernel does not report such a loss as a write, so
	// the next rollback restores these pages as if they were written.
	Discarded(start, end uint64)
	// Exclude keeps [start, end) out of tracking: memory of the
	// supervisor's own in the process.
	Exclude(start, end uint64)
	// Close releases the tracker's resources; the process may be gone.
	Close() error
}
