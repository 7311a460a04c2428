package requestlist

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// agree checks that decode reads data as json.Unmarshal does whenever json.Unmarshal accepts it.
func agree(t *testing.T, data []byte) {
	t.Helper()
	var want listed
	if err := json.Unmarshal(data, &want); err != nil {
		return
	}
	got, err := decode(data)
	if err != nil {
		t.Fatalf("decode(%q): %v; json.Unmarshal accepts it", data, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decode(%q)\n got %+v\nwant %+v", data, got, want)
	}
}

func sampleRecord(t testing.TB) []byte {
	started := t0.Add(time.Second)
	req := event.Request{Format: event.RecordFormat, ID: "pri_1", PolicyKey: "p", ExternalID: "ext \"quoted\" \u00e9",
		Status: event.StatusError, Step: event.StepPostWebhooks, CreatedAt: t0, UpdatedAt: started,
		StartedProcessingAt: &started, Error: &event.RequestError{Message: "webhook answered 500: {\"a\": [1, \"]\"]}"},
		Webhooks: []event.WebhookRecord{{Key: "w", Attempts: []event.Attempt{{At: started, Status: 500, Error: "x\\y"}}}}}
	req.AddToTimeline(event.TimelineEntry{Seq: 1, Status: event.StatusPending, At: t0})
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeAgrees: the fast path and json.Unmarshal read the same fields from records and from
// the irregular objects where the fast path must give way (escapes, case, duplicates, nulls).
func TestDecodeAgrees(t *testing.T) {
	for _, data := range [][]byte{
		sampleRecord(t),
		[]byte(`{}`),
		[]byte(` { "id" : "pri_2" , "status":"paused","webhooks":[{"a":"]}"}],"created_at":"2026-12-01T00:00:00.5+01:00"} `),
		[]byte(`{"id":"pri_\u0032","status":"error"}`),
		[]byte(`{"ID":"pri_3","Status":"error"}`),
		[]byte(`{"id":"pri_4","id":"pri_5"}`),
		[]byte(`{"id":"pri_6","started_processing_at":null,"finished_processing_at":"2026-12-01T00:00:00Z","external_id":null}`),
		[]byte(`{"id":"pri_7","ſtatus":"error"}`),
		[]byte(`{"id":"pri_8","next":-1.5e3,"held":true,"error":null,"x":{"y":["\\"",{}]}}`),
	} {
		agree(t, data)
	}
	if _, err := decode([]byte(`{"id": "pri_1", "status": `)); err == nil {
		t.Error("a truncated record decoded")
	}
}

// FuzzDecode: for any input json.Unmarshal accepts, decode reads the same fields.
func FuzzDecode(f *testing.F) {
	f.Add(sampleRecord(f))
	f.Add([]byte(`{"id":"a","status":"paused","created_at":"2026-12-01T00:00:00Z","webhooks":[]}`))
	f.Add([]byte(`{"Id":"a","id":"b"}`))
	f.Fuzz(func(t *testing.T, data []byte) { agree(t, data) })
}
