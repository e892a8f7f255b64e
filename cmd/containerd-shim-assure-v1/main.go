// Command containerd-shim-assure-v1 is the containerd runtime v2 shim of
// runtime type io.containerd.assure.v1: runc's shim, with the container's
// tasks under rescue-point supervision.
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/pause"
	"github.com/containerd/containerd/runtime/v2/shim"

	_ "github.com/assure-rt/assure/shim" // registers the task service
)

func main() {
	shim.RunManager(context.Background(), manager.NewShimManager("io.containerd.assure.v1"))
}
