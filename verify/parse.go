package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Parsing is strict, as containers-policy.json(5) asks: "unrecognized,
// duplicated or otherwise invalid fields cause the entire file … to be
// rejected". A trust policy that half-parses is worse than none, so every
// error names where it is (default[0], transports.docker["host/ns"][1]) and
// which field.

// knownTransports are containers/image's transport names (transports/alltransports).
// berth pulls from registries ("docker") and imports local OCI layouts
// ("oci", scopes are directories); the others are
// accepted and their requirements validated, so that an existing
// /etc/containers/policy.json loads unchanged.
var knownTransports = map[string]bool{
	"atomic": true, "containers-storage": true, "dir": true, "docker": true,
	"docker-archive": true, "docker-daemon": true, "oci": true, "oci-archive": true,
	"sif": true, "tarball": true,
}

type rawPolicy struct {
	Default    json.RawMessage                       `json:"default"`
	Transports map[string]map[string]json.RawMessage `json:"transports"`
}

// trustFiles collects the files a policy names, for Policy.Digest.
type trustFiles struct {
	entries []string // "path\x00sha256hex"
}

func (t *trustFiles) read(path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is not an absolute path", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	t.entries = append(t.entries, path+"\x00"+hex.EncodeToString(sum[:]))
	return b, nil
}

func parse(data []byte) (*Policy, error) {
	if err := checkDuplicateKeys(data); err != nil {
		return nil, err
	}
	var raw rawPolicy
	if err := decodeStrict(data, &raw); err != nil {
		return nil, err
	}
	files := &trustFiles{}
	p := &Policy{docker: map[string]scopeRules{}, oci: map[string]scopeRules{}, now: time.Now}

	// containers-policy makes "default" mandatory; berth's brief is that a
	// policy without one rejects what no scope matches, which is the same
	// fail-closed outcome without refusing the whole file.
	if raw.Default == nil {
		p.global = scopeRules{scope: ScopeDefault, reqs: []requirement{rejectRule{
			why: `the policy has no "default", and berth rejects images that no scope matches`,
		}}}
	} else {
		reqs, err := parseRequirements("default", raw.Default, files, true)
		if err != nil {
			return nil, err
		}
		p.global = scopeRules{scope: ScopeDefault, reqs: reqs}
	}

	for _, transport := range sortedKeys(raw.Transports) {
		if !knownTransports[transport] {
			return nil, fmt.Errorf("transports: unknown transport %q (containers-policy.json(5) transports: %s)", transport, strings.Join(sortedKeys(knownTransports), ", "))
		}
		scopes := raw.Transports[transport]
		if scopes == nil {
			return nil, fmt.Errorf("transports.%s: must be an object of scopes", transport)
		}
		used := transport == "docker" || transport == "oci"
		for _, scope := range sortedKeys(scopes) {
			loc := fmt.Sprintf("transports.%s[%q]", transport, scope)
			if transport == "docker" {
				if err := checkDockerScope(scope); err != nil {
					return nil, fmt.Errorf("%s: %w", loc, err)
				}
			}
			if transport == "oci" && scope != "" && (!filepath.IsAbs(scope) || filepath.Clean(scope) != scope) {
				return nil, fmt.Errorf("%s: an oci scope is a clean absolute directory path", loc)
			}
			reqs, err := parseRequirements(loc, scopes[scope], files, used)
			if err != nil {
				return nil, err
			}
			if !used {
				continue
			}
			switch {
			case transport == "oci" && scope == "":
				p.ociDefault = &scopeRules{scope: "oci:default", reqs: reqs}
			case transport == "oci":
				p.oci[scope] = scopeRules{scope: "oci:" + scope, reqs: reqs}
			case scope == "":
				p.dockerDefault = &scopeRules{scope: ScopeDockerDefault, reqs: reqs}
			default:
				p.docker[scope] = scopeRules{scope: scope, reqs: reqs}
			}
		}
	}

	h := sha256.New()
	h.Write(data)
	if len(files.entries) > 0 {
		for _, e := range files.entries {
			h.Write([]byte{0})
			h.Write([]byte(e))
		}
	}
	p.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	for _, e := range files.entries {
		path, sum, _ := strings.Cut(e, "\x00")
		p.files = append(p.files, TrustFile{Path: path, SHA256: sum})
	}
	return p, nil
}

