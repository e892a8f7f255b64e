// Package shim is the task service of assure-shim, assure's shim daemon: runc's
// own task service (containerd v1.7 runtime/v2/runc/task), wrapped so
// that a container whose image declares rescue points runs its tasks
// under an assure supervisor.
package shim

import (
	"flag"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/runc/task"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/ttrpc"

	"github.com/assure-rt/assure/shim/front"
)

// RuntimeName is the runtime type containerd knows the shim by.
const RuntimeName = front.RuntimeName

// The registration replaces runc's task plugin (this binary must not
// import runtime/v2/runc/task/plugin, which registers the same ID).
func init() {
	plugin.Register(&plugin.Registration{
		Type: plugin.TTRPCPlugin,
		ID:   "task",
		Requires: []plugin.Type{
			plugin.EventPlugin,
			plugin.InternalPlugin,
		},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			inner, err := task.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			s := &service{TaskService: inner, address: ic.Address, publisher: pp.(shim.Publisher),
				st: &state{containers: map[string]*supervised{}}}
			if f := flag.Lookup("id"); f != nil { // the shim library's flag
				s.prefetchLabels(ic.Context, f.Value.String())
			}
			return s, nil
		},
	})
}

// service is runc's task service; the methods it overrides add
// supervision.
type service struct {
	taskAPI.TaskService
	address   string // containerd's gRPC address
	publisher shim.Publisher
	st        *state
	// prefetched: the labels of the container the shim was started for,
	// asked for at start (labels.go).
	prefetched *prefetch
}

// RegisterTTRPC serves this wrapper, not the inner service.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}
