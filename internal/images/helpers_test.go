package images

import (
	"archive/tar"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// entry is a tar entry read whole.
type entry struct {
	*tar.Header
	data string
}

// readTar reads every entry of a tar stream, in order.
func readTar(t *testing.T, r io.Reader) []entry {
	t.Helper()
	var es []entry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{h, string(b)})
	}
}

// sameDigest fails unless a and b have one digest, and returns it.
func sameDigest(t *testing.T, a, b v1.Image) v1.Hash {
	t.Helper()
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("two builds of the same input: %s and %s", da, db)
	}
	return da
}
