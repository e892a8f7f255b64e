// Command containerd-shim-assure-v1 is the containerd runtime v2 shim of
// runtime type io.containerd.assure.v1: runc's shim, with the container's
// tasks under rescue-point supervision.
package main

import (
	"context"
	"os"

	"github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/pause"
	"github.com/containerd/containerd/runtime/v2/shim"

	assureshim "github.com/assure-rt/assure/shim" // registers the task service
)

func main() {
	// containerd 2.x asks a shim what it is with -info, a flag of its own
	// shim library that the v1.7 one (which containerd 1.6 needs) lacks.
	if len(os.Args) == 2 && (os.Args[1] == "-info" || os.Args[1] == "--info") {
		if err := assureshim.WriteInfo(os.Stdout, assureshim.RuntimeName); err != nil {
			os.Stderr.WriteString(assureshim.RuntimeName + ": " + err.Error() + "\n")
			os.Exit(1)
		}
		return
	}
	// A container with nothing to supervise goes to runc's own shim.
	assureshim.Delegate(os.Args)
	shim.RunManager(context.Background(), manager.NewShimManager(assureshim.RuntimeName))
}
