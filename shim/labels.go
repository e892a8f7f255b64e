package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/assure-rt/assure/oci/learned"
)

// maxBlob bounds an image index, manifest or config read for its labels.
const maxBlob = 8 << 20

// prefetch asks containerd for the labels of container id as soon as
// the shim starts (the container exists by then), so that the answer is
// in when containerd sends the task's creation: a few RPCs of a fresh
// gRPC connection are the largest part of what the shim adds to a
// container's start.
type prefetch struct {
	id   string
	done chan struct{}
	info *containerInfo
	err  error
}

// containerInfo is what the shim asks containerd about a container.
type containerInfo struct {
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

func (s *service) prefetchLabels(ctx context.Context, id string) {
	if id == "" || hasHandoff(".") { // the daemon runs in the bundle
		return
	}
	p := &prefetch{id: id, done: make(chan struct{})}
	s.prefetched = p
	go func() {
		defer close(p.done)
		p.info, p.err = s.fetchInfo(ctx, id)
	}()
}

// info returns what containerd says of the container: what the start
// command handed over in the bundle, else prefetched when the container
// is the one the shim was started for, else asked for now.
func (s *service) info(ctx context.Context, id, bundle string) (*containerInfo, error) {
	if info, ok := readHandoff(bundle); ok {
		return info, nil
	}
	if p := s.prefetched; p != nil && p.id == id {
		select {
		case <-p.done:
			if p.err == nil {
				return p.info, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.fetchInfo(ctx, id)
}

// fetchInfo asks containerd about container id in ctx's namespace.
func (s *service) fetchInfo(ctx context.Context, id string) (*containerInfo, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, ns), 10*time.Second)
	defer cancel()
	return fetchInfo(ctx, s.address, id)
}

// fetchInfo returns the labels of container id in ctx's namespace and
// its image's config labels (the container's win), and its image
// record's learned labels, from containerd at address: the shim asks
// containerd itself, so that users only pick the runtime. ctr copies the
// image's labels onto the container; the CRI plugin and other clients may
// not, so the image's config is read too.
//
// It talks to containerd's API services directly rather than through
// containerd's client package, which would more than double the shim
// binary and the time each of its several executions per container takes
// to start.
func fetchInfo(ctx context.Context, address, id string) (*containerInfo, error) {
	conn, err := grpc.Dial("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer conn.Close()
	c, err := containers.NewContainersClient(conn).Get(ctx, &containers.GetContainerRequest{ID: id})
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	info := &containerInfo{Labels: map[string]string{}, Image: c.Container.Image}
	if info.Image != "" {
		if img, err := imagesapi.NewImagesClient(conn).Get(ctx, &imagesapi.GetImageRequest{Name: info.Image}); err == nil {
			info.Digest = img.Image.Target.GetDigest()
			for k, v := range img.Image.Labels {
				if strings.HasPrefix(k, learned.Prefix) {
					if info.Learned == nil {
						info.Learned = map[string]string{}
					}
					info.Learned[k] = v
				}
			}
			if cfg, err := configLabels(ctx, conn, info.Image, img.Image.Target); err == nil {
				info.Labels = cfg
			}
		}
	}
	for k, v := range c.Container.Labels {
		info.Labels[k] = v
	}
	return info, nil
}

// configLabels reads the config labels of image name, whose record's
// target is desc, for this platform.
func configLabels(ctx context.Context, conn *grpc.ClientConn, name string, desc *types.Descriptor) (map[string]string, error) {
	if desc == nil {
		return nil, fmt.Errorf("image %s: no target", name)
	}
	cs := contentapi.NewContentClient(conn)
	mediaType, digest := desc.MediaType, desc.Digest
	for depth := 0; depth < 3; depth++ {
		data, err := readBlob(ctx, cs, digest)
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

// readBlob reads a blob of containerd's content store, at most maxBlob
// bytes.
func readBlob(ctx context.Context, cs contentapi.ContentClient, digest string) ([]byte, error) {
	rc, err := cs.Read(ctx, &contentapi.ReadContentRequest{Digest: digest})
	if err != nil {
		return nil, err
	}
	var data []byte
	for {
		r, err := rc.Recv()
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
		if len(data)+len(r.Data) > maxBlob {
			return nil, fmt.Errorf("blob %s larger than %d bytes", digest, maxBlob)
		}
		data = append(data, r.Data...)
	}
}
