package runner

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/services/executor/internal/webhook"
	"github.com/policyhooks/policyhooks/shared/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Span attributes. Never an identity value, a URL's path or query, a secret or a body.
const (
	attrRequestID = attribute.Key("privacy_request.id")
)

// TraceMessage is the consumers' consume.Options.Trace: it starts the span of one message's
// handling, "privacy.request.<kind> process", as a child of the trace context in the message's
// headers; a message without one (an executed from a data layer that does not pass trace context
// on, a redelivered submission, an event published before tracing was turned on) joins its
// request's trace instead: the record's Trace, one read more. The first delivery of a submitted
// message without one starts a new trace. Nil when tracing is off.
func (r *Runner) TraceMessage() func(ctx context.Context, msg jetstream.Msg) (context.Context, func(string, error)) {
	t := r.d.Tracing
	if !t.Enabled() {
		return nil
	}
	return func(ctx context.Context, msg jetstream.Msg) (context.Context, func(string, error)) {
		subject := msg.Subject()
		var probe struct {
			ID        string `json:"id"`
			RequestID string `json:"request_id"`
		}
		_ = json.Unmarshal(msg.Data(), &probe)
		id := probe.ID
		if id == "" {
			id = probe.RequestID
		}
		if !event.ValidRequestID(id) {
			id = ""
		}
		parent := t.Extract(ctx, msg.Headers())
		md, _ := msg.Metadata()
		redelivered := md != nil && md.NumDelivered > 1
		if !trace.SpanContextFromContext(parent).IsValid() && id != "" && (subject != event.SubjectSubmitted || redelivered) {
			read, cancel := context.WithTimeout(ctx, 5*time.Second)
			if rec, _, err := r.d.Records.Load(read, id); err == nil {
				parent = t.Parent(ctx, rec.Trace)
			}
			cancel()
		}
		attrs := []attribute.KeyValue{
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", subject),
		}
		if md != nil {
			attrs = append(attrs, attribute.Int64("messaging.nats.redelivery_count", int64(md.NumDelivered)-1))
		}
		if id != "" {
			attrs = append(attrs, attrRequestID.String(id))
		}
		ctx, span := t.Start(parent, "privacy.request."+messageKind(subject)+" process",
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
		return ctx, func(fate string, _ error) {
			span.SetAttributes(attribute.String("policyhooks.message.fate", fate))
			if fate == "term" {
				span.SetStatus(codes.Error, "message terminated")
			}
			span.End()
		}
	}
}

// messageKind is the kind of message subject names: submitted, executed, resume, timer.pause...
func messageKind(subject string) string {
	kind := strings.TrimPrefix(subject, "privacy.request.")
	if rest, ok := strings.CutPrefix(kind, "timer.fire."); ok {
		k, _, _ := strings.Cut(rest, ".")
		return "timer." + k
	}
	return kind
}

// startCall starts the client span of one attempt of the call of w to rawURL (a child of the
// message's span in ctx); the span names the URL's host, never its path or query.
func (u *run) startCall(ctx context.Context, w event.PlanWebhook, rawURL string) (context.Context, trace.Span) {
	if !u.r.d.Tracing.Enabled() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	attrs := []attribute.KeyValue{
		attrRequestID.String(u.id),
		attribute.String("http.request.method", "POST"),
		attribute.String("policyhooks.connection_key", w.ConnectionKey),
		attribute.String("policyhooks.webhook_key", w.Key),
		attribute.String("policyhooks.webhook.direction", string(w.Direction)),
		attribute.String("policyhooks.webhook.callback_type", string(u.rec.CallbackType())),
		attribute.Int("policyhooks.webhook.attempt", u.rec.Attempts()+1),
	}
	if pu, err := url.Parse(rawURL); err == nil {
		attrs = append(attrs, attribute.String("server.address", pu.Hostname()))
		if p, err := strconv.Atoi(pu.Port()); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		} else if pu.Scheme == "https" {
			attrs = append(attrs, attribute.Int("server.port", 443))
		} else if pu.Scheme == "http" {
			attrs = append(attrs, attribute.Int("server.port", 80))
		}
	}
	return u.r.d.Tracing.Start(ctx, "webhook call", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endCall ends the span of a call attempt with its HTTP status and outcome (done, ignored_status,
// retry, refused, interrupted).
func endCall(span trace.Span, res webhook.Result, outcome string) {
	if !span.IsRecording() {
		return
	}
	if res.Status > 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.Status))
	}
	span.SetAttributes(attribute.String("policyhooks.webhook.outcome", outcome))
	switch outcome {
	case "retry", "refused", "interrupted":
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// statusEvent notes a status change on the span of the run that wrote it: the request's last
// event (complete, denied, error) says how its trace ends.
func statusEvent(ctx context.Context, ev event.StatusChanged) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("privacy_request.status", string(ev.Status)),
		attribute.String("privacy_request.step", string(ev.Step)),
		attribute.Int("privacy_request.event_seq", ev.Seq),
	}
	if ev.WebhookKey != "" {
		attrs = append(attrs, attribute.String("policyhooks.webhook_key", ev.WebhookKey))
	}
	if ev.Action != "" {
		attrs = append(attrs, attribute.String("privacy_request.action", ev.Action))
	}
	span.AddEvent("privacy.request.status."+string(ev.Status), trace.WithAttributes(attrs...))
}
