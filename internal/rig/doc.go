// Package rig holds, in its subfolders, the test rig: the sandbox, the
// benchmarks, the load checker and the test control plane. None of it is
// product: nothing under cmd/holdfastd (the image's binary), internal/operator
// or internal/instance may import it (cmd/holdfastd's deps test checks).
package rig
