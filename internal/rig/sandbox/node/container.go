package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"holdfast.dev/holdfast/internal/rig/sandbox/launch"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// defaultPath is the PATH a container gets unless it sets its own, as
// container images commonly do.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The kubelet's restart back-off: 10 s doubling to 5 minutes, forgotten
// after 10 minutes of running.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// container is one container of a pod and its current process, if any.
// Its fields are guarded by the pod's mutex.
type container struct {
	r       *podRuntime
	spec    corev1.Container
	init    bool
	volumes map[string]string
	// image is what the current process runs from; exec and probes run
	// inside it too.
	image image
	// uid and gid are the current process's.
	uid, gid uint32

	state, last corev1.ContainerState
	restarts    int32
	ready       bool
	started     bool
	attempt     int
	proc        *os.Process
	exited      chan struct{} // closed when proc exits
	killReason  string
}

func newContainer(r *podRuntime, spec corev1.Container, init bool) *container {
	return &container{r: r, spec: spec, init: init,
		state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}
}

// runToCompletion runs an init container until it exits 0, retrying per
// the pod's restartPolicy. It returns false when the pod stops or fails.
func (c *container) runToCompletion() bool {
	backoff := backoffInitial
	for {
		if c.r.ctx.Err() != nil {
			return false
		}
		if err := c.start(); err == nil {
			code := c.wait()
			if c.r.ctx.Err() != nil {
				return false
			}
			if code == 0 {
				return true
			}
		}
		if c.r.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			c.r.fail(fmt.Sprintf("init container %s did not complete", c.spec.Name))
			return false
		}
		if !c.backOff(&backoff) {
			return false
		}
	}
}

// supervise runs a container and restarts it per the pod's restartPolicy
// until the pod stops.
func (c *container) supervise() {
	backoff := backoffInitial
	for {
		if c.r.ctx.Err() != nil {
			return
		}
		began := time.Now()
		if err := c.start(); err != nil {
			if !c.backOff(&backoff) {
				return
			}
			continue
		}
		probes, stopProbes := context.WithCancel(c.r.ctx)
		go c.probe(probes)
		code := c.wait()
		stopProbes()
		if c.r.ctx.Err() != nil || !willRestart(c.r.pod.Spec.RestartPolicy, code) {
			return
		}
		if time.Since(began) > backoffReset {
			backoff = backoffInitial
		}
		if !c.backOff(&backoff) {
			return
		}
	}
}

func willRestart(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

// backOff waits before the next attempt, saying so in the container's
// state, and doubles the wait. It returns false when the pod stops.
func (c *container) backOff(d *time.Duration) bool {
	c.r.mu.Lock()
	if w := c.state.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
		c.state.Waiting = &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: w.Message}
	} else {
		if c.state.Terminated != nil {
			c.last = c.state
		}
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container %s in pod %s", *d, c.spec.Name, c.r.pod.Name)}}
	}
	c.r.mu.Unlock()
	c.r.changed()
	c.r.p.event(c.r.pod, corev1.EventTypeWarning, "BackOff", fmt.Sprintf("Back-off restarting container %s", c.spec.Name))
	select {
	case <-c.r.ctx.Done():
		return false
	case <-time.After(*d):
	}
	*d = min(2**d, backoffMax)
	c.r.mu.Lock()
	c.restarts++
	c.r.mu.Unlock()
	return true
}

func (c *container) setWaiting(reason, msg string) {
	c.r.mu.Lock()
	if c.state.Terminated != nil {
		c.last = c.state
	}
	c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	c.r.mu.Unlock()
	c.r.changed()
}

