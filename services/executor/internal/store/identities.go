package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/natsconn"
	"github.com/policyhooks/policyhooks/shared/secret"
)

// Identities keeps sealed identities in privacy_identities: the current identity of each request
// under event.KVKey(id), and the derived identities it has yet to merge (patches) under
// event.KVKey(id) + ".patch." + name (event.KVKey never holds '.', so no key of one request can be
// another's). Every entry carries its own TTL (IDENTITY_TTL when written, see
// natsconn.IdentitiesBucket), so changing the setting never shortens what was stored before.
type Identities struct {
	kv jetstream.KeyValue
	js jetstream.JetStream
	// stream is the bucket's stream, looked up at the first Forget.
	streamMu sync.Mutex
	stream   jetstream.Stream
	keyring  *secret.Keyring
	ttl      time.Duration
	now      func() time.Time
	count    Counter
}

// NewIdentities returns the store of identities in the privacy_identities bucket kv; keyring
// seals them (secret.PurposeIdentities, the request id as associated data).
func NewIdentities(kv jetstream.KeyValue, js jetstream.JetStream, keyring *secret.Keyring, ttl time.Duration, count Counter) *Identities {
	if count == nil {
		count = func(string) {}
	}
	return &Identities{kv: kv, js: js, keyring: keyring, ttl: ttl, now: time.Now, count: count}
}

func patchKey(id, name string) string { return event.KVKey(id) + ".patch." + name }

// Get returns the identity of id; ErrNotFound when it is gone.
func (s *Identities) Get(ctx context.Context, id string) (event.Identity, error) {
	return s.get(ctx, id, event.KVKey(id))
}

// Create stores ident as the identity of id unless one is stored, and reports whether it did and
// when the stored one expires (for a kept one: unknown, the zero time).
func (s *Identities) Create(ctx context.Context, id string, ident event.Identity) (time.Time, bool, error) {
	sealed, err := s.seal(id, ident)
	if err != nil {
		return time.Time{}, false, err
	}
	now := s.now()
	s.count("kv_create")
	_, err = s.kv.Create(ctx, event.KVKey(id), sealed, jetstream.KeyTTL(s.ttl))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return time.Time{}, false, nil
	case err != nil:
		return time.Time{}, false, fmt.Errorf("store: create identity %s: %w", id, writeError(err))
	}
	return now.Add(s.ttl), true, nil
}

// Put stores ident as the identity of id and returns when it expires.
func (s *Identities) Put(ctx context.Context, id string, ident event.Identity) (time.Time, error) {
	return s.put(ctx, id, event.KVKey(id), ident)
}

// Delete removes the identity of id (a request that did not need it after all).
func (s *Identities) Delete(ctx context.Context, id string) error {
	if err := s.purge(ctx, event.KVKey(id)); err != nil {
		return fmt.Errorf("store: delete identity %s: %w", id, err)
	}
	return nil
}

// purge removes every message of key from the bucket's stream: unlike a KV purge, it leaves no
// marker behind (one per request and resume, for good, otherwise).
func (s *Identities) purge(ctx context.Context, key string) error {
	st, err := s.identityStream(ctx)
	if err != nil {
		return err
	}
	s.count("stream_purge")
	return st.Purge(ctx, jetstream.WithPurgeSubject(natsconn.KeySubject(event.BucketIdentities, key)))
}

// Forget removes the identity of a finished request (SPEC §5.1); with until a second or more
// ahead, the identity is kept until then instead (written again with a TTL of the whole seconds
// left, so never longer). A removal is a purge of the bucket's stream by subject, which leaves no
// marker behind. It is idempotent: a request with nothing stored is left as it is. Derived
// identities are removed once merged; ForgetAll removes any a crash left.
func (s *Identities) Forget(ctx context.Context, id string, until time.Time) error {
	key := event.KVKey(id)
	// A message TTL counts whole seconds (the server truncates it): keep it no longer than until.
	if keep := until.Sub(s.now()).Truncate(time.Second); keep >= time.Second {
		ident, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		_, err = s.putFor(ctx, id, key, ident, keep)
		return err
	}
	if err := s.purge(ctx, key); err != nil {
		return fmt.Errorf("store: forget identity %s: %w", id, err)
	}
	return nil
}

