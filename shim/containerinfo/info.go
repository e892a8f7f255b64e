// Package containerinfo asks containerd what the shim needs to know of a
// container before it serves it: the container's labels over its image
// config's, and its image record's learned rescue points. Both the shim's
// start command (for every container, so it must start fast: grpc.go)
// and its daemon use it; the start command hands its answer to the
// daemon in the task's bundle (Write, Read).
package containerinfo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/assure-rt/assure/oci/learned"
	"github.com/assure-rt/assure/shim/pbwire"
)

// Info is what the shim asks containerd about a container.
type Info struct {
	// Labels are the container's labels over its image config's.
	Labels map[string]string `json:"labels"`
	// Image is the name of the container's image record, and Digest
	// that record's target: what learned rescue points are kept on.
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Learned are the record's learned labels (oci/learned), which
	// only the shim writes: never taken from the image config.
	Learned map[string]string `json:"learned,omitempty"`
}

// maxBlob bounds an image index, manifest or config read for its labels.
const maxBlob = 8 << 20

// Fetch returns what containerd at address says of container id in
// namespace ns. ctr copies the image's labels onto the container; the
// CRI plugin and other clients may not, so the image's config is read
// too (an image that cannot be read leaves the container's own labels).
func Fetch(ctx context.Context, address, ns, id string) (*Info, error) {
	c := newClient(address, ns)
	defer c.close()
	ctr, err := c.get(ctx, "/containerd.services.containers.v1.Containers/Get", id)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	info := &Info{Labels: map[string]string{}, Image: string(ctr.field3)}
	if info.Image != "" {
		if img, err := c.get(ctx, "/containerd.services.images.v1.Images/Get", info.Image); err == nil {
			for k, v := range img.labels {
				if strings.HasPrefix(k, learned.Prefix) {
					if info.Learned == nil {
						info.Learned = map[string]string{}
					}
					info.Learned[k] = v
				}
			}
			if target, err := decodeDescriptor(img.field3); err == nil && target.digest != "" {
				info.Digest = target.digest
				if cfg, err := c.configLabels(ctx, info.Image, target); err == nil {
					info.Labels = cfg
				}
			}
		}
	}
	for k, v := range ctr.labels {
		info.Labels[k] = v
	}
	return info, nil
}

// get makes one of the API's Get calls, whose request names the record
// (field 1) and whose response holds it (field 1).
func (c *client) get(ctx context.Context, method, name string) (*record, error) {
	var r *record
	err := c.call(ctx, method, pbwire.String(1, name), func(b []byte) error {
		m, err := pbwire.Bytes(b, 1)
		if err == nil {
			r, err = decodeRecord(m)
		}
		return err
	})
	if err == nil && r == nil {
		err = fmt.Errorf("%s: no record in the answer", method)
	}
	return r, err
}

// configLabels reads the config labels of image name, whose record's
// target is desc, for this platform.
func (c *client) configLabels(ctx context.Context, name string, desc descriptor) (map[string]string, error) {
	mediaType, digest := desc.mediaType, desc.digest
	for depth := 0; depth < 3; depth++ {
		data, err := c.readBlob(ctx, digest)
		if err != nil {
			return nil, err
		}
		switch mediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var idx ocispec.Index
			if err := json.Unmarshal(data, &idx); err != nil {
				return nil, err
			}
			m := pickManifest(idx.Manifests)
			if m == nil {
				return nil, fmt.Errorf("image %s: no manifest for linux/%s", name, runtime.GOARCH)
			}
			mediaType, digest = m.MediaType, m.Digest.String()
		case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			var m ocispec.Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				return nil, err
			}
			mediaType, digest = m.Config.MediaType, m.Config.Digest.String()
		default: // the config
			var cfg ocispec.Image
			if err := json.Unmarshal(data, &cfg); err != nil {
				return nil, err
			}
			if cfg.Config.Labels == nil {
				return map[string]string{}, nil
			}
			return cfg.Config.Labels, nil
		}
	}
	return nil, fmt.Errorf("image %s: nested too deep", name)
}

func pickManifest(ms []ocispec.Descriptor) *ocispec.Descriptor {
	for i, m := range ms {
		if p := m.Platform; p == nil || p.OS == "linux" && p.Architecture == runtime.GOARCH {
			return &ms[i]
		}
	}
	return nil
}

// readBlob reads a blob of containerd's content store (a server-streaming
// call), at most maxBlob bytes.
func (c *client) readBlob(ctx context.Context, digest string) ([]byte, error) {
	var data []byte
	err := c.call(ctx, "/containerd.services.content.v1.Content/Read", pbwire.String(1, digest), func(b []byte) error {
		d, err := contentData(b)
		if err != nil {
			return err
		}
		if len(data)+len(d) > maxBlob {
			return fmt.Errorf("blob %s larger than %d bytes", digest, maxBlob)
		}
		data = append(data, d...)
		return nil
	})
	return data, err
}

// handoffFile, in a task's bundle, holds what the start command asked
// containerd about the container, for the daemon that serves the task.
// The bundle is containerd's own directory, made for this task and
// removed with it, so nothing from the image can put the file there.
const handoffFile = "assure-labels.json"

// maxHandoff bounds what is read back: containerd refuses a label over
// 4 KiB, and an image config has a few hundred at most.
const maxHandoff = 4 << 20

// Write leaves info in bundle for the daemon; best effort: without it
// the daemon asks containerd.
func Write(bundle string, info *Info) {
	data, err := json.Marshal(info)
	if err != nil {
		return
	}
	os.WriteFile(filepath.Join(bundle, handoffFile), data, 0o600)
}

// Handed reports whether bundle holds a hand-over.
func Handed(bundle string) bool {
	_, err := os.Lstat(filepath.Join(bundle, handoffFile))
	return err == nil
}

// Read returns the hand-over in bundle, if there is a well-formed one.
func Read(bundle string) (*Info, bool) {
	f, err := os.Open(filepath.Join(bundle, handoffFile))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHandoff+1))
	if err != nil || len(data) > maxHandoff {
		return nil, false
	}
	var info Info
	if json.Unmarshal(data, &info) != nil || info.Labels == nil {
		return nil, false
	}
	return &info, true
}
