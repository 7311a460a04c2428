package devstack_test

import (
	"context"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/testkit"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestNATSTopologySurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := testkit.StartNATS(t) // devstack.StartNATS, the stream ensured once already
	// Again: creation is idempotent.
	if _, err := natsconn.EnsureStream(ctx, n.JS); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	if _, err := n.Bucket(t, event.BucketRequests).Put(ctx, "pri_1", []byte(`{"status":"pending"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.Publish(ctx, event.SubjectSubmitted, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	url := n.URL()

	n.Restart(t) // devstack's Restart: the same address and store
	if n.URL() != url {
		t.Fatalf("URL after restart = %s, want %s", n.URL(), url)
	}
	e, err := n.Bucket(t, event.BucketRequests).Get(ctx, "pri_1")
	if err != nil || string(e.Value()) != `{"status":"pending"}` {
		t.Fatalf("after restart Get = %v, %v", e, err)
	}
	s, err := n.JS.Stream(ctx, event.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
