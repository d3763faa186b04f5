package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/trust"
	"github.com/berth-dev/berth/api/berthv1"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
)

// Images is what berth's own endpoints (api/berthv1: berth image
// pull|ls|rm|load, berth plan) need; agent/images.Service provides it.
type Images interface {
	List() ([]*image.Image, error)
	Pull(ctx context.Context, ref string, progress func(image.Progress)) (*trust.Pulled, error)
	Remove(ctx context.Context, ref string) (*image.Image, error)
	Load(ctx context.Context, r io.Reader, o images.LoadOptions) (*images.Loaded, error)
	Plan(ctx context.Context, pod *corev1.Pod) (string, error)
}

// BerthOptions configure berth's own endpoints.
type BerthOptions struct {
	Images Images
	// MaxLoadBytes bounds an archive sent to LoadPath (0: 64 GiB; the
	// store's filesystem bounds it too, with ENOSPC as the answer).
	MaxLoadBytes int64
}

// imagesGR names images in Status messages ("images \"x\" not found").
var imagesGR = schema.GroupResource{Group: "berth.dev", Resource: "images"}

// Berth returns the handler of berth's own endpoints under /berth/v1/
// (api/berthv1), with this API's error vocabulary: errors are Status
// bodies made by toStatus, as for every Kubernetes request.
func (s *Server) Berth(o BerthOptions) http.Handler {
	if o.MaxLoadBytes == 0 {
		o.MaxLoadBytes = 64 << 30
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+berthv1.ImagesPath, func(w http.ResponseWriter, r *http.Request) {
		all, err := o.Images.List()
		if err != nil {
			s.writeStatus(w, toStatus(err, imagesGR, schema.GroupKind{}, ""), r)
			return
		}
		list := berthv1.ImageList{Items: make([]berthv1.Image, 0, len(all))}
		for _, im := range all {
			list.Items = append(list.Items, wireImage(im))
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("DELETE "+berthv1.ImagesPath, func(w http.ResponseWriter, r *http.Request) {
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			s.writeStatus(w, apierrors.NewBadRequest("ref: Required value: the image to remove"), r)
			return
		}
		im, err := o.Images.Remove(r.Context(), ref)
		if err != nil {
			s.writeStatus(w, toStatus(err, imagesGR, schema.GroupKind{}, ref), r)
			return
		}
		writeJSON(w, http.StatusOK, wireImage(im))
	})
	mux.HandleFunc("POST "+berthv1.PullPath, func(w http.ResponseWriter, r *http.Request) {
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			s.writeStatus(w, apierrors.NewBadRequest("ref: Required value: the image to pull"), r)
			return
		}
		st := newStream(w)
		p, err := o.Images.Pull(r.Context(), ref, func(p image.Progress) { st.progress(wireProgress(p)) })
		if err != nil {
			st.fail(s, toStatus(err, imagesGR, schema.GroupKind{}, ref), r)
			return
		}
		st.done(p.Image, p.Judgement)
	})
	mux.HandleFunc("POST "+berthv1.LoadPath, func(w http.ResponseWriter, r *http.Request) {
		// No progress while the archive comes in (the client counts what it
		// sends): net/http stops reading an HTTP/1.1 body once the answer's
		// header is flushed, and full duplex trips over the unread rest of a
		// refused body. Load reads the whole body before its first progress.
		st := newStream(w)
		body := http.MaxBytesReader(w, r.Body, o.MaxLoadBytes)
		l, err := o.Images.Load(r.Context(), body, images.LoadOptions{
			Ref: r.URL.Query().Get("ref"), MaxBytes: o.MaxLoadBytes,
			Progress: func(p image.Progress) { st.progress(wireProgress(p)) },
		})
		if err != nil {
			var tooLarge *http.MaxBytesError
			var archiveTooLarge *image.TooLargeError
			if errors.As(err, &tooLarge) || errors.As(err, &archiveTooLarge) {
				st.fail(s, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", o.MaxLoadBytes)), r)
				return
			}
			st.fail(s, statusKeepingNotFound(err, imagesGR, r.URL.Query().Get("ref")), r)
			return
		}
		st.done(l.Image, l.Judgement)
	})
	mux.HandleFunc("POST "+berthv1.PlanPath, func(w http.ResponseWriter, r *http.Request) {
		s.plan(w, r, o.Images)
	})
	// Anything else under /berth/v1/ is answered as the API answers an
	// unknown path: a Status, not net/http's text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		for _, p := range []string{berthv1.ImagesPath, berthv1.PullPath, berthv1.LoadPath, berthv1.PlanPath} {
			if r.URL.Path == p {
				s.writeStatus(w, apierrors.NewMethodNotSupported(imagesGR, strings.ToLower(r.Method)), r)
				return
			}
		}
		s.writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, ""), r)
	})
	return mux
}

