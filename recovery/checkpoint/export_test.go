package checkpoint

// Test-only views of the engine's internals.

// ShadowPages is the number of pages the shadow holds.
func (d *Dirty) ShadowPages() int { return len(d.shadow) }

// UndoPages is the number of pages held in the undo logs of all levels.
func (d *Dirty) UndoPages() int {
	n := 0
	for _, l := range d.levels {
		n += len(l.undo)
	}
	return n
}

// Levels is the number of active checkpoints.
func (d *Dirty) Levels() int { return len(d.levels) }

// StalePages is the number of pages marked stale.
func (d *Dirty) StalePages() int { return len(d.stale) }
