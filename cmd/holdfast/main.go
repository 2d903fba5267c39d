// Command holdfast is the user's command: the operator and the instance
// manager (as in the image), the commands that operate clusters, and the
// sandbox.
package main

import (
	"fmt"
	"os"

	"holdfast.dev/holdfast/internal/cli"
	"holdfast.dev/holdfast/internal/cli/sandboxcmd"
)

func main() {
	if err := cli.NewRoot(append(cli.UserCommands(), sandboxcmd.New())...).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast:", err)
		os.Exit(1)
	}
}