// parseRequirements parses one requirement list. used is false for
// transports berth never pulls from: their requirements are validated but
// may use kinds berth cannot evaluate (signedBy).
func parseRequirements(loc string, raw json.RawMessage, files *trustFiles, used bool) ([]requirement, error) {
	var list []json.RawMessage
	if err := decodeStrict(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: must be a list of requirements: %w", loc, err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf(`%s: empty requirement list (containers-policy.json(5) forbids it; write [{"type":"insecureAcceptAnything"}] to accept anything)`, loc)
	}
	reqs := make([]requirement, 0, len(list))
	for i, item := range list {
		var head struct {
			Type *string `json:"type"`
		}
		if err := json.Unmarshal(item, &head); err != nil {
			return nil, fmt.Errorf("%s[%d]: a requirement must be an object with a \"type\": %w", loc, i, cleanJSONError(err))
		}
		if head.Type == nil {
			return nil, fmt.Errorf("%s[%d]: missing \"type\"", loc, i)
		}
		at := fmt.Sprintf("%s[%d] (%s)", loc, i, *head.Type)
		r, err := parseRequirement(*head.Type, item, files, used)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

func parseRequirement(typ string, item json.RawMessage, files *trustFiles, used bool) (requirement, error) {
	switch typ {
	case "reject":
		var v struct {
			Type string `json:"type"`
		}
		if err := decodeStrict(item, &v); err != nil {
			return nil, err
		}
		return rejectRule{why: "the policy rejects every image in this scope"}, nil
	case "insecureAcceptAnything":
		var v struct {
			Type string `json:"type"`
		}
		if err := decodeStrict(item, &v); err != nil {
			return nil, err
		}
		return acceptRule{}, nil
	case "signedBy":
		var v struct {
			Type           string          `json:"type"`
			KeyType        string          `json:"keyType"`
			KeyPath        *string         `json:"keyPath"`
			KeyPaths       []string        `json:"keyPaths"`
			KeyData        *string         `json:"keyData"`
			SignedIdentity json.RawMessage `json:"signedIdentity"`
		}
		if err := decodeStrict(item, &v); err != nil {
			return nil, err
		}
		if used {
			return nil, errors.New(`GPG "simple signing" is not supported by berth; use "sigstoreSigned" with cosign signatures`)
		}
		return rejectRule{why: "signedBy is not supported"}, nil
	case "sigstoreSigned":
		return parseSigstore(item, files)
	default:
		return nil, fmt.Errorf("unknown requirement type %q (known: reject, insecureAcceptAnything, sigstoreSigned, signedBy)", typ)
	}
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return cleanJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// cleanJSONError rewords encoding/json errors without Go type names.
func cleanJSONError(err error) error {
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("field %q: expected %s, got a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Errorf("expected %s, got a JSON %s", jsonKind(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("invalid JSON: unexpected end of input")
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "slice", "array":
		return "a list"
	case "map", "struct":
		return "an object"
	case "bool":
		return "a boolean"
	case "ptr":
		return "a value"
	}
	return "a " + goKind
}

// checkDuplicateKeys walks the document and refuses an object with the same
// key twice; encoding/json would silently keep the last one, so
// {"keyPath":"/trusted.pub","keyPath":"/attacker.pub"} would read differently
// to a human and to berth.
func checkDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return cleanJSONError(err)
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch d {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return cleanJSONError(err)
				}
				k := kt.(string)
				if seen[k] {
					return fmt.Errorf("%s: duplicate field %q", orRoot(path), k)
				}
				seen[k] = true
				if err := walk(childPath(path, k)); err != nil {
					return err
				}
			}
		case '[':
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
		_, err = dec.Token() // the closing delimiter
		return cleanJSONError(err)
	}
	if err := walk(""); err != nil {
		return err
	}
	return nil
}

// childPath spells a JSON path the way error messages name locations:
// transports.docker["registry.local:5000"][0].keyPath.
func childPath(path, key string) string {
	plain := key != ""
	for _, r := range key {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			plain = false
		}
	}
	if plain {
		return path + "." + key
	}
	return fmt.Sprintf("%s[%q]", path, key)
}

func orRoot(path string) string {
	if path == "" {
		return "top level"
	}
	return strings.TrimPrefix(path, ".")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// readKeyMaterial returns the bytes of a …Path or …Data field, and a label
// naming it for messages: Path is an absolute file name, Data is base64 of
// the file contents, exactly as containers-policy.json(5) defines keyData,
// caData and rekorPublicKeyData.
func readKeyMaterial(files *trustFiles, field string, path, data *string) ([]byte, string, error) {
	if path != nil {
		b, err := files.read(*path)
		if err != nil {
			return nil, "", fmt.Errorf("%sPath: %w", field, err)
		}
		return b, field + "Path " + *path, nil
	}
	b, err := base64.StdEncoding.DecodeString(*data)
	if err != nil {
		return nil, "", fmt.Errorf("%sData: not base64 (containers-policy.json(5) %sData is the base64 of the PEM file): %w", field, field, err)
	}
	return b, field + "Data", nil
}
