package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// runningPod is a pod whose volumes were written as at its start, with the
// node's caches over a fake API server.
func runningPod(t *testing.T) (*podRuntime, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"a.conf": "a=1", "unlisted": "u"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "same", Namespace: "ns"}, Data: map[string]string{"s": "1"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "required", Namespace: "ns"}, Data: map[string]string{"r": "kept"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"password": []byte("pw1")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opt", Namespace: "ns"}, Data: map[string][]byte{"k": []byte("v")}},
	)
	cmRef := func(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "x"}}, Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{FSGroup: ptr.To[int64](4321)},
		Volumes: []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef("cm"),
				DefaultMode: ptr.To[int32](0o440), Items: []corev1.KeyToPath{{Key: "a.conf", Path: "conf/a.conf"}}}}},
			{Name: "creds", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: cmRef("s")}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}}}},
			}}}},
			{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptr.To[int32](0o400)}}},
			{Name: "stable", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef("same")}}},
			{Name: "optional", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "opt", Optional: ptr.To(true)}}},
			{Name: "required", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef("required")}}},
		}}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	caches := informers.NewSharedInformerFactory(client, 0)
	secrets, configMaps := caches.Core().V1().Secrets().Lister(), caches.Core().V1().ConfigMaps().Lister()
	caches.Start(ctx.Done())
	caches.WaitForCacheSync(ctx.Done())
	r := &podRuntime{
		p:   &Provider{opts: Options{Client: client}, secrets: secrets, configMaps: configMaps},
		log: logr.Discard(), dir: t.TempDir(), ctx: ctx, pod: pod,
	}
	if _, err := r.volumeWriter().write(ctx); err != nil {
		t.Fatal(err)
	}
	return r, client
}

func volumeFile(t *testing.T, r *podRuntime, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "volumes", path))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// dataLinks is where each volume's ..data link points.
func dataLinks(t *testing.T, r *podRuntime) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range r.pod.Spec.Volumes {
		target, err := os.Readlink(filepath.Join(r.dir, "volumes", v.Name, dataLink))
		if err != nil {
			t.Fatalf("volume %s: %v", v.Name, err)
		}
		out[v.Name] = target
	}
	return out
}

func TestChangedConfigMapsAndSecretsReachARunningPodsVolumes(t *testing.T) {
	r, client := runningPod(t)
	before := dataLinks(t, r)
	stop := r.refreshVolumes(20 * time.Millisecond)
	defer stop()

	ctx := context.Background()
	cms, secrets := client.CoreV1().ConfigMaps("ns"), client.CoreV1().Secrets("ns")
	if _, err := cms.Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"a.conf": "a=2", "unlisted": "u2"}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"password": []byte("pw2"), "user": []byte("u")}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, "opt", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "required", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"config/conf/a.conf": "a=2", "creds/password": "pw2", "creds/user": "u", "creds/app": "x",
		"secret/password": "pw2", "secret/user": "u", "stable/s": "1", "required/r": "kept",
	}
	gone := []string{"config/unlisted", "optional/k"}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		missing := differences(t, r, want, gone)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s the volumes still differ: %s", strings.Join(missing, "; "))
		}
	}

	after := dataLinks(t, r)
	for _, v := range []string{"config", "creds", "secret", "optional"} {
		if after[v] == before[v] {
			t.Errorf("volume %s changed without moving %s", v, dataLink)
		}
		if _, err := os.Stat(filepath.Join(r.dir, "volumes", v, before[v])); err == nil {
			t.Errorf("volume %s keeps its old folder %s", v, before[v])
		}
	}
	for _, v := range []string{"stable", "required"} {
		if after[v] != before[v] {
			t.Errorf("volume %s was rewritten though its source did not change (or is gone and not optional)", v)
		}
	}
	for p, mode := range map[string]os.FileMode{"config/conf/a.conf": 0o440, "secret/user": 0o400} {
		st, err := os.Stat(filepath.Join(r.dir, "volumes", p))
		if err != nil || st.Mode().Perm() != mode || sysGID(st) != 4321 {
			t.Errorf("%s: %v, want mode %v and the fsGroup as written at the start", p, err, mode)
		}
	}
}

func TestUnchangedSourcesCauseNoRewrite(t *testing.T) {
	r, _ := runningPod(t)
	before := dataLinks(t, r)
	for range 3 {
		if err := r.refreshVolumesOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for v, target := range dataLinks(t, r) {
		if target != before[v] {
			t.Errorf("volume %s was rewritten (%s, then %s) though nothing changed", v, before[v], target)
		}
	}

}

// differences lists the files that do not yet hold what they should.
func differences(t *testing.T, r *podRuntime, want map[string]string, gone []string) []string {
	t.Helper()
	var out []string
	for p, w := range want {
		if got := volumeFile(t, r, p); got != w {
			out = append(out, p+"="+got)
		}
	}
	for _, p := range gone {
		if _, err := os.Lstat(filepath.Join(r.dir, "volumes", p)); err == nil {
			out = append(out, p+" still there")
		}
	}
	return out
}
