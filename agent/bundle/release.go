package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReleaseFile is a FIFO in the bundle through which berthd releases a
// container's first start. berthd asks systemd for the unit as soon as it
// has judged the image and planned the unit, and writes the bundle and
// pins the pod's namespaces while systemd makes the unit and forks
// berth-init; berth-init must not read the bundle before ReleaseByte
// arrives. A bundle without the FIFO (every restart) needs no release.
// berthd holds one end (Gate), berth-init the other (AwaitRelease).

// ReleaseByte is berthd's "the bundle is complete".
const ReleaseByte = 'y'

// releasePoll is how often AwaitRelease checks that berthd still holds the
// FIFO: a writer that leaves does not wake a reader that opened after it
// (pipe_poll reports POLLHUP only for writers newer than the reader).
const releasePoll = 100 // ms

// AwaitRelease returns once berthd has released bundle, at once if the
// bundle has no ReleaseFile. If berthd closes the FIFO without releasing
// it (it failed to write the bundle, or exited), the start must fail.
func AwaitRelease(bundle string) error { return awaitRelease(bundle, nil) }

// awaitRelease is AwaitRelease; opened, when set, runs once the FIFO is open
// (the synchronisation point of the tests).
func awaitRelease(bundle string, opened func()) error {
	name := filepath.Join(bundle, ReleaseFile)
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s is not a FIFO", name)
	}
	if opened != nil {
		opened()
	}
	buf := make([]byte, 1)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case n == 1 && buf[0] == ReleaseByte:
			if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", name, err)
			}
			return nil
		case n == 1:
			return fmt.Errorf("%s: unexpected byte %q", name, buf)
		case err == nil:
			return fmt.Errorf("berthd closed %s without releasing the bundle: it failed to prepare it or exited; nothing was started", name)
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, releasePoll); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("wait for the release of %s: %w", bundle, err)
			}
		default:
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
}

// Gate is berthd's end of a bundle's ReleaseFile. It is opened read-write,
// so that creating it never waits for berth-init and a byte written stays in
// the pipe until berth-init reads it; closing it without a release leaves
// berth-init with no writer, which it reads as end of file.
type Gate struct {
	path string
	fd   int
}

// OpenGate makes the bundle's ReleaseFile afresh and opens berthd's end.
func OpenGate(bundle string) (*Gate, error) {
	path := filepath.Join(bundle, ReleaseFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("make %s: %w", path, err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Gate{path: path, fd: fd}, nil
}

// Release tells berth-init that the bundle is complete.
func (g *Gate) Release() error {
	if _, err := unix.Write(g.fd, []byte{ReleaseByte}); err != nil {
		return fmt.Errorf("release %s: %w", g.path, err)
	}
	return nil
}

// Close drops berthd's end. Without a Release before, berth-init reads end
// of file and fails the start; after one, the released byte lives in the
// pipe only while someone holds it open, so close only once the start job
// is over.
func (g *Gate) Close() {
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
}

// Remove deletes the FIFO once the start has succeeded (berth-init
// normally has already), so that a restart does not look for a release.
func (g *Gate) Remove() error {
	if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
