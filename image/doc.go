// Package image turns OCI images into overlayfs lower layers.
//
// Sources produce a go-containerregistry v1.Image: OpenLayout reads an OCI
// image layout on disk (and reports the directory it resolved, which the
// trust policy judges), Store.Pull fetches from a registry. Store.Import
// hands the manifest digest to ImportOptions.Verify before any layer is
// read, then verifies and unpacks it into a content-addressed store —
// manifests and configs by digest, unpacked layers by DiffID, shared
// between images — and records the image. Every manifest, index, config
// and sidecar is read with a bound. Store.LayerDirs gives the lowerdir=
// list and Store.ReadFile reads a file (say /etc/passwd) from the merged
// image.
//
// Registry pulls: ParseRef normalises a reference the Docker/Kubernetes
// way; Registries (LoadRegistries, REGISTRIES.md) says how to reach each
// registry — mirrors, plain HTTP, CAs, credentials, timeout, retries;
// Store.Pull resolves the reference on the first endpoint that answers,
// hands the resolved digest to a Verify hook before any layer is fetched,
// and imports by digest. Store.Lookup finds a pulled image by reference,
// PutMeta/GetMeta keep small sidecar files per image (signatures, trust
// judgements), and Store.GC removes unused images oldest-first when the
// disk fills (the kubelet's 85%/80% thresholds). Package registrytest runs
// real registries for tests.
//
// Unpack is the security boundary: a layer is hostile input, extracted as
// root. Every path is resolved with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) and written with *at syscalls
// relative to the resolved parent, device nodes are never created from a
// tar, hardlinks only reach earlier files of the same layer, what a layer
// writes (the holes of sparse files included) is bounded by Limits.MaxBytes,
// and every refusal names the entry and the Rule it broke.
package image
