package trust

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/verify"
	"github.com/containerd/errdefs"

	bndl "github.com/berth-dev/berth/agent/bundle"
)

// memStore is the image store's meta files in memory, counting writes.
type memStore struct {
	meta   map[string][]byte
	writes int
}

func (m *memStore) PutMeta(digest, name string, data []byte) error {
	m.meta[digest+"/"+name] = data
	m.writes++
	return nil
}

func (m *memStore) GetMeta(digest, name string) ([]byte, error) {
	b, ok := m.meta[digest+"/"+name]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return b, nil
}

func (m *memStore) MetaPath(digest, name string) string { return digest + "/" + name }

func TestRecordJudgementOnlyWhenItChanges(t *testing.T) {
	st := &memStore{meta: map[string][]byte{}}
	const d = "sha256:0123"
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	j := verify.Judgement{Allowed: true, Image: "example.com/app", Digest: d, Scope: "default",
		Rule: "insecureAcceptAnything[0]", Reason: "accepted", PolicyDigest: "sha256:p1", Time: t0}
	stored := func() verify.Judgement {
		t.Helper()
		var got verify.Judgement
		if err := json.Unmarshal(st.meta[d+"/"+judgementMeta("example.com/app")], &got); err != nil {
			t.Fatal(err)
		}
		return got
	}

	steps := []struct {
		name      string
		change    func(*verify.Judgement)
		writes    int
		wantTime  time.Time
		wantAllow bool
	}{
		{"first judgement is written", func(*verify.Judgement) {}, 1, t0, true},
		{"same verdict later: not rewritten", func(j *verify.Judgement) { j.Time = t0.Add(time.Hour) }, 1, t0, true},
		{"another policy: rewritten", func(j *verify.Judgement) { j.PolicyDigest = "sha256:p2"; j.Time = t0.Add(2 * time.Hour) }, 2, t0.Add(2 * time.Hour), true},
		{"now refused: rewritten", func(j *verify.Judgement) {
			j.Allowed = false
			j.Reason = "no signature"
			j.Time = t0.Add(3 * time.Hour)
		}, 3, t0.Add(3 * time.Hour), false},
	}
	for _, s := range steps {
		s.change(&j)
		if err := recordJudgement(st, d, judgementMeta("example.com/app"), j); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := stored()
		if st.writes != s.writes || !got.Time.Equal(s.wantTime) || got.Allowed != s.wantAllow {
			t.Errorf("%s: %d writes, stored time %v allowed %v; want %d, %v, %v",
				s.name, st.writes, got.Time, got.Allowed, s.writes, s.wantTime, s.wantAllow)
		}
	}
}

func writePolicy(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sigsDep(t *testing.T, jd *Judged) bndl.Fingerprint {
	t.Helper()
	for _, d := range jd.Depends {
		if strings.Contains(d.Path, "signatures-") {
			return d
		}
	}
	t.Fatalf("no signatures among %v", jd.Depends)
	return bndl.Fingerprint{}
}

// The same digest pulled from another repository stores that repository's
// signatures apart: what the trusted repository's next start judges does
// not change.
func TestSignaturesPerRepository(t *testing.T) {
	st := &memStore{meta: map[string][]byte{}}
	policy := writePolicy(t, `{"default":[{"type":"insecureAcceptAnything"}]}`)
	d := "sha256:" + strings.Repeat("b", 64)
	trusted := bndl.Source{Repo: "registry.example/team/app", Digest: d, Policy: policy}
	before, err := Judge(context.Background(), st, trusted)
	if err != nil {
		t.Fatal(err)
	}
	if sigsDep(t, before).SHA256 != bndl.Absent {
		t.Fatalf("no signatures stored, yet the record depends on %v", sigsDep(t, before))
	}
	// A pull of the same digest from another repository.
	if err := st.PutMeta(d, signaturesMeta("registry.example/mallory/app"), []byte(`{"signatures":[]}`)); err != nil {
		t.Fatal(err)
	}
	after, err := Judge(context.Background(), st, trusted)
	if err != nil {
		t.Fatal(err)
	}
	if sigsDep(t, after) != sigsDep(t, before) {
		t.Errorf("another repository's pull changed what the trusted one depends on: %v → %v", sigsDep(t, before), sigsDep(t, after))
	}
	if signaturesMeta("registry.example/team/app") == signaturesMeta("registry.example/mallory/app") {
		t.Error("two repositories share one signatures file")
	}
}

// The record fingerprints the bytes the judgement read: signatures replaced
// after the judgement leave the record depending on the old bytes, so
// berth-init finds it stale instead of vouching for what nobody judged.
func TestFingerprintsAreOfTheBytesRead(t *testing.T) {
	st := &memStore{meta: map[string][]byte{}}
	policy := writePolicy(t, `{"default":[{"type":"insecureAcceptAnything"}]}`)
	d := "sha256:" + strings.Repeat("c", 64)
	repo := "registry.example/team/app"
	read := []byte(`{"signatures":[]}`)
	if err := st.PutMeta(d, signaturesMeta(repo), read); err != nil {
		t.Fatal(err)
	}
	jd, err := Judge(context.Background(), st, bndl.Source{Repo: repo, Digest: d, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	st.meta[d+"/"+signaturesMeta(repo)] = []byte(`{"signatures":[{"x":1}]}`)
	if got := sigsDep(t, jd).SHA256; got != bndl.Sum(read) {
		t.Errorf("fingerprint %s, want that of the bytes judged %s", got, bndl.Sum(read))
	}
	polSum, _ := bndl.SumFile(policy)
	if jd.Depends[0] != (bndl.Fingerprint{Path: policy, SHA256: polSum}) {
		t.Errorf("policy fingerprint %v", jd.Depends[0])
	}
}

// verify and bundle spell "absent" alike: the policy's fingerprint of a
// missing file must compare equal to the record's.
func TestAbsentSpelledAlike(t *testing.T) {
	if verify.AbsentFile != bndl.Absent {
		t.Fatalf("verify.AbsentFile %q != bundle.Absent %q", verify.AbsentFile, bndl.Absent)
	}
}
