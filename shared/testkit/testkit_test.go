package testkit_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// fakeTB records a failure instead of failing the test; Fatal and Fatalf end the goroutine that
// called them, as testing.T's do. Methods the kit should not call panic (the embedded nil TB).
type fakeTB struct {
	testing.TB
	failed atomic.Bool
	msg    atomic.Value
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg.Store(fmt.Sprintf(format, args...))
	f.failed.Store(true)
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeTB) message() string {
	m, _ := f.msg.Load().(string)
	return m
}

// withFake runs fn with a fakeTB on its own goroutine and returns the fake once fn has returned or
// called Fatal.
func withFake(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestEventually(t *testing.T) {
	tests := []struct {
		name     string
		within   time.Duration
		holdsAt  int // the poll at which cond starts to hold; -1 never
		wantFail bool
	}{
		{"holds at once", time.Second, 0, false},
		{"holds after a few polls", 5 * time.Second, 5, false},
		{"never holds", 150 * time.Millisecond, -1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var polls atomic.Int32
			start := time.Now()
			f := withFake(func(tb testing.TB) {
				testkit.Eventually(tb, tc.within, "the thing", func() bool {
					n := int(polls.Add(1)) - 1
					return tc.holdsAt >= 0 && n >= tc.holdsAt
				})
			})
			if f.failed.Load() != tc.wantFail {
				t.Fatalf("failed = %v (%q), want %v", f.failed.Load(), f.message(), tc.wantFail)
			}
			if !tc.wantFail {
				if got := int(polls.Load()); got != tc.holdsAt+1 {
					t.Fatalf("cond polled %d times, want %d (it held at poll %d)", got, tc.holdsAt+1, tc.holdsAt)
				}
				return
			}
			if el := time.Since(start); el < tc.within {
				t.Fatalf("failed after %s, before the %s it was given", el, tc.within)
			}
			if m := f.message(); !regexp.MustCompile(`^waited [0-9.]+m?s for the thing`).MatchString(m) {
				t.Fatalf("failure message %q, want it to name what and the time waited", m)
			}
		})
	}
}

func TestWaitFor(t *testing.T) {
	t.Run("returns the value once it holds", func(t *testing.T) {
		var n atomic.Int32
		got := testkit.WaitFor(t, 5*time.Second, "three", func() (int, bool) {
			v := int(n.Add(1))
			return v, v == 3
		})
		if got != 3 {
			t.Fatalf("got %d, want 3", got)
		}
	})
	t.Run("fails naming the last value", func(t *testing.T) {
		f := withFake(func(tb testing.TB) {
			testkit.WaitFor(tb, 50*time.Millisecond, "status complete", func() (string, bool) { return "paused", false })
			tb.Fatalf("WaitFor returned after its condition never held")
		})
		if m := f.message(); !f.failed.Load() || !strings.Contains(m, "status complete") || !strings.Contains(m, "paused") {
			t.Fatalf("failure %v %q, want it to name what and the last value", f.failed.Load(), m)
		}
	})
}

// post sends body to url with client and returns the status, body and one header of the answer.
func post(t *testing.T, client *http.Client, url, body string) (int, string, string) {
	t.Helper()
	res, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b), res.Header.Get("X-Test")
}

