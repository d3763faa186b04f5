// Package image turns OCI images into overlayfs lower layers.
//
// Sources produce a go-containerregistry v1.Image: OpenLayout reads an OCI
// image layout on disk (a registry pull plugs in the same way). Store.Import
// verifies and unpacks it into a content-addressed store — manifests and
// configs by digest, unpacked layers by DiffID, shared between images — and
// records the image; Store.LayerDirs gives the lowerdir= list and
// Store.ReadFile reads a file (say /etc/passwd) from the merged image.
//
// Unpack is the security boundary: a layer is hostile input, extracted as
// root. Every path is resolved with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) and written with *at syscalls
// relative to the resolved parent, device nodes are never created from a
// tar, hardlinks only reach earlier files of the same layer, and every
// refusal names the entry and the Rule it broke.
package image
