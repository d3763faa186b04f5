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
	"reflect"
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

// Bounds on what loading a policy reads. A containers-policy file with a few
// hundred scopes is tens of KiB and a public key or a Fulcio CA bundle a few
// KiB, so these leave ample room while keeping a policy that names a device
// (/dev/zero) or a runaway file from exhausting berthd's memory at load.
const (
	maxPolicyBytes    = 4 << 20 // the policy file itself
	maxTrustFileBytes = 1 << 20 // each key, CA or Rekor/CT log key file it names
)

// readBounded reads at most limit bytes of path; a longer file is an error
// rather than a silently truncated key or policy.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes, the most berth reads from it", path, limit)
	}
	return b, nil
}

// trustFiles collects the files a policy names, for Policy.Files and
// Policy.Digest. Each path is read once and every use of it is parsed from
// those bytes: a file named by two rules (or replaced while the policy loads)
// cannot give the rules different keys, and the fingerprint is of exactly the
// bytes the judgements use.
type trustFiles struct {
	bytes map[string][]byte
	list  []TrustFile // in the order first read
}

func (t *trustFiles) read(path string) ([]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is not an absolute path", path)
	}
	if b, ok := t.bytes[path]; ok {
		return b, nil
	}
	b, err := readBounded(path, maxTrustFileBytes)
	if err != nil {
		return nil, err
	}
	if t.bytes == nil {
		t.bytes = map[string][]byte{}
	}
	t.bytes[path] = b
	sum := sha256.Sum256(b)
	t.list = append(t.list, TrustFile{Path: path, SHA256: hex.EncodeToString(sum[:])})
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

	// containers-policy makes "default" mandatory and refuses a file without
	// it. berth loads such a file and rejects whatever no scope matches: the
	// same fail-closed outcome for unlisted images, while the images a scope
	// does accept keep running instead of every start failing on a load error.
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
			for known := range knownTransports {
				if strings.EqualFold(known, transport) {
					return nil, fmt.Errorf("transports: unknown transport %q: transport names are case-sensitive; did you mean %q?", transport, known)
				}
			}
			return nil, fmt.Errorf("transports: unknown transport %q (containers-policy.json(5) transports: %s)", transport, strings.Join(sortedKeys(knownTransports), ", "))
		}
		scopes := raw.Transports[transport]
		if scopes == nil {
			return nil, fmt.Errorf("transports.%s: must be an object of scopes", transport)
		}
		used := transport == "docker" || transport == "oci"
		written := map[string]string{} // docker scope as matched → as written
		for _, scope := range sortedKeys(scopes) {
			loc := fmt.Sprintf("transports.%s[%q]", transport, scope)
			key := scope
			if transport == "docker" {
				if err := checkDockerScope(scope); err != nil {
					return nil, fmt.Errorf("%s: %w", loc, err)
				}
				// Host names are case-insensitive (RFC 4343) and images are
				// matched with lower-cased hosts, so the scope is too; two
				// scopes that differ only in the host's case would be one
				// scope with two rule lists, which is refused like any other
				// duplicate.
				key = lowerScopeHost(scope)
				if other, dup := written[key]; dup {
					return nil, fmt.Errorf("%s: the same scope as %q (registry host names are case-insensitive)", loc, other)
				}
				written[key] = scope
			}
			if transport == "oci" && scope != "" && (!filepath.IsAbs(scope) || filepath.Clean(scope) != scope) {
				return nil, fmt.Errorf("%s: an oci scope is a clean absolute directory path", loc)
			}
			// Of oci-archive, only the transport's default judges
			// (archives loaded over the API, Policy.EvaluateArchive);
			// its path scopes are validated only.
			archive := transport == "oci-archive" && scope == ""
			reqs, err := parseRequirements(loc, scopes[scope], files, used || archive)
			if err != nil {
				return nil, err
			}
			if !used && !archive {
				continue
			}
			switch {
			case transport == "oci-archive":
				p.archiveDefault = &scopeRules{scope: ScopeArchiveDefault, reqs: reqs}
			case transport == "oci" && scope == "":
				p.ociDefault = &scopeRules{scope: "oci:default", reqs: reqs}
			case transport == "oci":
				p.oci[scope] = scopeRules{scope: "oci:" + scope, reqs: reqs}
			case scope == "":
				p.dockerDefault = &scopeRules{scope: ScopeDockerDefault, reqs: reqs}
			default:
				// Judgement.Scope keeps the scope as written, so the operator
				// finds it in the file.
				p.docker[key] = scopeRules{scope: scope, reqs: reqs}
			}
		}
	}

	h := sha256.New()
	h.Write(data)
	for _, f := range files.list {
		h.Write([]byte{0})
		h.Write([]byte(f.Path + "\x00" + f.SHA256))
	}
	p.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	p.files = files.list
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
		// encoding/json would take "Type" (or "TYPE") for "type", and the
		// last of them wins: {"type":"reject","Type":"insecureAcceptAnything"}
		// would read as accept. The type decides everything else, so its key
		// is checked before it is believed.
		if err := checkKeyCase(item, reflect.TypeOf(&head)); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", loc, i, err)
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

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and keys that match a field only when case is ignored (checkKeyCase).
// Duplicate keys were refused for the whole document before (checkDuplicateKeys).
func decodeStrict(data []byte, v any) error {
	if err := checkKeyCase(data, reflect.TypeOf(v)); err != nil {
		return err
	}
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

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// checkKeyCase refuses object keys that name a field of the Go type t only
// when letter case is ignored. encoding/json matches keys to struct fields
// case-insensitively (with Unicode folding: the Kelvin sign K folds to k),
// and DisallowUnknownFields does not object, so without this
// {"KeyPath":"/attacker.pub"} would be read as keyPath, while containers/image
// (whose ParanoidUnmarshalJSONObject resolves each key by its exact name)
// refuses it and the operator reading the file sees an unknown field. It walks the JSON alongside t: struct fields by their
// json tags, map values, list elements; json.RawMessage values are skipped
// because they are decoded (and checked) by their own decodeStrict later.
// Unknown keys and type mismatches are left for encoding/json to report.
func checkKeyCase(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walkKeyCase(dec, t, ""); err != nil {
		return err
	}
	return nil
}

func walkKeyCase(dec *json.Decoder, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType || t.Kind() == reflect.Interface {
		return skipJSONValue(dec)
	}
	tok, err := dec.Token()
	if err != nil {
		return cleanJSONError(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch {
	case d == '{' && t.Kind() == reflect.Struct:
		fields := jsonFields(t)
		for dec.More() {
			k, err := objectKey(dec)
			if err != nil {
				return err
			}
			ft, ok := fields[k]
			if !ok {
				for _, name := range sortedKeys(fields) {
					if strings.EqualFold(name, k) {
						return fmt.Errorf("%skey %q: keys are case-sensitive; did you mean %q?", pathPrefix(path), k, name)
					}
				}
				if err := skipJSONValue(dec); err != nil {
					return err
				}
				continue
			}
			if err := walkKeyCase(dec, ft, childPath(path, k)); err != nil {
				return err
			}
		}
	case d == '{' && t.Kind() == reflect.Map:
		for dec.More() {
			k, err := objectKey(dec)
			if err != nil {
				return err
			}
			if err := walkKeyCase(dec, t.Elem(), childPath(path, k)); err != nil {
				return err
			}
		}
	case d == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i := 0; dec.More(); i++ {
			if err := walkKeyCase(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		// The JSON does not have the shape of t; encoding/json says so.
		for dec.More() {
			if err := skipJSONValue(dec); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return cleanJSONError(err)
}

// jsonFields maps the JSON key of each field of struct type t, as
// encoding/json names it (the json tag's name, else the field name), to the
// field's type.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// objectKey reads the next key of an object (the decoder is inside it and
// dec.More() was true).
func objectKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", cleanJSONError(err)
	}
	k, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("invalid JSON: object key %v is not a string", tok)
	}
	return k, nil
}

// skipJSONValue consumes one value, however deeply nested.
func skipJSONValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return cleanJSONError(err)
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// pathPrefix is "path: " for a nested location, "" at the value itself.
func pathPrefix(path string) string {
	if path == "" {
		return ""
	}
	return strings.TrimPrefix(path, ".") + ": "
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
