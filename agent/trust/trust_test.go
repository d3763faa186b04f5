package trust

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-dev/berth/verify"
	"github.com/containerd/errdefs"
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
