// Package consume runs a durable JetStream consumer: one loop pulls only as many messages as the
// slot pool has room for (plus a small prefetch), keeps every message it holds alive — while it
// waits for a slot as while its handler works — runs one handler per message, and maps the
// handler's result to Ack, NakWithDelay or TermWithReason. A deleted consumer is created again. On
// stop it pulls nothing more, hands back the messages still waiting for a slot, and lets the
// handlers finish: they see Stopping and their context ends only at the hard stop.
package consume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

// Retry returns err marked for redelivery after delay (0: at once).
func Retry(delay time.Duration, err error) error { return &retryError{delay: delay, err: err} }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent returns err marked as never worth redelivering.
func Permanent(err error) error { return &permanentError{err: err} }

// Fate is what the loop does with a message whose handler returned err: "ack", "abandon", "term"
// or "nak" after delay.
func Fate(err error) (string, time.Duration) {
	var perm *permanentError
	var retry *retryError
	switch {
	case err == nil:
		return "ack", 0
	case errors.Is(err, ErrAbandon):
		return "abandon", 0
	case errors.As(err, new(*parked)):
		return "park", 0
	case errors.As(err, &perm):
		return "term", 0
	case errors.As(err, &retry):
		return "nak", max(retry.delay, 0)
	}
	return "nak", DefaultRetryDelay
}

// Pool is the message slots of the loops of one process: a message is handled only while it holds
// a slot.
type Pool struct {
	slots chan struct{}
	mu    sync.Mutex
	// released is closed (and replaced) when a slot is given back: every loop waiting for room
	// wakes.
	released chan struct{}
}

// NewPool returns a pool of n slots.
func NewPool(n int) *Pool {
	return &Pool{slots: make(chan struct{}, n), released: make(chan struct{})}
}

// Released returns a channel closed at the next release of a slot.
func (p *Pool) Released() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.released
}

// Cap is the number of slots.
func (p *Pool) Cap() int { return cap(p.slots) }

// Used is the number of slots held.
func (p *Pool) Used() int { return len(p.slots) }

func (p *Pool) take(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case p.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *Pool) give() {
	<-p.slots
	p.mu.Lock()
	close(p.released)
	p.released = make(chan struct{})
	p.mu.Unlock()
}

// Options tune a Loop.
type Options struct {
	// Pool bounds the messages being handled at once; several loops may share it.
	Pool *Pool
	// Active, when not nil, bounds the handlers working at once (deciding, reading and writing
	// state) among the messages being handled: a handler does not hold it inside Blocking. With
	// thousands of messages in flight, it keeps the deep stacks of working handlers few; several
	// loops may share it.
	Active chan struct{}
	// KeepAlive is how often a message held is marked in progress.
	KeepAlive time.Duration
	// Prefetch is how many messages beyond the free slots the loop pulls, so that a freed slot
	// finds a message at once; they are kept alive while they wait.
	Prefetch int
	// MaxBatch bounds one pull.
	MaxBatch int
	// PullExpiry is how long one pull waits for messages (default 2s); a stop waits for the pull
	// under way.
	PullExpiry time.Duration
	// Work is the context of the handlers: it ends at the hard stop (the grace period is over).
	// Nil: the loop's context.
	Work context.Context
	// OnStart and OnDone are called around each handler (metrics).
	OnStart, OnDone func()
	// Trace, when set, is called as a message's handling starts (it holds a slot) and returns the
	// handler's context (with the message's span) and the end of that span, called with the
	// message's fate once it is settled; parks keep the span. Nil: no spans (tracing off).
	Trace func(ctx context.Context, msg jetstream.Msg) (context.Context, func(fate string, err error))
}

// Open creates the durable consumer, or updates it to the loop's configuration.
type Open func(ctx context.Context) (jetstream.Consumer, error)

// Loop is a running consumer loop.
type Loop struct {
	open    Open
	h       Handler
	opt     Options
	log     zerolog.Logger
	stop    <-chan struct{}
	waiting atomic.Int64
	jobs    sync.WaitGroup
	pulled  chan struct{}
	errMu   sync.Mutex
	err     error
}

// Start opens the consumer, then pulls from it until ctx ends (the soft stop), opening it again
// when it is gone. Wait returns once the loop stopped pulling and every handler returned.
func Start(ctx context.Context, open Open, h Handler, opt Options, log zerolog.Logger) (*Loop, error) {
	cons, err := open(ctx)
	if err != nil {
		return nil, fmt.Errorf("consume: open consumer: %w", err)
	}
	if opt.Work == nil {
		opt.Work = ctx
	}
	opt.KeepAlive = max(opt.KeepAlive, 10*time.Millisecond)
	opt.MaxBatch = max(opt.MaxBatch, 1)
	if opt.PullExpiry <= 0 {
		opt.PullExpiry = 2 * time.Second
	}
	l := &Loop{open: open, h: h, opt: opt, log: log, stop: ctx.Done(), pulled: make(chan struct{})}
	go l.pull(ctx, cons)
	return l, nil
}

