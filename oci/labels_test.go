package oci

import (
	rt "github.com/assure-rt/assure/recovery/resolve/resolvetest"

	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/manifest"
)

// manifestFor returns a valid manifest whose one rescue point is function
// fn, so that tests can tell which manifest was read.
func manifestFor(fn string) string {
	return fmt.Sprintf(`{"version": 1, "rescuePoints": [{"binary": "/usr/bin/server", "function": %q, "return": -1}]}`, fn)
}

func functionOf(t *testing.T, f *Found) string {
	t.Helper()
	if f == nil || f.Manifest == nil || len(f.Manifest.RescuePoints) != 1 {
		t.Fatalf("found %+v, want a manifest with one rescue point", f)
	}
	return f.Manifest.RescuePoints[0].Function
}

func TestFindManifestNone(t *testing.T) {
	for _, c := range []struct{ labels, annotations map[string]string }{
		{nil, nil},
		{map[string]string{"org.opencontainers.image.title": "redis"}, map[string]string{"io.kubernetes.cri.container-type": "container"}},
		{map[string]string{"dev.assure.manifest.other": "x"}, map[string]string{"dev.assure": "x"}},
	} {
		f, err := FindManifest(c.labels, c.annotations, "/nonexistent")
		if f != nil || err != nil {
			t.Errorf("FindManifest(%v, %v) = %+v, %v; want nil, nil", c.labels, c.annotations, f, err)
		}
	}
}

func TestFindManifestSources(t *testing.T) {
	root := t.TempDir()
	rt.WriteFile(t, root, "etc/assure.json", manifestFor("from_label_file"))
	rt.WriteFile(t, root, "etc/pod.json", manifestFor("from_annotation_file"))

	cases := []struct {
		name                string
		labels, annotations map[string]string
		fn, source          string
	}{
		{
			name:   "label inline",
			labels: map[string]string{LabelManifest: manifestFor("from_label")},
			fn:     "from_label", source: "label dev.assure.manifest",
		},
		{
			name:   "label file",
			labels: map[string]string{LabelManifestFile: "/etc/assure.json"},
			fn:     "from_label_file", source: "label dev.assure.manifest.file (/etc/assure.json)",
		},
		{
			name:        "annotation inline",
			annotations: map[string]string{LabelManifest: manifestFor("from_annotation")},
			fn:          "from_annotation", source: "annotation dev.assure.manifest",
		},
		{
			name:        "annotation inline overrides label inline",
			labels:      map[string]string{LabelManifest: manifestFor("from_label")},
			annotations: map[string]string{LabelManifest: manifestFor("from_annotation")},
			fn:          "from_annotation", source: "annotation dev.assure.manifest",
		},
		{
			name:        "annotation file overrides label inline",
			labels:      map[string]string{LabelManifest: manifestFor("from_label")},
			annotations: map[string]string{LabelManifestFile: "/etc/pod.json"},
			fn:          "from_annotation_file", source: "annotation dev.assure.manifest.file (/etc/pod.json)",
		},
		{
			// The labels are ignored entirely: neither their conflict nor
			// their broken values matter.
			name:        "annotation overrides broken labels",
			labels:      map[string]string{LabelManifest: "{not json", LabelManifestFile: "/missing.json"},
			annotations: map[string]string{LabelManifest: manifestFor("from_annotation")},
			fn:          "from_annotation", source: "annotation dev.assure.manifest",
		},
		{
			name:        "unrelated annotations do not override",
			labels:      map[string]string{LabelManifestFile: "/etc/assure.json"},
			annotations: map[string]string{"io.kubernetes.pod.name": "x"},
			fn:          "from_label_file", source: "label dev.assure.manifest.file (/etc/assure.json)",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := FindManifest(c.labels, c.annotations, root)
			if err != nil {
				t.Fatal(err)
			}
			if got := functionOf(t, f); got != c.fn {
				t.Errorf("read the manifest of %s, want %s", got, c.fn)
			}
			if f.Source != c.source {
				t.Errorf("Source = %q, want %q", f.Source, c.source)
			}
		})
	}
}

