package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/policyhooks/policyhooks/shared/event"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is a span as an OTLP/HTTP export request carried it.
type otlpSpan struct {
	service, name, traceID, spanID, parentID string
	// values are every attribute value of the span, its events and its resource, as text.
	values []string
	events []string
	attrs  map[string]string
}

// otlpCollector is a real OTLP/HTTP (protobuf) trace receiver: it decodes the export requests the
// services' exporters send and keeps their spans.
type otlpCollector struct {
	url   string
	mu    sync.Mutex
	spans []otlpSpan
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	c := &otlpCollector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("OTLP export request does not decode: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(&req)
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

func anyText(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	default:
		b, _ := json.Marshal(v.GetValue())
		return string(b)
	}
}

func (c *otlpCollector) add(req *collectortrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		var resValues []string
		for _, kv := range rs.GetResource().GetAttributes() {
			resValues = append(resValues, anyText(kv.GetValue()))
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := otlpSpan{service: service, name: s.GetName(), traceID: hex.EncodeToString(s.GetTraceId()),
					spanID: hex.EncodeToString(s.GetSpanId()), parentID: hex.EncodeToString(s.GetParentSpanId()),
					values: append([]string{s.GetName()}, resValues...), attrs: map[string]string{}}
				for _, kv := range s.GetAttributes() {
					sp.attrs[kv.GetKey()] = anyText(kv.GetValue())
					sp.values = append(sp.values, anyText(kv.GetValue()))
				}
				for _, ev := range s.GetEvents() {
					sp.events = append(sp.events, ev.GetName())
					sp.values = append(sp.values, ev.GetName())
					for _, kv := range ev.GetAttributes() {
						sp.values = append(sp.values, anyText(kv.GetValue()))
					}
				}
				for _, l := range s.GetLinks() {
					sp.values = append(sp.values, hex.EncodeToString(l.GetTraceId()))
				}
				c.spans = append(c.spans, sp)
			}
		}
	}
}

func (c *otlpCollector) all() []otlpSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]otlpSpan(nil), c.spans...)
}

// traceIDOf returns the trace id of a W3C traceparent header ("" when malformed).
func traceIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}

