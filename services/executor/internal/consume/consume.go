// Package consume runs a durable JetStream consumer: one loop fetches messages, runs a handler per
// message in its own goroutine within a concurrency bound (and a smaller bound on the handlers
// working at once), keeps each message alive while its handler works or waits, lets a handler
// suspend a long wait onto a fresh goroutine, and maps the handler's result to Ack, NakWithDelay or
// TermWithReason.
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
	// Slots bounds the messages being handled at once; it may be shared by several loops.
	Slots chan struct{}
	// Active, when not nil, bounds the handlers working at once (deciding, reading and writing
	// state) among the messages being handled: a handler does not hold it while suspended (see
	// Suspend) or inside Blocking. With thousands of messages in flight, it keeps the deep stacks
	// of working handlers few; it may be shared by several loops.
	Active chan struct{}
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
	shared := &loopShared{opt: opt, log: log}
	go func() {
		defer close(l.done)
		wg := &shared.wg
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
			j := &job{l: shared, ctx: ctx, msg: msg}
			go j.start(h)
		}
	}()
	return l, nil
}

// Wait blocks until the loop stopped and every handler returned.
func (l *Loop) Wait() { <-l.done }

// Suspend returns an error that makes the loop end the handler's goroutine, keep the message
// (alive, unacked), wait with wait in a new goroutine and then continue with then, whose result
// is handled as the handler's. A handler that has to wait a long time after deep work suspends
// so that the wait holds a fresh, small goroutine stack instead of the grown one: with thousands
// of messages waiting, stacks were most of the memory.
func Suspend(wait func(ctx context.Context), then func(ctx context.Context) error) error {
	return &suspension{wait: wait, then: then}
}

type suspension struct {
	wait func(ctx context.Context)
	then func(ctx context.Context) error
}

func (*suspension) Error() string { return "consume: handler suspended" }

// loopShared is what the jobs of one loop share.
type loopShared struct {
	opt Options
	log zerolog.Logger
	wg  sync.WaitGroup
}

// job is the handling of one message, over one or more goroutines (see Suspend). It is kept
// small: there is one per message in flight.
type job struct {
	l   *loopShared
	ctx context.Context
	msg jetstream.Msg
	// The keep-alive is a timer, not a goroutine per message: with thousands of messages in
	// flight the goroutines' stacks were a large part of the memory. A mark in progress that is
	// running when the handler returns finishes before the message is acked.
	kmu     sync.Mutex
	stopped bool
	keep    *time.Timer
	// active reports that the job holds a token of Options.Active.
	active bool
}

type jobKey struct{}

// acquire takes a token of Options.Active; false when ctx ended first.
func (j *job) acquire() bool {
	if j.l.opt.Active == nil {
		return true
	}
	select {
	case j.l.opt.Active <- struct{}{}:
		j.active = true
		return true
	case <-j.ctx.Done():
		return false
	}
}

func (j *job) release() {
	if j.active {
		j.active = false
		<-j.l.opt.Active
	}
}

// Blocking runs wait, a wait that needs no work (a webhook call, a backoff), without holding the
// handler's token of Options.Active, and takes the token again after it. ctx must be (derived
// from) the one the handler got; elsewhere Blocking just runs wait.
func Blocking(ctx context.Context, wait func()) {
	j, _ := ctx.Value(jobKey{}).(*job)
	if j == nil || j.l.opt.Active == nil {
		wait()
		return
	}
	j.release()
	wait()
	j.acquire()
}

func (j *job) start(h Handler) {
	if j.l.opt.OnStart != nil {
		j.l.opt.OnStart()
	}
	j.kmu.Lock()
	j.keep = time.AfterFunc(j.l.opt.KeepAlive, func() {
		j.kmu.Lock()
		defer j.kmu.Unlock()
		if j.stopped {
			return
		}
		_ = j.msg.InProgress()
		j.keep.Reset(j.l.opt.KeepAlive)
	})
	j.kmu.Unlock()
	j.ctx = context.WithValue(j.ctx, jobKey{}, j)
	if !j.acquire() {
		j.finish(j.ctx.Err()) // stopping: nak'd, redelivered
		return
	}
	j.settle(safeHandle(j.ctx, j.msg, h))
}

// settle continues a suspended handler in a new goroutine, or ends the job with err.
func (j *job) settle(err error) {
	var s *suspension
	if errors.As(err, &s) {
		j.release()
		go j.resume(s)
		return
	}
	j.finish(err)
}

func (j *job) resume(s *suspension) {
	s.wait(j.ctx)
	j.acquire() // when ctx ended, then runs without a token and stops at once
	j.settle(safeRun(j.ctx, s.then))
}

func (j *job) finish(err error) {
	j.release()
	defer func() {
		<-j.l.opt.Slots
		j.l.wg.Done()
	}()
	if j.l.opt.OnDone != nil {
		defer j.l.opt.OnDone()
	}
	j.kmu.Lock()
	j.stopped = true
	j.keep.Stop()
	j.kmu.Unlock()
	ctx, msg, log := j.ctx, j.msg, j.l.log
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

func safeRun(ctx context.Context, f func(ctx context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consume: handler panicked: %v", p)
		}
	}()
	return f(ctx)
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
