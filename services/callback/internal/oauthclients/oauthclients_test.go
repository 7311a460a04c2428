package oauthclients

import (
	"context"
	"testing"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

func TestClientExists(t *testing.T) {
	kv := testkit.StartNATS(t).Bucket(t, event.BucketClients)
	ctx := context.Background()
	for _, id := range []string{"client-a", "client-gone"} {
		if _, err := kv.Put(ctx, id, []byte(`{"scopes":["privacy-request:read"]}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "client-gone"); err != nil {
		t.Fatal(err)
	}
	r := New(kv, "root")
	for id, want := range map[string]bool{
		"client-a": true, "root": true, "client-gone": false, "client-x": false, "": false, "bad id*": false,
	} {
		got, err := r.ClientExists(ctx, id)
		if err != nil || got != want {
			t.Errorf("ClientExists(%q) = %v, %v; want %v, nil", id, got, err, want)
		}
	}
	if got, _ := New(kv, "").ClientExists(ctx, "root"); got {
		t.Error("ClientExists(root) without a root client = true, want false")
	}
}
