// Package versitygw says how to run versitygw, the S3 server of the sandbox
// and of the tests: its flags, its folders and how it takes its keys.
package versitygw

import (
	"fmt"
	"os"
	"path/filepath"
)

// Server is one versitygw serving the buckets under a folder over TLS.
type Server struct {
	Listen            string // host:port
	CertFile, KeyFile string
	Region            string // requests are signed for it
	// Dir holds iam/, the account store, and data/, the buckets.
	Dir string
}

// Prepare makes the server's folders.
func (s Server) Prepare() error {
	for _, d := range []string{"iam", "data"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			return fmt.Errorf("making versitygw's %s folder: %w", d, err)
		}
	}
	return nil
}

// Args are versitygw's arguments, without the keys: Env passes those.
func (s Server) Args() []string {
	return []string{
		"--port", s.Listen,
		"--cert", s.CertFile, "--key", s.KeyFile,
		"--region", s.Region,
		// An account store that holds only root. Without one (single-user
		// IAM), an unknown access key gets 404 XAdminUserNotFound, not
		// AWS's 403 InvalidAccessKeyId (auth/iam_single.go).
		"--iam-dir", filepath.Join(s.Dir, "iam"),
		"posix", filepath.Join(s.Dir, "data"),
	}
}

// Env is the root keys as versitygw reads them from its environment
// (cmd/versitygw/main.go): never on its command line, which every user
// of the machine may read.
func Env(accessKeyID, secretAccessKey string) []string {
	return []string{"ROOT_ACCESS_KEY_ID=" + accessKeyID, "ROOT_SECRET_ACCESS_KEY=" + secretAccessKey}
}
