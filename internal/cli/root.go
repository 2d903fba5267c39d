// Package cli holds the holdfast command's subcommands.
package cli

import (
	"github.com/spf13/cobra"
)

// Version is set at build time.
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
	root.AddCommand(newOperatorCmd(), newInstanceCmd(), newSandboxCmd(), newPromoteCmd())
	return root
}