// Wait blocks until the loop stopped pulling and every handler returned.
func (l *Loop) Wait() {
	<-l.pulled
	l.jobs.Wait()
}

// Ready reports why the loop cannot pull now (its consumer is missing or unreachable); nil when it
// can.
func (l *Loop) Ready() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

func (l *Loop) setErr(err error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.err = err
}

func (l *Loop) pull(ctx context.Context, cons jetstream.Consumer) {
	defer close(l.pulled)
	backoff := 100 * time.Millisecond
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	for ctx.Err() == nil {
		if cons == nil {
			c, err := l.open(ctx)
			if err != nil {
				l.setErr(fmt.Errorf("consume: open consumer: %w", err))
				l.log.Warn().Err(err).Msg("consume: open consumer")
				pause()
				continue
			}
			cons = c
			l.setErr(nil)
		}
		released := l.opt.Pool.Released() // before counting: a release after the count wakes us
		want := l.opt.Pool.Cap() - l.opt.Pool.Used() + l.opt.Prefetch - int(l.waiting.Load())
		if want <= 0 {
			select {
			case <-ctx.Done():
			case <-released:
			}
			continue
		}
		// A short pull needs no heartbeat: a pull lost to a leader change or a reconnect ends by
		// itself, and a stop waits for at most one.
		batch, err := cons.Fetch(min(want, l.opt.MaxBatch), jetstream.FetchMaxWait(l.opt.PullExpiry))
		if err == nil {
			for msg := range batch.Messages() {
				l.dispatch(ctx, msg)
			}
			err = batch.Error()
		}
		if err != nil {
			// A deleted consumer, a stream re-created, a lost connection: open it again (creating
			// it when it is gone), with backoff, and say so in Ready meanwhile.
			l.setErr(fmt.Errorf("consume: pull: %w", err))
			if ctx.Err() == nil {
				l.log.Warn().Err(err).Msg("consume: pull")
			}
			cons = nil
			pause()
			continue
		}
		l.setErr(nil)
		backoff = 100 * time.Millisecond
	}
}

// dispatch hands msg to a new job: it is kept alive from now, waits for a slot and is handled.
func (l *Loop) dispatch(ctx context.Context, msg jetstream.Msg) {
	l.waiting.Add(1)
	l.jobs.Add(1)
	j := &job{l: l, msg: msg}
	j.keepAlive()
	go func() {
		ok := l.opt.Pool.take(ctx)
		l.waiting.Add(-1)
		if !ok {
			// Stopping before it got a slot: handed back at once, for another executor.
			j.stopKeepAlive()
			_ = msg.Nak()
			l.jobs.Done()
			return
		}
		j.run()
	}()
}

// Park returns an error that makes the loop end the handler's goroutine without settling its
// message: the message stays held (alive, in its slot), wait runs in a fresh goroutine (a small
// stack, no token of Options.Active), and then the message is handled again from the start with
// the context wait returns — without waiting for a token first, so that what wait obtained (a call
// slot) is used at once. Thousands of messages waiting for a webhook host cost so a small goroutine
// each, not a handler's grown stack.
func Park(wait func(ctx context.Context) context.Context) error { return &parked{wait: wait} }

// ParkFree is Park, but the message also gives its slot back while wait runs (it stays held and
// alive, outside the pool), and takes a slot again before it is handled again: a message waiting
// for something only another message's end frees (a webhook host's share) leaves its slot to
// messages that can work.
func ParkFree(wait func(ctx context.Context) context.Context) error {
	return &parked{wait: wait, free: true}
}

type parked struct {
	wait func(ctx context.Context) context.Context
	free bool
}

func (*parked) Error() string { return "consume: handler parked" }

// Stop returns a channel closed when the executor starts stopping (see Stopping); nil outside a
// handler's context.
func Stop(ctx context.Context) <-chan struct{} {
	if j, _ := ctx.Value(jobKey{}).(*job); j != nil {
		return j.l.stop
	}
	return nil
}

// Stopping reports whether the executor is stopping: a handler finishes what it started (a call
// in flight) and starts nothing new. ctx must be (derived from) the one the handler got.
func Stopping(ctx context.Context) bool {
	j, _ := ctx.Value(jobKey{}).(*job)
	if j == nil {
		return false
	}
	select {
	case <-j.l.stop:
		return true
	default:
		return false
	}
}

