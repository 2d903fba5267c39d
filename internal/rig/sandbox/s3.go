package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"holdfast.dev/holdfast/internal/credentials"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/rig/controlplane"
	"holdfast.dev/holdfast/internal/rig/sandbox/versitygw"
)

// The sandbox's S3 object store, for backups: versitygw (hack/versitygw)
// on the pod bridge's gateway, behind Service holdfast-system/s3.
const (
	// S3Host is the store's name for pods. pgBackRest 2.45 verifies only
	// DNS names in certificates, so pods must use a name, not an address.
	S3Host = s3Service + "." + s3Namespace + ".svc." + ClusterDomain
	// S3Bucket is the one bucket, created empty on every `up`.
	S3Bucket = "holdfast"
	// S3Region is the region requests are signed for (versitygw's --region).
	S3Region = "us-east-1"
	// S3SecretName is the Secret in namespace default that tells pods how
	// to reach the store: keys accessKeyId, secretAccessKey, ca.crt,
	// endpoint, bucket and region.
	S3SecretName = "sandbox-s3"

	s3Namespace = "holdfast-system"
	s3Service   = "s3"
	// s3Port is versitygw's port on the gateway; the Service serves 443,
	// the port an https URL without one means.
	s3Port = 9000
)

// S3Info is how programs on the host reach the sandbox's object store.
// `up` writes it as JSON to <dir>/s3/endpoint.json (mode 0600: it holds the
// keys) once the bucket exists; ReadS3 reads it. Secret default/sandbox-s3
// (S3SecretName) holds the same for pods, without HostEndpoint.
type S3Info struct {
	// Endpoint is https://s3.holdfast-system.svc.cluster.local, for pods;
	// the host reaches it too when it resolves the name through the
	// cluster DNS (ClusterDNS).
	Endpoint string `json:"endpoint"`
	// HostEndpoint is https://<pod bridge gateway>:9000, versitygw itself,
	// which the host reaches with its own resolver.
	HostEndpoint string `json:"hostEndpoint"`
	Bucket       string `json:"bucket"`
	Region       string `json:"region"`
	// AccessKeyID and SecretAccessKey are the root keys, new on every `up`.
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	// CACert is the sandbox CA (PEM), which signed the store's certificate.
	CACert string `json:"caCert"`
}

func s3InfoFile(dir string) string { return filepath.Join(dir, "s3", "endpoint.json") }

// ReadS3 reads the object store's S3Info from the sandbox folder dir.
func ReadS3(dir string) (S3Info, error) {
	var info S3Info
	err := readJSON(s3InfoFile(dir), "S3 endpoint", &info)
	return info, err
}

// Client signs requests to endpoint (Endpoint or HostEndpoint) with i's
// keys and trusts only the sandbox CA. resolver, when not nil, resolves the
// endpoint's name (the cluster DNS's, for Endpoint from the host).
func (i S3Info) Client(endpoint string, resolver *net.Resolver) (*minio.Client, error) {
	return objectstore.NewClient(endpoint, i.Region,
		objectstore.Credentials{AccessKeyID: i.AccessKeyID, SecretAccessKey: i.SecretAccessKey, CA: []byte(i.CACert)}, resolver)
}

// startS3 runs versitygw on the pod bridge's gateway with a posix backend
// under <dir>/s3/data, publishes it as Service holdfast-system/s3, makes
// the bucket and Secret default/sandbox-s3, and writes <dir>/s3/endpoint.json.
// It returns once the bucket exists.
func startS3(ctx context.Context, c Config, cs kubernetes.Interface, progress func(string)) (*controlplane.Process, error) {
	gateway := PodBridge.Gateway.IP
	listen := net.JoinHostPort(gateway.String(), strconv.Itoa(s3Port))
	progress("starting the S3 object store (versitygw) on " + listen + ", Service " + s3Namespace + "/" + s3Service + " at https://" + S3Host)
	if err := os.MkdirAll(c.path("s3", "data"), 0o700); err != nil {
		return nil, fmt.Errorf("making the object store's folder: %w", err)
	}
	// Before the certificate: it names the ClusterIP too, for clients that
	// reach the Service by address from the host.
	clusterIP, err := ensureS3Service(ctx, cs, gateway)
	if err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(c.path("pki"))
	if err != nil {
		return nil, err
	}
	ips := []net.IP{gateway, net.ParseIP("127.0.0.1")}
	if ip := net.ParseIP(clusterIP); ip != nil {
		ips = append(ips, ip)
	}
	serving, err := ca.Serving("s3", []string{S3Host, s3Service + "." + s3Namespace + ".svc", s3Service + "." + s3Namespace}, ips)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteLeaf(c.path("pki"), "s3", serving); err != nil {
		return nil, fmt.Errorf("writing the object store's certificate: %w", err)
	}

	info := S3Info{
		Endpoint:     "https://" + S3Host,
		HostEndpoint: "https://" + listen,
		Bucket:       S3Bucket,
		Region:       S3Region,
		CACert:       string(pki.CertPEM(ca.Cert)),
	}
	if info.AccessKeyID, err = credentials.Password(); err != nil {
		return nil, err
	}
	if info.SecretAccessKey, err = credentials.Password(); err != nil {
		return nil, err
	}
	proc, err := runVersitygw(c, listen, info)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*controlplane.Process, error) {
		proc.Stop()
		return nil, err
	}
	if err := makeBucket(ctx, c, proc, info); err != nil {
		return fail(err)
	}
	if err := ensureS3Secret(ctx, cs, info); err != nil {
		return fail(err)
	}
	if err := writeS3Info(c.Dir, info); err != nil {
		return fail(err)
	}
	return proc, nil
}

