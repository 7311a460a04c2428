// Command store runs the embedded MongoDB-compatible store of the local stack (FerretDB v1 on
// SQLite, shared/devstack/ferret) on its own, as the store of the compose deployment: no MongoDB
// image can be built offline, and this one is built by make images like the services. It is for
// trying policyhooks out; production uses a MongoDB replica set (compose.mongo.yaml).
//
// STORE_ADDR is the address it listens on (default ":27017") and STORE_DIR where it keeps its
// SQLite files (default "/home/nonroot/store"). Give the config service
// mongodb://<host>:27017/?maxPoolSize=1: FerretDB's version-filtered updates are atomic only over
// one connection.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "store:", err)
		os.Exit(1)
	}
}

// run serves the store until ctx ends.
func run(ctx context.Context, getenv func(string) string) error {
	addr, dir := getenv("STORE_ADDR"), getenv("STORE_DIR")
	if addr == "" {
		addr = ":27017"
	}
	if dir == "" {
		dir = "/home/nonroot/store"
	}
	s, err := ferret.Start(dir, addr)
	if err != nil {
		return err
	}
	fmt.Printf("store: FerretDB on SQLite in %s, listening on %s\n", dir, addr)
	<-ctx.Done()
	s.Stop()
	return nil
}
