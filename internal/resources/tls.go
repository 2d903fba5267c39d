package resources

import (
	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// ServerCertificateNames are the DNS names a cluster's server certificate
// must hold, so that a client verifies the server by whichever it dials:
// each Service's in its short, namespaced, .svc and .svc.cluster.local
// forms, and each instance pod's through the headless Service.
func ServerCertificateNames(c *holdfastv1.PostgresCluster) []string {
	var names []string
	forms := func(host string) {
		names = append(names, host, host+"."+c.Namespace, host+"."+c.Namespace+".svc", host+"."+c.Namespace+".svc.cluster.local")
	}
	for _, svc := range []string{ServiceRWName(c), ServiceROName(c), ServiceHeadlessName(c)} {
		forms(svc)
	}
	for i := range int(c.Spec.Instances) {
		forms(InstanceName(c, i) + "." + ServiceHeadlessName(c))
	}
	return names
}

// SecretCAName holds the cluster's certificate authority, ca.crt and
// ca.key: a Secret of its own, which no pod mounts, so that the key that
// signs the cluster's certificates never leaves the operator.
func SecretCAName(c *holdfastv1.PostgresCluster) string { return c.Name + "-ca" }

// SecretServerTLSName holds the postgres server certificate (tls.crt,
// tls.key, ca.crt, as cert-manager writes them).
func SecretServerTLSName(c *holdfastv1.PostgresCluster) string { return c.Name + "-server-tls" }

// SecretReplicationTLSName holds the client certificate replication
// authenticates with (tls.crt, tls.key, ca.crt).
func SecretReplicationTLSName(c *holdfastv1.PostgresCluster) string {
	return c.Name + "-replication-tls"
}

// ConfigMapCAName publishes the cluster's CA certificate (ca.crt) for
// clients to verify the server with.
func ConfigMapCAName(c *holdfastv1.PostgresCluster) string { return c.Name + "-ca" }

// Keys of the CA Secret and of the CA in certificate Secrets, as
// cert-manager names them (the certificate and key are corev1.TLSCertKey
// and corev1.TLSPrivateKeyKey).
const (
	SecretKeyCACert = "ca.crt"
	SecretKeyCAKey  = "ca.key"
)
