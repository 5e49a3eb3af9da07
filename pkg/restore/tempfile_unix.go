//go:build unix

package restore

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// createTemp creates a new file for writing in dir, named .restore-<random>. It is
// os.CreateTemp without what a restore of many small records pays for on every file and does
// not need: the file is opened blocking, so it is not registered with the runtime's poller
// (a failing epoll_ctl and a fcntl each). O_EXCL makes the name the caller's alone.
func createTemp(dir string) (*os.File, error) {
	for range 100 {
		name := filepath.Join(dir, ".restore-"+strconv.FormatUint(rand.Uint64(), 36))
		fd, err := syscall.Open(name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), name), nil
		case errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.EINTR):
			continue
		default:
			return nil, &os.PathError{Op: "create", Path: name, Err: err}
		}
	}
	return nil, &os.PathError{Op: "create", Path: filepath.Join(dir, ".restore-*"), Err: syscall.EEXIST}
}

// rename is os.Rename without its lstat of newname: newname is a record's file, never a
// directory os.Rename would have to refuse specially (rename(2) refuses it too, EISDIR).
func rename(oldname, newname string) error {
	if err := syscall.Rename(oldname, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}
