package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// Connect opens the test's own NATS connection, which reconnects forever across NATS restarts.
func Connect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("chaos"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// Delivery is one privacy.request.execute the data layer received.
type Delivery struct {
	At          time.Time
	ExecutionID string
	Key         string // what runs are de-duplicated on
	Identity    event.Identity
	Ran         bool      // the first delivery of its key: the data layer ran the request
	AnsweredAt  time.Time // just before executed was published
	AnswerErr   string    // the publish of executed failed (the delivery is nak'ed and comes back)
}

// DataLayer plays the data layer of EXECUTION_STAGE=await: it consumes privacy.request.execute
// with a durable consumer, runs each execution once — a repeat of a known execution is answered
// again without running again — and publishes privacy.request.executed.
type DataLayer struct {
	mu         sync.Mutex
	deliveries map[string][]*Delivery
	seen       map[string]bool
	problems   []string
}

// NewDataLayer returns a data layer that has seen nothing.
func NewDataLayer() *DataLayer {
	return &DataLayer{deliveries: map[string][]*Delivery{}, seen: map[string]bool{}}
}

// Consumer is the durable consumer name of the data layer.
const Consumer = "chaos-datalayer"

// Subscribe waits for the stream (the services create it) and creates the durable consumer, so
// that no execute is missed from then on.
func (d *DataLayer) Subscribe(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cons, err := js.CreateOrUpdateConsumer(cctx, event.Stream, jetstream.ConsumerConfig{
			Durable:       Consumer,
			FilterSubject: event.SubjectExecute,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       10 * time.Second,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxDeliver:    -1,
			MaxAckPending: 1000,
		})
		cancel()
		if err == nil {
			return cons, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("data layer consumer: %w (last error %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Run handles executes until ctx ends. Fetch errors (NATS down) are waited out.
func (d *DataLayer) Run(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			sleepCtx(ctx, 250*time.Millisecond)
			continue
		}
		for msg := range batch.Messages() {
			d.handle(ctx, js, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			sleepCtx(ctx, 250*time.Millisecond)
		}
	}
}

func (d *DataLayer) handle(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg) {
	var ex event.Execute
	if err := json.Unmarshal(msg.Data(), &ex); err != nil || ex.ID == "" {
		d.mu.Lock()
		d.problems = append(d.problems, fmt.Sprintf("undecodable execute %.200q: %v", msg.Data(), err))
		d.mu.Unlock()
		_ = msg.Term()
		return
	}
	key := ex.ExecutionID
	if key == "" {
		// Fallback until the rewritten executor sends execution_id (the executor at ecfa425 does
		// not): the request id is the key, so every execute of a request counts as one execution
		// run, and a second run of the same request cannot be told from a repeat.
		key = "request:" + ex.ID
	}
	dl := &Delivery{At: time.Now(), ExecutionID: ex.ExecutionID, Key: key, Identity: ex.Identity}
	d.mu.Lock()
	dl.Ran = !d.seen[key]
	d.seen[key] = true
	d.deliveries[ex.ID] = append(d.deliveries[ex.ID], dl)
	dl.AnsweredAt = time.Now()
	d.mu.Unlock()

	answer, _ := json.Marshal(event.Executed{ID: ex.ID, ExecutionID: ex.ExecutionID, Succeeded: true})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := js.Publish(pctx, event.SubjectExecuted, answer)
	cancel()
	if err != nil {
		d.mu.Lock()
		dl.AnswerErr = err.Error()
		d.mu.Unlock()
		_ = msg.NakWithDelay(500 * time.Millisecond)
		return
	}
	_ = msg.Ack()
}

// Deliveries returns a copy of the executes received for request id.
func (d *DataLayer) Deliveries(id string) []Delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Delivery, 0, len(d.deliveries[id]))
	for _, dl := range d.deliveries[id] {
		out = append(out, *dl)
	}
	return out
}

// Problems returns the executes that could not be read.
func (d *DataLayer) Problems() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.problems...)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
