package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestExpandFollowsKubernetesRules(t *testing.T) {
	vars := [][2]string{{"A", "1"}, {"B", "two"}, {"A", "3"}}
	for in, want := range map[string]string{
		"$(A)-$(B)":  "3-two",
		"$$(A)":      "$(A)",
		"$(MISSING)": "$(MISSING)",
		"x$(A":       "x$(A",
		"cost $5":    "cost $5",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnvLaterWinsAndPathIsTheImages(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-0"}}
	c := corev1.Container{Env: []corev1.EnvVar{{Name: "X", Value: "1"}, {Name: "Y", Value: "$(X)-$(HOSTNAME)-$(PGDATA)"}, {Name: "X", Value: "2"}}}
	env := strings.Join(containerEnv(pod, c, []string{"PATH=/opt/pg/bin:/usr/bin", "PGDATA=/data", "X=0"}), " ")
	for _, want := range []string{"PATH=/opt/pg/bin:/usr/bin", "HOSTNAME=p-0", "Y=1-p-0-/data", "X=2", "PGDATA=/data"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %q", env, want)
		}
	}
	if strings.Contains(env, "X=1") || strings.Contains(env, "X=0") || strings.Contains(env, defaultPath) {
		t.Errorf("env %q keeps an overridden value", env)
	}
}

func TestIdentityRefusesRootUnderRunAsNonRoot(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{
		RunAsNonRoot: ptr.To(true), FSGroup: ptr.To[int64](999), SupplementalGroups: []int64{5}}}}
	if _, _, _, err := identity(pod, corev1.Container{Name: "c"}, image{}); err == nil || !strings.Contains(err.Error(), "runAsNonRoot") {
		t.Fatalf("no user under runAsNonRoot: %v, want a refusal", err)
	}
	c := corev1.Container{Name: "c", SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](26), RunAsGroup: ptr.To[int64](27)}}
	uid, gid, groups, err := identity(pod, c, image{user: "65532"})
	if err != nil || uid != 26 || gid != 27 || len(groups) != 3 || groups[1] != 999 || groups[2] != 5 {
		t.Fatalf("identity = %d %d %v %v", uid, gid, groups, err)
	}
}

func TestIdentityTakesTheImagesUser(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/:/bin/sh\npostgres:x:999:998::/var/lib/postgresql:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\npostgres:x:998:\nssl:x:101:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nonRoot := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}}}
	for _, tt := range []struct {
		user     string
		uid, gid uint32
		err      string
	}{
		{user: "postgres", uid: 999, gid: 998},
		{user: "999", uid: 999, gid: 998},
		{user: "postgres:ssl", uid: 999, gid: 101},
		{user: "1234:5", uid: 1234, gid: 5},
		{user: "root", err: "runAsNonRoot"},
		{user: "", err: "runAsNonRoot"},
		{user: "nobody", err: `no entry "nobody"`},
	} {
		uid, gid, _, err := identity(nonRoot, corev1.Container{Name: "c"}, image{root: root, user: tt.user})
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("USER %q: %d:%d %v, want an error saying %q", tt.user, uid, gid, err, tt.err)
			}
		case err != nil || uid != tt.uid || gid != tt.gid:
			t.Errorf("USER %q: %d:%d %v, want %d:%d", tt.user, uid, gid, err, tt.uid, tt.gid)
		}
	}
}

func TestArgvAsAKubeletBuildsIt(t *testing.T) {
	img := image{entrypoint: []string{"/holdfast"}, cmd: []string{"operator"}}
	for _, tt := range []struct {
		c    corev1.Container
		want string
	}{
		{corev1.Container{}, "/holdfast operator"},
		{corev1.Container{Args: []string{"instance", "-v"}}, "/holdfast instance -v"},
		{corev1.Container{Command: []string{"sh"}}, "sh"},
		{corev1.Container{Command: []string{"sh"}, Args: []string{"-c", "true"}}, "sh -c true"},
	} {
		if got := strings.Join(img.argv(tt.c), " "); got != tt.want {
			t.Errorf("argv(%+v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestVolumesAreWrittenAsTheKubeletWould(t *testing.T) {
	dir := t.TempDir()
	claimDir := filepath.Join(dir, "pv")
	if err := os.MkdirAll(filepath.Join(claimDir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"password": []byte("pw"), "other": []byte("o")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"a.conf": "a=1"}},
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns"},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv1"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}},
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv1"},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: claimDir}}}},
	)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "x"}}, Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}},
			{Name: "creds", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptr.To[int32](0o440), Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Items: []corev1.KeyToPath{{Key: "password", Path: "db/password"}}}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}}}},
			}}}},
		}}}
	w := volumeWriter{client: client, pod: pod, dir: filepath.Join(dir, "volumes"), fsGroup: ptr.To[int64](4321)}
	got, err := w.write(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got["data"] != claimDir {
		t.Errorf("claim volume at %q, want the PV's folder %q", got["data"], claimDir)
	}
	for _, p := range []string{claimDir, filepath.Join(claimDir, "old")} {
		st, _ := os.Stat(p)
		if sysGID(st) != 4321 || st.Mode()&0o070 != 0o070 || st.Mode()&os.ModeSetgid == 0 {
			t.Errorf("%s: gid %d mode %v, want the fsGroup's, group-writable and setgid", p, sysGID(st), st.Mode())
		}
	}
	for file, want := range map[string]string{"db/password": "pw", "a.conf": "a=1", "app": "x"} {
		p := filepath.Join(got["creds"], file)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
			continue
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o440 || sysGID(st) != 4321 {
			t.Errorf("%s: mode %v gid %d, want 0440 and the fsGroup", file, st.Mode().Perm(), sysGID(st))
		}
	}
	// The kubelet's layout, which refreshes swap atomically.
	if link, err := os.Readlink(filepath.Join(got["creds"], "db")); err != nil || link != filepath.Join(dataLink, "db") {
		t.Errorf("creds/db links to %q, %v; want a link through %s", link, err, dataLink)
	}
	if _, err := os.Stat(filepath.Join(got["creds"], "other")); err == nil {
		t.Errorf("a key not listed in items was written")
	}
	if st, err := os.Stat(got["scratch"]); err != nil || st.Mode().Perm() != 0o777 {
		t.Errorf("emptyDir: %v %v, want a world-writable folder", st, err)
	}

	pod.Spec.Volumes = []corev1.Volume{{Name: "missing", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope"}}}}
	if _, err := w.write(context.Background()); err == nil || !strings.Contains(err.Error(), `volume "missing"`) {
		t.Errorf("a missing secret: %v, want an error naming the volume", err)
	}
}
