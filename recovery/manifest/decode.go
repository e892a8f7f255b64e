package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file holds the strict JSON layer under Parse. encoding/json's struct
// decoding is too forgiving for a file that comes from an untrusted image:
// it matches field names case-insensitively ("Version" fills Version), lets
// a repeated key silently overwrite the first one, accepts 1.0 for an int
// and null for anything. Unknown fields are what DisallowUnknownFields
// would catch; the walk below catches them too, and the others as well, by
// reading objects member by member with the tokenizer and comparing keys
// exactly. Values are kept as json.RawMessage and typed by hand.

// member is one key/value pair of a JSON object, in document order.
type member struct {
	key   string
	value json.RawMessage
}

// object is a decoded JSON object whose keys have been checked.
type object struct {
	values  map[string]json.RawMessage
	unknown string // first key that is not allowed, or ""
	dup     string // first key that appears twice, or ""
}

func (o *object) get(key string) (json.RawMessage, bool) {
	v, ok := o.values[key]
	return v, ok
}

// decodeObject splits raw, which must be a JSON object, into its members
// and sorts them into known keys, the first unknown key and the first
// repeated key. The caller decides in which order to report problems.
func decodeObject(raw json.RawMessage, known ...string) (*object, error) {
	if k := kind(raw); k != "object" {
		return nil, fmt.Errorf("must be an object, got %s", describe(raw))
	}
	members, err := members(raw)
	if err != nil {
		return nil, err
	}
	o := &object{values: make(map[string]json.RawMessage, len(members))}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if seen[m.key] && o.dup == "" {
			o.dup = m.key
		}
		seen[m.key] = true
		if !contains(known, m.key) {
			if o.unknown == "" {
				o.unknown = m.key
			}
			continue
		}
		if _, ok := o.values[m.key]; !ok {
			o.values[m.key] = m.value
		}
	}
	return o, nil
}

// unknownFieldError says which field is unknown, with a hint when only the
// letter case is wrong (a common slip, since encoding/json would have
// accepted it).
func unknownFieldError(key string, known []string) error {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Errorf("unknown field %q (did you mean %q?)", key, k)
		}
	}
	return fmt.Errorf("unknown field %q", key)
}

func members(raw json.RawMessage) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{', checked by kind
		return nil, err
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key is %T, not a string", tok)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{key: key, value: v})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	return out, nil
}

// decodeArray splits raw, which must be a JSON array, into its elements. It
// stops with an error once there are more than limit elements, so a huge
// array is refused without being materialised.
func decodeArray(raw json.RawMessage, limit int) ([]json.RawMessage, error) {
	if k := kind(raw); k != "array" {
		return nil, fmt.Errorf("must be an array, got %s", describe(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '['
		return nil, err
	}
	var out []json.RawMessage
	for dec.More() {
		if len(out) == limit {
			return nil, fmt.Errorf("has more than %d entries (limit %d)", limit, limit)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, err
	}
	return out, nil
}

// kind names the JSON type of a raw value, as used in error messages.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// describe renders a raw value for a "got ..." clause: scalars as written
// (shortened), containers by their type.
func describe(raw json.RawMessage) string {
	switch k := kind(raw); k {
	case "object":
		return "an object"
	case "array":
		return "an array"
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "a string"
		}
		return strconv.Quote(shorten(s, 64))
	default:
		return shorten(string(bytes.TrimSpace(raw)), 64)
	}
}

// decodeString returns the value of a JSON string.
func decodeString(raw json.RawMessage) (string, error) {
	if kind(raw) != "string" {
		return "", fmt.Errorf("must be a string, got %s", describe(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// decodeInt returns the value of a JSON number written as an integer
// literal. Fractions and exponents are refused even when the value is
// integral (1.0, 1e2): the manifest wants exact integers, and a float
// usually means a generator bug worth surfacing.
func decodeInt(raw json.RawMessage, bitSize int) (int64, error) {
	lit := string(bytes.TrimSpace(raw))
	if kind(raw) != "number" || !isIntLiteral(lit) {
		return 0, fmt.Errorf("must be an integer, got %s", describe(raw))
	}
	n, err := strconv.ParseInt(lit, 10, bitSize)
	if err != nil {
		return 0, fmt.Errorf("integer %s is out of range (%d-bit)", shorten(lit, 64), bitSize)
	}
	return n, nil
}

func isIntLiteral(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkDocument verifies that data is exactly one JSON value, valid UTF-8,
// with nothing but white space after it, and returns that value. Syntax
// errors carry line, column and byte offset.
func checkDocument(data []byte) (json.RawMessage, error) {
	if off := invalidUTF8(data); off >= 0 {
		line, col := position(data, int64(off))
		return nil, fmt.Errorf("invalid UTF-8 at line %d, column %d (offset %d)", line, col, off)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var top json.RawMessage
	if err := dec.Decode(&top); err != nil {
		return nil, syntaxError(data, err)
	}
	off := dec.InputOffset()
	if rest := bytes.TrimLeft(data[off:], " \t\r\n"); len(rest) > 0 {
		off = int64(len(data) - len(rest))
		line, col := position(data, off)
		return nil, fmt.Errorf("unexpected data after the manifest object at line %d, column %d (offset %d)", line, col, off)
	}
	return top, nil
}

func syntaxError(data []byte, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, including the offending one.
		off := se.Offset - 1
		if off < 0 {
			off = 0
		}
		line, col := position(data, off)
		return fmt.Errorf("invalid JSON at line %d, column %d (offset %d): %w", line, col, off, err)
	case errors.Is(err, io.EOF):
		return errors.New("empty document")
	case errors.Is(err, io.ErrUnexpectedEOF):
		line, col := position(data, int64(len(data)))
		return fmt.Errorf("invalid JSON at line %d, column %d (offset %d): unexpected end of input", line, col, len(data))
	default:
		return fmt.Errorf("invalid JSON: %w", err)
	}
}

// position converts a byte offset into a 1-based line and column (in bytes).
func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	col = 1 + len(before) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

// invalidUTF8 returns the offset of the first invalid UTF-8 sequence, or
// -1. encoding/json would silently replace it with U+FFFD, which would turn
// a path into a different path.
func invalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		if data[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// shorten cuts s to at most max bytes on a rune boundary, marking the cut.
func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// printable renders s for a message label: as is when it is short and all
// graphic, quoted otherwise, so that a hostile name cannot forge lines in a
// log.
func printable(s string) string {
	s = shorten(s, 128)
	for _, r := range s {
		if !unicode.IsGraphic(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
