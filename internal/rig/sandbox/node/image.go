package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// image is what a container runs from: an image pulled from a registry, or
// a row of the sandbox's transition table (images.Table) for images that
// cannot be built here.
type image struct {
	// id is the container status's imageID: repository@digest for pulled images.
	id string
	// root is the image's unpacked root, the overlay's lower layer; empty
	// for table rows, which run over this machine's root.
	root string
	// env is the image's environment (PATH first of all), which the
	// container's own variables override.
	env        []string
	entrypoint []string
	cmd        []string
	// user is the image's USER ("uid[:gid]" or names in the root's
	// /etc/passwd), used when the pod sets no runAsUser.
	user string
	dir  string
}

// pullImage fetches the container's image, as a kubelet does before it
// creates a container: from the registry the node's image store serves, or
// from the transition table. It says in the container's state and in
// Events what happened.
func (c *container) pullImage() (image, error) {
	r := c.r
	o := r.p.opts
	ref := c.spec.Image
	if o.Store == nil || !o.Store.Serves(ref) {
		prog, err := o.Images.Resolve(ref)
		if err != nil {
			return image{}, err
		}
		path := defaultPath
		if len(prog.PathPrefix) > 0 {
			path = strings.Join(prog.PathPrefix, ":") + ":" + defaultPath
		}
		return image{id: "sandbox://" + ref, env: []string{"PATH=" + path}, entrypoint: prog.Entrypoint}, nil
	}
	// IfNotPresent is the default for a tag other than latest, as the API
	// server's defaulting sets it.
	always := c.spec.ImagePullPolicy == corev1.PullAlways
	r.p.event(r.pod, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", ref))
	began := time.Now()
	img, rep, err := o.Store.Pull(r.ctx, ref, always)
	if err != nil {
		return image{}, err
	}
	for _, h := range rep.Refetched {
		r.p.event(r.pod, corev1.EventTypeWarning, "LayerCorrupt",
			fmt.Sprintf("Cached layer %s of image %q did not match its digest; fetched it again", h, ref))
	}
	if rep.Unpacked || len(rep.Fetched) > 0 {
		r.p.event(r.pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Successfully pulled image %q in %s (%d layers fetched)",
			ref, time.Since(began).Round(time.Millisecond), len(rep.Fetched)))
	} else {
		r.p.event(r.pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", ref))
	}
	cfg := img.Config
	return image{id: img.ID, root: img.Root, env: cfg.Env, entrypoint: cfg.Entrypoint, cmd: cfg.Cmd, user: cfg.User, dir: cfg.WorkingDir}, nil
}

// argv is the container's command line, as a kubelet builds it: command
// replaces the image's entrypoint and drops its cmd; args replace its cmd.
func (img image) argv(spec corev1.Container) []string {
	if len(spec.Command) > 0 {
		return append(append([]string(nil), spec.Command...), spec.Args...)
	}
	args := img.cmd
	if len(spec.Args) > 0 {
		args = spec.Args
	}
	return append(append([]string(nil), img.entrypoint...), args...)
}

// imageUser resolves an image's USER inside its root: numeric ids as they
// are, names through the root's /etc/passwd and /etc/group. ok is false
// when the image names no user.
func imageUser(root, user string) (uid, gid *int64, err error) {
	if user == "" {
		return nil, nil, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uv, gv, err := lookupID(root, "etc/passwd", u)
	if err != nil {
		return nil, nil, fmt.Errorf("image user %q: %w", user, err)
	}
	uid = &uv
	if hasGroup {
		g2, _, err := lookupID(root, "etc/group", g)
		if err != nil {
			return nil, nil, fmt.Errorf("image group %q: %w", user, err)
		}
		gid = &g2
	} else if gv >= 0 {
		gid = &gv
	}
	return uid, gid, nil
}

// lookupID finds name's id in a passwd-format file of root (and, for
// passwd, the user's primary group; -1 when not known). A number is taken
// as it is.
func lookupID(root, file, name string) (id, group int64, err error) {
	n, numErr := strconv.ParseInt(name, 10, 64)
	b, err := os.ReadFile(filepath.Join(root, file))
	if root == "" || err != nil {
		if numErr == nil {
			return n, -1, nil
		}
		if err == nil {
			err = fmt.Errorf("no image root to look %q up in", name)
		}
		return 0, 0, err
	}
	// One scan: a name is looked up by its first field, a number by its
	// third, which still gives a numeric user its primary group.
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 || (f[0] != name && (numErr != nil || f[2] != name)) {
			continue
		}
		id, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %q has id %q", file, name, f[2])
		}
		group = -1
		if len(f) > 3 {
			if g, err := strconv.ParseInt(f[3], 10, 64); err == nil {
				group = g
			}
		}
		return id, group, nil
	}
	if numErr == nil {
		return n, -1, nil
	}
	return 0, 0, fmt.Errorf("no entry %q in the image's /%s", name, file)
}
