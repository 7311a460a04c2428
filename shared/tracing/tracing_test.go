package tracing

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSetupOnlyWhenAsked(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		on   bool
	}{
		{"empty environment", nil, false},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"exporter OTLP, any case", map[string]string{"OTEL_TRACES_EXPORTER": " OTLP "}, true},
		{"base endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.example/v1/traces"}, true},
		{"endpoint, exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{"exporter none", map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{"SDK disabled wins over the exporter", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false},
		{"SDK disabled wins over an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318", "OTEL_SDK_DISABLED": "TRUE"}, false},
		{"SDK disabled false", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318", "OTEL_SDK_DISABLED": "false"}, true},
		{"other OTEL variables alone", map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Setup(context.Background(), "executor", envOf(tt.env))
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer p.Shutdown(context.Background())
			if p.Enabled() != tt.on {
				t.Fatalf("Enabled() = %v, want %v", p.Enabled(), tt.on)
			}
		})
	}
}

func TestSetupRefusesWhatItCannotDo(t *testing.T) {
	tests := []struct {
		env  map[string]string
		name string // the variable the error must name
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://user:secret@x/v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
	}
	for _, tt := range tests {
		p, err := Setup(context.Background(), "executor", envOf(tt.env))
		if err == nil || p != nil || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("Setup(%v) = %v, %v; want an error naming %s", tt.env, p, err, tt.name)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q echoes the endpoint", err)
		}
	}
}

// TestOffCostsNothing: a nil Provider starts no span, extracts no parent and nothing is injected.
func TestOffCostsNothing(t *testing.T) {
	var p *Provider
	h := nats.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := p.Extract(context.Background(), h)
	ctx = p.Parent(ctx, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx, span := p.Start(ctx, "x")
	defer span.End()
	if span.IsRecording() || trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("tracing off made a span or a parent")
	}
	ctx, child := Child(ctx, "y")
	defer child.End()
	out, hh := nats.Header{}, http.Header{}
	Inject(ctx, out)
	InjectHTTP(ctx, hh)
	if len(out) != 0 || len(hh) != 0 || Traceparent(ctx) != "" {
		t.Fatalf("tracing off injected %v / %v / %q", out, hh, Traceparent(ctx))
	}
}

// TestCarrierRoundTrip: a span's context goes into NATS headers and comes back as the parent of
// the next span, in the same trace, tracestate included.
func TestCarrierRoundTrip(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := WithExporter("executor", exp)
	defer p.Shutdown(context.Background())

	in := nats.Header{}
	in.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in.Set("tracestate", "vendor=opaque")
	ctx, span := p.Start(p.Extract(context.Background(), in), "privacy.request.submitted process")
	h := nats.Header{}
	Inject(ctx, h)
	if got := h.Get("tracestate"); got != "vendor=opaque" {
		t.Errorf("tracestate = %q, want it carried on", got)
	}
	tp := h.Get("traceparent")
	if tp == "" || tp != Traceparent(ctx) || !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Fatalf("traceparent = %q, Traceparent = %q; want the extracted trace", tp, Traceparent(ctx))
	}
	span.End()

	next, span2 := p.Start(p.Extract(context.Background(), h), "privacy.request.resume process")
	_, child := Child(next, "webhook call")
	child.End()
	span2.End()
	_, span3 := p.Start(p.Parent(context.Background(), tp), "privacy.request.timer.pause process")
	span3.End()

	spans := exp.GetSpans()
	if len(spans) != 4 {
		t.Fatalf("%d spans exported, want 4", len(spans))
	}
	first := spans[0].SpanContext
	for _, s := range spans {
		if s.SpanContext.TraceID() != first.TraceID() {
			t.Errorf("span %s in trace %s, want %s", s.Name, s.SpanContext.TraceID(), first.TraceID())
		}
	}
	if spans[0].Parent.SpanID().String() != "00f067aa0ba902b7" || !spans[0].Parent.IsRemote() {
		t.Errorf("first span's parent = %v, want the remote 00f067aa0ba902b7", spans[0].Parent)
	}
	if spans[2].Parent.SpanID() != first.SpanID() || spans[3].Parent.SpanID() != first.SpanID() {
		t.Errorf("parents %s and %s, want %s", spans[2].Parent.SpanID(), spans[3].Parent.SpanID(), first.SpanID())
	}
	if spans[1].Parent.SpanID() != spans[2].SpanContext.SpanID() {
		t.Errorf("the child's parent is %s, want %s", spans[1].Parent.SpanID(), spans[2].SpanContext.SpanID())
	}
	if got := spans[0].Resource.Attributes(); !hasServiceName(got, "executor") {
		t.Errorf("resource %v, want service.name executor", got)
	}
}

func hasServiceName(kvs []attribute.KeyValue, want string) bool {
	for _, kv := range kvs {
		if kv.Key == "service.name" && kv.Value.AsString() == want {
			return true
		}
	}
	return false
}

// TestServiceNameFromEnvironment: OTEL_SERVICE_NAME replaces the service's own name.
func TestServiceNameFromEnvironment(t *testing.T) {
	p, err := Setup(context.Background(), "executor", envOf(map[string]string{
		"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "executor-eu"}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	exp := tracetest.NewInMemoryExporter()
	p.tp.RegisterSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp))
	_, span := p.Start(context.Background(), "x")
	span.End()
	if s := exp.GetSpans(); len(s) != 1 || !hasServiceName(s[0].Resource.Attributes(), "executor-eu") {
		t.Fatalf("spans %v, want one of service executor-eu", s)
	}
}
