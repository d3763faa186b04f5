package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent/store"
)

// A list is the API's hottest path (kubectl get, every client's informer),
// and decoding stored JSON with encoding/json costs far more than anything
// else in it (a 2.5 kB pod takes tens of microseconds: a list of 500, tens
// of milliseconds). So a list decodes nothing it does not need:
//
//   - a plain list writes the stored JSON of its items as they are, inside
//     an envelope written here (writeRawList): the store holds each object
//     as encoding/json wrote it, compact and HTML-escaped, which is what
//     encoding/json would write again;
//   - a Table's rows carry each object's stored metadata (or the whole
//     stored object) as it is (appendRow), and the cells come from the
//     object decoded once per resourceVersion (listCache).

// writeRawList writes a list of kind listKind around the stored JSON of its
// items: byte for byte what json.Encoder writes for a list whose items are
// those objects, without encoding/json's second pass over every item.
func writeRawList(w http.ResponseWriter, apiVersion, listKind string, items [][]byte, rv string) {
	var body itemBuffer
	defer body.release()
	for _, b := range items {
		body.add(b)
	}
	writeRawItems(w, apiVersion, listKind, &body, rv)
}

// itemBuffer holds a list's items' JSON, comma-separated, in chunks of
// chunkSize taken from chunkPool (an item larger than a chunk gets its own):
// one copy of each item and none of the whole (a MB buffer grown by append
// is copied a dozen times), few writes to the connection, and in a steady
// stream of lists no garbage at all, so no GC cycles that lists cause.
type itemBuffer struct {
	bufs [][]byte
	n    int
}

const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

func (b *itemBuffer) add(item []byte) {
	need := len(item)
	if b.n > 0 {
		need++
	}
	last := len(b.bufs) - 1
	if last < 0 || len(b.bufs[last])+need > cap(b.bufs[last]) {
		var buf []byte
		if need <= chunkSize {
			buf = chunkPool.Get().(*[chunkSize]byte)[:0]
		} else {
			buf = make([]byte, 0, need)
		}
		b.bufs = append(b.bufs, buf)
		last++
	}
	if b.n > 0 {
		b.bufs[last] = append(b.bufs[last], ',')
	}
	b.bufs[last] = append(b.bufs[last], item...)
	b.n += need
}

// release returns the chunks to the pool: nothing may use b afterwards.
func (b *itemBuffer) release() {
	for _, buf := range b.bufs {
		if cap(buf) == chunkSize {
			chunkPool.Put((*[chunkSize]byte)(buf[:chunkSize]))
		}
	}
	b.bufs, b.n = nil, 0
}

// writeRawItems is writeRawList with the items in an itemBuffer.
func writeRawItems(w http.ResponseWriter, apiVersion, listKind string, items *itemBuffer, rv string) {
	head, _ := json.Marshal(struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata"`
	}{metav1.TypeMeta{Kind: listKind, APIVersion: apiVersion}, metav1.ListMeta{ResourceVersion: rv}})
	writeItems(w, append(head[:len(head)-1], `,"items":[`...), items)
}

// writeItems answers with head, the items and the end of the array and
// of the object.
func writeItems(w http.ResponseWriter, head []byte, items *itemBuffer) {
	const tail = "]}\n"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(head)+items.n+len(tail)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(head); err != nil {
		return
	}
	for _, b := range items.bufs {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, tail)
}

// writeList answers a list of k's kind with items as stored.
func (s *Server) writeList(w http.ResponseWriter, k *kind, items [][]byte, rv string) {
	if k.newList != nil {
		// A kind served in another form than it is stored in converts.
		writeJSON(w, http.StatusOK, k.newList(items, rv))
		return
	}
	writeRawList(w, k.apiVersion(), k.kind+"List", items, rv)
}

// tableHead is the start of a Table of k's kind up to its rows' "[": what
// json.Encoder writes for the metav1.Table that table() builds.
func tableHead(k *kind, rv string) []byte {
	head, _ := json.Marshal(&metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: rv}, ColumnDefinitions: k.columns})
	// head ends with `"rows":null}`.
	return append(bytes.TrimSuffix(head, []byte(`null}`)), '[')
}

// appendRow appends obj's Table row to row: what json.Encoder writes for
// the metav1.TableRow that table() builds, with the row's object given as
// JSON (object: the whole object, for includeObject=Object) or, by
// default, a PartialObjectMetadata around the stored metadata (md) as it
// is.
func appendRow(row []byte, k *kind, obj store.Object, object, md []byte) ([]byte, error) {
	cells, err := json.Marshal(k.cells(obj))
	if err != nil {
		return nil, err
	}
	row = append(row, `{"cells":`...)
	row = append(row, cells...)
	row = append(row, `,"object":`...)
	switch {
	case object != nil:
		row = append(row, object...)
	case md != nil:
		row = append(row, `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":`...)
		row = append(row, md...)
		row = append(row, '}')
	default:
		// Stored JSON without metadata (none is written so): encode what
		// was decoded, as table() does.
		m := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}}
		m.ObjectMeta = *obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		row = append(row, b...)
	}
	return append(row, '}'), nil
}

