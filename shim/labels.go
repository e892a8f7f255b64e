package shim

import (
	"context"
	"time"

	"github.com/containerd/containerd/namespaces"

	"github.com/assure-rt/assure/shim/containerinfo"
)

// prefetch asks containerd for the labels of container id as soon as
// the daemon starts (the container exists by then), so that the answer
// is in when containerd sends the task's creation. The start command
// (shim/front) has usually asked already and left the answer in the
// bundle; it does not for a CRI pod's containers, which the daemon serves
// whatever their labels say.
type prefetch struct {
	id   string
	done chan struct{}
	info *containerinfo.Info
	err  error
}

func (s *service) prefetchLabels(ctx context.Context, id string) {
	if id == "" || containerinfo.Handed(".") { // the daemon runs in the bundle
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
// is the one the daemon was started for, else asked for now.
func (s *service) info(ctx context.Context, id, bundle string) (*containerinfo.Info, error) {
	if info, ok := containerinfo.Read(bundle); ok {
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
func (s *service) fetchInfo(ctx context.Context, id string) (*containerinfo.Info, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return containerinfo.Fetch(ctx, s.address, ns, id)
}
