package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

func newSandboxCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sandbox",
		Short: "A local control plane and process node (not built yet: see issue 4; use `make run`)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("the sandbox is not built yet (issue 4); `make run` starts a control plane and the operator without pods")
		},
	}
}
