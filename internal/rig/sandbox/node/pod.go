package node

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// podRuntime runs one pod: its network namespace, its volumes, its init
// containers in order and then its containers, until the pod is deleted.
type podRuntime struct {
	p   *Provider
	log logr.Logger
	dir string // the pod's folder: volumes, etc, logs, scratch

	// ctx ends when the pod is to stop (deleted, or the node shuts down).
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once every process is gone and the network released

	mu         sync.Mutex
	pod        *corev1.Pod // the pod as last seen, spec and metadata
	ip         net.IP
	netReady   bool
	initDone   bool
	failed     string // why the pod failed for good, if it did
	startTime  metav1.Time
	inits      []*container
	containers []*container
	conditions map[corev1.PodConditionType]corev1.PodCondition
	// grace is how long a container has between SIGTERM and SIGKILL when the pod stops.
	grace time.Duration
	// deleted is set when the API asked for the pod to go, rather than the node stopping.
	deleted bool
}

func newPodRuntime(p *Provider, pod *corev1.Pod) *podRuntime {
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRuntime{
		p:          p,
		log:        p.log.WithValues("pod", pod.Namespace+"/"+pod.Name),
		dir:        filepath.Join(p.opts.Dir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		pod:        pod.DeepCopy(),
		startTime:  metav1.Now(),
		conditions: map[corev1.PodConditionType]corev1.PodCondition{},
		grace:      time.Duration(ptr.Deref(pod.Spec.TerminationGracePeriodSeconds, 30)) * time.Second,
	}
	for _, c := range pod.Spec.InitContainers {
		r.inits = append(r.inits, newContainer(r, c, true))
	}
	for _, c := range pod.Spec.Containers {
		r.containers = append(r.containers, newContainer(r, c, false))
	}
	return r
}

// stop asks the pod to stop, giving its containers grace to exit.
func (r *podRuntime) stop(grace time.Duration, deleted bool) {
	r.mu.Lock()
	if grace < r.grace {
		r.grace = grace
	}
	r.deleted = r.deleted || deleted
	r.mu.Unlock()
	r.cancel()
}

func (r *podRuntime) terminationGrace() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grace
}

// run is the pod's life, from setup to teardown.
func (r *podRuntime) run() {
	defer close(r.done)
	defer r.teardown()
	if !r.setUp() {
		return
	}
	stopRefresh := r.refreshVolumes(volumeRefreshInterval)
	// Before teardown, which removes the volumes.
	defer stopRefresh()
	for _, c := range r.inits {
		if !c.runToCompletion() {
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	r.changed()

	var wg sync.WaitGroup
	for _, c := range r.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.supervise()
		}()
	}
	wg.Wait()
	// No container will read the volumes again.
	stopRefresh()
	r.changed()
	// Containers that will not restart leave the pod Succeeded or Failed,
	// kept until it is deleted.
	<-r.ctx.Done()
}

// setUp makes the network namespace and the volumes, retrying what may
// come right later (a claim not yet bound, a Secret not yet made).
func (r *podRuntime) setUp() bool {
	o := r.p.opts
	ip, err := r.p.ipam.allocate()
	if err != nil {
		r.fail("no pod address: " + err.Error())
		return false
	}
	ns := network.Namespace(string(r.pod.UID))
	if err := o.Bridge.AddPod(ns, ip); err != nil {
		r.p.ipam.release(ip)
		r.fail("pod network: " + err.Error())
		return false
	}
	r.mu.Lock()
	r.ip, r.netReady = ip, true
	r.mu.Unlock()
	r.changed()

	if err := r.writeEtc(); err != nil {
		r.fail(err.Error())
		return false
	}
	for attempt := 0; ; attempt++ {
		vols, err := r.volumeWriter().write(r.ctx)
		if err == nil {
			r.mu.Lock()
			for _, c := range append(append([]*container(nil), r.inits...), r.containers...) {
				c.volumes = vols
			}
			r.mu.Unlock()
			return true
		}
		if r.ctx.Err() != nil {
			return false
		}
		r.log.Info("volumes not ready", "error", err.Error())
		if attempt%10 == 0 {
			r.p.event(r.pod, corev1.EventTypeWarning, "FailedMount", err.Error())
		}
		r.setAllWaiting("ContainerCreating", err.Error())
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(2 * time.Second):
		}
	}
}