// start launches the container's process, or says in its state why it cannot.
func (c *container) start() error {
	r := c.r
	o := r.p.opts
	img, err := c.pullImage()
	if err != nil {
		c.setWaiting("ErrImagePull", err.Error())
		r.p.event(r.pod, corev1.EventTypeWarning, "Failed", fmt.Sprintf("Failed to pull image %q: %v", c.spec.Image, err))
		return err
	}
	env := containerEnv(r.pod, c.spec, img.env)
	argv := expandAll(img.argv(c.spec), env)
	uid, gid, groups, err := identity(r.pod, c.spec, img)
	if err == nil && len(argv) == 0 {
		err = fmt.Errorf("no command, and image %s has no entrypoint", c.spec.Image)
	}
	var mounts []launch.Mount
	if err == nil {
		mounts, err = c.mounts()
	}
	if err != nil {
		c.setWaiting("CreateContainerConfigError", err.Error())
		r.p.event(r.pod, corev1.EventTypeWarning, "Failed", err.Error())
		return err
	}
	dir := c.spec.WorkingDir
	if dir == "" {
		dir = img.dir
	}
	r.mu.Lock()
	c.image, c.uid, c.gid = img, uid, gid
	r.mu.Unlock()

	r.mu.Lock()
	c.attempt++
	attempt := c.attempt
	r.mu.Unlock()
	scratch := filepath.Join(r.dir, "scratch")
	logs := filepath.Join(r.dir, "logs")
	for _, d := range []string{scratch, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	name := fmt.Sprintf("%s-%d", c.spec.Name, attempt)
	spec := launch.Spec{
		NetNS:        network.NamespacePath(network.Namespace(string(r.pod.UID))),
		Scratch:      filepath.Join(scratch, name),
		Lower:        img.root,
		Mounts:       mounts,
		UID:          uid,
		GID:          gid,
		Groups:       groups,
		Dir:          dir,
		Hostname:     podHostname(r.pod),
		ReadOnlyRoot: c.spec.SecurityContext != nil && c.spec.SecurityContext.ReadOnlyRootFilesystem != nil && *c.spec.SecurityContext.ReadOnlyRootFilesystem,
		Argv:         argv,
		Env:          env,
	}
	cmd, err := launch.Command(o.Launcher[0], o.Launcher[1:], spec, filepath.Join(scratch, name+".json"))
	if err != nil {
		c.setWaiting("RunContainerError", err.Error())
		return err
	}
	logPath := c.logPath()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	// Its own PID namespace: when the container's first process ends, the
	// kernel ends every process it left behind, as with a container runtime.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	logStart, _ := log.Seek(0, 2)
	if err := cmd.Start(); err != nil {
		log.Close()
		c.setWaiting("RunContainerError", err.Error())
		return err
	}
	log.Close()
	exited := make(chan struct{})
	began := metav1.Now()
	r.mu.Lock()
	if c.state.Terminated != nil {
		c.last = c.state
	}
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: began}}
	c.proc, c.exited, c.ready, c.started, c.killReason = cmd.Process, exited, false, false, ""
	r.mu.Unlock()
	r.p.event(r.pod, corev1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s", c.spec.Name))
	r.changed()

	go func() {
		err := cmd.Wait()
		code := exitCode(cmd.ProcessState, err)
		term := &corev1.ContainerStateTerminated{ExitCode: code, StartedAt: began, FinishedAt: metav1.Now(),
			ContainerID: c.containerID(attempt)}
		r.mu.Lock()
		switch {
		case code == launch.StartFailedCode:
			term.Reason, term.Message = "StartError", lastLine(logPath, logStart)
		case c.killReason != "":
			term.Reason, term.Message = "Error", c.killReason
		case code == 0:
			term.Reason = "Completed"
		default:
			term.Reason = "Error"
		}
		c.state = corev1.ContainerState{Terminated: term}
		c.proc, c.ready = nil, false
		r.mu.Unlock()
		_ = os.Remove(filepath.Join(scratch, name+".json"))
		_ = os.Remove(filepath.Join(scratch, name))
		close(exited)
		r.changed()
	}()
	return nil
}

