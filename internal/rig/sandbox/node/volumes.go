package node

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/rig/sandbox/storage"
)

// volumeWriter makes a pod's volumes as folders on this machine, as the
// kubelet's volume plugins would, for the launcher to bind into containers.
type volumeWriter struct {
	client kubernetes.Interface
	pod    *corev1.Pod
	dir    string // the pod's folder for volumes
	// fsGroup owns what the pod may write, as securityContext.fsGroup asks.
	fsGroup *int64
	// secrets and configMaps, when set, are read instead of the API server:
	// the node's caches, which a refresh every few seconds may read freely.
	secrets    corelisters.SecretLister
	configMaps corelisters.ConfigMapLister
	// keepTokens reuses the service-account tokens already written rather
	// than asking for new ones: refreshes do not rotate tokens.
	keepTokens bool
}

// write returns each volume's source on this machine, by volume name.
func (w volumeWriter) write(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range w.pod.Spec.Volumes {
		src, err := w.volume(ctx, v)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		out[v.Name] = src
	}
	return out, nil
}

func (w volumeWriter) volume(ctx context.Context, v corev1.Volume) (string, error) {
	dir := filepath.Join(w.dir, v.Name)
	switch {
	case v.EmptyDir != nil:
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return "", err
		}
		// World-writable like the kubelet's, so that any user the pod runs as can use it.
		if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
			return "", err
		}
		return dir, nil
	case v.HostPath != nil:
		return v.HostPath.Path, nil
	case v.PersistentVolumeClaim != nil:
		return w.claim(ctx, v.PersistentVolumeClaim.ClaimName)
	case v.Secret != nil, v.ConfigMap != nil, v.DownwardAPI != nil, v.Projected != nil:
		if _, err := w.writeSources(ctx, v); err != nil {
			return "", err
		}
		return dir, nil
	}
	return "", fmt.Errorf("a volume type the sandbox does not support (it supports emptyDir, hostPath, persistentVolumeClaim, secret, configMap, downwardAPI and projected)")
}

// writeSources writes a Secret, ConfigMap, downward API or projected volume
// unless it already holds its sources' content, and says whether it wrote.
func (w volumeWriter) writeSources(ctx context.Context, v corev1.Volume) (bool, error) {
	dir := filepath.Join(w.dir, v.Name)
	files, err := w.payload(ctx, dir, v)
	if err != nil {
		return false, err
	}
	return w.writeAtomic(dir, files, defaultMode(v))
}

// payload is the files of a Secret, ConfigMap, downward API or projected
// volume whose folder is dir.
func (w volumeWriter) payload(ctx context.Context, dir string, v corev1.Volume) ([]file, error) {
	var files []file
	for _, s := range sources(v) {
		more, err := w.projection(ctx, dir, s)
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	return files, nil
}

// sources are a volume's sources as projections: a Secret, ConfigMap or
// downward API volume is a projected volume of that one source.
func sources(v corev1.Volume) []corev1.VolumeProjection {
	switch {
	case v.Secret != nil:
		return []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items, Optional: v.Secret.Optional}}}
	case v.ConfigMap != nil:
		return []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{
			LocalObjectReference: v.ConfigMap.LocalObjectReference, Items: v.ConfigMap.Items, Optional: v.ConfigMap.Optional}}}
	case v.DownwardAPI != nil:
		return []corev1.VolumeProjection{{DownwardAPI: &corev1.DownwardAPIProjection{Items: v.DownwardAPI.Items}}}
	case v.Projected != nil:
		return v.Projected.Sources
	}
	return nil
}

func (w volumeWriter) projection(ctx context.Context, dir string, s corev1.VolumeProjection) ([]file, error) {
	switch {
	case s.Secret != nil:
		return w.secretFiles(ctx, s.Secret.Name, s.Secret.Items, ptr.Deref(s.Secret.Optional, false))
	case s.ConfigMap != nil:
		return w.configMapFiles(ctx, s.ConfigMap.Name, s.ConfigMap.Items, ptr.Deref(s.ConfigMap.Optional, false))
	case s.DownwardAPI != nil:
		return w.downwardFiles(s.DownwardAPI.Items)
	case s.ServiceAccountToken != nil && w.keepTokens:
		return writtenToken(dir, s.ServiceAccountToken.Path)
	case s.ServiceAccountToken != nil:
		return w.token(ctx, s.ServiceAccountToken)
	}
	return nil, fmt.Errorf("a projected source the sandbox does not support")
}

func defaultMode(v corev1.Volume) *int32 {
	switch {
	case v.Secret != nil:
		return v.Secret.DefaultMode
	case v.ConfigMap != nil:
		return v.ConfigMap.DefaultMode
	case v.DownwardAPI != nil:
		return v.DownwardAPI.DefaultMode
	case v.Projected != nil:
		return v.Projected.DefaultMode
	}
	return nil
}

