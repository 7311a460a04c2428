// Package consume runs a durable JetStream consumer: one loop fetches messages, runs a handler per
// message in its own goroutine within a concurrency bound, keeps each message alive while its
// handler works, and maps the handler's result to Ack, NakWithDelay or TermWithReason.
package consume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Handler handles one message. nil acks it; an error made by Permanent terminates it; ErrAbandon
// leaves it alone (it is redelivered after the ack wait); any other error naks it with the delay
// given by Retry, or DefaultRetryDelay.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// DefaultRetryDelay is the redelivery delay of an error that does not name one.
const DefaultRetryDelay = time.Second

// ErrAbandon makes the loop neither ack nor nak the message, as if the process had died.
var ErrAbandon = errors.New("consume: message abandoned")

type retryError struct {
	delay time.Duration
	err   error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Retry returns err marked for redelivery after delay.
func Retry(delay time.Duration, err error) error { return &retryError{delay: delay, err: err} }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent returns err marked as never worth redelivering.
func Permanent(err error) error { return &permanentError{err: err} }

// Options tune a Loop.
type Options struct {
	// Slots bounds the handlers running at once; it may be shared by several loops.
	Slots chan struct{}
	// KeepAlive is how often a message being handled is marked in progress.
	KeepAlive time.Duration
	// Batch is how many messages the client buffers.
	Batch int
	// OnStart and OnDone are called around each handler (metrics).
	OnStart, OnDone func()
}

// Loop is a running consumer loop.
type Loop struct {
	done chan struct{}
}

// Start consumes cons until ctx ends. Handlers get a context that ends with ctx.
func Start(ctx context.Context, cons jetstream.Consumer, h Handler, opt Options, log zerolog.Logger) (*Loop, error) {
	it, err := cons.Messages(jetstream.PullMaxMessages(max(opt.Batch, 1)))
	if err != nil {
		return nil, fmt.Errorf("consume: messages: %w", err)
	}
	l := &Loop{done: make(chan struct{})}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			msg, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
					return
				}
				log.Warn().Err(err).Msg("consume: next message")
				continue
			}
			select {
			case opt.Slots <- struct{}{}:
			case <-ctx.Done():
				return // not acked: redelivered to another worker
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-opt.Slots }()
				handle(ctx, msg, h, opt, log)
			}()
		}
	}()
	return l, nil
}

// Wait blocks until the loop stopped and every handler returned.
func (l *Loop) Wait() { <-l.done }

func handle(ctx context.Context, msg jetstream.Msg, h Handler, opt Options, log zerolog.Logger) {
	if opt.OnStart != nil {
		opt.OnStart()
		defer opt.OnDone()
	}
	// The keep-alive is a timer, not a goroutine per message: with thousands of messages in
	// flight the goroutines' stacks were a large part of the memory. A mark in progress that is
	// running when the handler returns finishes before the message is acked.
	var kmu sync.Mutex
	stopped := false
	kmu.Lock()
	var keep *time.Timer
	keep = time.AfterFunc(opt.KeepAlive, func() {
		kmu.Lock()
		defer kmu.Unlock()
		if stopped {
			return
		}
		_ = msg.InProgress()
		keep.Reset(opt.KeepAlive)
	})
	kmu.Unlock()
	err := safeHandle(ctx, msg, h)
	kmu.Lock()
	stopped = true
	keep.Stop()
	kmu.Unlock()
	var perm *permanentError
	var retry *retryError
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			log.Warn().Err(aerr).Str("subject", msg.Subject()).Msg("consume: ack")
		}
	case errors.Is(err, ErrAbandon):
	case errors.As(err, &perm):
		log.Error().Err(err).Str("subject", msg.Subject()).Msg("consume: message terminated")
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	default:
		delay := DefaultRetryDelay
		if errors.As(err, &retry) {
			delay = retry.delay
		}
		if ctx.Err() == nil {
			log.Debug().Err(err).Str("subject", msg.Subject()).Dur("delay", delay).Msg("consume: retry later")
		}
		_ = msg.NakWithDelay(delay)
	}
}

func safeHandle(ctx context.Context, msg jetstream.Msg, h Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consume: handler panicked: %v", p)
		}
	}()
	return h(ctx, msg)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
