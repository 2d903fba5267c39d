package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/rig/sandbox/versitygw"
)

// S3Server starts a real S3 server, versitygw, on loopback with TLS and an
// empty bucket, and returns where the bucket is and the keys that open it.
// hack/build-k8s.sh builds versitygw beside the control-plane binaries,
// which `make test` names in $KUBEBUILDER_ASSETS.
func S3Server(t testing.TB) (objectstore.Location, objectstore.Credentials) {
	t.Helper()
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "versitygw")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw is not built (%v): run `make test`, which builds it with hack/build-k8s.sh", err)
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("holdfast-test-s3-ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Serving("s3", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, "s3", leaf); err != nil {
		t.Fatal(err)
	}
	cred := objectstore.Credentials{AccessKeyID: randomHex(t, 10), SecretAccessKey: randomHex(t, 20), CA: pki.CertPEM(ca.Cert)}
	port := FreePort(t)
	srv := versitygw.Server{Listen: "127.0.0.1:" + strconv.Itoa(port), CertFile: filepath.Join(dir, "s3.crt"), KeyFile: filepath.Join(dir, "s3.key"),
		Region: "us-east-1", Dir: dir}
	if err := srv.Prepare(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, srv.Args()...)
	cmd.Env = append(os.Environ(), versitygw.Env(cred.AccessKeyID, cred.SecretAccessKey)...)
	log, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting versitygw: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
	})
	// A name, not an address: pgBackRest 2.45 matches only DNS names in certificates.
	loc := objectstore.Location{Endpoint: "https://localhost:" + strconv.Itoa(port), Bucket: "test-backups", Region: "us-east-1"}
	Eventually(t, 100*time.Millisecond, 30*time.Second, "versitygw makes the bucket", func(ctx context.Context) error {
		return objectstore.MakeBucket(ctx, loc, cred)
	})
	return loc, cred
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
