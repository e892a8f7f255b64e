package patch

import (
	"bytes"
	"fmt"
	"unsafe"
)

// The injected routines (runtime_amd64.s). They are never called from Go:
// their bytes are copied into the supervised process.
func stubEnter()
func stubReturn()
func stubSigsys()
func stubRestorer()

func enterCode() unsafe.Pointer
func returnCode() unsafe.Pointer
func sigsysCode() unsafe.Pointer
func restorerCode() unsafe.Pointer

// endMarker follows the last instruction of each routine (ud2 "ASSUREnd").
var endMarker = []byte{0x0f, 0x0b, 'A', 'S', 'S', 'U', 'R', 'E', 'n', 'd'}

// maxRoutine bounds the search for a routine's end.
const maxRoutine = 4096

// routine returns the machine code of the routine at pc, up to its end
// marker (the marker's ud2 included: nothing falls through into it).
func routine(pc unsafe.Pointer) ([]byte, error) {
	code := unsafe.Slice((*byte)(pc), maxRoutine)
	i := bytes.Index(code, endMarker)
	if i < 0 {
		return nil, fmt.Errorf("injected routine at %#x: no end marker in %d bytes", pc, maxRoutine)
	}
	return append([]byte(nil), code[:i+2]...), nil
}

// Routines is the injected code: each routine's bytes.
type Routines struct {
	Enter, Return, Sigsys, Restorer []byte
}

// LoadRoutines reads the routines out of this binary.
func LoadRoutines() (*Routines, error) {
	var r Routines
	for _, x := range []struct {
		dst *[]byte
		pc  unsafe.Pointer
	}{{&r.Enter, enterCode()}, {&r.Return, returnCode()}, {&r.Sigsys, sigsysCode()}, {&r.Restorer, restorerCode()}} {
		b, err := routine(x.pc)
		if err != nil {
			return nil, err
		}
		*x.dst = b
	}
	return &r, nil
}
