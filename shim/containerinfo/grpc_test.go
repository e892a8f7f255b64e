package containerinfo

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/assure-rt/assure/shim/pbwire"
)

// TestReadMessages: gRPC's length-prefixed messages are split as sent;
// what a well-behaved containerd never sends is an error, not a hang or a
// huge allocation.
func TestReadMessages(t *testing.T) {
	frame := func(flag byte, n uint32, payload string) string {
		return string([]byte{flag, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) + payload
	}
	var got []string
	err := readMessages("/m", strings.NewReader(frame(0, 2, "ab")+frame(0, 0, "")+frame(0, 3, "cde")), func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if err != nil || strings.Join(got, ",") != "ab,,cde" {
		t.Fatalf("readMessages = %q, %v", got, err)
	}
	for name, body := range map[string]string{
		"compressed": frame(1, 2, "ab"),
		"oversized":  frame(0, maxMessage+1, ""),
		"truncated":  frame(0, 5, "ab"),
		"short head": "\x00\x00",
	} {
		if err := readMessages("/m", strings.NewReader(body), func([]byte) error { return nil }); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestStatus(t *testing.T) {
	h := http.Header{}
	if err := status("/m", h); err != nil {
		t.Errorf("no status: %v", err)
	}
	h.Set("Grpc-Status", "5")
	h.Set("Grpc-Message", "container%20x:%20not%20found")
	err := status("/m", h)
	if !IsNotFound(err) || !strings.Contains(err.Error(), "container x: not found") {
		t.Errorf("status = %v", err)
	}
	h.Set("Grpc-Status", "x")
	if err := status("/m", h); err == nil || IsNotFound(err) {
		t.Errorf("malformed status = %v", err)
	}
}

// TestDecodeRecord: unknown fields (containerd adds some over releases)
// are skipped; a malformed message is an error.
func TestDecodeRecord(t *testing.T) {
	var b []byte
	b = append(b, pbwire.String(1, "id")...)
	entry := append(pbwire.String(1, "k"), pbwire.String(2, "v")...)
	b = append(b, 0x12, byte(len(entry)))
	b = append(b, entry...)
	b = append(b, pbwire.String(3, "img")...)
	b = append(b, 0x48, 0x01) // field 9, varint: unknown here
	r, err := decodeRecord(b)
	if err != nil || r.labels["k"] != "v" || !bytes.Equal(r.field3, []byte("img")) {
		t.Fatalf("decodeRecord = %+v, %v", r, err)
	}
	if _, err := decodeRecord([]byte{0x12, 0x7f}); err == nil {
		t.Error("truncated message: no error")
	}
}
