// Package tracing is the services' OpenTelemetry tracing: Setup reads the standard OTEL_*
// variables and returns a Provider that exports spans over OTLP/HTTP, or nil when tracing is off
// (the default); a nil Provider starts no spans and propagates nothing. Trace context travels as
// W3C Trace Context (traceparent, tracestate) in NATS headers (Inject, Provider.Extract) and in
// webhook calls' HTTP headers (InjectHTTP). Each service has its own Provider rather than the
// process-global one, so that the local stack runs three services in one process, each with its
// own service.name.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of every span the services start.
const Scope = "github.com/policyhooks/policyhooks"

// propagator is W3C Trace Context: the traceparent and tracestate headers.
var propagator = propagation.TraceContext{}

// Provider starts the spans of one service. A nil *Provider is tracing off: its methods do
// nothing and cost nothing.
type Provider struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// Enabled reports whether tracing is on.
func (p *Provider) Enabled() bool { return p != nil }

// Setup reads the standard OpenTelemetry variables through getenv and returns the Provider of
// service, or nil when tracing is off. Tracing is on when OTEL_TRACES_EXPORTER is otlp, or when
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set and
// OTEL_TRACES_EXPORTER is not none; OTEL_SDK_DISABLED=true turns it off whatever else is set.
// When on, spans go in batches to an OTLP/HTTP (protobuf) exporter at the endpoint given
// (http://localhost:4318/v1/traces by default); the exporter reads the other
// OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression, certificates) from the process
// environment, and the SDK OTEL_TRACES_SAMPLER and OTEL_BSP_*. OTEL_SERVICE_NAME replaces service
// as the resource's service.name. An unsupported exporter or protocol, or an endpoint that is not
// an http(s) URL, is an error naming the variable.
func Setup(ctx context.Context, service string, getenv func(string) string) (*Provider, error) {
	on, opts, err := settings(getenv)
	if err != nil || !on {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		service = name
	}
	return newProvider(service, sdktrace.WithBatcher(exp)), nil
}

// settings decides whether tracing is on and with which exporter options.
func settings(getenv func(string) string) (bool, []otlptracehttp.Option, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return false, nil, nil
	}
	exporter := strings.ToLower(env("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "", "otlp", "none":
	default:
		return false, nil, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exporter)
	}
	if exporter == "none" {
		return false, nil, nil
	}
	traces, base := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env("OTEL_EXPORTER_OTLP_ENDPOINT")
	if exporter == "" && traces == "" && base == "" {
		return false, nil, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := env(k); p != "" && p != "http/protobuf" {
			return false, nil, fmt.Errorf("%s: %q is not supported (http/protobuf)", k, p)
		}
	}
	var opts []otlptracehttp.Option
	switch {
	case traces != "":
		if err := checkEndpoint(traces); err != nil {
			return false, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: %w", err)
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(traces))
	case base != "":
		if err := checkEndpoint(base); err != nil {
			return false, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
		// The base endpoint gets the signal's path, as the specification says.
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimRight(base, "/")+"/v1/traces"))
	}
	return true, opts, nil
}

// checkEndpoint refuses an endpoint that is not an absolute http(s) URL; its value is not echoed
// (it may carry credentials).
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http:// or https:// URL")
	}
	return nil
}

// WithExporter returns a Provider of service that hands every span to exp as it ends (no batch):
// the test hook, e.g. with an in-memory exporter (go.opentelemetry.io/otel/sdk/trace/tracetest).
func WithExporter(service string, exp sdktrace.SpanExporter) *Provider {
	return newProvider(service, sdktrace.WithSyncer(exp))
}

func newProvider(service string, exporter sdktrace.TracerProviderOption) *Provider {
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		res = resource.NewSchemaless(attribute.String("service.name", service))
	}
	tp := sdktrace.NewTracerProvider(exporter, sdktrace.WithResource(res))
	return &Provider{tp: tp, tracer: tp.Tracer(Scope)}
}

// Shutdown exports the spans still buffered and stops the provider.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// ShutdownWithin shuts p down, giving the export of the spans still buffered at most d (a
// collector that is down must not hold up a stopping service), and logs a failure.
func ShutdownWithin(p *Provider, d time.Duration, log zerolog.Logger) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("tracing: export of the last spans")
	}
}

// Start starts a span as a child of the span or remote span context in ctx (a root without one).
// Off, it returns ctx and a span that records nothing.
func (p *Provider) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if p == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return p.tracer.Start(ctx, name, opts...)
}

// Extract returns ctx with the remote span context of h's traceparent and tracestate, if valid.
// Off, it returns ctx.
func (p *Provider) Extract(ctx context.Context, h nats.Header) context.Context {
	if p == nil || h == nil {
		return ctx
	}
	return propagator.Extract(ctx, Header(h))
}

// Parent returns ctx with the remote span context named by traceparent (a W3C traceparent value,
// as Traceparent returns; invalid or empty ones are ignored). Off, it returns ctx.
func (p *Provider) Parent(ctx context.Context, traceparent string) context.Context {
	if p == nil || traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// Child starts a span as a child of the span in ctx, with that span's provider: none when ctx
// holds no span of a Provider (tracing off, or only a remote parent).
func Child(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(Scope).Start(ctx, name, opts...)
}

// Inject sets traceparent (and tracestate when there is one) in h from the span context in ctx;
// it sets nothing when ctx has none (tracing off).
func Inject(ctx context.Context, h nats.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, Header(h))
	}
}

// NewMsg returns a message of subject with data, carrying the trace context of ctx in its headers
// when ctx has one (and no headers otherwise).
func NewMsg(ctx context.Context, subject string, data []byte) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: data}
	if trace.SpanContextFromContext(ctx).IsValid() {
		m.Header = nats.Header{}
		propagator.Inject(ctx, Header(m.Header))
	}
	return m
}

// InjectHTTP is Inject for an HTTP request's headers.
func InjectHTTP(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// Traceparent returns the W3C traceparent of the span context in ctx, "" when it has none.
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c.Get("traceparent")
}

// Header carries trace context in NATS message headers (propagation.TextMapCarrier). NATS header
// names are case-sensitive; W3C Trace Context uses traceparent and tracestate in lower case.
type Header nats.Header

// Get returns the value of key.
func (h Header) Get(key string) string { return nats.Header(h).Get(key) }

// Set sets key to value.
func (h Header) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys returns the header names.
func (h Header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
