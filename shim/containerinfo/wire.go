package containerinfo

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The few messages of containerd's API (api/services/{containers,images,
// content}/v1, api/types) the lookup uses, encoded and decoded field by
// field with protowire: the generated packages would bring grpc-go back
// (grpc.go says why not). Field numbers are those of containerd's .proto
// files, stable across its 1.x and 2.x releases; unknown fields are
// skipped, as protobuf requires.

// stringField encodes a message holding one string field.
func stringField(num protowire.Number, s string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// fields calls f with each field of message b.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("malformed message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("malformed message: %w", protowire.ParseError(m))
		}
		v := b[:m]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		if err := f(num, typ, v); err != nil {
			return err
		}
		b = b[m:]
	}
	return nil
}

// sub returns the message a response holds in field num.
func sub(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
		if n == num && typ == protowire.BytesType {
			out = v
		}
		return nil
	})
	return out, err
}

// mapEntry adds a map<string, string> entry (key 1, value 2) to m.
func mapEntry(m map[string]string, b []byte) error {
	var k, v string
	err := fields(b, func(n protowire.Number, typ protowire.Type, val []byte) error {
		switch {
		case n == 1 && typ == protowire.BytesType:
			k = string(val)
		case n == 2 && typ == protowire.BytesType:
			v = string(val)
		}
		return nil
	})
	if err == nil {
		m[k] = v
	}
	return err
}

// record is what the lookup reads of a containerd Container or Image:
// both have labels at field 2; a Container names its image at field 3
// (a string), an Image its target at field 3 (a Descriptor).
type record struct {
	labels map[string]string
	field3 []byte
}

func decodeRecord(b []byte) (*record, error) {
	r := &record{labels: map[string]string{}}
	err := fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch n {
		case 2:
			return mapEntry(r.labels, v)
		case 3:
			r.field3 = v
		}
		return nil
	})
	return r, err
}

// descriptor is containerd.types.Descriptor: media_type 1, digest 2.
type descriptor struct{ mediaType, digest string }

func decodeDescriptor(b []byte) (descriptor, error) {
	var d descriptor
	err := fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case n == 1 && typ == protowire.BytesType:
			d.mediaType = string(v)
		case n == 2 && typ == protowire.BytesType:
			d.digest = string(v)
		}
		return nil
	})
	return d, err
}

// contentData returns the data (field 2) of a ReadContentResponse.
func contentData(b []byte) ([]byte, error) { return sub(b, 2) }
