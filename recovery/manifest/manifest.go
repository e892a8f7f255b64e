// Package manifest parses and validates assure rescue-point manifests.
//
// A manifest (format version 1) is a JSON object:
//
//	{
//	  "version": 1,
//	  "rescuePoints": [
//	    {"binary": "/usr/bin/server", "function": "handle_request", "return": -1},
//	    {"binary": "libparse.so.1", "function": "parse_header", "return": 0, "scope": "container"},
//	    {"binary": "/usr/bin/server", "address": "0x1a2b0"}
//	  ],
//	  "signals": ["SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"],
//	  "maxRecoveries": 100
//	}
//
// Manifests come from container images and are untrusted: Parse refuses
// anything it does not fully understand (unknown or repeated fields, wrong
// types, trailing data) and bounds the size of what it accepts, and every
// error names the rescue point and field at fault.
package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/fileinfo"
	"github.com/assure-rt/assure/recovery/resolve"
)

// Version is the only manifest format version this package reads.
const Version = 1

const (
	// MaxRescuePoints bounds the number of rescue points in a manifest.
	MaxRescuePoints = 1024
	// MaxSize bounds the size of a manifest in bytes.
	MaxSize = 1 << 20
	// DefaultMaxRecoveries is used when a manifest has no "maxRecoveries".
	DefaultMaxRecoveries = 100

	maxFunctionLen = 1024
	maxPathLen     = 4096 // PATH_MAX
)

// Scope says what is rolled back when a fault hits inside a rescue point.
type Scope string

const (
	// ScopeProcess rolls back the faulting process only (the default).
	ScopeProcess Scope = "process"
	// ScopeContainer rolls back every supervised process of the container.
	ScopeContainer Scope = "container"
)

// RescuePoint is a function whose faults are recovered from: the program
// is rolled back to the function's entry and the function returns Return.
type RescuePoint struct {
	// Binary is a cleaned absolute path, or a bare file name that matches
	// any mapped module with that base name (e.g. "libc.so.6").
	Binary string
	// Function is the symbol name; "" when Address is used.
	Function string
	// Address is the function's ELF virtual address (as nm prints it),
	// valid when HasAddress.
	Address    uint64
	HasAddress bool
	// Return is the value the function returns after a recovery; nil for
	// a void function.
	Return *int64
	Scope  Scope
}

// Name returns the function name, or the address as "0x1a2b0".
func (r RescuePoint) Name() string {
	if r.HasAddress {
		return fmt.Sprintf("0x%x", r.Address)
	}
	return r.Function
}

// String returns e.g. "handle_request in /usr/bin/server".
func (r RescuePoint) String() string {
	return printable(r.Name()) + " in " + printable(r.Binary)
}

// Manifest is a validated manifest.
type Manifest struct {
	Version      int
	RescuePoints []RescuePoint
	// Signals are the faults recovered from, without duplicates.
	Signals []unix.Signal
	// MaxRecoveries bounds the number of recoveries per supervised
	// program; once reached, faults are delivered untouched. 0 means never
	// recover (the manifest is only validated and its rescue points armed).
	MaxRecoveries int
	// Heal, when set, makes the supervisor learn rescue points from
	// crashes: a fault outside every rescue point arms the innermost
	// function on the faulting stack that is a candidate.
	Heal *Heal
}

// Heal is the manifest's "heal" object.
type Heal struct {
	// Candidates are the functions a crash may arm (entries shaped like
	// rescue points); nil: derived from the binaries by static analysis.
	Candidates []RescuePoint
	// FirstFault is what the first fault in a candidate does:
	// FirstFaultCrash (the default) or FirstFaultReturn.
	FirstFault string
}

// What the first fault inside a healing candidate does.
const (
	// FirstFaultCrash: the fault is delivered (the process dies as it
	// would without assure) and the candidate is armed for the next one.
	FirstFaultCrash = "crash"
	// FirstFaultReturn: the candidate's frame is unwound and it returns
	// its error value, with no memory rollback (what it wrote stays, what
	// it allocated leaks); refused, and delivered as with
	// FirstFaultCrash, when the thread holds a lock.
	FirstFaultReturn = "return"
)

