// Package imagetest builds small real OCI images for tests and the demo from
// Debian's busybox-static: no registry or network needed.
package imagetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Busybox is the path of Debian's static busybox (package busybox-static).
const Busybox = "/bin/busybox"

// Passwd and Group are the image's account databases: root, an unprivileged
// "app" user (1000, also in group "extra" 2000) and nobody.
const (
	Passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	Group  = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"
)

// Entry is one file of a layer.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, …
	Mode     int64
	Body     []byte
	Linkname string
	UID, GID int
}

// Tar renders entries as an uncompressed tar stream.
func Tar(entries []Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Linkname,
			Uid: e.UID, Gid: e.GID, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if len(e.Body) > 0 {
			_, _ = tw.Write(e.Body)
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

// Layer makes an OCI layer (gzip) from entries.
func Layer(entries []Entry) (v1.Layer, error) {
	b := Tar(entries)
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// BusyboxLayers returns two layers: busybox with its applets in /bin, then
// /etc and the usual directories.
func BusyboxLayers() ([]v1.Layer, error) {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, fmt.Errorf("%s (install busybox-static): %w", Busybox, err)
	}
	out, err := exec.Command(Busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	l1 := []Entry{{Name: "bin/", Type: tar.TypeDir, Mode: 0o755}, {Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Body: bb}}
	for _, a := range applets {
		if a != "busybox" {
			l1 = append(l1, Entry{Name: "bin/" + a, Type: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
		}
	}
	l2 := []Entry{
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o644, Body: []byte(Passwd)},
		{Name: "etc/group", Type: tar.TypeReg, Mode: 0o644, Body: []byte(Group)},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "root/", Type: tar.TypeDir, Mode: 0o700},
		{Name: "home/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "home/app/", Type: tar.TypeDir, Mode: 0o755, UID: 1000, GID: 1000},
		{Name: "data/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "data/hello.txt", Type: tar.TypeReg, Mode: 0o644, Body: []byte("hello from the image\n")},
	}
	var layers []v1.Layer
	for _, es := range [][]Entry{l1, l2} {
		l, err := Layer(es)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	return layers, nil
}

// Config is the image configuration of the busybox image.
func Config() v1.Config {
	return v1.Config{
		Cmd:        []string{"/bin/sh"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"},
		WorkingDir: "/",
	}
}

// BusyboxImage builds the busybox image; mutate adjusts its config.
func BusyboxImage(mutateCfg func(*v1.Config)) (v1.Image, error) {
	layers, err := BusyboxLayers()
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtimeArch()
	cf.Config = Config()
	if mutateCfg != nil {
		mutateCfg(&cf.Config)
	}
	return mutate.ConfigFile(img, cf)
}

// WriteLayout writes img into an OCI layout at dir under tag (the
// org.opencontainers.image.ref.name annotation) and returns its digest.
func WriteLayout(dir, tag string, img v1.Image) (string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return "", err
		}
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
