// Package fileinfo describes files for error messages about inputs that
// come from images and users.
package fileinfo

import "io/fs"

// Kind names the type of a file that is not a regular file, for messages
// such as "not a regular file (named pipe)".
func Kind(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeDevice != 0:
		return "device"
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file"
	}
}
