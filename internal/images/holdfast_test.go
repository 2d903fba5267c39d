package images

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

var commitTime = time.Unix(1764000000, 0).UTC()

// holdfastInput builds the real binary when asked and the tests may take the
// time (go build of the operator, some seconds to link), else a stand-in.
func holdfastInput(t *testing.T, dir string, build bool) HoldfastInput {
	t.Helper()
	bin := []byte("#!/bin/false\n")
	if build && !testing.Short() {
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
	a, err := HoldfastImage(holdfastInput(t, t.TempDir(), true))
	if err != nil {
		t.Fatal(err)
	}
	b, err := HoldfastImage(holdfastInput(t, t.TempDir(), true))
	if err != nil {
		t.Fatal(err)
	}
	da := sameDigest(t, a, b)
	t.Logf("holdfast image %s", da)
}

func TestHoldfastImageConfig(t *testing.T) {
	// What the image holds and says does not depend on the binary's bytes.
	in := holdfastInput(t, t.TempDir(), false)
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
	// What a runtime unpacks (mutate.Extract cleans the names: no trailing slash).
	rc := mutate.Extract(img)
	defer rc.Close()
	got := map[string]entry{}
	for _, e := range readTar(t, rc) {
		got[e.Name] = e
		if !e.ModTime.Equal(commitTime) {
			t.Errorf("%s: mtime %v, want %v", e.Name, e.ModTime, commitTime)
		}
	}
	if e := got["holdfast"]; e.Header == nil || e.Mode != 0o755 || e.Uid != 0 || e.data != string(in.Binary) {
		t.Errorf("/holdfast: mode %o owner %d, want 755 root and the binary", e.Mode, e.Uid)
	}
	if e := got["tmp"]; e.Header == nil || e.Mode != 0o1777 {
		t.Errorf("/tmp: %+v, want a directory of mode 1777", e.Header)
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
	if e := got["home/nonroot"]; e.Header == nil || e.Uid != 65532 || e.Gid != 65532 {
		t.Errorf("/home/nonroot: %+v, want it owned by 65532", e.Header)
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