// Top-level and rescue point field names.
const (
	fieldVersion       = "version"
	fieldRescuePoints  = "rescuePoints"
	fieldSignals       = "signals"
	fieldMaxRecoveries = "maxRecoveries"
	fieldHeal          = "heal"
	fieldCandidates    = "candidates"
	fieldFirstFault    = "firstFault"

	fieldBinary   = "binary"
	fieldFunction = "function"
	fieldAddress  = "address"
	fieldReturn   = "return"
	fieldScope    = "scope"
)

var (
	topFields   = []string{fieldVersion, fieldRescuePoints, fieldSignals, fieldMaxRecoveries, fieldHeal}
	entryFields = []string{fieldBinary, fieldFunction, fieldAddress, fieldReturn, fieldScope}
)

// Load reads and parses the manifest in the file at path. It reads at most
// MaxSize+1 bytes, and refuses anything but a regular file so that a FIFO
// or device planted in an image cannot block or flood the reader. Errors
// are *Error values naming the file.
func Load(path string) (*Manifest, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, &Error{File: path, Index: -1, Elem: -1, Err: err}
	}
	m, err := Parse(data)
	if err != nil {
		var me *Error
		if errors.As(err, &me) {
			me.File = path
			return nil, me
		}
		return nil, &Error{File: path, Index: -1, Elem: -1, Err: err}
	}
	return m, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, pathErr(err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fileinfo.Kind(st.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, pathErr(err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("larger than the limit of %d bytes", MaxSize)
	}
	return data, nil
}

// pathErr drops the path from an *fs.PathError, since Error already names
// the file.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// Parse parses and validates a manifest. Errors are *Error values.
//
// Beyond the JSON shape, Parse enforces: "version" is 1; "rescuePoints"
// has 1 to MaxRescuePoints entries, none repeated; each names a binary and
// exactly one of "function" and "address"; "signals" lists recoverable
// signals by their exact names; "maxRecoveries" is >= 0. Defaults are
// filled in: scope "process", the five default signals and 100 recoveries.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, docError(fmt.Errorf("size %d bytes exceeds the limit of %d", len(data), MaxSize))
	}
	top, err := checkDocument(data)
	if err != nil {
		return nil, docError(err)
	}
	obj, err := decodeObject(top, topFields...)
	if err != nil {
		return nil, docError(err)
	}
	if obj.dup != "" {
		return nil, docError(fmt.Errorf("duplicate field %q", obj.dup))
	}
	// The version comes first: a newer manifest may well have fields this
	// version does not know, and "unsupported version" is the useful error.
	m := &Manifest{}
	if m.Version, err = parseVersion(obj); err != nil {
		return nil, err
	}
	if obj.unknown != "" {
		return nil, docError(unknownFieldError(obj.unknown, topFields))
	}
	if m.Heal, err = parseHeal(obj); err != nil {
		return nil, err
	}
	if m.RescuePoints, err = parseRescuePoints(obj, m.Heal != nil); err != nil {
		return nil, err
	}
	if m.Signals, err = parseSignals(obj); err != nil {
		return nil, err
	}
	if m.MaxRecoveries, err = parseMaxRecoveries(obj); err != nil {
		return nil, err
	}
	return m, nil
}

func parseVersion(obj *object) (int, error) {
	raw, ok := obj.get(fieldVersion)
	if !ok {
		return 0, fieldError(fieldVersion, -1, errors.New("required"))
	}
	v, err := decodeInt(raw, 64)
	if err != nil {
		return 0, fieldError(fieldVersion, -1, err)
	}
	if v != Version {
		return 0, fieldError(fieldVersion, -1, fmt.Errorf("unsupported version %d (supported: %d)", v, Version))
	}
	return int(v), nil
}

