package containerinfo

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/assure-rt/assure/shim/pbwire"
)

// The few messages of containerd's API (api/services/{containers,images,
// content}/v1, api/types) the lookup uses, encoded and decoded field by
// field with protowire: the generated packages would bring grpc-go back
// (grpc.go says why not). Field numbers are those of containerd's .proto
// files, stable across its 1.x and 2.x releases; unknown fields are
// skipped, as protobuf requires.

// mapEntry adds a map<string, string> entry (key 1, value 2) to m.
func mapEntry(m map[string]string, b []byte) error {
	var k, v string
	err := pbwire.Fields(b, func(n protowire.Number, typ protowire.Type, val []byte) error {
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
	err := pbwire.Fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
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
	err := pbwire.Fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
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
func contentData(b []byte) ([]byte, error) { return pbwire.Bytes(b, 2) }
