package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// volumeRefreshInterval is how often a running pod's Secret and ConfigMap
// volumes are compared with their sources. A kubelet takes up to about a
// minute; the sandbox is where people and tests wait for a rotated
// certificate or a new setting, and a pass costs only reads of the node's
// informer caches and of the volumes' few small files, so it can be short.
const volumeRefreshInterval = 2 * time.Second

// refreshVolumes starts rewriting the pod's Secret and ConfigMap volumes
// whenever their sources change, as the kubelet does. The returned func
// stops it and waits until no write is under way; it may be called more
// than once.
func (r *podRuntime) refreshVolumes(every time.Duration) func() {
	ctx, cancel := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var lastErr string
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// The last content stays, as with a kubelet, until the source
			// is back; saying so once per new reason is enough.
			var msg string
			if err := r.refreshVolumesOnce(ctx); err != nil {
				msg = err.Error()
			}
			if msg != "" && msg != lastErr {
				r.log.Info("volumes not refreshed", "error", msg)
			}
			lastErr = msg
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// refreshVolumesOnce rewrites the volumes whose sources changed since they
// were written.
func (r *podRuntime) refreshVolumesOnce(ctx context.Context) error {
	w := r.volumeWriter()
	// The caches, not the API server: this runs every few seconds per pod.
	w.secrets, w.configMaps = r.p.secrets, r.p.configMaps
	w.keepTokens = true
	var errs []error
	for _, v := range w.pod.Spec.Volumes {
		if !refreshable(v) {
			continue
		}
		changed, err := w.writeSources(ctx, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
		} else if changed {
			r.log.Info("volume refreshed", "volume", v.Name)
		}
	}
	return errors.Join(errs...)
}

// refreshable tells whether a volume has Secrets or ConfigMaps to follow.
// Mounts of it with a subPath keep what they got at the start, as with a
// kubelet: they bind the file, not the link that moves.
func refreshable(v corev1.Volume) bool {
	for _, s := range sources(v) {
		if s.Secret != nil || s.ConfigMap != nil {
			return true
		}
	}
	return false
}
