// Package rig holds, in its subfolders, the test rig: the sandbox (with its
// image registry and image store), the benchmarks, the load checker, the
// test control plane and the image build the rig's sandboxes run. None of it is
// product: nothing under cmd/holdfastd (the image's binary), internal/operator
// or internal/instance may import it (cmd/holdfastd's deps test checks).
package rig
