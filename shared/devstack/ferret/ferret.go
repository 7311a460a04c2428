// Package ferret starts an embedded FerretDB v1 (SQLite backend) that speaks the MongoDB wire
// protocol, for tests and the local stack.
//
// The URI it hands out carries maxPoolSize=1: FerretDB's version-filtered updates are only atomic
// over a single connection.
package ferret

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Store is a running embedded FerretDB.
type Store struct {
	uri    string
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs FerretDB with its SQLite files under dir, listening on addr ("127.0.0.1:0" picks a
// free port), until Stop is called.
func Start(dir, addr string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ferret: data dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("ferret: data dir: %w", err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, fmt.Errorf("ferret: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	uri, err := url.Parse(f.MongoDBURI())
	if err != nil {
		cancel()
		<-done
		return nil, fmt.Errorf("ferret: uri: %w", err)
	}
	q := uri.Query()
	q.Set("maxPoolSize", "1")
	uri.RawQuery = q.Encode()
	return &Store{uri: uri.String(), cancel: cancel, done: done}, nil
}

// URI returns the MongoDB connection string of the store.
func (s *Store) URI() string { return s.uri }

// Stop shuts the store down and waits for it, at most five seconds.
func (s *Store) Stop() {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

// ForTest starts a store on a random loopback port in a temporary directory, stopped when the test
// ends, and returns its URI.
func ForTest(t testing.TB) string {
	t.Helper()
	s, err := Start(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s.URI()
}
