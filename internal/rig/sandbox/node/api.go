package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	utilexec "k8s.io/utils/exec"
)

// serveAPI serves what the API server asks a kubelet for (`kubectl logs`,
// `kubectl exec`) on the node's port, over TLS, to clients the API server
// vouches for (client certificates from the cluster CA, authorized by
// SubjectAccessReview as the kubelet does).
func (p *Provider) serveAPI(ctx context.Context) error {
	o := p.opts
	if o.ServingCert == "" {
		return nil
	}
	caPEM, err := os.ReadFile(o.ClientCA)
	if err != nil {
		return fmt.Errorf("reading the client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", o.ClientCA)
	}
	caProvider, err := dynamiccertificates.NewStaticCAContent("cluster-ca", caPEM)
	if err != nil {
		return err
	}
	auth, err := nodeutil.WebhookAuth(o.Client, o.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
		c.AuthnConfig.ClientCertificateCAContentProvider = caProvider
		return nil
	})
	if err != nil {
		return fmt.Errorf("node API auth: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(o.ServingCert, o.ServingKey)
	if err != nil {
		return fmt.Errorf("node serving certificate: %w", err)
	}
	mux := http.NewServeMux()
	api.AttachPodRoutes(api.PodHandlerConfig{
		GetContainerLogs: p.containerLogs,
		RunInContainer:   p.runInContainer,
		GetPods:          p.GetPods,
	}, mux, false)
	srv := &http.Server{
		Addr:              net.JoinHostPort(o.NodeIP.String(), strconv.Itoa(KubeletPort)),
		Handler:           nodeutil.WithAuth(auth, mux),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12},
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("node API: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error(err, "node API stopped")
		}
	}()
	return nil
}

func (p *Provider) container(namespace, pod, name string) (*container, error) {
	p.mu.Lock()
	r, ok := p.pods[key(namespace, pod)]
	p.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not running here", namespace, pod)
	}
	for _, c := range append(append([]*container(nil), r.inits...), r.containers...) {
		if c.spec.Name == name {
			return c, nil
		}
	}
	return nil, errdefs.NotFoundf("pod %s/%s has no container %q", namespace, pod, name)
}

// containerLogs serves a container's log: every run of it, in order (the
// sandbox keeps one file per container). Tail and follow are honoured.
func (p *Provider) containerLogs(ctx context.Context, namespace, pod, name string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	c, err := p.container(namespace, pod, name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(c.logPath())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return io.NopCloser(&emptyReader{}), nil
		}
		return nil, err
	}
	if opts.Tail > 0 {
		if err := seekTail(f, opts.Tail); err != nil {
			f.Close()
			return nil, err
		}
	}
	if !opts.Follow {
		return f, nil
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return
				}
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				pw.CloseWithError(err)
				return
			}
			select {
			case <-ctx.Done():
				pw.Close()
				return
			case <-c.r.done:
				pw.Close()
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return pr, nil
}

type emptyReader struct{}

func (*emptyReader) Read([]byte) (int, error) { return 0, io.EOF }

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	var offsets []int64
	var pos int64
	sc := bufio.NewReader(f)
	for {
		line, err := sc.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, pos)
			pos += int64(len(line))
		}
		if err != nil {
			break
		}
	}
	start := int64(0)
	if len(offsets) > n {
		start = offsets[len(offsets)-n]
	}
	_, err := f.Seek(start, io.SeekStart)
	return err
}

// runInContainer runs cmd inside a running container, in its namespaces
// and root, as its user (`kubectl exec`). There is no terminal: a TTY
// request gets plain pipes.
func (p *Provider) runInContainer(ctx context.Context, namespace, pod, name string, cmd []string, attach api.AttachIO) error {
	c, err := p.container(namespace, pod, name)
	if err != nil {
		return err
	}
	c.r.mu.Lock()
	proc := c.proc
	c.r.mu.Unlock()
	if proc == nil {
		return fmt.Errorf("container %s is not running", name)
	}
	x, err := c.enter(ctx, proc.Pid, cmd)
	if err != nil {
		return err
	}
	if in := attach.Stdin(); in != nil {
		x.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		defer out.Close()
		x.Stdout = out
	}
	if errw := attach.Stderr(); errw != nil {
		defer errw.Close()
		x.Stderr = errw
	}
	err = x.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		// The exec stream carries a command's exit code to the client only
		// for an error that says ExitStatus, as a kubelet's runtime gives.
		return utilexec.CodeExitError{Err: err, Code: exit.ExitCode()}
	}
	return err
}

// enter is a command that runs argv in the container whose first process is pid.
func (c *container) enter(ctx context.Context, pid int, argv []string) (*exec.Cmd, error) {
	c.r.mu.Lock()
	uid, gid, img := c.uid, c.gid, c.image
	c.r.mu.Unlock()
	args := []string{"--target", strconv.Itoa(pid), "--mount", "--net", "--uts", "--pid", "--root", "--wd",
		"--setuid", strconv.Itoa(int(uid)), "--setgid", strconv.Itoa(int(gid)), "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	cmd.Env = containerEnv(c.r.pod, c.spec, img.env)
	return cmd, nil
}
