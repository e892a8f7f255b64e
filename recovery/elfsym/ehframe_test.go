package elfsym

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

const ehAddr = 0x2000

func newEH(b []byte) *ehFrame {
	return &ehFrame{
		data: b, addr: ehAddr, order: binary.LittleEndian, ptrSize: 8,
		deref: func(uint64) (uint64, bool) { return 0, false },
	}
}

func uleb(v uint64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// oneFDE builds an .eh_frame with a CIE (augmentation aug, data augData)
// and one FDE whose body is body, then a terminator.
func oneFDE(aug string, augData []byte, body func(at uint64) []byte) []byte {
	e := &ehBuilder{addr: ehAddr}
	c := e.cie(aug, augData)
	e.fde(c, body)
	e.terminate()
	return e.b
}

func TestEHFrameEncodings(t *testing.T) {
	const fn, size = 0x1130, 0x42
	z := []byte{0} // FDE augmentation data length
	for _, tc := range []struct {
		name string
		aug  string
		data []byte
		body func(at uint64) []byte
		set  func(*ehFrame)
	}{
		{"absptr default", "", nil, func(uint64) []byte { return append(le64(fn), le64(size)...) }, nil},
		{"udata2", "zR", []byte{peUdata2}, func(uint64) []byte { return append(append(le16(fn), le16(size)...), z...) }, nil},
		{"udata4", "zR", []byte{peUdata4}, func(uint64) []byte { return append(append(le32(fn), le32(size)...), z...) }, nil},
		{"udata8", "zR", []byte{peUdata8}, func(uint64) []byte { return append(append(le64(fn), le64(size)...), z...) }, nil},
		{"uleb128", "zR", []byte{peULEB128}, func(uint64) []byte { return append(append(uleb(fn), uleb(size)...), z...) }, nil},
		{"sdata4 pcrel", "zR", []byte{pePCRel | peSdata4}, func(at uint64) []byte {
			return append(append(le32(uint32(int32(int64(fn)-int64(at)))), le32(size)...), z...)
		}, nil},
		{"sdata2 pcrel", "zR", []byte{pePCRel | peSdata2}, func(at uint64) []byte {
			return append(append(le16(uint16(int16(int64(fn)-int64(at)))), le16(size)...), z...)
		}, nil},
		{"sdata8 pcrel", "zR", []byte{pePCRel | peSdata8}, func(at uint64) []byte {
			return append(append(le64(uint64(int64(fn)-int64(at))), le64(size)...), z...)
		}, nil},
		{"sleb128 pcrel", "zR", []byte{pePCRel | peSLEB128}, func(at uint64) []byte {
			return append(append(sleb(int64(fn)-int64(at)), sleb(size)...), z...)
		}, nil},
		{"signed absptr", "zR", []byte{peSigned}, func(uint64) []byte { return append(append(le64(fn), le64(size)...), z...) }, nil},
		{"textrel", "zR", []byte{peTextRel | peUdata4}, func(uint64) []byte {
			return append(append(le32(fn-0x1000), le32(size)...), z...)
		}, func(eh *ehFrame) { eh.textBase, eh.hasText = 0x1000, true }},
		{"datarel", "zR", []byte{peDataRel | peSdata4}, func(uint64) []byte {
			d := int64(fn) - 0x4000 // negative: the GOT is above the code
			return append(append(le32(uint32(int32(d))), le32(size)...), z...)
		}, func(eh *ehFrame) { eh.dataBase, eh.hasData = 0x4000, true }},
		{"indirect", "zR", []byte{peIndirect | peUdata4}, func(uint64) []byte {
			return append(append(le32(0x5000), le32(size)...), z...)
		}, func(eh *ehFrame) {
			eh.deref = func(v uint64) (uint64, bool) { return fn, v == 0x5000 }
		}},
		{"aligned", "zR", []byte{peAligned}, func(at uint64) []byte {
			pad := make([]byte, (8-at%8)%8)
			return append(append(append(pad, le64(fn)...), le64(size)...), z...)
		}, nil},
		{"zPLR", "zPLR", append(append([]byte{peIndirect | pePCRel | peSdata4}, le32(0x1234)...), peUdata4, pePCRel|peSdata4), func(at uint64) []byte {
			b := le32(uint32(int32(int64(fn) - int64(at))))
			b = append(b, le32(size)...)
			return append(b, 4, 0, 0, 0, 0) // augmentation data: LSDA pointer
		}, nil},
		{"zPLR uleb personality", "zPLR", append(append([]byte{peULEB128}, uleb(1<<40)...), peUdata4, peUdata4), func(uint64) []byte {
			return append(append(le32(fn), le32(size)...), 4, 0, 0, 0, 0)
		}, nil},
		{"zSR signal frame", "zSR", []byte{peUdata4}, func(uint64) []byte { return append(append(le32(fn), le32(size)...), z...) }, nil},
		{"zRX unknown after R", "zRX", []byte{peUdata4, 0xee}, func(uint64) []byte { return append(append(le32(fn), le32(size)...), z...) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eh := newEH(oneFDE(tc.aug, tc.data, tc.body))
			if tc.set != nil {
				tc.set(eh)
			}
			got, err := parseEHFrame(eh)
			if err != nil {
				t.Fatal(err)
			}
			if want := []fde{{fn, size}}; !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestEHFrame32(t *testing.T) {
	e := &ehBuilder{addr: ehAddr}
	c := e.cie("", nil)
	e.fde(c, func(uint64) []byte { return append(le32(0x8048000), le32(0x10)...) })
	c2 := e.cie("zR", []byte{peSigned})
	e.fde(c2, func(uint64) []byte { return append(append(le32(0xfffffff0), le32(0x10)...), 0) })
	eh := newEH(e.b)
	eh.ptrSize = 4
	got, err := parseEHFrame(eh)
	if want := []fde{{0x8048000, 0x10}, {0xfffffff0, 0x10}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
}

func TestEHFrameStructure(t *testing.T) {
	e := &ehBuilder{addr: ehAddr}
	// CIE versions 3 and 4.
	c3 := e.cieV(3, "zR", []byte{peUdata4})
	c4 := e.cieV(4, "zR", []byte{peUdata4})
	e.fde(c3, func(uint64) []byte { return append(append(le32(0x1000), le32(1)...), 0) })
	e.fde(c4, func(uint64) []byte { return append(append(le32(0x2000), le32(2)...), 0) })
	// FDEs that describe nothing are skipped: zero start, zero size.
	e.fde(c3, func(uint64) []byte { return append(append(le32(0), le32(8)...), 0) })
	e.fde(c3, func(uint64) []byte { return append(append(le32(0x3000), le32(0)...), 0) })
	// An unknown augmentation before 'R' makes the CIE unusable, not the
	// table invalid.
	cx := e.cie("zXR", []byte{0, peUdata4})
	e.fde(cx, func(uint64) []byte { return append(append(le32(0x4000), le32(4)...), 0) })
	// An unknown CIE version likewise.
	cv := e.cieV(9, "", nil)
	e.fde(cv, func(uint64) []byte { return append(le64(0x5000), le64(5)...) })
	// A non-"z" augmentation cannot be skipped.
	cy := e.cie("y", nil)
	e.fde(cy, func(uint64) []byte { return append(le64(0x6000), le64(6)...) })
	// 64-bit extended length.
	off := len(e.b)
	e.u32(0xffffffff)
	body := le32(uint32(off + 12 - c3))
	body = append(body, append(append(le32(0x7000), le32(7)...), 0, 0, 0, 0)...)
	e.b = append(e.b, le64(uint64(len(body)))...)
	e.b = append(e.b, body...)
	e.terminate()
	// After the terminator nothing is read.
	e.b = append(e.b, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3)

	got, err := parseEHFrame(newEH(e.b))
	if err != nil {
		t.Fatal(err)
	}
	want := []fde{{0x1000, 1}, {0x2000, 2}, {0x7000, 7}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestEHFrameErrors(t *testing.T) {
	valid := oneFDE("zR", []byte{peUdata4}, func(uint64) []byte { return append(append(le32(0x1000), le32(1)...), 0) })
	fdeOff := 4 + int(binary.LittleEndian.Uint32(valid)) // the FDE follows the CIE
	for _, tc := range []struct {
		name string
		data []byte
		set  func(*ehFrame)
		want string
	}{
		{"length past end", append(le32(100), 0, 0, 0, 0), nil, "entry at offset 0x0: length 0x64 exceeds the remaining 0x4 bytes"},
		{"length too small", append(le32(2), 0, 0, 0, 0), nil, "length 0x2 exceeds"},
		{"truncated length", []byte{1, 0}, nil, "entry at offset 0x0: truncated"},
		{"truncated extended length", append(le32(0xffffffff), 1, 2), nil, "entry at offset 0x0: truncated"},
		{"CIE pointer before data", func() []byte {
			b := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(b[fdeOff+4:], 0x10000)
			return b
		}(), nil, "CIE pointer 0x10000 points before the data"},
		{"CIE pointer to FDE", func() []byte {
			b := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(b[fdeOff+4:], 4) // its own length field: an FDE
			return b
		}(), nil, "does not hold a CIE"},
		{"truncated pc_begin", oneFDE("zR", []byte{peUdata8}, func(uint64) []byte { return le32(0x1000) }), nil, "pc_begin: truncated"},
		{"unknown format", oneFDE("zR", []byte{0x05}, func(uint64) []byte { return le64(0x1000) }), nil, "pc_begin: unknown pointer format 0x5"},
		{"funcrel", oneFDE("zR", []byte{peFuncRel | peUdata4}, func(uint64) []byte { return le64(0x1000) }), nil, "DW_EH_PE_funcrel"},
		{"omit", oneFDE("zR", []byte{peOmit}, func(uint64) []byte { return le64(0x1000) }), nil, "DW_EH_PE_omit"},
		{"textrel without text", oneFDE("zR", []byte{peTextRel | peUdata4}, func(uint64) []byte { return le64(0x1000) }), nil, "textrel without a .text section"},
		{"datarel without base", oneFDE("zR", []byte{peDataRel | peUdata4}, func(uint64) []byte { return le64(0x1000) }), nil, "datarel without a data base"},
		{"uleb overflow", oneFDE("zR", []byte{peULEB128}, func(uint64) []byte {
			return []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
		}), nil, "LEB128 value does not fit in 64 bits"},
		{"uleb too long", oneFDE("zR", []byte{peULEB128}, func(uint64) []byte {
			return []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}
		}), nil, "LEB128 value does not fit in 64 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eh := newEH(tc.data)
			if tc.set != nil {
				tc.set(eh)
			}
			got, err := parseEHFrame(eh)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %+v, %v; want error containing %q", got, err, tc.want)
			}
			// Lenient parsing never fails once something was found, and
			// never panics.
			eh.lenient = true
			parseEHFrame(eh)
		})
	}
}

func TestEHFrameLenient(t *testing.T) {
	b := oneFDE("zR", []byte{peUdata4}, func(uint64) []byte { return append(append(le32(0x1000), le32(1)...), 0) })
	b = b[:len(b)-4]                           // no terminator
	b = append(b, 0xff, 0xff, 0xff, 0x0f, 0x1) // garbage, as in the rest of a segment
	eh := newEH(b)
	if _, err := parseEHFrame(eh); err == nil {
		t.Error("strict parse accepted trailing garbage")
	}
	eh.lenient = true
	got, err := parseEHFrame(eh)
	if want := []fde{{0x1000, 1}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("lenient parse = %+v, %v", got, err)
	}
}

func TestLEB128(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 1 << 35, 1<<64 - 1} {
		c := &cursor{data: uleb(v)}
		if got := c.uleb(); got != v || c.err != nil || c.off != len(c.data) {
			t.Errorf("uleb(%d) = %d, %v", v, got, c.err)
		}
	}
	for _, v := range []int64{0, 1, -1, 63, -64, 64, -65, 1 << 40, -1 << 40, 1<<63 - 1, -1 << 63} {
		c := &cursor{data: sleb(v)}
		if got := c.sleb(); got != v || c.err != nil || c.off != len(c.data) {
			t.Errorf("sleb(%d) = %d, %v", v, got, c.err)
		}
	}
	c := &cursor{data: []byte{0x80}}
	if c.uleb(); c.err != errTruncated {
		t.Errorf("truncated uleb: %v", c.err)
	}
}

func TestEHFrameBadAugmentation(t *testing.T) {
	e := &ehBuilder{addr: ehAddr}
	long := e.cie("z"+strings.Repeat("R", 40), []byte{peUdata4})
	e.fde(long, func(uint64) []byte { return append(append(le32(0x1000), le32(1)...), 0) })
	ok := e.cie("zR", []byte{peUdata4})
	e.fde(ok, func(uint64) []byte { return append(append(le32(0x2000), le32(2)...), 0) })
	e.terminate()
	got, err := parseEHFrame(newEH(e.b))
	if want := []fde{{0x2000, 2}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
}
