package requestlist

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/rs/zerolog"
)

const benchRows = 1_000_000

var (
	benchOnce  sync.Once
	benchIndex *Index
)

// benchStatus spreads the statuses as a pipeline that mostly completes does (bench/list.go too).
func benchStatus(i int) event.Status {
	switch i % 100 {
	case 0, 1, 2:
		return event.StatusError
	case 3, 4:
		return event.StatusPaused
	case 5, 6:
		return event.StatusInProcessing
	case 7:
		return event.StatusPending
	}
	return event.StatusComplete
}

func benchRow(i int) Row {
	created := t0.Add(time.Duration(i) * 2 * time.Second)
	started := created.Add(time.Second)
	r := Row{Key: fmt.Sprintf("pri_%016x", uint64(i)*0x9e3779b97f4a7c15), PolicyKey: fmt.Sprintf("policy_%02d", i%20),
		ExternalID: fmt.Sprintf("ext-%d", i), Status: benchStatus(i), Step: event.StepPostWebhooks,
		CreatedAt: created, UpdatedAt: started.Add(time.Duration(i%7) * time.Second), StartedProcessingAt: &started}
	r.ID = r.Key
	if r.Status == event.StatusComplete || r.Status == event.StatusError {
		finished := started.Add(time.Duration(i%11) * time.Second)
		r.FinishedProcessingAt = &finished
	}
	return r
}

func index1M(b *testing.B) *Index {
	benchOnce.Do(func() {
		x := New()
		for i := range benchRows {
			x.Put(uint64(i+1), benchRow(i))
		}
		x.Loaded()
		benchIndex = x
	})
	return benchIndex
}

// BenchmarkQuery is the index's part of the list's answer with a million rows, one query at a
// time (bench/list.go measures the whole answer over HTTP).
func BenchmarkQuery(b *testing.B) {
	x := index1M(b)
	day := t0.Add(10 * 24 * time.Hour)
	for _, q := range []struct {
		name string
		q    Query
	}{
		{"failed", Query{Statuses: []event.Status{event.StatusError}, Page: 1, Size: 50}},
		{"attention", Query{Statuses: []event.Status{event.StatusPaused, event.StatusError, event.StatusAwaitingPreApproval}, Page: 1, Size: 25}},
		{"policy_page_20", Query{PolicyKey: "policy_07", Statuses: []event.Status{event.StatusComplete}, Page: 20, Size: 50}},
		{"one_day", Query{Created: Range{After: day, Before: day.Add(24 * time.Hour)}, Page: 1, Size: 50}},
		{"by_finished", Query{Statuses: []event.Status{event.StatusComplete}, Sort: ByFinished, Page: 1, Size: 50}},
		{"by_updated_all", Query{Sort: ByUpdated, Ascending: true, Page: 1, Size: 100}},
		{"by_updated_deep", Query{Sort: ByUpdated, Page: 5000, Size: 100}},
		{"deep_page", Query{Page: 5000, Size: 100}},
		{"external_id", Query{ExternalID: "ext-333333", Page: 1, Size: 50}},
		{"id", Query{ID: benchRow(500000).ID, Page: 1, Size: 50}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := x.Query(q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApply is the watch's cost of one record of the executor's size: decoding it and
// putting it in the index.
func BenchmarkApply(b *testing.B) {
	started := t0.Add(time.Second)
	req := event.Request{Format: event.RecordFormat, ID: "pri_0123456789abcdef", PolicyKey: "policy_07", ExternalID: "ext-1",
		Status: event.StatusComplete, Step: event.StepPostWebhooks, PlanRef: "7f3c1e9a0b2d4c6e8f1a3b5c7d9e0f12",
		CreatedAt: t0, UpdatedAt: started, StartedProcessingAt: &started, FinishedProcessingAt: &started}
	for k, key := range []string{"wake_warehouse", "lookup_phone", "logout"} {
		req.Webhooks = append(req.Webhooks, event.WebhookRecord{ID: "wh_" + key, Key: key, CallbackType: event.Pre,
			Direction: event.OneWay, Order: k, Outcome: event.OutcomeSucceeded,
			Attempts: []event.Attempt{{At: started, WebhookID: "msg_0123456789abcdef", Status: 200, LatencyMS: 12.5}}})
	}
	for s := 1; s <= 3; s++ {
		req.AddToTimeline(event.TimelineEntry{Seq: s, Status: event.StatusInProcessing, At: started, Step: event.StepPreWebhooks})
	}
	value, err := json.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(value)))
	x := New()
	log := zerolog.Nop()
	var rev uint64
	for b.Loop() {
		rev++
		apply(x, entry{key: "pri_0123456789abcdef", value: value, rev: rev}, log)
	}
}

// entry is a KeyValueEntry of a put.
type entry struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
	rev   uint64
}

func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
