// Command assure-shim is assure's shim daemon: runc's shim (containerd's
// v1.7 shim library and runc task service), with the container's tasks
// under rescue-point supervision. containerd does not run it directly:
// containerd-shim-assure-v1 hands it the start of a container that has
// something to supervise (shim/front).
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/pause"
	"github.com/containerd/containerd/runtime/v2/shim"

	_ "github.com/assure-rt/assure/shim" // registers the task service
	"github.com/assure-rt/assure/shim/front"
)

func main() {
	shim.RunManager(context.Background(), manager.NewShimManager(front.RuntimeName))
}
