package target

import (
	"fmt"
	"strings"
)

// ErrInvalidRange is returned by GetRange when offset is negative or beyond the end of the object.
// A range that starts inside the object (or exactly at its end) but runs past the end is not an
// error: it is cut at the end, so GetRange(name, size, n) yields zero bytes.
var ErrInvalidRange = permanent("invalid byte range")

// ValidateName reports whether name follows the naming rules of the package doc, returning an
// error matching ErrInvalidName if not. Segments "." and ".." are rejected as well, so that no
// two names alias the same object on any backend.
func ValidateName(name string) error {
	if name == "" || name[0] == '/' || strings.Contains(name, "..") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	if err := validateChars(name); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return nil
}

// ValidatePrefix checks a List prefix: any prefix of a valid name (including "") is accepted.
func ValidatePrefix(prefix string) error {
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "..") {
		return fmt.Errorf("%w: prefix %q", ErrInvalidName, prefix)
	}
	return validateChars(prefix)
}

func validateChars(s string) error {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '/':
		default:
			return fmt.Errorf("%w: %q", ErrInvalidName, s)
		}
	}
	return nil
}
