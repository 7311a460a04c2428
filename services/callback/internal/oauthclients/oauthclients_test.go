package oauthclients

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/natsconn"
)

func TestClientExists(t *testing.T) {
	srv := devstack.NATSForTest(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := natsconn.ClientsBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
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