// parseRescuePoints reads "rescuePoints", which a manifest that heals
// may leave out or empty.
func parseRescuePoints(obj *object, heals bool) ([]RescuePoint, error) {
	raw, ok := obj.get(fieldRescuePoints)
	if !ok {
		if heals {
			return nil, nil
		}
		return nil, fieldError(fieldRescuePoints, -1, errors.New("required"))
	}
	return parseEntries(raw, fieldRescuePoints, heals)
}

// parseHeal reads the optional "heal" object.
func parseHeal(obj *object) (*Heal, error) {
	raw, ok := obj.get(fieldHeal)
	if !ok {
		return nil, nil
	}
	h, err := decodeObject(raw, fieldCandidates, fieldFirstFault)
	if err != nil {
		return nil, fieldError(fieldHeal, -1, err)
	}
	if h.dup != "" {
		return nil, fieldError(fieldHeal, -1, fmt.Errorf("duplicate field %q", h.dup))
	}
	if h.unknown != "" {
		return nil, fieldError(fieldHeal, -1, unknownFieldError(h.unknown, []string{fieldCandidates, fieldFirstFault}))
	}
	heal := &Heal{FirstFault: FirstFaultCrash}
	if f, ok := h.get(fieldFirstFault); ok {
		var v string
		if json.Unmarshal(f, &v) != nil || v != FirstFaultCrash && v != FirstFaultReturn {
			return nil, fieldError(fieldHeal+"."+fieldFirstFault, -1, fmt.Errorf("must be %q or %q, got %s", FirstFaultCrash, FirstFaultReturn, f))
		}
		heal.FirstFault = v
	}
	if c, ok := h.get(fieldCandidates); ok {
		if heal.Candidates, err = parseEntries(c, fieldHeal+"."+fieldCandidates, false); err != nil {
			return nil, err
		}
	}
	return heal, nil
}

// parseEntries reads an array of rescue-point entries (the list named
// list), refusing duplicates, and an empty one unless mayBeEmpty.
func parseEntries(raw json.RawMessage, list string, mayBeEmpty bool) ([]RescuePoint, error) {
	entries, err := decodeArray(raw, MaxRescuePoints)
	if err != nil {
		return nil, fieldError(list, -1, err)
	}
	if len(entries) == 0 && !mayBeEmpty {
		return nil, fieldError(list, -1, errors.New("must not be empty"))
	}
	rps := make([]RescuePoint, 0, len(entries))
	seen := make(map[string]int, len(entries))
	for i, e := range entries {
		rp, err := parseRescuePoint(i, e)
		if err != nil {
			return nil, inList(err, list)
		}
		key := rp.key()
		if first, dup := seen[key]; dup {
			return nil, inList(entryError(i, rp.String(),
				fmt.Errorf("duplicates %s[%d]", list, first), fieldBinary, nameField(rp)), list)
		}
		seen[key] = i
		rps = append(rps, rp)
	}
	return rps, nil
}

// inList names the list an entry error is about.
func inList(err error, list string) error {
	var e *Error
	if list != fieldRescuePoints && errors.As(err, &e) && e.Index >= 0 {
		e.List = list
	}
	return err
}

// key identifies a rescue point for duplicate detection.
func (r RescuePoint) key() string {
	if r.HasAddress {
		return r.Binary + "\x00a" + strconv.FormatUint(r.Address, 16)
	}
	return r.Binary + "\x00f" + r.Function
}

func nameField(rp RescuePoint) string {
	if rp.HasAddress {
		return fieldAddress
	}
	return fieldFunction
}