// listCache keeps, per stored object of one kind, the object decoded for
// a list (k.decodeList) at the resourceVersion it was decoded at: a Table
// or a list with selectors decodes an object again only when it changed.
// An object that is gone leaves at the next list of its namespace (or of
// all namespaces).
type listCache struct {
	mu sync.Mutex
	m  map[string]cachedObject // "namespace/name" →
}

type cachedObject struct {
	rv  string
	obj store.Object
}

// decodeForList returns data decoded for a list: from k's cache when the
// stored resourceVersion is the one cached.
func (s *Server) decodeForList(k *kind, data []byte) (store.Object, error) {
	c := k.cache
	var key, rv string
	if c != nil {
		var ok bool
		if key, rv, ok = identity(data); ok {
			c.mu.Lock()
			e, hit := c.m[key]
			c.mu.Unlock()
			if hit && e.rv == rv {
				return e.obj, nil
			}
		}
	}
	obj, err := k.decodeList(data)
	if err != nil || c == nil || rv == "" || obj.GetResourceVersion() != rv {
		return obj, err
	}
	c.mu.Lock()
	c.m[key] = cachedObject{rv: rv, obj: obj}
	c.mu.Unlock()
	return obj, nil
}

// forget drops the cached objects of namespace ns ("" for all) whose keys
// a complete list of it did not see.
func (c *listCache) forget(ns string, seen map[string]bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key := range c.m {
		if !seen[key] && (ns == "" || (len(key) > len(ns) && key[:len(ns)] == ns && key[len(ns)] == '/')) {
			delete(c.m, key)
		}
	}
}

// identity reads "namespace/name" and the resourceVersion from stored
// JSON's top-level metadata without decoding it; ok is false when
// they cannot be read so (the object is then decoded and not cached).
func identity(data []byte) (key, rv string, ok bool) {
	md, ok := metadataOf(data)
	if !ok {
		return "", "", false
	}
	var ns, name string
	var haveName, haveRV bool
	ok = eachMember(md, func(k, v []byte) bool {
		var dst *string
		switch string(k) {
		case "namespace":
			dst = &ns
		case "name":
			dst, haveName = &name, true
		case "resourceVersion":
			dst, haveRV = &rv, true
		default:
			return true
		}
		s, ok := plainString(v)
		*dst = s
		return ok
	})
	if !ok || !haveName || !haveRV {
		return "", "", false
	}
	return ns + "/" + name, rv, true
}

// metadataOf is the JSON value of data's top-level "metadata" member.
func metadataOf(data []byte) ([]byte, bool) {
	var md []byte
	ok := eachMember(data, func(k, v []byte) bool {
		if string(k) == "metadata" {
			md = v
			return false
		}
		return true
	})
	return md, ok && md != nil && len(md) > 0 && md[0] == '{'
}

// eachMember calls fn with the raw key (without quotes) and value of each
// member of the JSON object obj, compact as encoding/json writes it, until
// fn returns false. It reports false for anything it does not read as such
// an object; keys with escapes are passed raw, so they match no name.
func eachMember(obj []byte, fn func(k, v []byte) bool) bool {
	if len(obj) < 2 || obj[0] != '{' {
		return false
	}
	i := 1
	if obj[i] == '}' {
		return true
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return false
		}
		end := skipString(obj, i)
		if end < 0 || end >= len(obj) || obj[end] != ':' {
			return false
		}
		k := obj[i+1 : end-1]
		vEnd := skipValue(obj, end+1)
		if vEnd < 0 || vEnd >= len(obj) {
			return false
		}
		if !fn(k, obj[end+1:vEnd]) {
			return true
		}
		switch obj[vEnd] {
		case ',':
			i = vEnd + 1
		case '}':
			return true
		default:
			return false
		}
	}
}

// skipString returns the index after the JSON string starting at b[i]
// ('"'), or -1.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the compact JSON value starting at
// b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j)
				if j < 0 {
					return -1
				}
				j--
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	// A number, true, false or null: up to the next delimiter.
	for j := i; j < len(b); j++ {
		switch b[j] {
		case ',', '}', ']':
			return j
		}
	}
	return -1
}

// plainString is the JSON string v without escapes; ok is false for any
// other value.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return "", false
	}
	return string(v[1 : len(v)-1]), true
}