// plan answers PlanPath: the pod is decoded, defaulted and validated as a
// create would (nothing is stored), then rendered by the runtime.
func (s *Server) plan(w http.ResponseWriter, r *http.Request, imgs Images) {
	k := s.kinds["pods"]
	body, se := readBody(w, r)
	if se != nil {
		s.writeStatus(w, se, r)
		return
	}
	pod := &corev1.Pod{}
	if _, se := decodeObject(r, body, pod, "Strict"); se != nil {
		s.writeStatus(w, se, r)
		return
	}
	if se := checkKind(k, pod); se != nil {
		s.writeStatus(w, se, r)
		return
	}
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	if pod.Name == "" && pod.GenerateName != "" {
		pod.Name = pod.GenerateName + "xxxxx"
	}
	if err := s.prepareNew(k, pod); err != nil {
		s.writeStatus(w, toStatus(err, k.gr(), k.gk(), pod.Name), r)
		return
	}
	text, err := imgs.Plan(r.Context(), pod)
	if err != nil {
		s.writeStatus(w, statusKeepingNotFound(err, k.gr(), pod.Name), r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, text)
}

// statusKeepingNotFound is toStatus, except that a NotFound keeps its own
// message: what plan and load miss is an image in the store or in the
// archive, which the message names with what to do, where toStatus would
// say `pods "web" not found`.
func statusKeepingNotFound(err error, gr schema.GroupResource, name string) *apierrors.StatusError {
	if errdefs.IsNotFound(err) {
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound, Message: err.Error(),
		}}
	}
	return toStatus(err, gr, schema.GroupKind{Kind: "Pod"}, name)
}

// stream writes a streamed answer (berthv1.Message lines). Until the first
// line, a failure is an ordinary Status answer with its HTTP code; after
// it, the status line is 200 and the failure is the last Message. Progress
// is sent at most every 200 ms, and never after the end.
type stream struct {
	w       http.ResponseWriter
	mu      sync.Mutex
	started bool
	ended   bool
	last    time.Time
}

func newStream(w http.ResponseWriter) *stream { return &stream{w: w} }

func (st *stream) write(m berthv1.Message) {
	if !st.started {
		st.w.Header().Set("Content-Type", berthv1.ContentTypeStream)
		st.w.Header().Set("X-Content-Type-Options", "nosniff")
		st.w.WriteHeader(http.StatusOK)
		st.started = true
	}
	b, _ := json.Marshal(m)
	_, _ = st.w.Write(append(b, '\n'))
	if f, ok := st.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (st *stream) progress(p berthv1.Progress) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	if st.ended || (!p.Done && now.Sub(st.last) < 200*time.Millisecond) {
		return
	}
	st.last = now
	st.write(berthv1.Message{Progress: &p})
}

func (st *stream) fail(s *Server, se *apierrors.StatusError, r *http.Request) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended = true
	if !st.started {
		s.writeStatus(st.w, se, r)
		return
	}
	status := statusOf(se)
	if status.Code >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", status.Message)
	}
	st.write(berthv1.Message{Status: status})
}

func (st *stream) done(im *image.Image, j verify.Judgement) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended = true
	wi := wireImage(im)
	st.write(berthv1.Message{Image: &wi, Judgement: &berthv1.Judgement{Allowed: j.Allowed, Scope: j.Scope, Rule: j.Rule, Reason: j.Reason}})
}

func wireProgress(p image.Progress) berthv1.Progress {
	return berthv1.Progress{Layer: p.Layer, LayerBytes: p.LayerBytes, LayerTotal: p.LayerTotal, Bytes: p.Bytes, Total: p.Total, Done: p.Done, Cached: p.Cached}
}

func wireImage(im *image.Image) berthv1.Image {
	out := berthv1.Image{Digest: im.Digest, Refs: im.Refs, Layers: len(im.DiffIDs), Stored: im.Stored, LastUsed: im.LastUsed}
	if c := im.Config; c.OS != "" {
		out.Platform = strings.TrimSuffix(c.OS+"/"+c.Architecture+"/"+c.Variant, "/")
	}
	if im.Config.Created != nil && !im.Config.Created.IsZero() {
		t := *im.Config.Created
		out.Created = &t
	}
	return out
}
