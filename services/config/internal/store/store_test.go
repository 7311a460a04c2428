package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/services/config/internal/store"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
)

// TestStoreOnFerretDB checks the queries the services rely on against the embedded FerretDB:
// the version-filtered webhook save, "who uses this connection", the unique names.
func TestStoreOnFerretDB(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, ferret.ForTest(t), "storetest")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := st.UpsertConnection(ctx, connection.Input{Key: "c1", Name: "C1", Type: connection.HTTPS, Access: "read"}, now); err != nil {
		t.Fatal(err)
	}
	_, err = st.UpsertConnection(ctx, connection.Input{Key: "c2", Name: "C1", Type: connection.HTTPS, Access: "read"}, now)
	if !errors.Is(err, connection.ErrKeyTaken) {
		t.Fatalf("same name, other key: got %v, want ErrKeyTaken", err)
	}
	p, err := st.UpsertPolicy(ctx, policy.Input{Key: "p", Name: "P"}, now)
	if err != nil {
		t.Fatal(err)
	}
	p.Pre = []policy.Webhook{{ID: "1", Key: "w", Name: "W", Direction: "one_way", ConnectionKey: "c1"}}
	saved, err := st.SaveWebhooks(ctx, p, now)
	if err != nil || saved.Version != p.Version+1 {
		t.Fatalf("save: got version %d, %v; want %d", saved.Version, err, p.Version+1)
	}
	if _, err := st.SaveWebhooks(ctx, p, now); !errors.Is(err, policy.ErrConflict) {
		t.Fatalf("save with a stale version: got %v, want ErrConflict", err)
	}
	missing := p
	missing.Key = "nope"
	if _, err := st.SaveWebhooks(ctx, missing, now); !errors.Is(err, policy.ErrNotFound) {
		t.Fatalf("save of an unknown policy: got %v, want ErrNotFound", err)
	}
	names, pols, err := st.WebhooksUsing(ctx, "c1")
	if err != nil || !slices.Equal(names, []string{"p.pre_execution.w"}) || !slices.Equal(pols, []string{"p"}) {
		t.Fatalf("users of c1: got %v %v %v", names, pols, err)
	}
	if names, _, _ := st.WebhooksUsing(ctx, "c2"); len(names) != 0 {
		t.Fatalf("users of c2: got %v, want none", names)
	}
	got, err := st.GetPolicy(ctx, "p")
	if err != nil || len(got.Pre) != 1 || got.Pre[0].ConnectionKey != "c1" || got.Version != saved.Version {
		t.Fatalf("read back: got %+v, %v", got, err)
	}
}
