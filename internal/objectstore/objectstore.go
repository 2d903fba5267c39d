// Package objectstore reads and writes a folder of an S3-compatible bucket:
// the backup repository. It knows nothing of what the files hold.
package objectstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Location is a folder of a bucket. It carries no secrets, so it may
// travel in orders and statuses.
type Location struct {
	Endpoint string `json:"endpoint"` // https://host[:port]
	Bucket   string `json:"bucket"`
	Region   string `json:"region,omitempty"`
	Prefix   string `json:"prefix,omitempty"` // folder in the bucket, no leading or trailing slash
}

// Join returns the location of a subfolder.
func (l Location) Join(elem ...string) Location {
	l.Prefix = strings.Trim(path.Join(append([]string{l.Prefix}, elem...)...), "/")
	return l
}

// String is the location as s3://bucket/prefix, for messages.
func (l Location) String() string {
	return "s3://" + path.Join(l.Bucket, l.Prefix) + " at " + l.Endpoint
}

// Credentials sign requests; CA, when set, is the only authority trusted
// for the store's certificate.
type Credentials struct {
	AccessKeyID, SecretAccessKey string
	CA                           []byte
}

// Keys of the credentials Secret, which pods mount as files of these names.
const (
	KeyAccessKeyID     = "accessKeyId"
	KeySecretAccessKey = "secretAccessKey"
	KeyCA              = "ca.crt"
)

// CredentialsFromMap reads the credentials Secret's data.
func CredentialsFromMap(data map[string][]byte) (Credentials, error) {
	c := Credentials{
		AccessKeyID:     strings.TrimSpace(string(data[KeyAccessKeyID])),
		SecretAccessKey: strings.TrimSpace(string(data[KeySecretAccessKey])),
		CA:              data[KeyCA],
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, fmt.Errorf("the credentials need %s and %s", KeyAccessKeyID, KeySecretAccessKey)
	}
	return c, nil
}

// ReadCredentials reads the credentials Secret as mounted in dir.
func ReadCredentials(dir string) (Credentials, error) {
	data := map[string][]byte{}
	for _, k := range []string{KeyAccessKeyID, KeySecretAccessKey, KeyCA} {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil && !(k == KeyCA && errors.Is(err, os.ErrNotExist)) {
			return Credentials{}, fmt.Errorf("reading the repository credentials: %w", err)
		}
		data[k] = b
	}
	c, err := CredentialsFromMap(data)
	if err != nil {
		return c, fmt.Errorf("the repository credentials in %s: %w", dir, err)
	}
	return c, nil
}

// Store is an open Location.
type Store struct {
	loc    Location
	client *minio.Client
}

// partSize bounds the memory an upload of unknown length takes: minio-go
// buffers one part at a time.
const partSize = 16 << 20

// Open prepares requests to loc; it makes none.
func Open(loc Location, cred Credentials) (*Store, error) {
	client, err := NewClient(loc.Endpoint, regionOf(loc), cred, nil)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", loc, err)
	}
	return &Store{loc: loc, client: client}, nil
}

// NewClient is an S3 client of endpoint (https://host[:port]) that signs
// with cred for region, path-style, trusting only cred.CA when it is set.
// resolver, when not nil, resolves the endpoint's name.
func NewClient(endpoint, region string, cred Credentials, resolver *net.Resolver) (*minio.Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("S3 endpoint %q: want https://host[:port]", endpoint)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = time.Minute
	if len(cred.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cred.CA) {
			return nil, errors.New("the CA certificate holds no PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if resolver != nil {
		transport.DialContext = (&net.Dialer{Resolver: resolver}).DialContext
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(cred.AccessKeyID, cred.SecretAccessKey, ""),
		Secure:    true,
		Transport: transport,
		Region:    region,
		// Virtual-host style needs a DNS name per bucket, which neither
		// the sandbox's store nor many private ones have.
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("an S3 client for %s: %w", endpoint, err)
	}
	return client, nil
}

// Location is where the store reads and writes.
func (s *Store) Location() Location { return s.loc }

func (s *Store) key(name string) string {
	return strings.TrimPrefix(path.Join(s.loc.Prefix, name), "/")
}

// Put writes r to name, streaming it in parts, and returns the bytes written.
func (s *Store) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	info, err := s.client.PutObject(ctx, s.loc.Bucket, s.key(name), r, -1,
		minio.PutObjectOptions{PartSize: partSize, ContentType: "application/octet-stream"})
	if err != nil {
		return 0, fmt.Errorf("writing %s to %s: %w", name, s.loc, err)
	}
	return info.Size, nil
}

// Get opens name for reading.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(ctx, s.loc.Bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", name, s.loc, err)
	}
	// GetObject is lazy: Stat makes the request, so a missing object
	// fails here rather than at the first read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("reading %s from %s: %w", name, s.loc, err)
	}
	return obj, nil
}

// IsNotFound says whether err is the store's answer for a missing object.
func IsNotFound(err error) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && (resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound)
}

// Check proves the bucket can be reached with these credentials.
func (s *Store) Check(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.loc.Bucket)
	if err != nil {
		return fmt.Errorf("reaching %s: %w", s.loc, err)
	}
	if !ok {
		return fmt.Errorf("bucket %s does not exist at %s", s.loc.Bucket, s.loc.Endpoint)
	}
	return nil
}

// RemoveAll deletes every object in the store's folder and returns how many.
func (s *Store) RemoveAll(ctx context.Context) (int, error) {
	prefix := s.loc.Prefix
	if prefix == "" {
		return 0, errors.New("refusing to empty a whole bucket")
	}
	objects := s.client.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true})
	n := 0
	for obj := range objects {
		if obj.Err != nil {
			return n, fmt.Errorf("listing %s: %w", s.loc, obj.Err)
		}
		if err := s.client.RemoveObject(ctx, s.loc.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return n, fmt.Errorf("deleting %s from %s: %w", obj.Key, s.loc, err)
		}
		n++
	}
	return n, nil
}

// MakeBucket creates loc's bucket when it does not exist.
func MakeBucket(ctx context.Context, loc Location, cred Credentials) error {
	s, err := Open(loc, cred)
	if err != nil {
		return err
	}
	ok, err := s.client.BucketExists(ctx, loc.Bucket)
	if err != nil {
		return fmt.Errorf("reaching %s: %w", loc, err)
	}
	if ok {
		return nil
	}
	if err := s.client.MakeBucket(ctx, loc.Bucket, minio.MakeBucketOptions{Region: regionOf(loc)}); err != nil {
		return fmt.Errorf("making bucket %s at %s: %w", loc.Bucket, loc.Endpoint, err)
	}
	return nil
}

func regionOf(loc Location) string {
	if loc.Region == "" {
		return "us-east-1"
	}
	return loc.Region
}

// List names the objects under the store's folder, relative to it.
func (s *Store) List(ctx context.Context) ([]string, error) {
	prefix := strings.TrimSuffix(s.loc.Prefix, "/") + "/"
	var names []string
	for obj := range s.client.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return names, fmt.Errorf("listing %s: %w", s.loc, obj.Err)
		}
		names = append(names, strings.TrimPrefix(obj.Key, prefix))
	}
	return names, nil
}