// parseRescuePoint validates entry i. Problems are reported in a fixed
// order (shape, unknown fields, binary, function/address, return, scope) so
// that the same manifest always gets the same error.
func parseRescuePoint(i int, raw json.RawMessage) (RescuePoint, error) {
	var rp RescuePoint
	obj, err := decodeObject(raw, entryFields...)
	if err != nil {
		return rp, entryError(i, "", err)
	}
	label := entryLabel(obj)
	if obj.dup != "" {
		return rp, entryError(i, label, fmt.Errorf("duplicate field %q", obj.dup))
	}
	if obj.unknown != "" {
		return rp, entryError(i, label, unknownFieldError(obj.unknown, entryFields))
	}

	binRaw, ok := obj.get(fieldBinary)
	if !ok {
		return rp, entryError(i, label, errors.New("required"), fieldBinary)
	}
	if rp.Binary, err = parseBinary(binRaw); err != nil {
		return rp, entryError(i, label, err, fieldBinary)
	}

	fnRaw, hasFn := obj.get(fieldFunction)
	addrRaw, hasAddr := obj.get(fieldAddress)
	switch {
	case hasFn && hasAddr:
		return rp, entryError(i, label, errors.New("exactly one is required, got both"), fieldFunction, fieldAddress)
	case !hasFn && !hasAddr:
		return rp, entryError(i, label, errors.New("exactly one is required, got neither"), fieldFunction, fieldAddress)
	case hasFn:
		if rp.Function, err = parseFunction(fnRaw); err != nil {
			return rp, entryError(i, label, err, fieldFunction)
		}
	default:
		if rp.Address, err = parseAddress(addrRaw); err != nil {
			return rp, entryError(i, label, err, fieldAddress)
		}
		rp.HasAddress = true
	}
	// From here on the validated values make the best label.
	label = rp.String()

	if raw, ok := obj.get(fieldReturn); ok {
		v, err := decodeInt(raw, 64)
		if err != nil {
			if kind(raw) == "null" {
				err = fmt.Errorf("%w (omit the field for a void function)", err)
			}
			return rp, entryError(i, label, err, fieldReturn)
		}
		rp.Return = &v
	}

	rp.Scope = ScopeProcess
	if raw, ok := obj.get(fieldScope); ok {
		if rp.Scope, err = parseScope(raw); err != nil {
			return rp, entryError(i, label, err, fieldScope)
		}
	}
	return rp, nil
}

// entryLabel builds the "name in binary" label of a rescue point from its
// raw fields, before they are validated, so that even errors about the
// entry's own shape say which entry is meant. It is empty when the entry
// has no usable binary and name.
func entryLabel(obj *object) string {
	bin, err := rawString(obj, fieldBinary)
	if err != nil || bin == "" {
		return ""
	}
	fn, errFn := rawString(obj, fieldFunction)
	addr, errAddr := rawString(obj, fieldAddress)
	_, hasFn := obj.get(fieldFunction)
	_, hasAddr := obj.get(fieldAddress)
	switch {
	case hasFn && !hasAddr && errFn == nil && fn != "":
		return printable(fn) + " in " + printable(bin)
	case hasAddr && !hasFn && errAddr == nil && addr != "":
		return printable(addr) + " in " + printable(bin)
	}
	return ""
}

func rawString(obj *object, key string) (string, error) {
	raw, ok := obj.get(key)
	if !ok {
		return "", errors.New("absent")
	}
	return decodeString(raw)
}

func parseBinary(raw json.RawMessage) (string, error) {
	s, err := decodeString(raw)
	if err != nil {
		return "", err
	}
	switch {
	case s == "":
		return "", errors.New("must not be empty")
	case strings.IndexByte(s, 0) >= 0:
		return "", errors.New("must not contain NUL bytes")
	case len(s) > maxPathLen:
		return "", fmt.Errorf("is %d bytes long (limit %d)", len(s), maxPathLen)
	case hasControl(s):
		// Legal in a Linux path, but would let an image forge lines in
		// assure's logs.
		return "", fmt.Errorf("must not contain control characters, got %q", shorten(s, 64))
	case s == "." || s == "..":
		return "", fmt.Errorf("must name a file, got %q", s)
	case !strings.Contains(s, "/"):
		return s, nil // bare name: matches a mapped module's base name
	case !filepath.IsAbs(s):
		return "", fmt.Errorf("relative path %q is not allowed: use an absolute path, or a bare file name to match a loaded module by base name", printable(s))
	}
	// The rule every lookup inside a root applies (recovery/resolve): a
	// ".." above "/" is refused, with the message a lookup gives.
	clean, err := resolve.Clean(s)
	if err != nil {
		return "", err
	}
	if clean == "/" {
		return "", fmt.Errorf("must name a file, got %q", s)
	}
	return clean, nil
}

