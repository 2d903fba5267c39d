// Package images builds Holdfast's OCI images without a container engine:
// the operator image (the static holdfast binary on a minimal base assembled
// here) and the postgres image (a Debian rootfs made by mmdebstrap). Every
// timestamp is pinned to a SOURCE_DATE_EPOCH and every layer is written in a
// fixed order, so the same inputs give the same digests. Layers, configs,
// manifests and the OCI image layout come from go-containerregistry; this
// package only decides what goes into them.
package images
