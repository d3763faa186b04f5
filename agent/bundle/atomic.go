package bundle

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes name with mode through a temporary file in the same
// directory, fsync(2) and rename(2), then fsyncs the directory: a reader
// (systemd reading PIDFile=, berthd reading exit.json, berth-init reading a
// bundle berthd rewrites) never sees a partial file, and after a crash of the
// machine the file holds either its old or its new content, never an empty
// one (ext4's delayed allocation can otherwise leave a renamed file empty,
// see the ext4 "auto_da_alloc" mount option in Documentation/admin-guide/ext4.rst).
func WriteFileAtomic(name string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(name)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
