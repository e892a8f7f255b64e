package main

import (
	"context"
	"fmt"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// containerInit returns the host pid of container id's init process,
// asked of containerd at address.
func containerInit(address, ns, id string) (int, error) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 10*time.Second)
	defer cancel()
	conn, err := grpc.Dial("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer conn.Close()
	resp, err := tasks.NewTasksClient(conn).Get(ctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		return 0, fmt.Errorf("task of container %s in namespace %s: %w", id, ns, err)
	}
	if resp.Process == nil || resp.Process.Pid == 0 {
		return 0, fmt.Errorf("container %s in namespace %s has no running task", id, ns)
	}
	return int(resp.Process.Pid), nil
}
