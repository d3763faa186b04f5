package remote

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// queue is one endpoint's batches on disk, oldest first, so that nothing
// is lost to a receiver's outage or to berthd's restart within the bound:
// one file per batch (a compressed WriteRequest, ready to send), named
// <sequence>-<samples>.rw, written whole before it is renamed into place
// (a crash leaves a *.tmp, removed at the next start, never half a
// batch). Past maxBytes the oldest batches are dropped, and counted, as
// Prometheus' own queue drops what its WAL no longer holds.
type queue struct {
	dir string
	max int64

	mu       sync.Mutex
	files    []qfile
	size     int64
	next     uint64
	inflight uint64 // the batch being sent (0: none): never dropped
	notify   chan struct{}
}

type qfile struct {
	seq     uint64
	samples int
	size    int64
}

func (f qfile) name() string { return fmt.Sprintf("%016d-%d.rw", f.seq, f.samples) }

// openQueue opens (creating) dir and finds the batches a previous run
// left.
func openQueue(dir string, maxBytes int64) (*queue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("remote write queue: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("remote write queue: %w", err)
	}
	q := &queue{dir: dir, max: maxBytes, next: 1, notify: make(chan struct{}, 1)}
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".tmp") {
			_ = os.Remove(filepath.Join(dir, n))
			continue
		}
		seqS, samplesS, ok := strings.Cut(strings.TrimSuffix(n, ".rw"), "-")
		seq, err1 := strconv.ParseUint(seqS, 10, 64)
		samples, err2 := strconv.Atoi(samplesS)
		info, err3 := e.Info()
		if !ok || !strings.HasSuffix(n, ".rw") || err1 != nil || err2 != nil || err3 != nil {
			continue // not the queue's
		}
		q.files = append(q.files, qfile{seq: seq, samples: samples, size: info.Size()})
		q.size += info.Size()
		q.next = max(q.next, seq+1)
	}
	sort.Slice(q.files, func(i, j int) bool { return q.files[i].seq < q.files[j].seq })
	return q, nil
}

// push appends a batch, then drops the oldest (but the one in flight and
// the new one) while the queue is over its bound; it returns the samples
// dropped.
func (q *queue) push(data []byte, samples int) (dropped int, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f := qfile{seq: q.next, samples: samples, size: int64(len(data))}
	q.next++
	path := filepath.Join(q.dir, f.name())
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		_ = os.Remove(path + ".tmp")
		return 0, fmt.Errorf("remote write queue: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return 0, fmt.Errorf("remote write queue: %w", err)
	}
	q.files = append(q.files, f)
	q.size += f.size
	for i := 0; q.size > q.max && i < len(q.files)-1; {
		old := q.files[i]
		if old.seq == q.inflight {
			i++
			continue
		}
		_ = os.Remove(filepath.Join(q.dir, old.name()))
		q.files = append(q.files[:i], q.files[i+1:]...)
		q.size -= old.size
		dropped += old.samples
	}
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return dropped, nil
}

// oldest is the next batch to send, marked in flight.
func (q *queue) oldest() (qfile, []byte, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.files) == 0 {
		return qfile{}, nil, false, nil
	}
	f := q.files[0]
	data, err := os.ReadFile(filepath.Join(q.dir, f.name()))
	if err != nil {
		// Unreadable: dropped, or the queue would stop here forever.
		_ = os.Remove(filepath.Join(q.dir, f.name()))
		q.files = q.files[1:]
		q.size -= f.size
		return f, nil, false, fmt.Errorf("remote write queue: %w", err)
	}
	q.inflight = f.seq
	return f, data, true, nil
}

// done removes a batch sent (or refused for good).
func (q *queue) done(f qfile) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight = 0
	for i, x := range q.files {
		if x.seq == f.seq {
			_ = os.Remove(filepath.Join(q.dir, f.name()))
			q.files = append(q.files[:i], q.files[i+1:]...)
			q.size -= f.size
			return
		}
	}
}

// release un-marks the batch in flight (to be tried again).
func (q *queue) release() {
	q.mu.Lock()
	q.inflight = 0
	q.mu.Unlock()
}

func (q *queue) stats() (batches int, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.files), q.size
}
