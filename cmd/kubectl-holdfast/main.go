// Command kubectl-holdfast is Holdfast as a kubectl plugin: with it on
// PATH, `kubectl holdfast status CLUSTER` (and promote, restart, backup)
// works as `holdfast status CLUSTER` does. It links no sandbox.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"holdfast.dev/holdfast/internal/cli"
)

func main() {
	root := cli.NewRoot(cli.UserCommands()...)
	// Help and usage say `kubectl holdfast`, as the user types it.
	root.Use = "kubectl-holdfast"
	root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl holdfast"}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kubectl holdfast:", err)
		os.Exit(1)
	}
}
