// Package pbwire reads and writes the few protobuf messages the shim's
// start command exchanges with containerd, field by field with
// protowire: the generated packages of containerd's API would link
// grpc-go, whose start-up that command cannot afford (shim/front).
package pbwire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// String encodes a message holding one string field.
func String(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

// Fields calls f with each field of message b; v is the payload of a
// length-delimited field and the raw value of the others. Unknown fields
// are the caller's to skip, as protobuf requires.
func Fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
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

// Bytes returns the last length-delimited field num of message b.
func Bytes(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := Fields(b, func(n protowire.Number, typ protowire.Type, v []byte) error {
		if n == num && typ == protowire.BytesType {
			out = v
		}
		return nil
	})
	return out, err
}
