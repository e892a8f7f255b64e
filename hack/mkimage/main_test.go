package main

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAdd(t *testing.T) {
	f, err := parseAdd("/bin/busybox:/bin/busybox:4755")
	if err != nil || f.Src != "/bin/busybox" || f.Dst != "/bin/busybox" || f.Mode.Perm() != 0o755 || f.Mode&os.ModeSetuid == 0 {
		t.Errorf("parseAdd with mode: %+v, %v", f, err)
	}
	if f, err := parseAdd("a:/b"); err != nil || f.Mode != 0 {
		t.Errorf("parseAdd without mode: %+v, %v", f, err)
	}
	for _, bad := range []string{"a", ":/b", "a:", "a:/b:9", "a:/b:755:1", "a:/b:77777"} {
		if _, err := parseAdd(bad); err == nil {
			t.Errorf("parseAdd(%q) accepted", bad)
		}
	}
}

func TestParseList(t *testing.T) {
	if l, err := parseList("cmd", `["/bin/sh", "-c", "echo a b"]`); err != nil || len(l) != 3 || l[2] != "echo a b" {
		t.Errorf("JSON list: %q, %v", l, err)
	}
	if l, err := parseList("cmd", "/bin/sh"); err != nil || len(l) != 1 || l[0] != "/bin/sh" {
		t.Errorf("plain: %q, %v", l, err)
	}
	if l, err := parseList("cmd", ""); err != nil || l != nil {
		t.Errorf("empty: %q, %v", l, err)
	}
	if _, err := parseList("cmd", `["unterminated`); err == nil {
		t.Error("bad JSON accepted")
	}
}

func TestRunBuilds(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	err := run([]string{
		"-name", "assure.test/cli:1", "-o", out,
		"-add", src + ":/usr/bin/prog", "-symlink", "/bin/prog:/usr/bin/prog",
		"-dir", "/tmp", "-label", "a=b=c", "-label", "dev.assure.manifest={\"version\":1}",
		"-entrypoint", `["/usr/bin/prog"]`, "-cmd", "x", "-env", "K=V", "-workdir", "/tmp",
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var index []byte
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" {
			index, _ = io.ReadAll(tr)
		}
	}
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(index, &idx); err != nil || len(idx.Manifests) != 1 ||
		idx.Manifests[0].Annotations["io.containerd.image.name"] != "assure.test/cli:1" {
		t.Errorf("index.json: %s (%v)", index, err)
	}

	for _, bad := range [][]string{
		{"-o", out},
		{"-name", "a/b:1"},
		{"-name", "a/b:1", "-o", out, "-label", "novalue"},
		{"-name", "a/b:1", "-o", out, "-symlink", "/x"},
		{"-name", "a/b:1", "-o", out, "extra"},
		{"-name", "a/b:1", "-o", out, "-import", "-address", ""},
	} {
		t.Setenv("CONTAINERD_ADDRESS", "")
		if err := run(bad); err == nil {
			t.Errorf("run(%s) succeeded", strings.Join(bad, " "))
		}
	}
}