func TestReceiverCountsPerRequestAndPath(t *testing.T) {
	rc := testkit.NewReceiver(t)
	// /flaky fails the first call of each request; /echo answers the count.
	rc.On("/flaky", func(n int, c testkit.Call) testkit.Answer {
		if n == 0 {
			return testkit.Answer{Status: 503, Body: "try again"}
		}
		return testkit.Answer{Body: fmt.Sprint(n), Header: map[string]string{"X-Test": c.RequestID}}
	})
	rc.On("/echo", func(n int, c testkit.Call) testkit.Answer { return testkit.Answer{Body: fmt.Sprint(n)} })
	client := rc.Client()
	steps := []struct {
		id, path   string
		wantStatus int
		wantBody   string
		wantHeader string
	}{
		{"pri_a", "/flaky", 503, "try again", ""},
		{"pri_b", "/flaky", 503, "try again", ""},
		{"pri_a", "/flaky", 200, "1", "pri_a"},
		{"pri_a", "/echo", 200, "0", ""},
		{"pri_a", "/flaky", 200, "2", "pri_a"},
		{"pri_b", "/echo", 200, "0", ""},
		{"pri_b", "/flaky", 200, "1", "pri_b"},
		{"", "/echo", 200, "0", ""},
		{"pri_a", "/unscripted", 200, "", ""},
	}
	for i, s := range steps {
		body := `{"privacy_request_id":"` + s.id + `","n":` + fmt.Sprint(i) + `}`
		if s.id == "" {
			body = `{"n":` + fmt.Sprint(i) + `}`
		}
		status, b, h := post(t, client, rc.URL(s.path), body)
		if status != s.wantStatus || b != s.wantBody || h != s.wantHeader {
			t.Fatalf("step %d (%s %s): got %d %q header %q, want %d %q header %q", i, s.id, s.path, status, b, h, s.wantStatus, s.wantBody, s.wantHeader)
		}
	}
	if got, want := fmt.Sprint(rc.CallsOf("pri_b", "")), "[POST /flaky (pri_b) POST /echo (pri_b) POST /flaky (pri_b)]"; got != want {
		t.Errorf("calls of pri_b printed: got %s, want %s", got, want)
	}
	if got := len(rc.Calls()); got != len(steps) {
		t.Fatalf("Calls: got %d, want %d", got, len(steps))
	}
	for i, c := range rc.Calls() {
		if c.Method != http.MethodPost || c.Path != steps[i].path || c.RequestID != steps[i].id || c.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("call %d: got %s %s id %q, want POST %s id %q", i, c.Method, c.Path, c.RequestID, steps[i].path, steps[i].id)
		}
	}
	filters := []struct {
		id, path string
		want     []int // step indexes, in order
	}{
		{"pri_a", "/flaky", []int{0, 2, 4}},
		{"pri_b", "/flaky", []int{1, 6}},
		{"pri_a", "", []int{0, 2, 3, 4, 8}},
		{"", "/echo", []int{3, 5, 7}},
		{"pri_c", "", nil},
	}
	for _, f := range filters {
		got := rc.CallsOf(f.id, f.path)
		var idx []int
		for _, c := range got {
			var b struct{ N int }
			c.Decode(t, &b)
			idx = append(idx, b.N)
		}
		if fmt.Sprint(idx) != fmt.Sprint(f.want) {
			t.Errorf("CallsOf(%q, %q): got steps %v, want %v", f.id, f.path, idx, f.want)
		}
	}
}

func TestReceiverCAFileIsItsCertificate(t *testing.T) {
	rc := testkit.NewReceiver(t)
	pemBytes, err := os.ReadFile(rc.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("CAFile %s holds no PEM certificate", rc.CAFile())
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if status, _, _ := post(t, trusting, rc.URL("/x"), `{}`); status != 200 {
		t.Fatalf("a client trusting CAFile: status %d, want 200", status)
	}
	if _, err := http.Post(rc.URL("/x"), "application/json", strings.NewReader(`{}`)); err == nil {
		t.Fatal("a client trusting only the system roots reached the receiver")
	}
	if !strings.HasPrefix(rc.URL("/x"), "https://127.0.0.1:") {
		t.Fatalf("URL = %s, want https on loopback", rc.URL("/x"))
	}
}

func TestReceiverSleep(t *testing.T) {
	t.Run("delays the answer", func(t *testing.T) {
		rc := testkit.NewReceiver(t)
		rc.On("/slow", func(int, testkit.Call) testkit.Answer {
			return testkit.Answer{Status: 202, Sleep: 200 * time.Millisecond}
		})
		start := time.Now()
		if status, _, _ := post(t, rc.Client(), rc.URL("/slow"), `{}`); status != 202 {
			t.Fatalf("status %d, want 202", status)
		}
		if el := time.Since(start); el < 200*time.Millisecond {
			t.Fatalf("answered after %s, want at least the 200ms sleep", el)
		}
	})
	t.Run("ends when the client goes away", func(t *testing.T) {
		start := time.Now()
		// The receiver closes when the subtest ends, and Close waits for the handler.
		t.Run("call", func(t *testing.T) {
			rc := testkit.NewReceiver(t)
			rc.On("/hang", func(int, testkit.Call) testkit.Answer { return testkit.Answer{Sleep: time.Minute} })
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, rc.URL("/hang"), strings.NewReader(`{}`))
			if res, err := rc.Client().Do(req); err == nil {
				res.Body.Close()
				t.Fatal("the call returned before its client gave up")
			}
		})
		if el := time.Since(start); el > 20*time.Second {
			t.Fatalf("the receiver closed %s after the client went away; the sleep did not end", el)
		}
	})
}