func TestFindManifestErrors(t *testing.T) {
	root := t.TempDir()
	rt.WriteFile(t, root, "etc/bad-field.json", `{"version": 1, "rescuePoints": [{"binary": "/srv/app", "function": "handle", "scope": "global"}]}`)
	rt.WriteFile(t, root, "etc/bad-json.json", "{\n  \"version\": 1,\n  oops\n}")
	rt.Mkfifo(t, root, "etc/fifo.json")
	rt.Mkdir(t, root, "etc/dir.json")
	rt.WriteFile(t, root, "etc/big.json", strings.Repeat(" ", manifest.MaxSize)+"{}")

	both := "are both set: use one or the other"
	cases := []struct {
		name                string
		labels, annotations map[string]string
		want                string // the whole message, or a prefix ending in "..."
		is                  error
	}{
		{
			name:   "both labels",
			labels: map[string]string{LabelManifest: manifestFor("a"), LabelManifestFile: "/etc/assure.json"},
			want:   "label dev.assure.manifest and label dev.assure.manifest.file " + both,
		},
		{
			name:        "both annotations",
			annotations: map[string]string{LabelManifest: manifestFor("a"), LabelManifestFile: "/etc/assure.json"},
			want:        "annotation dev.assure.manifest and annotation dev.assure.manifest.file " + both,
		},
		{
			name:   "syntax error",
			labels: map[string]string{LabelManifest: `{"version": 1, "rescuePoints": [}`},
			want:   "label dev.assure.manifest: manifest: invalid JSON at line 1, column 33 (offset 32): invalid character '}' looking for beginning of value",
		},
		{
			name:   "truncated",
			labels: map[string]string{LabelManifest: `{"version": 1,`},
			want:   "label dev.assure.manifest: manifest: invalid JSON at line 1, column 15 (offset 14): unexpected end of input",
		},
		{
			name:   "bad field",
			labels: map[string]string{LabelManifest: `{"version": 1, "rescuePoints": [{"binary": "/srv/app", "function": "handle", "return": "x"}]}`},
			want:   `label dev.assure.manifest: manifest: rescuePoints[0] (handle in /srv/app): field "return": must be an integer, got "x"`,
		},
		{
			name:        "unknown field in an annotation",
			annotations: map[string]string{LabelManifest: `{"version": 1, "rescuePoints": [{"binary": "/srv/app", "function": "handle"}], "extra": true}`},
			want:        `annotation dev.assure.manifest: manifest: unknown field "extra"`,
		},
		{
			name:   "empty inline",
			labels: map[string]string{LabelManifest: " \n"},
			want:   "label dev.assure.manifest: is empty: set it to a manifest, or remove it",
		},
		{
			name:        "huge inline",
			annotations: map[string]string{LabelManifest: strings.Repeat(" ", manifest.MaxSize+1)},
			want:        fmt.Sprintf("annotation dev.assure.manifest: manifest is %d bytes, larger than the limit of %d", manifest.MaxSize+1, manifest.MaxSize),
		},
		{
			name:   "inline label over containerd's limit",
			labels: map[string]string{LabelManifest: strings.Repeat(" ", 5000)},
			want:   "label dev.assure.manifest: 5019 bytes with its key; containerd refuses labels over 4096 bytes (key and value): put the manifest in a file in the image and name it with label dev.assure.manifest.file",
		},
		{
			name:   "empty file key",
			labels: map[string]string{LabelManifestFile: ""},
			want:   "label dev.assure.manifest.file: is empty: it must name a manifest file inside the image, such as /etc/assure.json",
		},
		{
			name:   "relative file",
			labels: map[string]string{LabelManifestFile: "etc/assure.json"},
			want:   "label dev.assure.manifest.file: must be an absolute path inside the image, got etc/assure.json",
		},
		{
			name:   "control characters",
			labels: map[string]string{LabelManifestFile: "/etc/a\nassure: fake"},
			want:   `label dev.assure.manifest.file: path "/etc/a\nassure: fake" contains control characters`,
		},
		{
			name:   "long path",
			labels: map[string]string{LabelManifestFile: "/" + strings.Repeat("a", 5000)},
			want:   "label dev.assure.manifest.file: path is 5001 bytes long (limit 4096)",
		},
		{
			name:        "missing file",
			annotations: map[string]string{LabelManifestFile: "/etc/assure.json"},
			want:        "annotation dev.assure.manifest.file: /etc/assure.json does not exist in the image",
			is:          fs.ErrNotExist,
		},
		{
			name:   "escape with ..",
			labels: map[string]string{LabelManifestFile: "/etc/../../../etc/shadow"},
			want:   `label dev.assure.manifest.file: /etc/../../../etc/shadow: escapes the container root filesystem (".." above /)`,
			is:     ErrEscapesRoot,
		},
		{
			name:   "fifo",
			labels: map[string]string{LabelManifestFile: "/etc/fifo.json"},
			want:   "label dev.assure.manifest.file: /etc/fifo.json: not a regular file (named pipe)",
		},
		{
			name:   "directory",
			labels: map[string]string{LabelManifestFile: "/etc/dir.json"},
			want:   "label dev.assure.manifest.file: /etc/dir.json: not a regular file (directory)",
		},
		{
			name:   "too big",
			labels: map[string]string{LabelManifestFile: "/etc/big.json"},
			want:   fmt.Sprintf("label dev.assure.manifest.file: /etc/big.json: larger than the limit of %d bytes", manifest.MaxSize),
		},
		{
			name:   "bad field in a file",
			labels: map[string]string{LabelManifestFile: "/etc/bad-field.json"},
			want:   `label dev.assure.manifest.file: manifest /etc/bad-field.json: rescuePoints[0] (handle in /srv/app): field "scope": must be "process" or "container", got "global"`,
		},
		{
			name:   "syntax error in a file",
			labels: map[string]string{LabelManifestFile: "/etc/bad-json.json"},
			want:   "label dev.assure.manifest.file: manifest /etc/bad-json.json: invalid JSON at line 3, column 3 (offset 20): invalid character 'o' looking for beginning of object key string",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			type result struct {
				f   *Found
				err error
			}
			ch := make(chan result, 1)
			go func() {
				f, err := FindManifest(c.labels, c.annotations, root)
				ch <- result{f, err}
			}()
			var r result
			select {
			case r = <-ch:
			case <-time.After(10 * time.Second):
				t.Fatal("FindManifest blocked")
			}
			if r.err == nil {
				t.Fatalf("FindManifest = %+v, want an error", r.f)
			}
			if r.f != nil {
				t.Errorf("FindManifest returned %+v with its error", r.f)
			}
			if r.err.Error() != c.want {
				t.Errorf("error:\n got %s\nwant %s", r.err, c.want)
			}
			if c.is != nil && !errors.Is(r.err, c.is) {
				t.Errorf("error %v is not %v", r.err, c.is)
			}
		})
	}
}