func parseFunction(raw json.RawMessage) (string, error) {
	s, err := decodeString(raw)
	if err != nil {
		return "", err
	}
	switch {
	case s == "":
		return "", errors.New("must not be empty")
	case len(s) > maxFunctionLen:
		return "", fmt.Errorf("is %d bytes long (limit %d)", len(s), maxFunctionLen)
	case strings.IndexByte(s, 0) >= 0:
		return "", errors.New("must not contain NUL bytes")
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return "", fmt.Errorf("must not contain white space, got %q", shorten(s, 64))
	case hasControl(s):
		return "", fmt.Errorf("must not contain control characters, got %q", shorten(s, 64))
	}
	return s, nil
}

// parseAddress accepts a hex string with or without "0x", as nm prints it
// (nm pads with zeros: "000000000001a2b0" is fine).
func parseAddress(raw json.RawMessage) (uint64, error) {
	if kind(raw) != "string" {
		return 0, fmt.Errorf(`must be a hex string such as "0x1a2b0", got %s`, describe(raw))
	}
	s, err := decodeString(raw)
	if err != nil {
		return 0, err
	}
	digits := s
	if strings.HasPrefix(digits, "0x") || strings.HasPrefix(digits, "0X") {
		digits = digits[2:]
	}
	if digits == "" || !isHex(digits) {
		return 0, fmt.Errorf(`must be a hex number such as "0x1a2b0", got %q`, shorten(s, 64))
	}
	v, err := strconv.ParseUint(digits, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q does not fit in 64 bits", shorten(s, 64))
	}
	if v == 0 {
		return 0, errors.New("must not be zero")
	}
	return v, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func parseScope(raw json.RawMessage) (Scope, error) {
	s, err := decodeString(raw)
	if err == nil {
		switch Scope(s) {
		case ScopeProcess, ScopeContainer:
			return Scope(s), nil
		}
	}
	return "", fmt.Errorf(`must be "process" or "container", got %s`, describe(raw))
}

func parseSignals(obj *object) ([]unix.Signal, error) {
	raw, ok := obj.get(fieldSignals)
	if !ok {
		return DefaultSignals(), nil
	}
	// Each signal takes at least 4 bytes of JSON, so the limit only stops
	// absurd lists; duplicates are refused below anyway.
	elems, err := decodeArray(raw, 64)
	if err != nil {
		return nil, fieldError(fieldSignals, -1, err)
	}
	if len(elems) == 0 {
		return nil, fieldError(fieldSignals, -1,
			errors.New(`must not be empty (omit it for the default signals, or set "maxRecoveries" to 0 to never recover)`))
	}
	sigs := make([]unix.Signal, 0, len(elems))
	for i, e := range elems {
		name, err := decodeString(e)
		if err != nil {
			return nil, fieldError(fieldSignals, i, err)
		}
		s, err := parseManifestSignal(name)
		if err != nil {
			return nil, fieldError(fieldSignals, i, err)
		}
		for j, prev := range sigs {
			if prev == s {
				return nil, fieldError(fieldSignals, i, fmt.Errorf("duplicate signal %q (also at [%d])", name, j))
			}
		}
		sigs = append(sigs, s)
	}
	return sigs, nil
}

func parseMaxRecoveries(obj *object) (int, error) {
	raw, ok := obj.get(fieldMaxRecoveries)
	if !ok {
		return DefaultMaxRecoveries, nil
	}
	v, err := decodeInt(raw, strconv.IntSize)
	if err != nil {
		return 0, fieldError(fieldMaxRecoveries, -1, err)
	}
	if v < 0 {
		return 0, fieldError(fieldMaxRecoveries, -1, fmt.Errorf("must be >= 0 (0 means never recover), got %d", v))
	}
	return int(v), nil
}

// WantsSignal reports whether the manifest recovers from faults raised with
// signal s.
func (m *Manifest) WantsSignal(s unix.Signal) bool {
	for _, w := range m.Signals {
		if w == s {
			return true
		}
	}
	return false
}

type jsonManifest struct {
	Version       int               `json:"version"`
	RescuePoints  []jsonRescuePoint `json:"rescuePoints,omitempty"`
	Signals       []string          `json:"signals"`
	MaxRecoveries int               `json:"maxRecoveries"`
	Heal          *jsonHeal         `json:"heal,omitempty"`
}

type jsonHeal struct {
	Candidates []jsonRescuePoint `json:"candidates,omitempty"`
	FirstFault string            `json:"firstFault,omitempty"`
}

type jsonRescuePoint struct {
	Binary   string `json:"binary"`
	Function string `json:"function,omitempty"`
	Address  string `json:"address,omitempty"`
	Return   *int64 `json:"return,omitempty"`
	Scope    Scope  `json:"scope,omitempty"`
}

// JSON returns the canonical encoding of m: every field explicit, fields in
// a fixed order, two-space indentation and a final newline. Parsing it
// gives back m. It fails if m is not a valid manifest (for example with no
// Signals: defaults are filled in by Parse, not by JSON), so what it
// returns is always loadable.
func (m *Manifest) JSON() ([]byte, error) {
	out := jsonManifest{
		Version:       m.Version,
		RescuePoints:  make([]jsonRescuePoint, len(m.RescuePoints)),
		Signals:       make([]string, len(m.Signals)),
		MaxRecoveries: m.MaxRecoveries,
	}
	for i, rp := range m.RescuePoints {
		out.RescuePoints[i] = toJSON(rp)
	}
	if m.Heal != nil {
		out.Heal = &jsonHeal{}
		if m.Heal.FirstFault != FirstFaultCrash {
			out.Heal.FirstFault = m.Heal.FirstFault
		}
		for _, rp := range m.Heal.Candidates {
			out.Heal.Candidates = append(out.Heal.Candidates, toJSON(rp))
		}
	}
	for i, s := range m.Signals {
		out.Signals[i] = SignalName(s)
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	data := []byte(b.String())
	if _, err := Parse(data); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return data, nil
}

func toJSON(rp RescuePoint) jsonRescuePoint {
	jrp := jsonRescuePoint{Binary: rp.Binary, Function: rp.Function, Return: rp.Return, Scope: rp.Scope}
	if rp.HasAddress {
		jrp.Address = fmt.Sprintf("0x%x", rp.Address)
	}
	return jrp
}

// Empty is the manifest of a supervisor started without rescue points,
// to have them armed later (assure run --control, assure arm): the
// default signals and recovery limit.
func Empty() *Manifest {
	return &Manifest{Version: Version, Signals: DefaultSignals(), MaxRecoveries: DefaultMaxRecoveries}
}

// EntryJSON encodes one rescue point as an entry of a manifest's
// "rescuePoints" (compact), for stores that keep rescue points one by
// one (an image's learned labels).
func EntryJSON(rp RescuePoint) ([]byte, error) {
	data, err := json.Marshal(toJSON(rp))
	if err != nil {
		return nil, fmt.Errorf("encode rescue point %s: %w", rp, err)
	}
	return data, nil
}

// ParseEntry validates one rescue point encoded as EntryJSON encodes it,
// with the rules of a manifest's entries.
func ParseEntry(data []byte) (RescuePoint, error) {
	return parseRescuePoint(0, data)
}

// Key identifies a rescue point: its binary and its function or address.
func (r RescuePoint) Key() string { return r.key() }
