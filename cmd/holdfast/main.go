// Command holdfast is the operator, the in-pod instance manager and the CLI in one binary.
package main

import (
	"fmt"
	"os"

	"holdfast.dev/holdfast/internal/cli"
)

func main() {
	if err := cli.NewRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast:", err)
		os.Exit(1)
	}
}
