package client

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/api/berthv1"
)

// Berth speaks berth's own endpoints (api/berthv1) on the socket: what
// `berth image` and `berth plan` do where kubectl has no verb.
type Berth struct{ HTTP *http.Client }

// maxAnswer bounds a non-streamed answer (an image list of thousands of
// images, a plan of many containers, a Status).
const maxAnswer = 16 << 20

// Images lists the stored images.
func (b Berth) Images(ctx context.Context) (*berthv1.ImageList, error) {
	var list berthv1.ImageList
	if err := b.do(ctx, http.MethodGet, berthv1.ImagesPath, nil, "", nil, &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// Remove removes the stored image ref names.
func (b Berth) Remove(ctx context.Context, ref string) (*berthv1.Image, error) {
	var im berthv1.Image
	if err := b.do(ctx, http.MethodDelete, berthv1.ImagesPath, url.Values{"ref": {ref}}, "", nil, &im); err != nil {
		return nil, err
	}
	return &im, nil
}

// Plan sends one Pod (JSON) and returns the text of its units.
func (b Berth) Plan(ctx context.Context, pod []byte) (string, error) {
	var out bytes.Buffer
	if err := b.do(ctx, http.MethodPost, berthv1.PlanPath, nil, "application/json", bytes.NewReader(pod), &out); err != nil {
		return "", err
	}
	return out.String(), nil
}

// Pull pulls ref, telling progress how it goes; the answer's last message
// is the image and the policy's judgement.
func (b Berth) Pull(ctx context.Context, ref string, progress func(berthv1.Progress)) (*berthv1.Message, error) {
	return b.stream(ctx, berthv1.PullPath, url.Values{"ref": {ref}}, nil, progress)
}

// Load sends the oci-archive read from r; ref picks an image of a layout
// holding several ("" its only one).
func (b Berth) Load(ctx context.Context, r io.Reader, ref string, progress func(berthv1.Progress)) (*berthv1.Message, error) {
	q := url.Values{}
	if ref != "" {
		q.Set("ref", ref)
	}
	return b.stream(ctx, berthv1.LoadPath, q, r, progress)
}

func (b Berth) request(ctx context.Context, method, path string, q url.Values, ctype string, body io.Reader) (*http.Response, error) {
	u := Host + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := b.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("berthd: %w", errdefs.ErrUnavailable.WithMessage(err.Error()))
	}
	return resp, nil
}

// do sends a request and decodes a JSON answer into out (or copies it into
// a *bytes.Buffer).
func (b Berth) do(ctx context.Context, method, path string, q url.Values, ctype string, body io.Reader, out any) error {
	resp, err := b.request(ctx, method, path, q, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("berthd: %w", errdefs.ErrUnavailable.WithMessage(err.Error()))
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("berthd's answer is larger than %d bytes: %w", maxAnswer, errdefs.ErrInvalidArgument)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return serverError(resp.StatusCode, data)
	}
	if buf, ok := out.(*bytes.Buffer); ok {
		buf.Write(data)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("berthd's answer: %w", errdefs.ErrInvalidArgument.WithMessage(err.Error()))
	}
	return nil
}

// stream sends a request whose answer is a stream of Messages.
func (b Berth) stream(ctx context.Context, path string, q url.Values, body io.Reader, progress func(berthv1.Progress)) (*berthv1.Message, error) {
	ctype := ""
	if body != nil {
		ctype = "application/x-tar"
	}
	resp, err := b.request(ctx, http.MethodPost, path, q, ctype, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		return nil, serverError(resp.StatusCode, data)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxAnswer)
	for sc.Scan() {
		var m berthv1.Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("berthd's answer: %w", errdefs.ErrInvalidArgument.WithMessage(err.Error()))
		}
		switch {
		case m.Status != nil:
			return nil, apierrors.FromObject(m.Status)
		case m.Image != nil:
			return &m, nil
		case m.Progress != nil && progress != nil:
			progress(*m.Progress)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("berthd: %w", errdefs.ErrUnavailable.WithMessage(err.Error()))
	}
	return nil, fmt.Errorf("berthd ended the answer without a result: %w", errdefs.ErrUnavailable)
}

// serverError is berthd's refusal as kubectl prints the apiserver's
// ("Error from server (NotFound): ..."), when the body is a Status.
func serverError(code int, body []byte) error {
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		return apierrors.FromObject(&st)
	}
	return statusError(code, body)
}

// LayoutArchive streams the OCI image layout at dir as an oci-archive (a
// tar of its files) into w: oci-layout, index.json and blobs/*/* as
// regular files, nothing else, as berthd accepts it. It never follows a
// symlink: the layout's files must be what they claim.
func LayoutArchive(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: fi.ModTime()})
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s: not a regular file (an OCI layout holds only files and directories): %w", p, errdefs.ErrInvalidArgument)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