func TestBucket(t *testing.T) {
	n := testkit.StartNATS(t)
	for _, name := range []string{event.BucketRequests, event.BucketIdentities, event.BucketPlans, event.BucketPlanSnapshots, event.BucketResumeTokens, event.BucketClients, event.BucketErrored, event.BucketHealth} {
		t.Run(name, func(t *testing.T) {
			kv := n.Bucket(t, name)
			if kv.Bucket() != name {
				t.Fatalf("bucket %q, want %q", kv.Bucket(), name)
			}
			if _, err := kv.Put(context.Background(), "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			again := n.Bucket(t, name)
			if e, err := again.Get(context.Background(), "k"); err != nil || string(e.Value()) != "v" {
				t.Fatalf("reopened %s: Get = %v, %v; want v", name, e, err)
			}
		})
	}
	t.Run("identities keep the TTL they were created with", func(t *testing.T) {
		n := testkit.StartNATS(t)
		if _, err := n.JS.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: event.BucketIdentities, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
		st, err := n.Bucket(t, event.BucketIdentities).Status(context.Background())
		if err != nil || st.TTL() != time.Hour {
			t.Fatalf("TTL after Bucket = %v (%v), want 1h", st, err)
		}
	})
	t.Run("unknown name fails", func(t *testing.T) {
		f := withFake(func(tb testing.TB) { n.Bucket(tb, "no_such_bucket") })
		if !f.failed.Load() || !strings.Contains(f.message(), "no_such_bucket") {
			t.Fatalf("failed %v %q, want a failure naming the bucket", f.failed.Load(), f.message())
		}
	})
}

func statusEvent(t *testing.T, id string, seq int, s event.Status) []byte {
	t.Helper()
	return []byte(fmt.Sprintf(`{"id":%q,"seq":%d,"status":%q,"at":"2025-03-01T12:00:00Z","step":"pre_webhooks"}`, id, seq, s))
}

func TestNATSRestartKeepsTheStream(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := context.Background()
	publish := func(subject string, data []byte) {
		t.Helper()
		if _, err := n.JS.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	publish(event.SubjectSubmitted, []byte(`{"id":"pri_1"}`))
	publish(event.StatusSubject(event.StatusPending), statusEvent(t, "pri_1", 1, event.StatusPending))
	publish(event.StatusSubject(event.StatusPaused), statusEvent(t, "pri_1", 2, event.StatusPaused))
	if _, err := n.Bucket(t, event.BucketRequests).Put(ctx, "pri_1", []byte(`{"status":"paused"}`)); err != nil {
		t.Fatal(err)
	}
	url := n.URL()

	n.Restart(t)

	if n.URL() != url {
		t.Fatalf("URL after restart %s, want the same %s", n.URL(), url)
	}
	// The same client works again and the new message lands after the kept ones.
	publish(event.StatusSubject(event.StatusComplete), statusEvent(t, "pri_1", 3, event.StatusComplete))
	tests := []struct {
		filter string
		want   []string // subjects, in stream order
	}{
		{"", []string{event.SubjectSubmitted, "privacy.request.status.pending", "privacy.request.status.paused", "privacy.request.status.complete"}},
		{event.SubjectAll, []string{event.SubjectSubmitted, "privacy.request.status.pending", "privacy.request.status.paused", "privacy.request.status.complete"}},
		{event.SubjectStatusPrefix + ">", []string{"privacy.request.status.pending", "privacy.request.status.paused", "privacy.request.status.complete"}},
		{event.StatusSubject(event.StatusPaused), []string{"privacy.request.status.paused"}},
		{event.SubjectRetry, nil},
	}
	for _, tc := range tests {
		var got []string
		for _, m := range n.Msgs(t, tc.filter) {
			got = append(got, m.Subject())
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Msgs(%q): got %v, want %v", tc.filter, got, tc.want)
		}
	}
	evs := n.StatusEvents(t, event.SubjectStatusPrefix+">")
	if len(evs) != 3 {
		t.Fatalf("StatusEvents: got %d, want 3", len(evs))
	}
	for i, want := range []event.Status{event.StatusPending, event.StatusPaused, event.StatusComplete} {
		if evs[i].ID != "pri_1" || evs[i].Seq != i+1 || evs[i].Status != want || evs[i].Step != event.StepPreWebhooks {
			t.Errorf("status event %d: got %+v, want pri_1 seq %d %s", i, evs[i], i+1, want)
		}
	}
	e, err := n.Bucket(t, event.BucketRequests).Get(ctx, "pri_1")
	if err != nil || string(e.Value()) != `{"status":"paused"}` {
		t.Fatalf("KV entry after restart: %v, %v", e, err)
	}
	f := withFake(func(tb testing.TB) { n.StatusEvents(tb, event.SubjectSubmitted) })
	if !f.failed.Load() || !strings.Contains(f.message(), "not a status event") {
		t.Fatalf("StatusEvents of a submitted event: failed %v %q, want a failure", f.failed.Load(), f.message())
	}
}
