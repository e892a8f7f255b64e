package manifest

import (
	"strconv"
	"strings"
)

// Error describes one problem in a manifest. Its message names where the
// problem is, so that a user can fix a manifest from the message alone:
//
//	manifest app.json: rescuePoints[1] (parse_header in libparse.so.1): field "scope": must be "process" or "container", got "global"
//
// Callers that check rescue points further (for example against the ELF
// files they name) should report through EntryError so that their messages
// have the same shape.
type Error struct {
	// File is the manifest's file name, or "" when it was parsed from memory.
	File string
	// Index is the position of the rescue point in "rescuePoints" (in
	// List when set: "heal.candidates"), or -1 when the problem is not
	// about a single rescue point.
	Index int
	List  string
	// Entry is the "name in binary" label of that rescue point, when known.
	Entry string
	// Fields are the offending JSON fields (one, or a pair that conflict),
	// within the rescue point when Index >= 0. Empty when the problem is
	// not tied to a field.
	Fields []string
	// Elem is the index within an array-valued field, or -1.
	Elem int
	// Err is the reason.
	Err error
}

// EntryError returns an error about field of the rescue point rp at index i
// of the manifest read from file.
func EntryError(file string, i int, rp RescuePoint, field string, err error) *Error {
	e := &Error{File: file, Index: i, Entry: rp.String(), Elem: -1, Err: err}
	if field != "" {
		e.Fields = []string{field}
	}
	return e
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("manifest")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	b.WriteString(": ")
	if e.Index >= 0 {
		list := e.List
		if list == "" {
			list = "rescuePoints"
		}
		b.WriteString(list + "[")
		b.WriteString(strconv.Itoa(e.Index))
		b.WriteString("]")
		if e.Entry != "" {
			b.WriteString(" (")
			b.WriteString(e.Entry)
			b.WriteString(")")
		}
		b.WriteString(": ")
	}
	switch len(e.Fields) {
	case 0:
	case 1:
		b.WriteString("field ")
		b.WriteString(strconv.Quote(e.Fields[0]))
		if e.Elem >= 0 {
			b.WriteString("[")
			b.WriteString(strconv.Itoa(e.Elem))
			b.WriteString("]")
		}
		b.WriteString(": ")
	default:
		b.WriteString("fields ")
		for i, f := range e.Fields {
			switch {
			case i == 0:
			case i == len(e.Fields)-1:
				b.WriteString(" and ")
			default:
				b.WriteString(", ")
			}
			b.WriteString(strconv.Quote(f))
		}
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// docError is a problem with the manifest as a whole.
func docError(err error) *Error {
	return &Error{Index: -1, Elem: -1, Err: err}
}

// fieldError is a problem with a top-level field (elem >= 0 for one element
// of an array-valued field).
func fieldError(field string, elem int, err error) *Error {
	return &Error{Index: -1, Fields: []string{field}, Elem: elem, Err: err}
}

// entryError is a problem with fields of rescue point i, labelled by label.
func entryError(i int, label string, err error, fields ...string) *Error {
	return &Error{Index: i, Entry: label, Fields: fields, Elem: -1, Err: err}
}
