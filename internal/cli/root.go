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

// NewRoot builds the holdfast command: the operator and the instance
// manager, and extra. The binary in the image (cmd/holdfastd) has only
// those two; the user's (cmd/holdfast) adds UserCommands and the sandbox.
func NewRoot(extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:           "holdfast",
		Short:         "Holdfast runs PostgreSQL clusters on Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.AddCommand(newOperatorCmd(), newInstanceCmd())
	root.AddCommand(extra...)
	return root
}

// UserCommands are the commands a user runs against a cluster from a
// terminal.
func UserCommands() []*cobra.Command {
	return []*cobra.Command{newPromoteCmd(), newRestartCmd(), newBackupCmd()}
}

// NewLogger logs JSON with millisecond timestamps: a failover is a matter
// of milliseconds, and its steps are read across several processes' logs.
func NewLogger() logr.Logger {
	return zap.New(func(o *zap.Options) { o.TimeEncoder = zapcore.ISO8601TimeEncoder })
}