func TestFindManifestDevice(t *testing.T) {
	root := t.TempDir()
	rt.Mkdev(t, root, "dev/watchdog")
	_, err := FindManifest(map[string]string{LabelManifestFile: "/dev/watchdog"}, nil, root)
	want := "label dev.assure.manifest.file: /dev/watchdog: not a regular file (device)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

func TestFindManifestSizeLimit(t *testing.T) {
	root := t.TempDir()
	doc := manifestFor("at_the_limit")
	exact := doc + strings.Repeat(" ", manifest.MaxSize-len(doc))
	rt.WriteFile(t, root, "etc/exact.json", exact)

	f, err := FindManifest(map[string]string{LabelManifestFile: "/etc/exact.json"}, nil, root)
	if err != nil || functionOf(t, f) != "at_the_limit" {
		t.Fatalf("file of exactly MaxSize bytes: %+v, %v", f, err)
	}
	f, err = FindManifest(nil, map[string]string{LabelManifest: exact}, root)
	if err != nil || functionOf(t, f) != "at_the_limit" {
		t.Fatalf("annotation of exactly MaxSize bytes: %+v, %v", f, err)
	}
	// A label is bound by containerd's limit instead: key and value
	// together at most 4096 bytes.
	fits := doc + strings.Repeat(" ", MaxLabelSize-len(LabelManifest)-len(doc))
	if f, err := FindManifest(map[string]string{LabelManifest: fits}, nil, root); err != nil || functionOf(t, f) != "at_the_limit" {
		t.Fatalf("label of exactly 4096 bytes with its key: %+v, %v", f, err)
	}
	_, err = FindManifest(map[string]string{LabelManifest: fits + " "}, nil, root)
	want := "label dev.assure.manifest: 4097 bytes with its key; containerd refuses labels over 4096 bytes (key and value): put the manifest in a file in the image and name it with label dev.assure.manifest.file"
	if err == nil || err.Error() != want {
		t.Fatalf("label one byte too large: %v, want %s", err, want)
	}
}

// The manifest file is looked up as in the container: symlinks inside the
// image are followed, absolute ones from the image's root, and nothing
// ever reaches a file of the host.
func TestFindManifestSymlinks(t *testing.T) {
	root := t.TempDir()
	host := rt.Outside(t, manifestFor("HOST_FILE"))

	// Links inside the image.
	rt.WriteFile(t, root, "opt/app/conf/assure.json", manifestFor("inside"))
	rt.Symlink(t, root, "etc/app", "/opt/app/conf")           // absolute, to a directory
	rt.Symlink(t, root, "etc/assure.json", "app/assure.json") // relative, through it
	rt.Symlink(t, root, "etc/chain.json", "/etc/assure.json") // a chain
	rt.Symlink(t, root, "etc/up.json", "../opt/app/conf/../conf/assure.json")

	// Links that point at the host, one way or another.
	rt.Symlink(t, root, "etc/host-abs.json", host)
	rt.Symlink(t, root, "etc/host-climb.json", rt.Climb("etc", host))
	rt.Symlink(t, root, "etc/dir-climb", rt.Climb("etc", filepath.Dir(host)))
	rt.Symlink(t, root, "etc/passwd-link.json", "/etc/passwd")
	rt.Symlink(t, root, "etc/hostname-link.json", "/etc/hostname")

	// In the image, /etc/passwd is a manifest (the host's is not): a link
	// to /etc/passwd must read this one.
	rt.WriteFile(t, root, "etc/passwd", manifestFor("image_passwd"))

	for path, fn := range map[string]string{
		"/etc/assure.json":             "inside",
		"/etc/chain.json":              "inside",
		"/etc/up.json":                 "inside",
		"/etc/app/assure.json":         "inside",
		"/etc/app/../conf/assure.json": "inside", // ".." of a symlinked directory is the target's parent
		"/etc/passwd-link.json":        "image_passwd",
	} {
		f, err := FindManifest(nil, map[string]string{LabelManifestFile: path}, root)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got := functionOf(t, f); got != fn {
			t.Errorf("%s: read the manifest of %s, want %s", path, got, fn)
		}
	}

	for path, want := range map[string]string{
		"/etc/host-abs.json": "label dev.assure.manifest.file: /etc/host-abs.json does not exist in the image (via symlink /etc/host-abs.json -> " + host + ")",
		"/etc/host-climb.json": "label dev.assure.manifest.file: /etc/host-climb.json: escapes the container root filesystem (symlink /etc/host-climb.json -> " +
			rt.Climb("etc", host) + " goes above /)",
		"/etc/dir-climb/outside.json": "label dev.assure.manifest.file: /etc/dir-climb/outside.json: escapes the container root filesystem (symlink /etc/dir-climb -> " +
			rt.Climb("etc", filepath.Dir(host)) + " goes above /)",
		"/etc/hostname-link.json": "label dev.assure.manifest.file: /etc/hostname-link.json does not exist in the image (via symlink /etc/hostname-link.json -> /etc/hostname)",
		// The host's own path, named directly: the image's, which is missing.
		host: "label dev.assure.manifest.file: " + host + " does not exist in the image",
	} {
		f, err := FindManifest(map[string]string{LabelManifestFile: path}, nil, root)
		if err == nil {
			t.Errorf("%s: read a manifest (of %s)", path, functionOf(t, f))
			continue
		}
		if err.Error() != want {
			t.Errorf("%s:\n got %s\nwant %s", path, err, want)
		}
		if strings.Contains(err.Error(), "HOST_FILE") {
			t.Errorf("%s: the error shows the host file's content: %s", path, err)
		}
	}
}

// A link to the host's /etc/passwd, in an image without one, is missing;
// with the image's own /etc/passwd (not a manifest), that file is read and
// refused as a manifest, never the host's.
func TestFindManifestHostPasswd(t *testing.T) {
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Skip("no /etc/passwd on this host")
	}
	root := t.TempDir()
	rt.Symlink(t, root, "etc/assure.json", "/etc/passwd")
	labels := map[string]string{LabelManifestFile: "/etc/assure.json"}

	_, err := FindManifest(labels, nil, root)
	want := "label dev.assure.manifest.file: /etc/assure.json does not exist in the image (via symlink /etc/assure.json -> /etc/passwd)"
	if err == nil || err.Error() != want {
		t.Fatalf("err:\n got %v\nwant %s", err, want)
	}

	rt.WriteFile(t, root, "etc/passwd", "[1, 2, 3]\n")
	_, err = FindManifest(labels, nil, root)
	want = "label dev.assure.manifest.file: manifest /etc/assure.json: must be an object, got an array"
	if err == nil || err.Error() != want {
		t.Fatalf("err:\n got %v\nwant %s", err, want)
	}
}