// wait returns the exit code of the current process; when the pod stops
// first, it stops the process.
func (c *container) wait() int32 {
	c.r.mu.Lock()
	exited := c.exited
	c.r.mu.Unlock()
	select {
	case <-exited:
	case <-c.r.ctx.Done():
		c.kill(c.r.terminationGrace(), "")
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if t := c.state.Terminated; t != nil {
		return t.ExitCode
	}
	return -1
}

// kill stops the current process: SIGTERM, then SIGKILL after grace. It
// returns once the process is gone.
func (c *container) kill(grace time.Duration, reason string) {
	c.r.mu.Lock()
	proc, exited := c.proc, c.exited
	if reason != "" {
		c.killReason = reason
	}
	c.r.mu.Unlock()
	if proc == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	c.r.p.event(c.r.pod, corev1.EventTypeNormal, "Killing", fmt.Sprintf("Stopping container %s", c.spec.Name))
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = proc.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (c *container) logPath() string {
	return filepath.Join(c.r.dir, "logs", c.spec.Name+".log")
}

func (c *container) containerID(attempt int) string {
	return fmt.Sprintf("sandbox://%s/%s/%d", c.r.pod.UID, c.spec.Name, attempt)
}

// mounts lists what the launcher binds into the container's root.
func (c *container) mounts() ([]launch.Mount, error) {
	var out []launch.Mount
	covered := map[string]bool{}
	for _, vm := range c.spec.VolumeMounts {
		covered[vm.MountPath] = true
	}
	etc := filepath.Join(c.r.dir, "etc")
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		if !covered["/etc/"+f] {
			out = append(out, launch.Mount{Source: filepath.Join(etc, f), Target: "/etc/" + f, ReadOnly: true})
		}
	}
	for _, vm := range c.spec.VolumeMounts {
		src, ok := c.volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %s: the pod has no volume %q", vm.MountPath, vm.Name)
		}
		if vm.SubPath != "" {
			if strings.Contains(vm.SubPath, "..") || filepath.IsAbs(vm.SubPath) {
				return nil, fmt.Errorf("volume mount %s: subPath %q escapes its volume", vm.MountPath, vm.SubPath)
			}
			src = filepath.Join(src, vm.SubPath)
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, launch.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	return out, nil
}

// identity is the user, group and supplementary groups a container runs
// as: the pod's security context, else the image's user.
func identity(pod *corev1.Pod, c corev1.Container, img image) (uid, gid uint32, groups []uint32, err error) {
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	pick := func(a, b *int64) *int64 {
		if a != nil {
			return a
		}
		return b
	}
	imgUID, imgGID, err := imageUser(img.root, img.user)
	if err != nil {
		return 0, 0, nil, err
	}
	u, g := pick(csc.RunAsUser, psc.RunAsUser), pick(csc.RunAsGroup, psc.RunAsGroup)
	if u == nil {
		u = imgUID
		if g == nil {
			g = imgGID
		}
	}
	nonRoot := csc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if u == nil || *u == 0 {
		if nonRoot != nil && *nonRoot {
			return 0, 0, nil, fmt.Errorf("container %s has runAsNonRoot and would run as root: set runAsUser, or use an image whose USER is not root", c.Name)
		}
	}
	if u != nil {
		uid = uint32(*u)
	}
	if g != nil {
		gid = uint32(*g)
	}
	groups = append(groups, gid)
	if psc.FSGroup != nil {
		groups = append(groups, uint32(*psc.FSGroup))
	}
	for _, s := range psc.SupplementalGroups {
		groups = append(groups, uint32(s))
	}
	return uid, gid, groups, nil
}

// containerEnv is the container's environment: what a runtime sets, then
// the image's, then the container's own variables (virtual-kubelet has
// resolved their references already), later ones winning.
func containerEnv(pod *corev1.Pod, c corev1.Container, imageEnv []string) []string {
	vars := [][2]string{{"PATH", defaultPath}, {"HOSTNAME", podHostname(pod)}, {"HOME", "/"}}
	for _, kv := range imageEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars = append(vars, [2]string{k, v})
		}
	}
	for _, e := range c.Env {
		vars = append(vars, [2]string{e.Name, expand(e.Value, vars)})
	}
	index := map[string]int{}
	var out []string
	for _, v := range vars {
		kv := v[0] + "=" + v[1]
		if i, ok := index[v[0]]; ok {
			out[i] = kv
			continue
		}
		index[v[0]] = len(out)
		out = append(out, kv)
	}
	return out
}

func podHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}

// expand replaces $(NAME) with the value of NAME, as Kubernetes does in
// commands, arguments and env values; $$ escapes a $, unknown names stay.
func expand(s string, vars [][2]string) string {
	lookup := func(name string) (string, bool) {
		for i := len(vars) - 1; i >= 0; i-- {
			if vars[i][0] == name {
				return vars[i][1], true
			}
		}
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(args []string, env []string) []string {
	vars := make([][2]string, 0, len(env))
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars = append(vars, [2]string{k, v})
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(a, vars)
	}
	return out
}

// exitCode is the process's exit code, or 128 plus the signal that ended it.
func exitCode(ps *os.ProcessState, err error) int32 {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1
	}
	return int32(ps.ExitCode())
}

// lastLine is the last line written to a log after offset.
func lastLine(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	lines := bytes.Split(bytes.TrimSpace(b[offset:]), []byte("\n"))
	return string(lines[len(lines)-1])
}
