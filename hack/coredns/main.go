// Command coredns is the upstream CoreDNS server with only the plugins the
// sandbox's cluster DNS uses, built from the pinned module: the full plugin
// set pulls in every cloud provider's SDK.
package main

import (
	"github.com/coredns/coredns/coremain"

	// The plugins, in no particular order: CoreDNS orders them itself
	// (core/dnsserver/zdirectives.go).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
)

func main() {
	coremain.Run()
}
