package app_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestIdentityExpiryWhilePaused pins SPEC §5.1: a paused request whose identity expires (IDENTITY_TTL)
// before its resume token does goes to error, naming the webhook that halted it.
func TestIdentityExpiryWhilePaused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config(func(c *app.Config) {
		c.IdentityTTL = 2 * time.Second
		c.PauseTimeout = time.Hour
	}))
	e.putPlan("forgetful", []hook{{Key: "halter", Direction: event.TwoWay, URL: e.rc.URL("/halter")}}, nil)
	e.rc.On("/halter", seq(ok(`{"halt": true}`)))
	e.submit("pri_ident_expiry", "forgetful", identity("a@example.com", ""))
	e.waitStatus("pri_ident_expiry", 10*time.Second, event.StatusPaused)
	r := e.waitStatus("pri_ident_expiry", 15*time.Second, event.StatusError)
	if r.Error == nil || !strings.Contains(r.Error.Message, "identity") || r.Error.WebhookKey != "halter" {
		t.Fatalf("record %s, want error: the identity expired, at webhook halter", describe(r))
	}
}

// TestPlanSecretsUnderPreviousKey pins SPEC §2's key rotation on the executor's side: plans whose
// secrets were sealed under the old APP_ENCRYPTION_KEY are still called while it is given as
// APP_ENCRYPTION_KEY_PREVIOUS (config re-seals them later), and refused without it.
func TestPlanSecretsUnderPreviousKey(t *testing.T) {
	t.Parallel()
	const newKey = "fedcba9876543210fedcba9876543210"
	tests := []struct {
		name       string
		previous   string
		wantStatus event.Status
	}{
		{"old key given as previous", appKey, event.StatusComplete},
		{"old key forgotten", "", event.StatusError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.start(e.config(func(c *app.Config) { c.AppKey, c.PreviousAppKey = newKey, tt.previous }))
			e.putPlan("rotated", []hook{{Key: "hook", URL: e.rc.URL("/hook")}}, nil) // sealed under appKey
			e.submit("pri_rotated", "rotated", identity("a@example.com", ""))
			r := e.waitStatus("pri_rotated", 10*time.Second, event.StatusComplete, event.StatusError)
			if r.Status != tt.wantStatus {
				t.Fatalf("record %s, want %s", describe(r), tt.wantStatus)
			}
			if r.Status == event.StatusError && !strings.Contains(r.Error.Message, "cannot be opened") {
				t.Fatalf("error %q, want the secrets refused", r.Error.Message)
			}
			wantCalls := map[event.Status]int{event.StatusComplete: 1, event.StatusError: 0}[tt.wantStatus]
			if n := len(e.rc.CallsOf("pri_rotated", "/hook")); n != wantCalls {
				t.Fatalf("%d calls, want %d", n, wantCalls)
			}
		})
	}
}

// TestAnswerOverOneMiB pins SPEC §6's answer cap: only 1 MiB of an answer is read, so a two-way
// answer larger than that is not valid JSON and sets error, while a one-way webhook's large answer
// is simply done.
func TestAnswerOverOneMiB(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	big := `{"halt": false, "padding": "` + strings.Repeat("a", 2<<20) + `"}`
	e.putPlan("big_two_way", []hook{{Key: "talker", Direction: event.TwoWay, URL: e.rc.URL("/big")}}, nil)
	e.putPlan("big_one_way", []hook{{Key: "pinger", URL: e.rc.URL("/big")}}, nil)
	e.rc.On("/big", func(int, testkit.Call) testkit.Answer { return ok(big) })

	e.submit("pri_big_two", "big_two_way", identity("a@example.com", ""))
	r := e.waitStatus("pri_big_two", 10*time.Second, event.StatusComplete, event.StatusError)
	if r.Status != event.StatusError || r.Error == nil || r.Error.WebhookKey != "talker" ||
		!strings.Contains(r.Error.Message, "not JSON") {
		t.Fatalf("two-way with a 2 MiB answer: record %s, want error at talker", describe(r))
	}
	e.submit("pri_big_one", "big_one_way", identity("a@example.com", ""))
	if r := e.waitStatus("pri_big_one", 10*time.Second, event.StatusComplete, event.StatusError); r.Status != event.StatusComplete {
		t.Fatalf("one-way with a 2 MiB answer: record %s, want complete", describe(r))
	}
}

// TestUndecodableControlEventsTerminated: an executed, resume or retry event that does not decode is
// not redelivered forever: it is terminated with the reason (JetStream publishes a terminated-message
// advisory for it) and nothing stays pending on the control consumer.
func TestUndecodableControlEventsTerminated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start(e.config())
	advisories, err := e.nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + event.Stream + "." + app.ConsumerControl)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		event.SubjectExecuted: `not json`,
		event.SubjectResume:   `{"request_id": "has space"}`,
		event.SubjectRetry:    `[]`,
	}
	for subject, body := range bad {
		e.publish(subject, []byte(body), "")
	}
	var reasons []string
	for range bad {
		m, err := advisories.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("terminated advisories %q, want %d: %v", reasons, len(bad), err)
		}
		var adv struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(m.Data, &adv)
		reasons = append(reasons, adv.Reason)
	}
	for _, r := range reasons {
		if !strings.Contains(r, "undecodable") {
			t.Errorf("termination reason %q, want it to say the event is undecodable", r)
		}
	}
	info := e.consumerInfo(app.ConsumerControl)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("control consumer: %d pending, %d ack pending, %d redelivered; want 0", info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
}
