// Package store reads and writes the learned labels (oci/learned) of
// containerd image records.
package store

import (
	"context"
	"fmt"

	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/assure-rt/assure/oci/learned"
)

// Store reads and writes learned labels on image records, through
// containerd's images service (the gRPC API itself: containerd's client
// package would double the shim binary). The context
// of every call carries the containerd namespace.
type Store struct {
	conn   *grpc.ClientConn
	images imagesapi.ImagesClient
}

// Dial connects to containerd at address.
func Dial(address string) (*Store, error) {
	conn, err := grpc.Dial("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	s := NewStore(conn)
	s.conn = conn
	return s, nil
}

// NewStore uses an open connection to containerd, which stays the
// caller's to close.
func NewStore(conn *grpc.ClientConn) *Store {
	return &Store{images: imagesapi.NewImagesClient(conn)}
}

// Close closes the connection Dial made.
func (s *Store) Close() error {
	if s.conn == nil {
		return nil
	}
	return s.conn.Close()
}

// Image returns the labels and target digest of the image record name.
func (s *Store) Image(ctx context.Context, name string) (map[string]string, string, error) {
	r, err := s.images.Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return nil, "", fmt.Errorf("image %s: %w", name, err)
	}
	return r.Image.Labels, r.Image.Target.GetDigest(), nil
}

// Remember writes e on image record name, unless the record's target is
// no longer the image e was learned in. Only e's own label changes.
func (s *Store) Remember(ctx context.Context, name string, e learned.Entry) error {
	key, val, err := learned.Encode(e)
	if err != nil {
		return err
	}
	_, digest, err := s.Image(ctx, name)
	if err != nil {
		return err
	}
	if digest != e.Image {
		return fmt.Errorf("image %s is now %s, not %s where %s was learned: not remembered", name, digest, e.Image, e.RescuePoint)
	}
	return s.setLabels(ctx, name, map[string]string{key: val})
}

// Forget removes the labels keys from image record name.
func (s *Store) Forget(ctx context.Context, name string, keys []string) error {
	none := make(map[string]string, len(keys))
	for _, k := range keys {
		none[k] = "" // containerd deletes a label updated to ""
	}
	return s.setLabels(ctx, name, none)
}

// setLabels updates only the labels named, through an update mask.
func (s *Store) setLabels(ctx context.Context, name string, labels map[string]string) error {
	paths := make([]string, 0, len(labels))
	set := map[string]string{}
	for k, v := range labels {
		paths = append(paths, "labels."+k)
		if v != "" {
			set[k] = v
		}
	}
	_, err := s.images.Update(ctx, &imagesapi.UpdateImageRequest{
		// An empty target, not none: containerd's images service
		// converts the target before it looks at the mask.
		Image:      &imagesapi.Image{Name: name, Labels: set, Target: &types.Descriptor{}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: paths},
	})
	if err != nil {
		return fmt.Errorf("label image %s: %w", name, err)
	}
	return nil
}
