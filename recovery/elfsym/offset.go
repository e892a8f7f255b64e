package elfsym

// VaddrOfOffset converts a file offset back into a virtual address, the
// inverse of FileOffset, used to symbolize runtime addresses through the
// mapping that covers them. Executable segments win where two segments
// share file bytes (as the page-aligned ends of text and data can).
func (f *File) VaddrOfOffset(off uint64) (uint64, bool) {
	var found uint64
	ok := false
	for _, s := range f.loads {
		if off >= s.off && off-s.off < s.filesz {
			if s.exec {
				return s.vaddr + (off - s.off), true
			}
			if !ok {
				found, ok = s.vaddr+(off-s.off), true
			}
		}
	}
	return found, ok
}