// file is one file of a secret, configMap, downward API or token volume.
type file struct {
	path string
	data []byte
	mode *int32
}

func (w volumeWriter) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional bool) ([]file, error) {
	s, err := w.secret(ctx, name)
	if err != nil {
		// Only a source that is gone empties an optional volume: an API
		// server that did not answer must not.
		if optional && apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return keyFiles("secret "+name, s.Data, items, optional)
}

func (w volumeWriter) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional bool) ([]file, error) {
	cm, err := w.configMap(ctx, name)
	if err != nil {
		if optional && apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("configmap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles("configmap "+name, data, items, optional)
}

func (w volumeWriter) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	if w.secrets != nil {
		return w.secrets.Secrets(w.pod.Namespace).Get(name)
	}
	return w.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
}

func (w volumeWriter) configMap(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	if w.configMaps != nil {
		return w.configMaps.ConfigMaps(w.pod.Namespace).Get(name)
	}
	return w.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
}

// keyFiles picks the listed keys (all keys when none are listed).
func keyFiles(what string, data map[string][]byte, items []corev1.KeyToPath, optional bool) ([]file, error) {
	var out []file
	if len(items) == 0 {
		for k, v := range data {
			out = append(out, file{path: k, data: v})
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out = append(out, file{path: it.Path, data: v, mode: it.Mode})
	}
	return out, nil
}

func (w volumeWriter) downwardFiles(items []corev1.DownwardAPIVolumeFile) ([]file, error) {
	var out []file
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downward API file %s: only fieldRef is supported in the sandbox", it.Path)
		}
		v, err := fieldValue(w.pod, it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		out = append(out, file{path: it.Path, data: []byte(v), mode: it.Mode})
	}
	return out, nil
}

// fieldValue reads the pod fields that the downward API exposes as files.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels['": pod.Labels, "metadata.annotations['": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix); ok {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("downward API field %q is not supported in the sandbox", path)
}

func formatMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	return strings.Join(lines, "\n")
}

// token asks the API server for a token bound to this pod, as the kubelet
// does for projected service-account tokens.
func (w volumeWriter) token(ctx context.Context, p *corev1.ServiceAccountTokenProjection) ([]file, error) {
	sa := w.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	tr, err := w.client.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for service account %s: %w", sa, err)
	}
	return []file{{path: p.Path, data: []byte(tr.Status.Token)}}, nil
}

// writtenToken is the token file a projected volume in dir already holds.
func writtenToken(dir, path string) ([]file, error) {
	b, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		return nil, fmt.Errorf("the token written at %s: %w", path, err)
	}
	return []file{{path: path, data: b}}, nil
}

// claim finds the folder of the volume bound to a claim and hands it to the
// pod's fsGroup the first time (fsGroupChangePolicy OnRootMismatch).
func (w volumeWriter) claim(ctx context.Context, name string) (string, error) {
	pvc, err := w.client.CoreV1().PersistentVolumeClaims(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %s: %w", name, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("claim %s is not bound yet", name)
	}
	pv, err := w.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %s of claim %s: %w", pvc.Spec.VolumeName, name, err)
	}
	var path string
	switch {
	case pv.Spec.HostPath != nil:
		path = pv.Spec.HostPath.Path
	case pv.Spec.Local != nil:
		path = pv.Spec.Local.Path
	case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == storage.DriverName:
		// No CSI driver runs: the sandbox's provisioner names its folders as
		// CSI volumes so that they can be snapshotted, and says where they are.
		path = pv.Spec.CSI.VolumeAttributes[storage.PathAttribute]
		if path == "" {
			return "", fmt.Errorf("volume %s of driver %s has no %q attribute", pv.Name, storage.DriverName, storage.PathAttribute)
		}
	default:
		return "", fmt.Errorf("volume %s is neither hostPath, local nor of driver %s, which is all the sandbox can mount", pv.Name, storage.DriverName)
	}
	if w.fsGroup != nil {
		if err := ownByGroup(path, int(*w.fsGroup)); err != nil {
			return "", fmt.Errorf("giving volume %s to group %d: %w", pv.Name, *w.fsGroup, err)
		}
	}
	return path, nil
}

// ownByGroup gives a volume to gid, group-writable with setgid folders, unless
// its root already belongs to gid.
func ownByGroup(root string, gid int) error {
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if sysGID(st) == gid {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := os.Lchown(p, -1, gid); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		mode := info.Mode() | 0o060
		if d.IsDir() {
			mode |= 0o010 | fs.ModeSetgid
		}
		return os.Chmod(p, mode)
	})
}