func TestFoundCheckBinaries(t *testing.T) {
	root := t.TempDir()
	rt.WriteFile(t, root, "usr/bin/server", rt.FakeELF)
	bad := `{"version": 1, "rescuePoints": [{"binary": "/usr/bin/server", "function": "a"}, {"binary": "/usr/bin/gone", "function": "handle"}]}`
	rt.WriteFile(t, root, "etc/assure.json", bad)

	f, err := FindManifest(map[string]string{LabelManifest: bad}, nil, root)
	if err != nil {
		t.Fatal(err)
	}
	err = f.CheckBinaries(root)
	want := `label dev.assure.manifest: manifest: rescuePoints[1] (handle in /usr/bin/gone): field "binary": /usr/bin/gone does not exist in the image`
	if err == nil || err.Error() != want {
		t.Errorf("label:\n got %v\nwant %s", err, want)
	}

	f, err = FindManifest(nil, map[string]string{LabelManifestFile: "/etc/assure.json"}, root)
	if err != nil {
		t.Fatal(err)
	}
	err = f.CheckBinaries(root)
	want = `annotation dev.assure.manifest.file: manifest /etc/assure.json: rescuePoints[1] (handle in /usr/bin/gone): field "binary": /usr/bin/gone does not exist in the image`
	if err == nil || err.Error() != want {
		t.Errorf("file:\n got %v\nwant %s", err, want)
	}
	var me *manifest.Error
	if !errors.As(err, &me) || me.Index != 1 {
		t.Errorf("%v is not a *manifest.Error about rescuePoints[1]", err)
	}

	f, err = FindManifest(map[string]string{LabelManifest: manifestFor("ok")}, nil, root)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CheckBinaries(root); err != nil {
		t.Errorf("good manifest: %v", err)
	}
}
