// Package cli holds the holdfast command's subcommands.
package cli

import (
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Version is set at build time from the VERSION file (-ldflags -X, by make
// build and make images, which tags the operator image with it); a plain go
// build says "dev".
var Version = "dev"

// NewRoot builds the holdfast command.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "holdfast",
		Short:         "Holdfast runs PostgreSQL clusters on Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.AddCommand(newOperatorCmd(), newInstanceCmd(), newSandboxCmd(), newPromoteCmd(), newRestartCmd(), newBackupCmd())
	return root
}

// newLogger logs JSON with millisecond timestamps: a failover is a matter
// of milliseconds, and its steps are read across several processes' logs.
func newLogger() logr.Logger {
	return zap.New(func(o *zap.Options) { o.TimeEncoder = zapcore.ISO8601TimeEncoder })
}
