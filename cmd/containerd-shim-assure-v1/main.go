// Command containerd-shim-assure-v1 is the binary containerd runs for
// runtime type io.containerd.assure.v1. It starts fast and hands each
// command on: to runc's own shim for a container with nothing to
// supervise and for every deletion, else to assure's shim daemon,
// assure-shim (shim/front says why).
package main

import (
	"os"

	"github.com/assure-rt/assure/shim/front"
)

func main() {
	os.Exit(front.Main(os.Args))
}