// runVersitygw starts versitygw on listen with info's root keys and region,
// the certificate pki/s3.crt and the posix backend s3/data, all under c.Dir;
// its output goes to logs/versitygw.log.
func runVersitygw(c Config, listen string, info S3Info) (*controlplane.Process, error) {
	srv := versitygw.Server{Listen: listen, CertFile: c.path("pki", "s3.crt"), KeyFile: c.path("pki", "s3.key"),
		Region: info.Region, Dir: c.path("s3")}
	if err := srv.Prepare(); err != nil {
		return nil, err
	}
	// StartProcess gives versitygw this process's environment as it is: a
	// shell exports the keys from a private file and becomes versitygw.
	keys := c.path("s3", "root.env")
	if err := os.WriteFile(keys, []byte(strings.Join(versitygw.Env(info.AccessKeyID, info.SecretAccessKey), "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the object store's keys: %w", err)
	}
	log, err := os.OpenFile(c.path("logs", "versitygw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := append([]string{"-c", `set -a && . "$0" && exec "$@"`, keys, filepath.Join(c.BinDir, "versitygw")}, srv.Args()...)
	proc, err := controlplane.StartProcess("versitygw", "/bin/sh", args, log)
	if err != nil {
		log.Close()
		return nil, err
	}
	go func() { <-proc.Exited(); log.Close() }()
	return proc, nil
}

// makeBucket waits until versitygw answers at info.HostEndpoint and makes
// info.Bucket.
func makeBucket(ctx context.Context, c Config, proc *controlplane.Process, info S3Info) error {
	client, err := info.Client(info.HostEndpoint, nil)
	if err != nil {
		return err
	}
	// A signed request: an answer proves the keys took, not only the port.
	if err := waitAnswers(ctx, c, proc, "versitygw does not answer at "+info.HostEndpoint, func(ctx context.Context) error {
		_, err := client.ListBuckets(ctx)
		return err
	}); err != nil {
		return err
	}
	// Through the API, which records the bucket's owner and ACL in xattrs;
	// a folder made by hand would be a bucket without them.
	if err := client.MakeBucket(ctx, info.Bucket, minio.MakeBucketOptions{Region: info.Region}); err != nil {
		return fmt.Errorf("creating bucket %s: %w", info.Bucket, err)
	}
	return nil
}

// writeS3Info writes info to <dir>/s3/endpoint.json, private: it holds the keys.
func writeS3Info(dir string, info S3Info) error { return writeJSON(s3InfoFile(dir), info) }

// ensureS3Service makes namespace holdfast-system (the operator's, which
// config/default then applies over) and Service s3 in it, port 443 to
// versitygw on server, and returns the Service's ClusterIP.
func ensureS3Service(ctx context.Context, cs kubernetes.Interface, server net.IP) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s3Namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating namespace %s: %w", s3Namespace, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s3Service, Namespace: s3Namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(s3Port)},
		}},
	}
	return ensureHostService(ctx, cs, svc, "versitygw", server)
}

// ensureS3Secret writes Secret default/sandbox-s3 from info. A Secret left
// from an earlier store would hold its keys, so an existing one is replaced.
func ensureS3Secret(ctx context.Context, cs kubernetes.Interface, info S3Info) error {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: S3SecretName, Namespace: metav1.NamespaceDefault},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"accessKeyId":     []byte(info.AccessKeyID),
			"secretAccessKey": []byte(info.SecretAccessKey),
			"ca.crt":          []byte(info.CACert),
			"endpoint":        []byte(info.Endpoint),
			"bucket":          []byte(info.Bucket),
			"region":          []byte(info.Region),
		},
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceDefault)
	_, err := secrets.Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", metav1.NamespaceDefault, S3SecretName, err)
	}
	return nil
}
