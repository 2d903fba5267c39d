package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs the container's startup, readiness and liveness probes on
// their schedules until ctx ends, as the kubelet's prober does.
func (c *container) probe(ctx context.Context) {
	if p := c.spec.StartupProbe; p != nil && !c.untilStarted(ctx, p) {
		return
	}
	c.r.mu.Lock()
	c.started = true
	if c.spec.ReadinessProbe == nil {
		c.ready = true
	}
	c.r.mu.Unlock()
	c.r.changed()
	if p := c.spec.ReadinessProbe; p != nil {
		go c.readiness(ctx, p)
	}
	if p := c.spec.LivenessProbe; p != nil {
		c.liveness(ctx, p)
	}
}

func (c *container) untilStarted(ctx context.Context, p *corev1.Probe) bool {
	failures := int32(0)
	started := false
	every(ctx, p, func() bool {
		ok, msg := c.check(ctx, p)
		if ok {
			started = true
			return false
		}
		if failures++; failures >= threshold(p.FailureThreshold, 3) {
			c.r.p.event(c.r.pod, corev1.EventTypeWarning, "Unhealthy", "Startup probe failed: "+msg)
			go c.kill(c.r.terminationGrace(), "startup probe failed: "+msg)
			return false
		}
		return true
	})
	return started
}

func (c *container) readiness(ctx context.Context, p *corev1.Probe) {
	successes, failures := int32(0), int32(0)
	every(ctx, p, func() bool {
		ok, msg := c.check(ctx, p)
		if ctx.Err() != nil {
			return false
		}
		c.r.mu.Lock()
		was := c.ready
		if ok {
			successes, failures = successes+1, 0
			if successes >= threshold(p.SuccessThreshold, 1) {
				c.ready = true
			}
		} else {
			successes, failures = 0, failures+1
			if failures >= threshold(p.FailureThreshold, 3) {
				c.ready = false
			}
		}
		now := c.ready
		c.r.mu.Unlock()
		if was != now {
			if !now {
				c.r.p.event(c.r.pod, corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: "+msg)
			}
			c.r.changed()
		}
		return true
	})
}

func (c *container) liveness(ctx context.Context, p *corev1.Probe) {
	failures := int32(0)
	every(ctx, p, func() bool {
		ok, msg := c.check(ctx, p)
		if ctx.Err() != nil {
			return false
		}
		if ok {
			failures = 0
			return true
		}
		if failures++; failures >= threshold(p.FailureThreshold, 3) {
			c.r.p.event(c.r.pod, corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: "+msg)
			c.kill(c.r.terminationGrace(), "liveness probe failed: "+msg)
			return false
		}
		return true
	})
}

// every runs f after the probe's initial delay and then every period,
// while f returns true and ctx lasts.
func every(ctx context.Context, p *corev1.Probe, f func() bool) {
	wait := time.Duration(p.InitialDelaySeconds) * time.Second
	period := time.Duration(threshold(p.PeriodSeconds, 10)) * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !f() {
			return
		}
		wait = period
	}
}

func threshold(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// check runs a probe once.
func (c *container) check(ctx context.Context, p *corev1.Probe) (bool, string) {
	timeout := time.Duration(threshold(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.r.mu.Lock()
	ip := c.r.ip
	proc := c.proc
	c.r.mu.Unlock()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := c.port(g.Port)
		if err != nil {
			return false, err.Error()
		}
		host := g.Host
		if host == "" {
			host = ip.String()
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/holdfast-sandbox")
		// The kubelet does not verify a probe's certificate either.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return true, ""
	case p.TCPSocket != nil:
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return false, err.Error()
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = ip.String()
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	case p.Exec != nil:
		if proc == nil {
			return false, "the container is not running"
		}
		cmd, err := c.enter(ctx, proc.Pid, p.Exec.Command)
		if err != nil {
			return false, err.Error()
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return false, strings.TrimSpace(fmt.Sprintf("%v: %s", err, out))
		}
		return true, ""
	}
	return false, "the sandbox runs exec, HTTP and TCP probes only"
}

// port resolves a probe's port, by number or by the container port's name.
func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.spec.Name, p.StrVal)
}
