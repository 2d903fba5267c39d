//go:build tools

// Package tools pins the versitygw command that hack/build-k8s.sh builds.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
