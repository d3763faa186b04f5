package verify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// The policy fingerprints (Policy.Files, Policy.Digest) the bytes it read;
// these tests show those are the bytes its judgements use.

// TestLoadedPolicyKeepsItsKeyBytes: replacing a key file after Load changes
// nothing for the loaded policy: it verifies with the key it read and
// fingerprinted, and only a new Load sees the new file.
func TestLoadedPolicyKeepsItsKeyBytes(t *testing.T) {
	dir := t.TempDir()
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldPEM, newPEM := pemPublicKey(t, oldKey), pemPublicKey(t, newKey)
	keyPath := writeFile(t, filepath.Join(dir, "team.pub"), oldPEM)
	p := loadPolicy(t, dir, mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}}}))

	// Replaced the way key rotation does it: a new file renamed over the old.
	tmp := writeFile(t, filepath.Join(dir, "team.pub.new"), newPEM)
	if err := os.Rename(tmp, keyPath); err != nil {
		t.Fatal(err)
	}

	oldSum := sha256.Sum256([]byte(oldPEM))
	if got, want := p.Files(), []TrustFile{{Path: keyPath, SHA256: hex.EncodeToString(oldSum[:])}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Files() = %v, want %v (the bytes read at Load)", got, want)
	}
	repo := mustRepo(t, "registry.local:5000/apps/web")
	signedBy := func(k *ecdsa.PrivateKey) *SignatureSet {
		pl := simpleSigningPayload(t, repo, digestAB, nil)
		return &SignatureSet{Digest: digestAB.String(), Signatures: []Signature{{Payload: pl, Base64Signature: signPayload(t, k, pl)}}}
	}
	ctx := context.Background()
	wantAllowed(t, p.Evaluate(ctx, repo, digestAB, signedBy(oldKey)))
	wantRejected(t, p.Evaluate(ctx, repo, digestAB, signedBy(newKey)), "no signature verifies with key "+keyPath)

	// A new Load reads the new file, and its fingerprint says so.
	reloaded := loadPolicy(t, t.TempDir(), mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}}}))
	wantAllowed(t, reloaded.Evaluate(ctx, repo, digestAB, signedBy(newKey)))
	if reloaded.Files()[0].SHA256 == p.Files()[0].SHA256 || reloaded.Digest() == p.Digest() {
		t.Fatal("the reloaded policy has the old fingerprint")
	}
}

// TestTrustFileReadOnce: a key file named by several rules is opened once
// while the policy loads (counted with inotify), so the rules cannot see
// different contents if the file is replaced mid-load, and Files() lists it
// once with the sum of the one read.
func TestTrustFileReadOnce(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyPath := writeFile(t, filepath.Join(dir, "team.pub"), pemPublicKey(t, k))
	rule := []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}}
	doc := mustJSON(t, map[string]any{
		"default": rule,
		"transports": map[string]any{"docker": map[string]any{
			"registry.local:5000/a": rule,
			"registry.local:5000/b": []any{map[string]any{"type": "sigstoreSigned", "keyPaths": []string{keyPath, keyPath}}},
			"registry.local:5000/c": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath, "rekorPublicKeyPath": keyPath}},
		}},
	})

	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	// Closes are watched too: the kernel merges an event identical to the
	// last one queued, so open, open would count once, while open, close,
	// open, close counts twice.
	if _, err := syscall.InotifyAddWatch(fd, keyPath, syscall.IN_OPEN|syscall.IN_CLOSE); err != nil {
		t.Fatal(err)
	}
	p, err := Parse("test", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel queues IN_OPEN during open(2), so every open by Parse is
	// queued by now.
	if n := inotifyOpens(t, fd); n != 1 {
		t.Fatalf("the key file named 6 times was opened %d times while loading, want once", n)
	}
	if files := p.Files(); len(files) != 1 || files[0].Path != keyPath {
		t.Fatalf("Files() = %v, want %s once", files, keyPath)
	}
}

// inotifyOpens drains the (non-blocking) inotify descriptor and counts
// IN_OPEN events.
func inotifyOpens(t *testing.T, fd int) int {
	t.Helper()
	n := 0
	buf := make([]byte, 64*(syscall.SizeofInotifyEvent+syscall.NAME_MAX+1))
	for {
		r, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= r; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&syscall.IN_OPEN != 0 {
				n++
			}
		}
	}
}

// TestReadLimits: the policy file and the files it names are read up to a
// bound, so a policy naming a huge or endless file fails to load with a
// clear error instead of exhausting memory.
func TestReadLimits(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyPEM := pemPublicKey(t, k)
	// pad fills s with trailing newlines up to n bytes: still one valid JSON
	// value or PEM block.
	pad := func(s string, n int) string { return s + strings.Repeat("\n", n-len(s)) }

	cases := []struct {
		name       string
		policySize int // 0: just the policy
		keySize    int // 0: just the key
		want       string
	}{
		{name: "policy at the limit", policySize: maxPolicyBytes},
		{name: "policy one byte over", policySize: maxPolicyBytes + 1, want: fmt.Sprintf("is larger than %d bytes, the most berth reads from it", maxPolicyBytes)},
		{name: "key file at the limit", keySize: maxTrustFileBytes},
		{name: "key file one byte over", keySize: maxTrustFileBytes + 1, want: fmt.Sprintf("keyPath: %%s is larger than %d bytes, the most berth reads from it", maxTrustFileBytes)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := keyPEM
			if tc.keySize > 0 {
				key = pad(keyPEM, tc.keySize)
			}
			keyPath := writeFile(t, filepath.Join(dir, "k.pub"), key)
			doc := mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}}})
			if tc.policySize > 0 {
				doc = pad(doc, tc.policySize)
			}
			path := writeFile(t, filepath.Join(dir, "policy.json"), doc)
			_, err := Load(path)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := tc.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, keyPath)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to contain %q", err, want)
			}
		})
	}

	// Parse applies the same bound to bytes it is handed.
	if _, err := Parse("big", []byte(pad(`{"default":[{"type":"reject"}]}`, maxPolicyBytes+1))); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("trust policy big: %d bytes, more than the %d berth reads", maxPolicyBytes+1, maxPolicyBytes)) {
		t.Fatalf("Parse of an oversized policy: err = %v", err)
	}
}
