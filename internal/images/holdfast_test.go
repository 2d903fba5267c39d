package images

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

var commitTime = time.Unix(1764000000, 0).UTC()

// holdfastInput builds the real binary when the tests may take the time
// (go build of the operator), a stand-in with -short.
func holdfastInput(t *testing.T, dir string) HoldfastInput {
	t.Helper()
	bin := []byte("#!/bin/false\n")
	if !testing.Short() {
		out := filepath.Join(dir, "holdfast")
		if err := BuildBinary(context.Background(), "../..", out, "1.2.3-test"); err != nil {
			t.Fatal(err)
		}
		var err error
		if bin, err = os.ReadFile(out); err != nil {
			t.Fatal(err)
		}
	}
	return HoldfastInput{
		Binary:   bin,
		CACerts:  []byte("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"),
		Version:  "1.2.3-test",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Time:     commitTime,
	}
}

func TestHoldfastImageIsReproducible(t *testing.T) {
	// Two builds of the binary, in two folders, then two images.
	a, err := HoldfastImage(holdfastInput(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := HoldfastImage(holdfastInput(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
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
	t.Logf("holdfast image %s", da)
}

func TestHoldfastImageConfig(t *testing.T) {
	in := holdfastInput(t, t.TempDir())
	img, err := HoldfastImage(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types %s, %s: want OCI", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want 2 (base, binary)", len(m.Layers))
	}
	for _, l := range m.Layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
			t.Errorf("layer media type %s", l.MediaType)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/holdfast"}) {
		t.Errorf("entrypoint %q, want [/holdfast]", c.Entrypoint)
	}
	for k, v := range map[string]string{LabelVersion: in.Version, LabelRevision: in.Revision, LabelSource: Source} {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if !cf.Created.Time.Equal(commitTime) {
		t.Errorf("created %v, want the epoch %v", cf.Created.Time, commitTime)
	}

	// What a runtime unpacks (mutate.Extract cleans the names: no trailing slash).
	type entry struct {
		mode     int64
		uid, gid int
		data     string
	}
	got := map[string]entry{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name] = entry{h.Mode, h.Uid, h.Gid, string(b)}
		if !h.ModTime.Equal(commitTime) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, commitTime)
		}
	}
	if e := got["holdfast"]; e.mode != 0o755 || e.uid != 0 || e.data != string(in.Binary) {
		t.Errorf("/holdfast: mode %o owner %d, want 755 root and the binary", e.mode, e.uid)
	}
	if e := got["tmp"]; e.mode != 0o1777 {
		t.Errorf("/tmp: mode %o, want 1777", e.mode)
	}
	if e := got["etc/ssl/certs/ca-certificates.crt"]; e.data != string(in.CACerts) {
		t.Errorf("CA bundle %q, want the input's", e.data)
	}
	if e := got["etc/passwd"]; !containsLine(e.data, "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", e.data)
	}
	if e := got["etc/group"]; !containsLine(e.data, "nonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot 65532:\n%s", e.data)
	}
	if e := got["home/nonroot"]; e.uid != 65532 || e.gid != 65532 {
		t.Errorf("/home/nonroot owned by %d:%d, want 65532", e.uid, e.gid)
	}
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			return true
		}
	}
	return false
}
