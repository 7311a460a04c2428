package natsconn

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Map is the common View: each key's value decoded from JSON, kept under a read-write lock. A
// value that does not decode is dropped (and logged): a reader finds no entry rather than an old
// one. It is what the executor's plans and breakers keep.
type Map[T any] struct {
	log    zerolog.Logger
	mu     sync.RWMutex
	values map[string]T
	// fresh holds the keys a read of the bucket whole delivered so far (nil between reads).
	fresh  map[string]bool
	loaded atomic.Bool
}

// NewMap returns an empty Map that logs undecodable values to log.
func NewMap[T any](log zerolog.Logger) *Map[T] {
	return &Map[T]{log: log, values: map[string]T{}}
}

// Get returns the value of key (a KV key) as the watch last delivered it.
func (m *Map[T]) Get(key string) (T, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.values[key]
	return v, ok
}

// Each calls f with every key and value, under the read lock: f must not call back into m.
func (m *Map[T]) Each(f func(key string, v T)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k, v := range m.values {
		f(k, v)
	}
}

// Loaded reports whether the bucket was read whole once.
func (m *Map[T]) Loaded() bool { return m.loaded.Load() }

// BeginWhole begins a read of the bucket whole (View).
func (m *Map[T]) BeginWhole() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fresh = map[string]bool{}
}

// EndWhole ends a read of the bucket whole: the keys it did not deliver are gone (View).
func (m *Map[T]) EndWhole() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.values {
		if m.fresh != nil && !m.fresh[k] {
			delete(m.values, k)
		}
	}
	m.fresh = nil
	m.loaded.Store(true)
}

// Apply records one entry of the bucket (View).
func (m *Map[T]) Apply(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fresh != nil {
		m.fresh[e.Key()] = true
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(m.values, e.Key())
		return
	}
	var v T
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		m.log.Error().Err(err).Str("bucket", e.Bucket()).Str("key", e.Key()).Msg("undecodable value left out of the view")
		delete(m.values, e.Key())
		return
	}
	m.values[e.Key()] = v
}
