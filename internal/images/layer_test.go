package images

import (
	"archive/tar"
	"bytes"
	"testing"
	"time"
)

// tarOf writes a tar the way GNU tar --format=pax does for mmdebstrap: a
// "./" root, "./"-prefixed names, times with sub-second parts, atime/ctime.
func tarOf(t *testing.T, mtime time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, AccessTime: mtime, ChangeTime: mtime, Format: tar.FormatPAX},
		{Name: "./etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5, Uid: 0, ModTime: mtime, AccessTime: mtime, ChangeTime: mtime, Uname: "root", Format: tar.FormatPAX},
		{Name: "./usr/bin/ping", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5, Uid: 0, ModTime: mtime,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}, Format: tar.FormatPAX},
		{Name: "./usr/bin/pong", Typeflag: tar.TypeLink, Linkname: "./usr/bin/ping", ModTime: mtime},
		{Name: "./var/lib/postgresql/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 100, Gid: 102, ModTime: mtime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestNormalizeTar(t *testing.T) {
	epoch := time.Unix(1747699200, 0)
	normalize := func(in []byte) []byte {
		var out bytes.Buffer
		if err := NormalizeTar(bytes.NewReader(in), &out, epoch); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	a := normalize(tarOf(t, time.Unix(1700000000, 123456789)))
	b := normalize(tarOf(t, time.Unix(1800000000, 987654321)))
	if !bytes.Equal(a, b) {
		t.Fatal("tars that differ only in times normalize to different bytes")
	}
	for _, rec := range []string{"mtime=", "atime=", "ctime=", "uname="} {
		if bytes.Contains(a, []byte(rec)) {
			t.Errorf("normalized tar still has a PAX %s record", rec)
		}
	}

	var names []string
	for _, e := range readTar(t, bytes.NewReader(a)) {
		h := e.Header
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
		switch h.Name {
		case "usr/bin/ping":
			if h.PAXRecords["SCHILY.xattr.security.capability"] != "\x01\x00\x00\x02" {
				t.Errorf("ping lost its capability xattr: %v", h.PAXRecords)
			}
		case "usr/bin/pong":
			if h.Linkname != "usr/bin/ping" {
				t.Errorf("hard link to %q, want usr/bin/ping", h.Linkname)
			}
		case "var/lib/postgresql/":
			if h.Uid != 100 || h.Gid != 102 {
				t.Errorf("owner %d:%d, want 100:102", h.Uid, h.Gid)
			}
		case "etc/passwd":
			if e.data != "hello" {
				t.Errorf("content %q", e.data)
			}
		}
	}
	want := []string{"etc/", "etc/passwd", "usr/bin/ping", "usr/bin/pong", "var/lib/postgresql/"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q (in order)", names, want)
		}
	}
}
