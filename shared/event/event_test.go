package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func ptr(s string) *string { return &s }

func TestSubmittedValidate(t *testing.T) {
	email := Identity{Email: ptr("a@example.com")}
	tests := []struct {
		name string
		in   Submitted
		want string // substring of the error, "" for valid
	}{
		{"valid email", Submitted{ID: "pri_1", PolicyKey: "p", Identity: email}, ""},
		{"valid phone", Submitted{ID: "a.b:c-d_e", PolicyKey: "p", Identity: Identity{PhoneNumber: ptr("555")}}, ""},
		{"no id", Submitted{PolicyKey: "p", Identity: email}, "id must be"},
		{"bad id", Submitted{ID: "a b", PolicyKey: "p", Identity: email}, "id must be"},
		{"long id", Submitted{ID: strings.Repeat("a", 256), PolicyKey: "p", Identity: email}, "id must be"},
		{"no policy", Submitted{ID: "x", Identity: email}, "policy_key is required"},
		{"no identity", Submitted{ID: "x", PolicyKey: "p"}, "identity needs"},
		{"empty identity", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Email: ptr("")}}, "identity needs"},
		{"fides field only", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{FidesUserDeviceID: ptr("d-1")}}, ""},
		{"custom identity only", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Custom: map[string]LabeledIdentity{"loyalty_id": {"Loyalty ID", "CH-1"}}}}, ""},
		{"bad custom identity", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Custom: map[string]LabeledIdentity{"loyalty_id": {"", "CH-1"}}}}, "identity.loyalty_id.label is required"},
		{"longest email", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Email: ptr(strings.Repeat("é", MaxIdentityValue))}}, ""},
		{"email too long (D4)", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Email: ptr(strings.Repeat("a", 800<<10))}}, "identity.email is longer than 1024"},
		{"phone too long", Submitted{ID: "x", PolicyKey: "p", Identity: Identity{Email: ptr("a"), PhoneNumber: ptr(strings.Repeat("5", MaxIdentityValue+1))}}, "identity.phone_number is longer"},
		{"policy key too long (D4)", Submitted{ID: "x", PolicyKey: strings.Repeat("p", MaxPolicyKey+1), Identity: email}, "policy_key must be"},
		{"policy key not a key", Submitted{ID: "x", PolicyKey: "my policy", Identity: email}, "policy_key must be"},
		{"longest external id", Submitted{ID: "x", PolicyKey: "p", Identity: email, ExternalID: strings.Repeat("e", MaxExternalID)}, ""},
		{"external id too long (D4)", Submitted{ID: "x", PolicyKey: "p", Identity: email, ExternalID: strings.Repeat("e", MaxExternalID+1)}, "external_id is longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidEvent containing %q", err, tt.want)
			}
		})
	}
}

func TestKVKey(t *testing.T) {
	tests := []struct{ id, want string }{
		{"pri_029832ba-3b84-40f7", "pri_029832ba-3b84-40f7"},
		{"a:b", "a=3Ab"},
		{".x..y.", "=2Ex=2E=2Ey=2E"},
		{"urn:req:1.2", "urn=3Areq=3A1=2E2"},
	}
	for _, tt := range tests {
		if got := KVKey(tt.id); got != tt.want || !ValidKVKey(got) || KVKeyID(got) != tt.id {
			t.Errorf("KVKey(%q) = %q (back: %q), want %q (a valid KV key, KVKeyID its inverse)", tt.id, got, KVKeyID(got), tt.want)
		}
	}
	if KVKey("a:b") == KVKey("a.b") {
		t.Error("KVKey is not one-to-one")
	}
}

func TestValidKVKey(t *testing.T) {
	for k, want := range map[string]bool{
		"pri_1": true, "a.b-c/d=e": true, "a=3Ab": true,
		"": false, ".a": false, "a.": false, "a..b": false, "a:b": false, "a b": false, "a*": false, "a>": false,
	} {
		if got := ValidKVKey(k); got != want {
			t.Errorf("ValidKVKey(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestReason(t *testing.T) {
	if got := Reason("short"); got != "short" {
		t.Errorf("Reason(short) = %q", got)
	}
	long := strings.Repeat("é", MaxReason) // 2 bytes each
	got := Reason(long)
	if len(got) > MaxReason || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("Reason(%d bytes) = %d bytes, valid UTF-8 %v, want at most %d ending in …", len(long), len(got), utf8.ValidString(got), MaxReason)
	}
}

func TestExecutionID(t *testing.T) {
	a, b, c := ExecutionID("pri_1", 1), ExecutionID("pri_1", 1), ExecutionID("pri_1", 2)
	if a != b || a == c || ExecutionID("pri_2", 1) == a || !strings.HasPrefix(a, "exe_") {
		t.Errorf("ExecutionID: run 1 %q and %q, run 2 %q: want equal for the same run, different otherwise, exe_ prefix", a, b, c)
	}
}

func TestFirstStatusEventHasNullPrevious(t *testing.T) {
	b, _ := json.Marshal(StatusChanged{ID: "pri_1", TimelineEntry: TimelineEntry{Seq: 1, Status: StatusPending}})
	if !strings.Contains(string(b), `"previous":null`) || !strings.Contains(string(b), `"seq":1`) {
		t.Errorf("first status event %s, want previous null and seq 1 (D19)", b)
	}
}

func TestWebhookID(t *testing.T) {
	a := WebhookID("r1", Pre, "w1", 1)
	if a != WebhookID("r1", Pre, "w1", 1) || a == WebhookID("r1", Pre, "w1", 2) || a == WebhookID("r1", Post, "w1", 1) {
		t.Errorf("webhook ids must be stable per call and differ per run and callback type")
	}
	// The derivation is part of the contract receivers de-duplicate on: it must not change.
	if want := "msg_"; a[:4] != want || len(a) != 36 {
		t.Errorf("WebhookID = %q, want msg_ and 32 hex digits", a)
	}
}

// TestTimelineKeepsFirstAndLatest: past MaxTimeline events, the timeline keeps the first and the
// latest MaxTimeline-1.
func TestTimelineKeepsFirstAndLatest(t *testing.T) {
	var r Request
	for seq := 1; seq <= MaxTimeline+30; seq++ {
		r.AddToTimeline(TimelineEntry{Seq: seq, Status: StatusError, WebhookKey: "w", Error: "e", Action: "a"})
	}
	if len(r.Timeline) != MaxTimeline {
		t.Fatalf("%d entries, want %d", len(r.Timeline), MaxTimeline)
	}
	if r.Timeline[0].Seq != 1 || r.Timeline[1].Seq != 32 || r.Timeline[MaxTimeline-1].Seq != MaxTimeline+30 {
		t.Fatalf("seqs %d, %d … %d; want 1, 32 … %d", r.Timeline[0].Seq, r.Timeline[1].Seq, r.Timeline[MaxTimeline-1].Seq, MaxTimeline+30)
	}
	if e := r.Timeline[5]; e.Status != StatusError || e.WebhookKey != "w" || e.Error != "e" || e.Action != "a" {
		t.Fatalf("entry %+v does not carry the event's fields", e)
	}
}
