package image

import (
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Progress reports a pull or import as compressed layer bytes stream in,
// for a progress bar: one event per read, one with Done when a layer is
// stored. A layer the store already has is reported once, complete, with
// Cached set. A layer that occurs twice in an image counts once.
type Progress struct {
	Layer      string // compressed layer digest
	LayerBytes int64  // bytes of this layer so far
	LayerTotal int64  // its size from the manifest
	Bytes      int64  // bytes of all layers so far (cached ones included)
	Total      int64  // size of all layers
	Done       bool   // the layer is stored
	Cached     bool   // it was already there; nothing was fetched
}

// progressState adds up one import's bytes. A nil *progressState (no
// callback) does nothing.
type progressState struct {
	fn       func(Progress)
	mu       sync.Mutex
	order    []v1.Descriptor
	total    int64
	bytes    int64
	layer    map[v1.Hash]int64 // bytes so far per layer
	finished map[v1.Hash]bool
}

func newProgressState(fn func(Progress), layers []v1.Descriptor) *progressState {
	if fn == nil {
		return nil
	}
	p := &progressState{fn: fn, layer: map[v1.Hash]int64{}, finished: map[v1.Hash]bool{}}
	seen := map[v1.Hash]bool{}
	for _, d := range layers {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			p.order = append(p.order, d)
			p.total += d.Size
		}
	}
	return p
}

func (p *progressState) emit(d v1.Descriptor, done, cached bool) {
	p.fn(Progress{Layer: d.Digest.String(), LayerBytes: p.layer[d.Digest], LayerTotal: d.Size,
		Bytes: p.bytes, Total: p.total, Done: done, Cached: cached})
}

// cached reports a layer that needed no fetching.
func (p *progressState) cached(d v1.Descriptor) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished[d.Digest] {
		return
	}
	p.finished[d.Digest] = true
	p.bytes += d.Size - p.layer[d.Digest]
	p.layer[d.Digest] = d.Size
	p.emit(d, true, true)
}

// allCached reports every layer as cached (the image was already stored).
func (p *progressState) allCached() {
	if p == nil {
		return
	}
	for _, d := range p.order {
		p.cached(d)
	}
}

// done reports a layer stored after streaming it.
func (p *progressState) done(d v1.Descriptor) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished[d.Digest] {
		return
	}
	p.finished[d.Digest] = true
	p.emit(d, true, false)
}

// reader counts the bytes of layer d read through r.
func (p *progressState) reader(d v1.Descriptor, r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &progressReader{p: p, d: d, r: r}
}

type progressReader struct {
	p *progressState
	d v1.Descriptor
	r io.Reader
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		p := r.p
		p.mu.Lock()
		p.layer[r.d.Digest] += int64(n)
		p.bytes += int64(n)
		p.emit(r.d, false, false)
		p.mu.Unlock()
	}
	return n, err
}