// Blocking runs wait, a wait that needs no work (a webhook call, a call slot), without holding the
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
	j.acquire(ctx)
}

// job is the handling of one message. The keep-alive is a timer, not a goroutine per message: with
// thousands of messages held, goroutine stacks were a large part of the memory. A mark in progress
// that is running when the handler returns finishes before the message is acked.
type job struct {
	l       *Loop
	msg     jetstream.Msg
	endSpan func(fate string, err error)
	kmu     sync.Mutex
	stopped bool
	keep    *time.Timer
	// active reports that the job holds a token of Options.Active.
	active bool
}

type jobKey struct{}

func (j *job) keepAlive() {
	j.kmu.Lock()
	defer j.kmu.Unlock()
	j.keep = time.AfterFunc(j.l.opt.KeepAlive, func() {
		j.kmu.Lock()
		defer j.kmu.Unlock()
		if j.stopped {
			return
		}
		_ = j.msg.InProgress()
		j.keep.Reset(j.l.opt.KeepAlive)
	})
}

func (j *job) stopKeepAlive() {
	j.kmu.Lock()
	defer j.kmu.Unlock()
	j.stopped = true
	j.keep.Stop()
}

// acquire takes a token of Options.Active; false when ctx ended first.
func (j *job) acquire(ctx context.Context) bool {
	if j.l.opt.Active == nil {
		return true
	}
	select {
	case j.l.opt.Active <- struct{}{}:
		j.active = true
		return true
	case <-ctx.Done():
		return false
	}
}

func (j *job) release() {
	if j.active {
		j.active = false
		<-j.l.opt.Active
	}
}

func (j *job) run() {
	if j.l.opt.OnStart != nil {
		j.l.opt.OnStart()
	}
	ctx := j.l.opt.Work
	if j.l.opt.Trace != nil {
		ctx, j.endSpan = j.l.opt.Trace(ctx, j.msg)
	}
	j.handle(context.WithValue(ctx, jobKey{}, j), true)
}

// handle runs the handler (after taking a token of Options.Active when token is set) and settles
// the message, or parks it (see Park).
func (j *job) handle(ctx context.Context, token bool) {
	var err error
	if !token || j.acquire(ctx) {
		err = safeHandle(ctx, j.msg, j.l.h)
	} else {
		err = ctx.Err() // stopped hard before it could work: nak'd, redelivered
	}
	var p *parked
	if errors.As(err, &p) {
		j.release()
		if p.free {
			j.l.opt.Pool.give()
		}
		go func() {
			ctx := p.wait(ctx)
			if p.free && !j.l.opt.Pool.take(j.l.opt.Work) {
				// Stopped hard while it waited: handed back, as it holds no slot to give back.
				j.stopKeepAlive()
				_ = j.msg.Nak()
				if j.endSpan != nil {
					j.endSpan("nak", context.Canceled)
				}
				if j.l.opt.OnDone != nil {
					j.l.opt.OnDone()
				}
				j.l.jobs.Done()
				return
			}
			j.handle(ctx, false)
		}()
		return
	}
	j.finish(ctx, err)
}

func (j *job) finish(ctx context.Context, err error) {
	j.release()
	defer func() {
		j.l.opt.Pool.give()
		j.l.jobs.Done()
	}()
	if j.l.opt.OnDone != nil {
		defer j.l.opt.OnDone()
	}
	j.stopKeepAlive()
	msg, log := j.msg, j.l.log
	fate, delay := Fate(err)
	if j.endSpan != nil {
		defer j.endSpan(fate, err)
	}
	switch fate {
	case "ack":
		if aerr := msg.Ack(); aerr != nil {
			log.Warn().Err(aerr).Str("subject", msg.Subject()).Msg("consume: ack")
		}
	case "abandon":
	case "term":
		log.Error().Err(err).Str("subject", msg.Subject()).Msg("consume: message terminated")
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	default:
		switch {
		case ctx.Err() != nil:
		case errors.As(err, new(*retryError)):
			// Handed back on purpose (a backoff, another worker's claim): routine.
			log.Debug().Err(err).Str("subject", msg.Subject()).Dur("delay", delay).Msg("consume: retry later")
		default:
			// The handler failed (NATS unavailable, a leader being elected): worth seeing.
			log.Warn().Err(err).Str("subject", msg.Subject()).Dur("delay", delay).Msg("consume: handler failed, message handed back")
		}
		if delay <= 0 {
			_ = msg.Nak()
		} else {
			_ = msg.NakWithDelay(delay)
		}
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