// ForgetAll is Forget, after removing every derived identity of the request (the sweep's).
func (s *Identities) ForgetAll(ctx context.Context, id string, until time.Time) error {
	st, err := s.identityStream(ctx)
	if err != nil {
		return err
	}
	s.count("stream_purge")
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(natsconn.KeySubject(event.BucketIdentities, event.KVKey(id)+".patch.>"))); err != nil {
		return fmt.Errorf("store: forget derived identities of %s: %w", id, err)
	}
	return s.Forget(ctx, id, until)
}

// Requests lists the ids of the requests that have an identity or a derived identity stored.
func (s *Identities) Requests(ctx context.Context) ([]string, error) {
	s.count("kv_list")
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: list identities: %w", err)
	}
	seen := map[string]bool{}
	var ids []string
	for key := range lister.Keys() {
		key, _, _ = strings.Cut(key, ".patch.")
		if id := event.KVKeyID(key); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// identityStream returns the stream of the bucket, looking it up once.
func (s *Identities) identityStream(ctx context.Context) (jetstream.Stream, error) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.stream != nil {
		return s.stream, nil
	}
	s.count("stream_info")
	st, err := s.js.Stream(ctx, "KV_"+event.BucketIdentities)
	if err != nil {
		return nil, fmt.Errorf("store: stream of %s: %w", event.BucketIdentities, err)
	}
	s.stream = st
	return st, nil
}

// PutPatch stores a derived identity of id under name, to be merged later.
func (s *Identities) PutPatch(ctx context.Context, id, name string, ident event.Identity) error {
	_, err := s.put(ctx, id, patchKey(id, name), ident)
	return err
}

// Patch returns the derived identity of id stored under name; ErrNotFound when it is gone.
func (s *Identities) Patch(ctx context.Context, id, name string) (event.Identity, error) {
	return s.get(ctx, id, patchKey(id, name))
}

// DeletePatch removes the derived identity of id stored under name.
func (s *Identities) DeletePatch(ctx context.Context, id, name string) error {
	if err := s.purge(ctx, patchKey(id, name)); err != nil {
		return fmt.Errorf("store: delete patch %s of %s: %w", name, id, err)
	}
	return nil
}

func (s *Identities) get(ctx context.Context, id, key string) (event.Identity, error) {
	s.count("kv_get")
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return event.Identity{}, ErrNotFound
	}
	if err != nil {
		return event.Identity{}, fmt.Errorf("store: identity %s: %w", id, err)
	}
	plain, err := s.keyring.Open(string(e.Value()), []byte(id))
	if err != nil {
		return event.Identity{}, fmt.Errorf("store: open identity %s: %w", id, err)
	}
	var ident event.Identity
	if err := json.Unmarshal(plain, &ident); err != nil {
		return event.Identity{}, fmt.Errorf("store: decode identity %s: %w", id, err)
	}
	return ident, nil
}

// put writes a sealed identity with its own TTL: a KV put is a publish on the bucket's subject, and
// the KV API sets a per-key TTL only on Create, so the put is published with the TTL header.
func (s *Identities) put(ctx context.Context, id, key string, ident event.Identity) (time.Time, error) {
	return s.putFor(ctx, id, key, ident, s.ttl)
}

// putFor is put with ttl in place of IDENTITY_TTL.
func (s *Identities) putFor(ctx context.Context, id, key string, ident event.Identity, ttl time.Duration) (time.Time, error) {
	sealed, err := s.seal(id, ident)
	if err != nil {
		return time.Time{}, err
	}
	now := s.now()
	s.count("kv_put")
	// The message id names this sealed value (its nonce makes each put's bytes unique): a publish
	// retried after a lost ack is stored once.
	sum := sha256.Sum256(sealed)
	msgID := "identity:" + key + ":" + hex.EncodeToString(sum[:16])
	if _, err := s.js.Publish(ctx, natsconn.KeySubject(event.BucketIdentities, key), sealed, jetstream.WithMsgTTL(ttl), jetstream.WithMsgID(msgID)); err != nil {
		return time.Time{}, fmt.Errorf("store: store identity %s: %w", id, writeError(err))
	}
	return now.Add(ttl), nil
}

func (s *Identities) seal(id string, ident event.Identity) ([]byte, error) {
	plain, err := json.Marshal(ident)
	if err != nil {
		return nil, fmt.Errorf("store: encode identity %s: %w", id, err)
	}
	sealed, err := s.keyring.Seal(plain, []byte(id))
	if err != nil {
		return nil, fmt.Errorf("store: seal identity %s: %w", id, err)
	}
	return []byte(sealed), nil
}
