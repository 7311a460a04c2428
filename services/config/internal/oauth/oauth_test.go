package oauth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/config/internal/oauth"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/scope"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"github.com/policyhooks/policyhooks/shared/token"
	"github.com/rs/zerolog"
)

// pausing is the store as one replica's Sync sees it: AllClients returns what it read only after
// telling read and waiting for resume, so that the clients can change in between.
type pausing struct {
	*store.Store
	read   chan struct{}
	resume chan struct{}
}

func (p *pausing) AllClients(ctx context.Context) ([]oauth.Client, error) {
	all, err := p.Store.AllClients(ctx)
	close(p.read)
	select {
	case <-p.resume:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return all, err
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	st     *store.Store
	mirror jetstream.KeyValue
	sealer *token.Sealer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, err := store.Open(ctx, ferret.ForTest(t), "oauthtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	key, err := secret.DeriveKey("0123456789abcdef0123456789abcdef", secret.PurposeAccessTokens)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := token.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, st: st, mirror: testkit.StartNATS(t).Bucket(t, event.BucketClients), sealer: sealer}
}

func (f *fixture) service(s oauth.Store) *oauth.Service {
	return oauth.NewService(s, f.mirror, f.sealer, oauth.Root{ID: "root", Secret: "root-secret"}, time.Hour, zerolog.Nop())
}

// mirrored reports whether the client has an entry in oauth_clients, as the callback service reads it.
func (f *fixture) mirrored(id string) bool {
	f.t.Helper()
	_, err := f.mirror.Get(f.ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return true
}

// syncPaused runs a's Sync over a store that pauses after its read, runs between while it is
// paused, and returns Sync's error.
func (f *fixture) syncPaused(between func()) error {
	f.t.Helper()
	src := &pausing{Store: f.st, read: make(chan struct{}), resume: make(chan struct{})}
	a := f.service(src)
	done := make(chan error, 1)
	go func() { done <- a.Sync(f.ctx) }()
	select {
	case <-src.read:
	case <-time.After(30 * time.Second):
		f.t.Fatal("Sync did not read the store")
	}
	between()
	close(src.resume)
	return <-done
}

// TestDeletedClientStaysDeleted (D10): a Sync that read the clients before a DELETE must not put
// the deleted client back, and its tokens stop working at once.
func TestDeletedClientStaysDeleted(t *testing.T) {
	f := newFixture(t)
	b := f.service(f.st)
	id, secretValue, err := b.CreateClient(f.ctx, scope.All, []string{"privacy-request:read"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.IssueToken(f.ctx, id, secretValue); err != nil {
		t.Fatal(err)
	}
	if !f.mirrored(id) {
		t.Fatal("a new client is not in oauth_clients")
	}
	err = f.syncPaused(func() {
		if err := b.DeleteClient(f.ctx, id); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if f.mirrored(id) {
		t.Fatal("the deleted client is back in oauth_clients after a Sync that read it before the delete")
	}
	if ok, err := b.ClientExists(f.ctx, id); ok || err != nil {
		t.Fatalf("ClientExists of the deleted client: got %v, %v; want false", ok, err)
	}
	if _, err := b.IssueToken(f.ctx, id, secretValue); !errors.Is(err, oauth.ErrBadCredentials) {
		t.Fatalf("token for the deleted client: got %v, want ErrBadCredentials", err)
	}
	if err := b.Sync(f.ctx); err != nil || f.mirrored(id) {
		t.Fatalf("a later Sync: %v; mirrored %v, want absent", err, f.mirrored(id))
	}
	if err := b.DeleteClient(f.ctx, id); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("second delete: got %v, want ErrNotFound", err)
	}
}

// TestSyncKeepsClientCreatedMeanwhile: a Sync that read the clients before a client was created
// must not delete the new client's entry.
func TestSyncKeepsClientCreatedMeanwhile(t *testing.T) {
	f := newFixture(t)
	b := f.service(f.st)
	var id string
	err := f.syncPaused(func() {
		var err error
		if id, _, err = b.CreateClient(f.ctx, scope.All, []string{"privacy-request:read"}); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if !f.mirrored(id) {
		t.Fatal("the client created during the Sync was removed from oauth_clients")
	}
	if !f.mirrored("root") {
		t.Fatal("the root client is not in oauth_clients")
	}
}

// TestSyncHeals: Sync puts a missing entry back, removes one without a client, and a delete whose
// mirror step failed is finished by deleting again (404, the mirror entry gone).
func TestSyncHeals(t *testing.T) {
	f := newFixture(t)
	b := f.service(f.st)
	id, _, err := b.CreateClient(f.ctx, scope.All, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.mirror.Delete(f.ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mirror.Put(f.ctx, "ghost", []byte(`{"client_id":"ghost","scopes":[]}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(f.ctx); err != nil {
		t.Fatal(err)
	}
	if !f.mirrored(id) || f.mirrored("ghost") {
		t.Fatalf("after Sync: client mirrored %v (want true), ghost mirrored %v (want false)", f.mirrored(id), f.mirrored("ghost"))
	}
	// As after a crash between the store delete and the mirror delete.
	if err := f.st.DeleteClient(f.ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteClient(f.ctx, id); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("delete of a client already gone from the store: got %v, want ErrNotFound", err)
	}
	if f.mirrored(id) {
		t.Fatal("deleting again did not remove the left-over mirror entry")
	}
}