// volumeWriter writes the pod's volumes as its spec and its labels and
// annotations of the moment say.
func (r *podRuntime) volumeWriter() volumeWriter {
	r.mu.Lock()
	pod := r.pod.DeepCopy() // labels may change meanwhile
	r.mu.Unlock()
	return volumeWriter{client: r.p.opts.Client, pod: pod, dir: filepath.Join(r.dir, "volumes"), fsGroup: fsGroup(pod)}
}

// writeEtc writes the files every container gets at /etc: hosts, hostname
// and resolv.conf pointing at the cluster DNS, as the kubelet does.
func (r *podRuntime) writeEtc() error {
	o := r.p.opts
	dir := filepath.Join(r.dir, "etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hostname := r.pod.Name
	if r.pod.Spec.Hostname != "" {
		hostname = r.pod.Spec.Hostname
	}
	fqdn := hostname
	if r.pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", hostname, r.pod.Spec.Subdomain, r.pod.Namespace, o.ClusterDomain)
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s %s\n", r.ip, fqdn, hostname)
	search := []string{r.pod.Namespace + ".svc." + o.ClusterDomain, "svc." + o.ClusterDomain, o.ClusterDomain}
	resolv := fmt.Sprintf("search %s\nnameserver %s\noptions ndots:5\n", strings.Join(search, " "), o.ClusterDNS)
	for name, data := range map[string]string{"hosts": hosts, "hostname": hostname + "\n", "resolv.conf": resolv} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// teardown stops every container, releases the network and, when the pod
// was deleted, removes it from the API at once, as the kubelet does once
// its containers are gone.
func (r *podRuntime) teardown() {
	var wg sync.WaitGroup
	for _, c := range append(append([]*container(nil), r.inits...), r.containers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.kill(r.terminationGrace(), "")
		}()
	}
	wg.Wait()
	r.mu.Lock()
	ip, deleted := r.ip, r.deleted
	pod := r.pod.DeepCopy()
	r.mu.Unlock()
	if ip != nil {
		if err := r.p.opts.Bridge.RemovePod(network.Namespace(string(pod.UID))); err != nil {
			r.log.Error(err, "releasing the pod network")
		}
		r.p.ipam.release(ip)
	}
	// Secrets and tokens do not outlive the pod; logs stay for whoever
	// debugs it, under the node's folder.
	_ = os.RemoveAll(filepath.Join(r.dir, "volumes"))
	_ = os.RemoveAll(filepath.Join(r.dir, "scratch"))
	if !deleted {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.p.opts.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		r.log.Error(err, "removing the stopped pod from the API")
	}
}

// fail marks the pod Failed for good.
func (r *podRuntime) fail(msg string) {
	r.log.Info("pod failed", "reason", msg)
	r.mu.Lock()
	r.failed = msg
	r.mu.Unlock()
	r.p.event(r.pod, corev1.EventTypeWarning, "Failed", msg)
	r.changed()
}

func (r *podRuntime) setAllWaiting(reason, msg string) {
	r.mu.Lock()
	for _, c := range append(append([]*container(nil), r.inits...), r.containers...) {
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	}
	r.mu.Unlock()
	r.changed()
}

// changed sends the pod's current status to virtual-kubelet.
func (r *podRuntime) changed() {
	r.p.notify(r.snapshot())
}

// update takes the pod's new labels and annotations (the operator moves
// role labels); the spec of a running pod is the one it started with, and
// its name and UID never change, so readers of those need no lock.
func (r *podRuntime) update(pod *corev1.Pod) {
	r.mu.Lock()
	r.pod.Labels = maps.Clone(pod.Labels)
	r.pod.Annotations = maps.Clone(pod.Annotations)
	r.mu.Unlock()
}

func fsGroup(pod *corev1.Pod) *int64 {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroup
}
