package natsconn

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/shared/event"
)

// LeaderReads returns kv with Get served by the leader of the bucket's stream; every other method is
// kv's own.
//
// The buckets are created with direct gets allowed (nats.go always does so), and on a cluster a
// direct get may be answered by any replica that is nearly caught up: a follower that has not yet
// applied the last write answers with the value before it, or "not found" for a key just created.
// A read that decides something (the callback refusing a resume, the executor dropping an input for
// an unknown request or failing a request whose identity it cannot find) must see every write
// acknowledged before it, so the services read their buckets through this. The leader answers
// $JS.API.STREAM.MSG.GET only while it leads; during an election the read times out and the caller
// retries, as for a write.
func LeaderReads(js jetstream.JetStream, kv jetstream.KeyValue) jetstream.KeyValue {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	return &leaderKV{
		KeyValue: kv,
		nc:       js.Conn(),
		subject:  prefix + "STREAM.MSG.GET.KV_" + kv.Bucket(),
		keyPre:   KeySubject(kv.Bucket(), ""),
		timeout:  js.Options().DefaultTimeout,
	}
}

type leaderKV struct {
	jetstream.KeyValue
	nc      *nats.Conn
	subject string
	keyPre  string
	timeout time.Duration
}

// msgGetRequest and msgGetResponse are the JetStream API's STREAM.MSG.GET request and answer
// (nats-server's JSApiMsgGetRequest and JSApiMsgGetResponse); []byte fields travel as base64.
type msgGetRequest struct {
	LastFor string `json:"last_by_subj"`
}

type msgGetResponse struct {
	Error *struct {
		Code        int                 `json:"code"`
		ErrorCode   jetstream.ErrorCode `json:"err_code"`
		Description string              `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// Get returns the newest value of key as the stream leader has it, or jetstream.ErrKeyNotFound when
// there is none (never written, deleted, purged, or removed by a TTL), as kv.Get does.
func (l *leaderKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if !event.ValidKVKey(key) {
		return nil, jetstream.ErrInvalidKey
	}
	if _, ok := ctx.Deadline(); !ok && l.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	body, err := json.Marshal(msgGetRequest{LastFor: l.keyPre + key})
	if err != nil {
		return nil, err
	}
	msg, err := l.nc.RequestWithContext(ctx, l.subject, body)
	if err != nil {
		return nil, fmt.Errorf("natsconn: read %s%s from the leader: %w", l.keyPre, key, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("natsconn: read %s%s from the leader: %w", l.keyPre, key, err)
	}
	if e := resp.Error; e != nil {
		if e.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, &jetstream.APIError{Code: e.Code, ErrorCode: e.ErrorCode, Description: e.Description}
	}
	m := resp.Message
	if m == nil || m.Subject != l.keyPre+key {
		return nil, fmt.Errorf("natsconn: read %s%s from the leader: %w", l.keyPre, key, jetstream.ErrInvalidJetStreamResponse)
	}
	entry := &leaderEntry{bucket: l.Bucket(), key: key, value: m.Data, revision: m.Sequence, created: m.Time,
		op: jetstream.KeyValuePut}
	if len(m.Header) > 0 {
		hdr, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return nil, fmt.Errorf("natsconn: read %s%s from the leader: %w", l.keyPre, key, err)
		}
		entry.op = operation(hdr)
	}
	if entry.op != jetstream.KeyValuePut {
		return nil, jetstream.ErrKeyNotFound
	}
	return entry, nil
}

// operation tells a KV message's operation from its headers, as nats.go's KV does: the
// KV-Operation header of a delete or purge, or the marker reason of a message the server removed
// (a per-key TTL or MaxAge).
func operation(hdr nats.Header) jetstream.KeyValueOp {
	switch hdr.Get("KV-Operation") {
	case "DEL":
		return jetstream.KeyValueDelete
	case "PURGE":
		return jetstream.KeyValuePurge
	}
	switch hdr.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge":
		return jetstream.KeyValuePurge
	case "Remove":
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

// leaderEntry is one value read by leaderKV.Get.
type leaderEntry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

func (e *leaderEntry) Bucket() string                  { return e.bucket }
func (e *leaderEntry) Key() string                     { return e.key }
func (e *leaderEntry) Value() []byte                   { return e.value }
func (e *leaderEntry) Revision() uint64                { return e.revision }
func (e *leaderEntry) Created() time.Time              { return e.created }
func (e *leaderEntry) Delta() uint64                   { return 0 }
func (e *leaderEntry) Operation() jetstream.KeyValueOp { return e.op }
