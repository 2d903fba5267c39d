package sandbox

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"holdfast.dev/holdfast/internal/credentials"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// TestVersitygw runs versitygw as the sandbox does, on loopback: it must
// take the keys and certificate it is given, refuse other keys, and keep
// the keys off its command line.
func TestVersitygw(t *testing.T) {
	if testing.Short() {
		t.Skip("runs versitygw")
	}
	bins := os.Getenv("KUBEBUILDER_ASSETS")
	if bins == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`, which builds versitygw and sets it")
	}
	c := Config{Dir: t.TempDir(), BinDir: bins}
	for _, d := range []string{"logs", "pki", "s3/data"} {
		if err := os.MkdirAll(c.path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.Serving("s3", nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(c.path("pki"), "s3", serving); err != nil {
		t.Fatal(err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
	info := S3Info{HostEndpoint: "https://" + listen, Bucket: S3Bucket, Region: S3Region, CACert: string(pki.CertPEM(ca.Cert))}
	for _, k := range []*string{&info.AccessKeyID, &info.SecretAccessKey} {
		if *k, err = credentials.Password(); err != nil {
			t.Fatal(err)
		}
	}
	proc, err := runVersitygw(c, listen, info)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Stop)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := makeBucket(ctx, c, proc, info); err != nil {
		log, _ := os.ReadFile(c.path("logs", "versitygw.log"))
		t.Fatalf("%v\nversitygw's log:\n%s", err, log)
	}

	t.Run("the right keys write, read and list", func(t *testing.T) {
		client, err := info.Client(info.HostEndpoint, nil)
		if err != nil {
			t.Fatal(err)
		}
		const body = "a WAL segment, say"
		if _, err := client.PutObject(ctx, S3Bucket, "test/object", strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put: %v", err)
		}
		obj, err := client.GetObject(ctx, S3Bucket, "test/object", minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || string(got) != body {
			t.Errorf("get: %q, %v; want %q", got, err, body)
		}
		var keys []string
		for o := range client.ListObjects(ctx, S3Bucket, minio.ListObjectsOptions{Prefix: "test/", Recursive: true}) {
			if o.Err != nil {
				t.Fatalf("list: %v", o.Err)
			}
			keys = append(keys, o.Key)
		}
		if len(keys) != 1 || keys[0] != "test/object" {
			t.Errorf("list: %v, want [test/object]", keys)
		}
	})

	t.Run("other keys are refused", func(t *testing.T) {
		wrongSecret, unknownKey := info, info
		wrongSecret.SecretAccessKey += "x"
		unknownKey.AccessKeyID = "nobody"
		for want, bad := range map[string]S3Info{"SignatureDoesNotMatch": wrongSecret, "InvalidAccessKeyId": unknownKey} {
			client, err := bad.Client(bad.HostEndpoint, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.ListBuckets(ctx)
			if got := minio.ToErrorResponse(err).Code; got != want {
				t.Errorf("%s: error %v (code %q), want %s", want, err, got, want)
			}
		}
	})

	t.Run("the keys are on no command line", func(t *testing.T) {
		found := 0
		paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range paths {
			cmdline, err := os.ReadFile(p)
			if err != nil || !strings.Contains(string(cmdline), c.Dir) {
				continue
			}
			found++
			if strings.Contains(string(cmdline), info.SecretAccessKey) || strings.Contains(string(cmdline), info.AccessKeyID) {
				t.Errorf("the command line of %s holds a key", p)
			}
		}
		if found == 0 {
			t.Error("found no process using the test folder: is versitygw running?")
		}
	})
}

func TestReadS3ReadsWhatUpWrote(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadS3(dir); err == nil || !strings.Contains(err.Error(), "is the sandbox up") {
		t.Errorf("ReadS3 without a sandbox: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "s3"), 0o700); err != nil {
		t.Fatal(err)
	}
	want := S3Info{Endpoint: "https://" + S3Host, HostEndpoint: "https://10.244.0.1:9000", Bucket: S3Bucket, Region: S3Region,
		AccessKeyID: "id", SecretAccessKey: "secret", CACert: "-----BEGIN CERTIFICATE-----\n"}
	if err := writeS3Info(dir, want); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(s3InfoFile(dir)); err != nil {
		t.Fatal(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds the keys", s3InfoFile(dir), st.Mode().Perm())
	}
	got, err := ReadS3(dir)
	if err != nil || got != want {
		t.Errorf("ReadS3: %+v, %v; want %+v", got, err, want)
	}
}
