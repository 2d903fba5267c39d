// Command holdfastd is the binary in Holdfast's image, /holdfast there: the
// operator (holdfast operator) and the instance manager every database
// pod runs (holdfast instance run), and nothing else. It links neither the
// sandbox nor the benchmarks (deps_test.go).
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
