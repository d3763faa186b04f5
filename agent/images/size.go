package images

// ImageSize is the size of a stored image, by manifest digest, as the
// kubelet's Pulled event and the node's status.images report it
// (image.Store.Size: manifest, config and compressed layers).
func (m *Images) ImageSize(digest string) (int64, error) {
	return m.cfg.Store.Size(digest)
}

// Hold keeps a stored image from removal until release is called
// (image.Store.Hold).
func (m *Images) Hold(digest string) (release func(), err error) {
	return m.cfg.Store.Hold(digest)
}
