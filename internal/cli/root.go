// Package cli holds the holdfast command's subcommands.
package cli

import (
	"fmt"
	"strconv"

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
// manager, backup (which the BackupSchedules' CronJobs run from the image),
// and extra. The binary in the image (cmd/holdfastd) has only those; the
// user's (cmd/holdfast) adds UserCommands and the sandbox.
func NewRoot(extra ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:           "holdfast",
		Short:         "Holdfast runs PostgreSQL clusters on Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	// backup too: the CronJobs of BackupSchedules run `holdfast backup
	// create` from the image.
	root.AddCommand(newOperatorCmd(), newInstanceCmd(), newBackupCmd())
	root.AddCommand(extra...)
	return root
}

// UserCommands are the commands a user runs against a cluster from a
// terminal.
func UserCommands() []*cobra.Command {
	return []*cobra.Command{newStatusCmd(), newPromoteCmd(), newRestartCmd(),
		newHibernateCmd(), newFenceCmd(), newPsqlCmd(), newLogsCmd(), newReportCmd()}
}

// NewLogger logs JSON with millisecond timestamps: a failover is a matter
// of milliseconds, and its steps are read across several processes' logs.
func NewLogger() logr.Logger {
	return newLogger(zapcore.InfoLevel)
}

func newLogger(level zapcore.Level) logr.Logger {
	return zap.New(func(o *zap.Options) {
		o.TimeEncoder = zapcore.ISO8601TimeEncoder
		o.Level = level
	})
}

// parseLogLevel reads --log-level: debug, info or error, or a number n for
// logr's V(n) (debug is 1).
func parseLogLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug":
		return zapcore.DebugLevel, nil
	case "", "info":
		return zapcore.InfoLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 127 {
		return 0, fmt.Errorf("--log-level %q: want debug, info, error or a verbosity from 0 to 127", s)
	}
	return zapcore.Level(-n), nil
}