// TestTracingOneTracePerRequest runs a request through the whole stack with tracing on, exported
// over OTLP/HTTP to a real receiver: a two-way pre-webhook halts, the receiver resumes through the
// callback service, a one-way pre-webhook, the data layer's execute/executed (passing the trace
// context on, as docs/events.md asks), a post-webhook. Every span of the request is in one trace,
// which every webhook call names in its traceparent; every span's parent was exported; no span
// carries the identity or a webhook URL's path. A second request's data layer passes no trace
// context on: its executed joins the request's trace through the record.
func TestTracingOneTracePerRequest(t *testing.T) {
	col := newOTLPCollector(t)
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "await", "OTEL_EXPORTER_OTLP_ENDPOINT": col.url})
	f.answer("/t-halt", `{"halt": true}`)
	f.policy("traced", []hookSpec{{"ask", "two_way", "/t-halt"}, {"next", "one_way", "/t-next"}},
		[]hookSpec{{"after", "one_way", "/t-post"}})

	f.policy("traced_plain", nil, []hookSpec{{"plain_after", "one_way", "/t-plain"}})

	// A data layer that passes the trace context of execute on in executed, but for the requests
	// of policy traced_plain (as one written before tracing: their executed joins the request's
	// trace through the record).
	sub, err := f.nc.Subscribe(event.SubjectExecute, func(m *nats.Msg) {
		var ex event.Execute
		_ = json.Unmarshal(m.Data, &ex)
		b, _ := json.Marshal(event.Executed{ID: ex.ID, ExecutionID: ex.ExecutionID, Succeeded: true})
		out := &nats.Msg{Subject: event.SubjectExecuted, Data: b, Header: nats.Header{}}
		if ex.PolicyKey == "traced_plain" {
			_, _ = f.js.PublishMsg(f.ctx, out)
			return
		}
		for _, k := range []string{"traceparent", "tracestate"} {
			if v := m.Header.Get(k); v != "" {
				out.Header.Set(k, v)
			}
		}
		_, _ = f.js.PublishMsg(f.ctx, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const id, email = "pri_traced_1", "traced-person@example.com"
	f.submit(id, "traced", email)
	halt := f.waitCalls("/t-halt", 1, 20*time.Second)[0]
	f.waitStatus(id, "paused", 10*time.Second)
	// The receiver resumes as one that joins traces would: with the traceparent it was called with.
	req, _ := http.NewRequestWithContext(f.ctx, http.MethodPost, halt.Header.Get("reply-to"), strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+halt.Header.Get("reply-to-token"))
	req.Header.Set("traceparent", halt.Header.Get("traceparent"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("resume: %d, want 200", resp.StatusCode)
	}
	f.waitStatus(id, "complete", 20*time.Second)
	const plainID = "pri_traced_plain"
	f.submit(plainID, "traced_plain", email)
	f.waitStatus(plainID, "complete", 20*time.Second)
	// Stopping the stack shuts the providers down, which exports every span still buffered.
	if err := f.stack.Wait(); err != nil {
		t.Fatal(err)
	}

	spans := col.all()
	var root *otlpSpan
	for i, s := range spans {
		if s.name == "privacy.request.submitted process" && s.attrs["privacy_request.id"] == id {
			if root != nil {
				t.Fatalf("two submitted spans for %s", id)
			}
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no submitted span among %d spans exported", len(spans))
	}
	if root.parentID != "" || root.service != "executor" {
		t.Errorf("submitted span: parent %q, service %q; want a root of the executor", root.parentID, root.service)
	}
	traceID := root.traceID

	// The receivers saw the trace on every call.
	for _, path := range []string{"/t-halt", "/t-next", "/t-post"} {
		calls := f.callsTo(path)
		if len(calls) != 1 {
			t.Fatalf("%s called %d times, want 1", path, len(calls))
		}
		if got := traceIDOf(calls[0].Header.Get("traceparent")); got != traceID {
			t.Errorf("%s: traceparent %q, want trace %s", path, calls[0].Header.Get("traceparent"), traceID)
		}
	}

	// Every span about the request is in its trace, and every parent in the trace was exported.
	inTrace := map[string]otlpSpan{}
	for _, s := range spans {
		if s.attrs["privacy_request.id"] == id && s.traceID != traceID {
			t.Errorf("span %q of %s (service %s) is in trace %s, want %s", s.name, id, s.service, s.traceID, traceID)
		}
		if s.traceID == traceID {
			inTrace[s.spanID] = s
		}
	}
	count := map[string]int{}
	var events []string
	for _, s := range inTrace {
		t.Logf("span %s (parent %s) %s %q events %q", s.spanID, s.parentID, s.service, s.name, s.events)
	}
	for _, s := range inTrace {
		count[s.name]++
		events = append(events, s.events...)
		if s.spanID != root.spanID {
			if _, ok := inTrace[s.parentID]; !ok {
				t.Errorf("span %q (service %s) names parent %q, which is not in the trace", s.name, s.service, s.parentID)
			}
		}
		for _, v := range s.values {
			if strings.Contains(v, email) || strings.Contains(v, "traced-person") {
				t.Errorf("span %q carries the identity: %q", s.name, v)
			}
			if strings.Contains(v, "/t-") {
				t.Errorf("span %q carries a webhook URL's path: %q", s.name, v)
			}
		}
	}
	for name, n := range map[string]int{
		"privacy.request.submitted process": 1,
		"webhook call":                      3,
		"privacy.request.execute publish":   1,
		"privacy.request.executed process":  1,
		"privacy.request.resume publish":    1,
		"privacy.request.resume process":    1,
	} {
		if count[name] < n {
			t.Errorf("%d spans %q in the trace, want at least %d (spans: %v)", count[name], name, n, count)
		}
	}
	keys := map[string]bool{}
	for _, s := range inTrace {
		if s.name == "webhook call" {
			keys[s.attrs["policyhooks.webhook_key"]] = true
			if s.attrs["http.response.status_code"] != "200" || s.attrs["policyhooks.webhook.outcome"] != "done" ||
				s.attrs["server.address"] != "127.0.0.1" {
				t.Errorf("webhook call span attributes %v, want status 200, outcome done, server.address 127.0.0.1", s.attrs)
			}
		}
		if s.name == "privacy.request.resume publish" && s.service != "callback" {
			t.Errorf("resume publish span of service %q, want callback", s.service)
		}
	}
	if !keys["ask"] || !keys["next"] || !keys["after"] {
		t.Errorf("webhook call spans of %v, want ask, next and after", keys)
	}
	if !contains(events, "privacy.request.status.complete") {
		t.Errorf("no span of the trace notes the status complete; events %q", events)
	}

	// The executed without trace context is a child of its request's submitted span.
	var plainRoot, plainExecuted *otlpSpan
	for i, s := range spans {
		switch {
		case s.attrs["privacy_request.id"] != plainID:
		case s.name == "privacy.request.submitted process":
			plainRoot = &spans[i]
		case s.name == "privacy.request.executed process":
			plainExecuted = &spans[i]
		}
	}
	if plainRoot == nil || plainExecuted == nil {
		t.Fatalf("spans of %s: submitted %v, executed %v; want both", plainID, plainRoot, plainExecuted)
	}
	if plainRoot.traceID == traceID || plainExecuted.traceID != plainRoot.traceID || plainExecuted.parentID != plainRoot.spanID {
		t.Errorf("executed without trace context: trace %s parent %s; want trace %s (not %s), parent %s",
			plainExecuted.traceID, plainExecuted.parentID, plainRoot.traceID, traceID, plainRoot.spanID)
	}
	if got := traceIDOf(f.callsTo("/t-plain")[0].Header.Get("traceparent")); got != plainRoot.traceID {
		t.Errorf("/t-plain: trace %q, want %s", got, plainRoot.traceID)
	}
}

// TestTracingOffSendsNoTraceparent: without OTEL_* variables nothing is traced: no traceparent
// reaches the receiver, and the record keeps no trace.
func TestTracingOffSendsNoTraceparent(t *testing.T) {
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip"})
	f.policy("untraced", []hookSpec{{"first", "one_way", "/u-first"}}, nil)
	// An upstream that traces its own submissions: with tracing off, its context is not carried on.
	b, _ := json.Marshal(event.Submitted{ID: "pri_untraced", PolicyKey: "untraced", Identity: event.Identity{Email: ptr("u@example.com")}})
	m := &nats.Msg{Subject: event.SubjectSubmitted, Data: b, Header: nats.Header{}}
	m.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if _, err := f.js.PublishMsg(f.ctx, m); err != nil {
		t.Fatal(err)
	}
	f.waitStatus("pri_untraced", "complete", 20*time.Second)
	calls := f.callsTo("/u-first")
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := calls[0].Header.Get(k); v != "" {
			t.Errorf("tracing off, the call carried %s: %q", k, v)
		}
	}
	kv, err := f.js.KeyValue(context.Background(), event.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), event.KVKey("pri_untraced"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(entry.Value()), `"trace"`) {
		t.Errorf("tracing off, the record keeps a trace: %s", entry.Value())
	}
}

func ptr(s string) *string { return &s }
