package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// podNetworkLock is held by the one sandbox that owns this machine's pod
// network. The bridge, the pod range and the gateway's ports are the
// machine's, not a sandbox folder's: two sandboxes would hand out the same
// pod addresses on one bridge, and each pod would answer for the other's
// at random (the probes see "connection refused", the pods lose the API
// server). A var so that a test can point it elsewhere.
var podNetworkLock = "/run/holdfast/sandbox.lock"

// claimPodNetwork takes the machine's pod network for the sandbox in c.Dir
// until release, or says which sandbox has it. A lock on an open file,
// not a file's existence: it dies with its process, so a killed sandbox
// never keeps the next one out.
func claimPodNetwork(c Config) (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(podNetworkLock), 0o755); err != nil {
		return nil, fmt.Errorf("the pod network's lock: %w", err)
	}
	f, err := os.OpenFile(podNetworkLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("the pod network's lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(podNetworkLock)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another sandbox (%s) has this machine's pod network (bridge %s, %s): stop it first",
				strings.TrimSpace(string(owner)), PodBridge.Name, podCIDR())
		}
		return nil, fmt.Errorf("locking %s: %w", podNetworkLock, err)
	}
	dir, _ := filepath.Abs(c.Dir)
	if err := f.Truncate(0); err == nil {
		_, _ = fmt.Fprintf(f, "pid %d, folder %s\n", os.Getpid(), dir)
	}
	return func() { f.Close() }, nil
}

// takePodNetwork claims the pod network (claimPodNetwork) for a sandbox
// about to start, and clears what a killed one left of it.
func takePodNetwork(c Config, say func(string)) (release func(), err error) {
	release, err = claimPodNetwork(c)
	if err != nil {
		return nil, err
	}
	if err := clearPodNetwork(say); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// clearPodNetwork removes what a killed sandbox left of the pod network:
// its pods' namespaces still sit on the bridge with the addresses the next
// sandbox hands out. Only the holder of podNetworkLock may. It says what
// it removed through say.
func clearPodNetwork(say func(string)) error {
	n, err := network.RemoveAll(PodBridge)
	if err != nil {
		return fmt.Errorf("removing what a killed sandbox left of the pod network: %w", err)
	}
	if n > 0 {
		say(fmt.Sprintf("removed %d pod network namespaces a killed sandbox left", n))
	}
	return nil
}
