package image

// MetaPath is the file PutMeta writes for (digest, name), so a caller can
// fingerprint what a decision depended on (agent/trust does, for the check
// systemd runs before every container start); "" if either is invalid.
func (s *Store) MetaPath(digest, name string) string {
	p, err := metaPath(s, digest, name)
	if err != nil {
		return ""
	}
	return p
}
