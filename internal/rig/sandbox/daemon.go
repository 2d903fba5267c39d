package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"holdfast.dev/holdfast/internal/proc"
	"holdfast.dev/holdfast/internal/rig/controlplane"
	"holdfast.dev/holdfast/internal/rig/sandbox/snapshot"
	"holdfast.dev/holdfast/internal/rig/sandbox/storage"
)

// NodeName is the sandbox's one node, where its volumes live.
const NodeName = "holdfast-sandbox"

// progressPrefix marks the lines of the sandbox log that `up` echoes.
const progressPrefix = "==> "

func (c Config) pidFile() string   { return c.path("sandbox.pid") }
func (c Config) readyFile() string { return c.path("ready") }
func (c Config) logFile() string   { return c.path("sandbox.log") }

// DefaultAdvertiseIP is the first non-loopback IPv4 address of this machine.
func DefaultAdvertiseIP() (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, errors.New("this machine has no non-loopback IPv4 address for the API server to advertise")
}

// Serve runs the sandbox in this process until ctx ends; `up` starts it in
// the background. It leaves the ready file while everything is up.
func Serve(ctx context.Context, c Config) error {
	progress := func(s string) { fmt.Println(progressPrefix + s) }
	if err := os.WriteFile(c.pidFile(), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("writing the pid file: %w", err)
	}
	defer os.Remove(c.pidFile())
	// Every `up` starts a fresh cluster: new PKI, empty etcd, empty object
	// store, no volumes. A sandbox that was killed left its volumes
	// mounted; removing their folders first would only empty them.
	if err := storage.UnmountAll(c.path("volumes")); err != nil {
		return err
	}
	for _, d := range []string{"pki", "etcd", "logs", "volumes", "pods", "s3", "registry"} {
		if err := os.RemoveAll(c.path(d)); err != nil {
			return err
		}
	}
	if err := storage.CheckTools(); err != nil {
		return err
	}
	release, err := takePodNetwork(c, progress)
	if err != nil {
		return err
	}
	defer release()
	progress("writing certificates")
	if err := writePKI(c); err != nil {
		return err
	}
	cp, err := startControlPlane(ctx, c, progress)
	if err != nil {
		return err
	}
	defer cp.stop()

	progress("starting the hostpath provisioner")
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	if err := storage.EnsureClasses(ctx, cs); err != nil {
		return err
	}
	volumes := c.path("volumes")
	if err := os.MkdirAll(volumes, 0o755); err != nil {
		return err
	}
	// Storage outlives ctx until the deferred calls have stopped the node,
	// so that the volumes are unmounted after the pods that use them.
	storageCtx, stopStorage := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStorage()
	progress("starting the snapshot controllers")
	snapshots, err := snapshot.Start(storageCtx, restCfg, volumes)
	if err != nil {
		return err
	}
	storageDone := make(chan struct{})
	go func() {
		defer close(storageDone)
		if err := storage.Run(storageCtx, cs, storage.HostPath{Root: volumes, NodeHostname: NodeName, Snapshots: snapshots}); err != nil {
			fmt.Println(err)
		}
	}()
	defer func() {
		stopStorage()
		<-storageDone
	}()

	progress("starting the pod network and Services")
	if err := PodBridge.Ensure(); err != nil {
		return err
	}
	defer func() { _ = PodBridge.Remove() }()
	svcProcs, err := startServices(ctx, c, cs, progress)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range svcProcs {
			p.Stop()
		}
	}()
	cp.procs = append(cp.procs, svcProcs...)

	s3, err := startS3(ctx, c, cs, progress)
	if err != nil {
		return err
	}
	defer s3.Stop()
	cp.procs = append(cp.procs, s3)

	reg, stopRegistry, err := startRegistry(ctx, c, progress)
	if err != nil {
		return err
	}
	defer stopRegistry()

	progress("starting the node " + NodeName)
	stopNode, err := startNode(ctx, c, cs, reg)
	if err != nil {
		return err
	}
	defer stopNode()

	if err := os.WriteFile(c.readyFile(), nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(c.readyFile())
	progress("control plane ready")
	if err := controlplane.WaitAny(ctx, cp.procs); err != nil {
		return fmt.Errorf("%w; see %s", err, c.path("logs"))
	}
	fmt.Println("stopping")
	return nil
}

// Running returns the pid of the sandbox process, or 0.
func Running(c Config) int {
	b, err := os.ReadFile(c.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// Up starts the sandbox in the background, echoing its progress to out,
// and returns once it is ready. It does nothing when the sandbox is up.
func Up(ctx context.Context, c Config, out io.Writer) error {
	if pid := Running(c); pid != 0 {
		fmt.Fprintf(out, "the sandbox is already up (pid %d)\n", pid)
		return nil
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	os.Remove(c.readyFile())
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.Create(c.logFile())
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(self, "sandbox", "serve", "--dir", c.Dir, "--bin-dir", c.BinDir,
		"--api-port", strconv.Itoa(c.APIPort), "--etcd-port", strconv.Itoa(c.EtcdPort),
		"--advertise-ip", c.AdvertiseIP.String(), "--service-cidr", c.ServiceCIDR, "--images", c.Images)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session: the sandbox outlives this command and the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the sandbox: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	echoed := 0
	echo := func() {
		f, err := os.Open(c.logFile())
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		n := 0
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), progressPrefix); ok {
				n++
				if n > echoed {
					fmt.Fprintln(out, line)
					echoed = n
				}
			}
		}
	}
	deadline := time.After(5 * time.Minute)
	for {
		echo()
		if _, err := os.Stat(c.readyFile()); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			echo()
			tail, _ := exec.Command("tail", "-n", "20", c.logFile()).Output()
			return fmt.Errorf("the sandbox stopped while starting (%v):\n%s", err, tail)
		case <-deadline:
			return fmt.Errorf("the sandbox is not ready after 5 minutes; see %s", c.logFile())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops the sandbox and every process it started.
func Down(c Config, out io.Writer) error {
	pid := Running(c)
	if pid == 0 {
		fmt.Fprintln(out, "the sandbox is not running")
	} else {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if !proc.WaitGone(pid, 90*time.Second) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			proc.WaitGone(pid, 10*time.Second)
		}
		fmt.Fprintf(out, "the sandbox (pid %d) has stopped\n", pid)
	}
	// The control plane dies with the sandbox process (PDEATHSIG); anything
	// that still names the sandbox folder on its command line is a leftover.
	for _, p := range processesUsing(c.Dir) {
		fmt.Fprintf(out, "stopping leftover process %d\n", p)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	// A sandbox that was killed leaves its volumes mounted, which would
	// keep whoever removes the sandbox folder from removing them.
	if err := storage.UnmountAll(c.path("volumes")); err != nil {
		return fmt.Errorf("unmounting the volumes: %w", err)
	}
	// A sandbox that was killed leaves its pods' namespaces and the bridge,
	// unless another sandbox has taken the pod network over since.
	release, err := claimPodNetwork(c)
	if err != nil {
		fmt.Fprintf(out, "the pod network is left as it is: %v\n", err)
		return nil
	}
	defer release()
	return clearPodNetwork(func(s string) { fmt.Fprintln(out, s) })
}

// processesUsing lists processes whose command line mentions dir.
func processesUsing(dir string) []int {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), abs+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}
