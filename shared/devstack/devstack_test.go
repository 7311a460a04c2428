package devstack_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestNATSTopologySurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := devstack.NATSForTest(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := natsconn.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Twice: creation is idempotent.
	if _, err := natsconn.EnsureStream(ctx, js); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	kv, err := natsconn.RequestsBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pri_1", []byte(`{"status":"pending"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, event.SubjectSubmitted, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	n2, err := n.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n2.Shutdown)
	nc2, err := nats.Connect(n2.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	kv2, err := natsconn.RequestsBucket(ctx, js2)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(ctx, "pri_1")
	if err != nil || string(e.Value()) != `{"status":"pending"}` {
		t.Fatalf("after restart Get = %v, %v", e, err)
	}
	s, _ := js2.Stream(ctx, event.Stream)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("stream messages after restart = %d, want 1", info.State.Msgs)
	}
}

func TestFerretVersionedUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uri := ferret.ForTest(t)
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	coll := client.Database("test").Collection("policies")
	if _, err := coll.InsertOne(ctx, bson.M{"_id": "p", "version": 1}); err != nil {
		t.Fatal(err)
	}
	res, err := coll.UpdateOne(ctx, bson.M{"_id": "p", "version": 1}, bson.M{"$set": bson.M{"version": 2}})
	if err != nil || res.ModifiedCount != 1 {
		t.Fatalf("first versioned update = %+v, %v", res, err)
	}
	res, err = coll.UpdateOne(ctx, bson.M{"_id": "p", "version": 1}, bson.M{"$set": bson.M{"version": 3}})
	if err != nil || res.MatchedCount != 0 {
		t.Fatalf("stale versioned update matched: %+v, %v", res, err)
	}
}
