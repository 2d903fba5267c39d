//go:build tools

// Package tools pins what hack/build-cnpg.sh builds.
package tools

import _ "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"
