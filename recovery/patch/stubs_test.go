package patch

import (
	"encoding/binary"
	"testing"
)

// The supervisor that takes over a process reads stubs back by these
// offsets: EntryStub must keep them.
func TestEntryStubLayout(t *testing.T) {
	d, err := Plan(0x401000, []byte{0x55, 0x48, 0x89, 0xe5, 0x90, 0xc3}, 6)
	if err != nil {
		t.Fatal(err)
	}
	const at = 0x402000
	b, trap, back, err := EntryStub(at, 7, at-16, at-8, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(b[EntryIndexAt:]); got != 7 {
		t.Errorf("index at %d is %d, want 7", EntryIndexAt, got)
	}
	if trap != at+EntryTrap || b[EntryTrap] != 0xcc || back != trap+1 {
		t.Errorf("trap at %#x (byte %#x), back %#x; want trap %#x, back after it", trap, b[EntryTrap], back, at+EntryTrap)
	}
}
