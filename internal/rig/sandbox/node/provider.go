package node

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
)

// Provider runs the pods virtual-kubelet hands it as local processes.
type Provider struct {
	opts     Options
	log      logr.Logger
	ipam     *ipam
	recorder record.EventRecorder
	// secrets and configMaps are the node's caches, which volume refreshes read.
	secrets    corelisters.SecretLister
	configMaps corelisters.ConfigMapLister

	mu       sync.Mutex
	pods     map[string]*podRuntime // by namespace/name
	notifyCb func(*corev1.Pod)
}

func newProvider(o Options, recorder record.EventRecorder, secrets corelisters.SecretLister, configMaps corelisters.ConfigMapLister) *Provider {
	network := o.Bridge.Gateway.IP.Mask(o.Bridge.Gateway.Mask)
	return &Provider{
		opts:       o,
		log:        o.Log,
		ipam:       newIPAM(&net.IPNet{IP: network, Mask: o.Bridge.Gateway.Mask}, o.Bridge.Gateway.IP),
		recorder:   recorder,
		secrets:    secrets,
		configMaps: configMaps,
		pods:       map[string]*podRuntime{},
	}
}

func key(namespace, name string) string { return namespace + "/" + name }

// CreatePod starts a pod bound to this node.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	if pod.DeletionTimestamp != nil {
		return nil // on its way out: nothing to start
	}
	p.mu.Lock()
	if r, ok := p.pods[key(pod.Namespace, pod.Name)]; ok {
		p.mu.Unlock()
		if r.pod.UID == pod.UID {
			r.update(pod)
			return nil
		}
		// The predecessor of the same name left the API a moment ago and is
		// finishing its teardown.
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return fmt.Errorf("pod %s/%s: the previous pod of that name is still stopping", pod.Namespace, pod.Name)
		}
		p.mu.Lock()
		if p.pods[key(pod.Namespace, pod.Name)] == r {
			delete(p.pods, key(pod.Namespace, pod.Name))
		}
	}
	r := newPodRuntime(p, pod)
	p.pods[key(pod.Namespace, pod.Name)] = r
	p.mu.Unlock()
	r.log.Info("starting pod")
	r.changed()
	go func() {
		r.run()
		p.mu.Lock()
		if p.pods[key(pod.Namespace, pod.Name)] == r {
			delete(p.pods, key(pod.Namespace, pod.Name))
		}
		p.mu.Unlock()
	}()
	return nil
}

// UpdatePod takes new labels and annotations. virtual-kubelet also calls
// it for a new pod whose predecessor of the same name is still being torn
// down here (it finds that one by name): that is a creation.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	if r := p.runtime(pod); r != nil {
		r.update(pod)
		return nil
	}
	return p.CreatePod(ctx, pod)
}

// DeletePod stops a pod: its containers get the deletion's grace period;
// the pod leaves the API once they are gone.
func (p *Provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	r := p.runtime(pod)
	if r == nil {
		return errdefs.NotFoundf("pod %s/%s is not running here", pod.Namespace, pod.Name)
	}
	grace := r.terminationGrace()
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	r.log.Info("stopping pod", "grace", grace)
	r.stop(grace, true)
	return nil
}

// runtime finds the runtime of this very pod (same UID).
func (p *Provider) runtime(pod *corev1.Pod) *podRuntime {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.pods[key(pod.Namespace, pod.Name)]
	if !ok || r.pod.UID != pod.UID {
		return nil
	}
	return r
}

// GetPod returns a pod with its current status.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	r, ok := p.pods[key(namespace, name)]
	p.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not running here", namespace, name)
	}
	return r.snapshot(), nil
}

// GetPodStatus returns a pod's current status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods lists the pods this node runs.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	rs := p.runtimes()
	out := make([]*corev1.Pod, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].Namespace, out[i].Name) < key(out[j].Namespace, out[j].Name) })
	return out, nil
}

// NotifyPods registers virtual-kubelet's callback for status changes.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notifyCb = cb
	p.mu.Unlock()
}

// runtimes are the node's pods, copied out of the lock.
func (p *Provider) runtimes() []*podRuntime {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.pods))
}

func (p *Provider) notify(pod *corev1.Pod) {
	p.mu.Lock()
	cb := p.notifyCb
	p.mu.Unlock()
	if cb != nil {
		cb(pod)
	}
}

func (p *Provider) event(pod *corev1.Pod, kind, reason, msg string) {
	if p.recorder != nil {
		p.recorder.Event(pod, kind, reason, msg)
	}
}

// shutdown stops every pod, giving each container at most grace, and
// waits for them.
func (p *Provider) shutdown(grace time.Duration) {
	rs := p.runtimes()
	for _, r := range rs {
		r.stop(grace, false)
	}
	for _, r := range rs {
		<-r.done
	}
}
