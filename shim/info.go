package shim

import (
	"io"

	apitypes "github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
)

// Version is the shim's version, reported to containerd 2.x's -info.
var Version = "v1"

// WriteInfo writes the answer to containerd 2.x's `shim -info`: a
// containerd.types.RuntimeInfo protobuf with the runtime's name and
// version. It reports no runc features and no annotations, which
// containerd reads as "nothing special" (without an answer it would ask
// again at every task creation and log an error each time).
func WriteInfo(w io.Writer, name string) error {
	b, err := proto.Marshal(&apitypes.RuntimeInfo{Name: name, Version: &apitypes.RuntimeVersion{Version: Version}})
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
