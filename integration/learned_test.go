package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"

	"github.com/assure-rt/assure/oci/learned"
	"github.com/assure-rt/assure/oci/learned/store"
	"github.com/assure-rt/assure/recovery/manifest"
)

// healImage declares no rescue point, only a healing candidate: server.c's
// handle_request.
const healImage = "assure.test/server:heal"

// TestLearnedPerImage: a crash of a container whose bug is outside every
// declared rescue point teaches its image (a learned event, a label on
// the image record); the next container of the image survives the bug
// with its state intact, also after containerd restarts; a tampered
// learned label is ignored with an error event, never a failed start;
// assure forget removes what was learned, and the bug is fatal again.
func TestLearnedPerImage(t *testing.T) {
	assure := filepath.Join(env.root, "bin", "assure")
	list := func() string {
		out, err := exec.Command(assure, "learned", "--address", env.address, "--namespace", namespace, healImage).CombinedOutput()
		if err != nil {
			t.Fatalf("assure learned: %v\n%s", err, out)
		}
		return string(out)
	}
	forget := func(args ...string) string {
		out, err := exec.Command(assure, append([]string{"forget", "--address", env.address, "--namespace", namespace, healImage}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("assure forget %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	exec.Command(assure, "forget", "--address", env.address, "--namespace", namespace, healImage).Run()
	t.Cleanup(func() {
		exec.Command(assure, "forget", "--address", env.address, "--namespace", namespace, healImage).Run()
	})
	evs := subscribeEvents(t)

	crashes := func(id string) {
		t.Helper()
		s := startServerImage(t, healImage, id)
		s.want("GOOD 5", "ok 1")
		s.in.Write([]byte("BAD\n"))
		if code := s.exited("BAD without a rescue point"); code == 0 {
			t.Fatalf("container %s survived BAD with nothing learned", id)
		}
	}
	survives := func(id string) {
		t.Helper()
		s := startServerImage(t, healImage, id)
		s.want("GOOD 5", "ok 1")
		s.want("BAD", "error")
		s.want("GOOD 7", "ok 2")
		s.in.Write([]byte("STATS\n"))
		if st := s.line("STATS"); !strings.Contains(st, "requests=2 errors=1 total=12 ") {
			t.Fatalf("after the recovery: %q, want requests=2 errors=1 total=12", st)
		}
		s.want("QUIT", "bye")
		if code := s.exited("QUIT"); code != 0 {
			t.Fatalf("container %s exited %d", id, code)
		}
	}

	crashes("learn-first")
	waitFor(t, 30*time.Second, "the learned event", func() bool {
		return evs.count(namespace+" /assure/learned", "learn-first", "handle_request") == 1
	})
	if l := list(); !strings.Contains(l, "handle_request") || !strings.Contains(l, "armed in new containers") || !strings.Contains(l, "learn-first") {
		t.Fatalf("assure learned after the crash:\n%s", l)
	}
	survives("learn-second")
	if evs.count(namespace+" /assure/recovered", "learn-second", "handle_request") != 1 {
		waitFor(t, 30*time.Second, "the recovered event", func() bool {
			return evs.count(namespace+" /assure/recovered", "learn-second", "handle_request") == 1
		})
	}

	if out, err := containerdScript("restart"); err != nil {
		t.Fatalf("restart containerd: %v\n%s", err, out)
	}
	if l := list(); !strings.Contains(l, "handle_request") {
		t.Fatalf("assure learned after containerd restarted:\n%s", l)
	}
	evs = subscribeEvents(t)
	tampered := learned.Prefix + "0123456789abcdef"
	if out, err := ctr(t, "images", "label", healImage, tampered+"={not json"); err != nil {
		t.Fatalf("ctr images label: %v\n%s", err, out)
	}
	// Well formed, for this image, but naming a function its binary
	// does not have.
	missing := learned.Entry{RescuePoint: manifest.RescuePoint{Binary: "/app/server", Function: "no_such_function", Scope: manifest.ScopeProcess},
		Image: imageDigest(t, healImage)}
	key, val, err := learned.Encode(missing)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ctr(t, "images", "label", healImage, key+"="+val); err != nil {
		t.Fatalf("ctr images label: %v\n%s", err, out)
	}
	survives("learn-tampered")
	waitFor(t, 30*time.Second, "the error events of the tampered labels", func() bool {
		return evs.count(namespace+" /assure/error", "learn-tampered", tampered) == 1 &&
			evs.count(namespace+" /assure/error", "learn-tampered", "learned rescue point ignored", "no_such_function") == 1
	})

	if out := forget("handle_request"); !strings.Contains(out, "forgot 1") {
		t.Fatalf("assure forget handle_request: %s", out)
	}
	if l := list(); strings.Contains(l, "handle_request") || !strings.Contains(l, tampered) || !strings.Contains(l, "no_such_function") {
		t.Fatalf("assure learned after forget handle_request:\n%s", l)
	}
	out, err := exec.Command(assure, "forget", "--address", env.address, "--namespace", namespace, healImage, "handle_request").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "has no learned rescue point handle_request") {
		t.Errorf("second forget: %v\n%s", err, out)
	}
	forget()
	if l := list(); strings.Contains(l, learned.Prefix) {
		t.Fatalf("assure learned after forget:\n%s", l)
	}
	crashes("learn-forgotten")
}

// imageDigest is the target digest of image record img.
func imageDigest(t *testing.T, img string) string {
	t.Helper()
	st, err := store.Dial(env.address)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), namespace), 10*time.Second)
	defer cancel()
	_, digest, err := st.Image(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	return digest
}
