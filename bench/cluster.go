package main

import (
	"context"
	"fmt"
	"time"

	"github.com/policyhooks/policyhooks/shared/devstack"
)

// natsCluster is the benchmark's NATS servers as a JetStream cluster of shared/devstack: every node
// is a child process of the harness, the bench binary started again, which main turns into the node
// first thing (devstack.RunClusterNode). Its CPU time is the sum of its nodes'.
type natsCluster struct {
	c *devstack.Cluster
}

// startNATSCluster starts a cluster of n nodes with their configurations, logs and stores under dir
// and waits, for at most a minute, until it is ready: a meta leader elected and every node current.
func startNATSCluster(ctx context.Context, dir string, n int) (*natsCluster, error) {
	c, err := devstack.StartCluster(ctx, dir, n)
	if err != nil {
		return nil, fmt.Errorf("nats cluster: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("nats cluster: %w", err)
	}
	return &natsCluster{c: c}, nil
}

// URL returns the client URLs of all nodes, comma-separated.
func (k *natsCluster) URL() string { return k.c.URLs() }

// CPUSeconds returns the user+system CPU time the running nodes used so far, summed.
func (k *natsCluster) CPUSeconds() float64 {
	var sum float64
	for _, nd := range k.c.Nodes() {
		if pid := nd.Pid(); pid != 0 {
			sum += procCPUSeconds(pid)
		}
	}
	return sum
}

// Stop kills the nodes and waits until they have exited. No graceful shutdown: the store is
// thrown away with the environment.
func (k *natsCluster) Stop() { k.c.Close() }
