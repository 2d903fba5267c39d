package sandbox

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestOneSandboxHoldsThePodNetwork(t *testing.T) {
	podNetworkLock = filepath.Join(t.TempDir(), "sandbox.lock")
	first := Config{Dir: "/tmp/first"}
	release, err := claimPodNetwork(first)
	if err != nil {
		t.Fatal(err)
	}
	// A lock on an open file description: a second claim, even from this
	// process, is refused while the first holds it.
	if _, err := claimPodNetwork(Config{Dir: "/tmp/second"}); err == nil || !strings.Contains(err.Error(), "folder /tmp/first") {
		t.Fatalf("a second claim while the first holds the network: %v; want a refusal naming /tmp/first", err)
	}
	release()
	again, err := claimPodNetwork(Config{Dir: "/tmp/second"})
	if err != nil {
		t.Fatalf("a claim once the first released the network: %v", err)
	}
	again()
}
