// Command etcd is the upstream etcd server, built from the pinned module
// because the server module ships its entry point as a library.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
