package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/services/config/internal/policy"
	"github.com/policyhooks/policyhooks/shared/token"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Webhooks and connections live in two collections, and neither MongoDB without a replica set nor
// FerretDB v1 gives transactions. A webhook edit and a connection delete (or type change) are
// ordered through claims on the connection document instead:
//
//   - Before a policy is saved at version v+1 with a webhook on connection C that its version v did
//     not use, the edit adds the claim "<policy>@<life>@<v+1>@<nonce>" to C's used_by, with a
//     conditional update that matches only an https C. (<life> is the policy's created_at in
//     milliseconds: a policy deleted and created again is another life, whose versions start over.)
//   - A delete or type change of C is one conditional update that matches only while used_by is
//     empty (or absent, for documents written before claims existed). Before it, every claim is
//     judged against its policy as stored now: a claim of a policy (life) that is gone, or of a
//     version the policy has reached or passed while not using C, can never be written again and
//     is dropped; a claim of a policy using C, or any policy found by connection_keys, makes C in
//     use; a claim of the next version is an edit in flight, waited for and, if it lingers (its
//     edit crashed), invalidated by moving the policy's version past it.
//
// The pre-approval list claims its connections the same way, as a policy document named
// policy.PreApprovalKey, which no policy key can be: its claims are judged against the document
// of pre_approval_webhooks.
//
// Saves are filtered by version and life, so an edit whose claim was dropped can no longer be
// written. An edit that keeps a connection relies on the claim of the version that added it,
// which is only dropped once the stored policy no longer uses the connection, that is, at a
// version the edit did not read. Policies saved before claims existed use connections without
// claims: connection_keys still finds them.

const (
	// maxClaimRounds bounds the rounds of a connection delete or type change that keeps meeting
	// claims of edits in flight.
	maxClaimRounds = 200
	// lingerRounds is how many rounds a claim of an edit in flight is waited for before its policy's
	// version is moved past it.
	lingerRounds = 5
)

type claim struct {
	policy  string
	life    int64
	version int64
}

func lifeOf(p policy.Policy) int64 { return p.CreatedAt.UnixMilli() }

func newClaim(p policy.Policy, version int64) string {
	return fmt.Sprintf("%s@%d@%d@%s", p.Key, lifeOf(p), version, token.NewID()[:12])
}

func parseClaim(s string) (claim, bool) {
	parts := strings.Split(s, "@")
	if len(parts) < 4 {
		return claim{}, false
	}
	n := len(parts)
	life, err1 := strconv.ParseInt(parts[n-3], 10, 64)
	version, err2 := strconv.ParseInt(parts[n-2], 10, 64)
	if err1 != nil || err2 != nil {
		return claim{}, false
	}
	return claim{policy: strings.Join(parts[:n-3], "@"), life: life, version: version}, true
}

// ClaimConnections claims each connection of keys for the next version of p (p.Version+1, p as
// read): it must exist (else a *connection.NotFoundError) and be https (else a
// *policy.NotHTTPSError). It returns the claim, for DropClaim when that version is not saved; on
// an error the claims it made are dropped.
func (s *Store) ClaimConnections(ctx context.Context, p policy.Policy, keys []string) (string, error) {
	c := newClaim(p, p.Version+1)
	for i, k := range keys {
		res, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: k}, {Key: "connection_type", Value: string(connection.HTTPS)}},
			bson.D{{Key: "$addToSet", Value: bson.D{{Key: "used_by", Value: c}}}})
		if err == nil && res.MatchedCount == 1 {
			continue
		}
		_ = s.DropClaim(ctx, c, keys[:i])
		if err != nil {
			return "", fmt.Errorf("store: claim connection %q: %w", k, err)
		}
		conn, err := s.GetConnection(ctx, k)
		if err != nil {
			return "", err
		}
		return "", &policy.NotHTTPSError{Key: k, Type: string(conn.Type)}
	}
	return c, nil
}

// DropClaim removes the claim c from the connections keys.
func (s *Store) DropClaim(ctx context.Context, c string, keys []string) error {
	for _, k := range keys {
		if _, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: k}},
			bson.D{{Key: "$pullAll", Value: bson.D{{Key: "used_by", Value: bson.A{c}}}}}); err != nil {
			return fmt.Errorf("store: drop claim on %q: %w", k, err)
		}
	}
	return nil
}

// ReleaseConnections drops, from the connections keys, the claims of p's life up to p.Version; p
// is the policy as just saved, and uses none of keys.
func (s *Store) ReleaseConnections(ctx context.Context, p policy.Policy, keys []string) error {
	for _, k := range keys {
		var d connDoc
		err := s.conns.FindOne(ctx, bson.D{{Key: "_id", Value: k}}).Decode(&d)
		if isNoDocs(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: release connection %q: %w", k, err)
		}
		var drop bson.A
		for _, raw := range d.UsedBy {
			if c, ok := parseClaim(raw); ok && c.policy == p.Key && c.life == lifeOf(p) && c.version <= p.Version {
				drop = append(drop, raw)
			}
		}
		if len(drop) == 0 {
			continue
		}
		if _, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: k}},
			bson.D{{Key: "$pullAll", Value: bson.D{{Key: "used_by", Value: drop}}}}); err != nil {
			return fmt.Errorf("store: release connection %q: %w", k, err)
		}
	}
	return nil
}

// unused filters the connection key that no claim holds.
func unused(key string) bson.D {
	return bson.D{{Key: "_id", Value: key}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "used_by", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "used_by", Value: bson.D{{Key: "$size", Value: 0}}}},
	}}}
}

// whileUnused runs apply, a conditional write filtered by unused(key), once no webhook uses the
// connection key and no edit in flight claims it. It returns a *connection.NotFoundError, a
// *connection.InUseError naming the webhooks, or apply's error.
func (s *Store) whileUnused(ctx context.Context, key string, apply func(filter bson.D) (bool, error)) error {
	lingering := map[string]int{}
	for round := range maxClaimRounds {
		var d connDoc
		err := s.conns.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&d)
		if isNoDocs(err) {
			return &connection.NotFoundError{Key: key}
		}
		if err != nil {
			return fmt.Errorf("store: read connection %q: %w", key, err)
		}
		names, _, err := s.WebhooksUsing(ctx, key)
		if err != nil {
			return err
		}
		if len(names) > 0 {
			return &connection.InUseError{Key: key, Webhooks: names}
		}
		stale, inFlight, used, err := s.judgeClaims(ctx, key, d.UsedBy)
		if err != nil {
			return err
		}
		if len(stale) > 0 {
			if _, err := s.conns.UpdateOne(ctx, bson.D{{Key: "_id", Value: key}},
				bson.D{{Key: "$pullAll", Value: bson.D{{Key: "used_by", Value: stale}}}}); err != nil {
				return fmt.Errorf("store: drop stale claims on %q: %w", key, err)
			}
		}
		if !used && len(inFlight) == 0 {
			ok, err := apply(unused(key))
			if err != nil || ok {
				return err
			}
		}
		for raw, c := range inFlight {
			lingering[raw]++
			if lingering[raw] >= lingerRounds {
				// The edit that made it did not finish in time (it may have crashed): make its save
				// fail, so that the claim can be judged stale. A live edit retries and claims again.
				if err := s.passVersion(ctx, c); err != nil {
					return err
				}
			}
		}
		wait := time.Duration(min(round+1, 10)) * 2 * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("store: connection %q: edits kept claiming it; gave up after %d rounds", key, maxClaimRounds)
}

// judgeClaims sorts the claims on the connection key: stale ones (to drop), those of edits in
// flight, and whether a policy that holds one uses the connection now.
func (s *Store) judgeClaims(ctx context.Context, key string, raws []string) (stale bson.A, inFlight map[string]claim, used bool, err error) {
	inFlight = map[string]claim{}
	if len(raws) == 0 {
		return nil, inFlight, false, nil
	}
	claims := map[string]claim{}
	var keys []string
	for _, raw := range raws {
		c, ok := parseClaim(raw)
		if !ok {
			stale = append(stale, raw)
			continue
		}
		claims[raw] = c
		if !slices.Contains(keys, c.policy) {
			keys = append(keys, c.policy)
		}
	}
	pols, err := s.claimants(ctx, keys)
	if err != nil {
		return nil, nil, false, fmt.Errorf("store: policies claiming %q: %w", key, err)
	}
	for raw, c := range claims {
		p, ok := pols[c.policy]
		switch {
		case !ok || lifeOf(p) != c.life:
			stale = append(stale, raw)
		case slices.Contains(p.ConnectionKeys(), key):
			used = true
		case c.version <= p.Version:
			stale = append(stale, raw)
		default:
			inFlight[raw] = claim{policy: c.policy, life: c.life, version: p.Version}
		}
	}
	return stale, inFlight, used, nil
}

// claimants reads the documents that claims name, by key: the policies keys, and the pre-approval
// list when policy.PreApprovalKey is among them. A document that does not exist is left out.
func (s *Store) claimants(ctx context.Context, keys []string) (map[string]policy.Policy, error) {
	out := map[string]policy.Policy{}
	if slices.Contains(keys, policy.PreApprovalKey) {
		var d preApprovalDoc
		err := s.pre.FindOne(ctx, bson.D{{Key: "_id", Value: preApprovalID}}).Decode(&d)
		if err != nil && !isNoDocs(err) {
			return nil, err
		}
		if err == nil {
			out[policy.PreApprovalKey] = d.domain()
		}
	}
	if len(keys) == 0 {
		return out, nil
	}
	docs, err := findAll[policyDoc](ctx, s.pols, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}})
	if err != nil {
		return nil, err
	}
	for _, d := range docs {
		out[d.Key] = d.domain()
	}
	return out, nil
}

// passVersion moves the policy of c (c.version holding the version it was judged at) to the next
// version without changing it, if it is still at that version of that life.
func (s *Store) passVersion(ctx context.Context, c claim) error {
	coll, id := s.pols, c.policy
	if c.policy == policy.PreApprovalKey {
		coll, id = s.pre, preApprovalID
	}
	_, err := coll.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "created_at", Value: time.UnixMilli(c.life)}, {Key: "version", Value: c.version}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "version", Value: c.version + 1}}}})
	if err != nil {
		return fmt.Errorf("store: pass version of %q: %w", c.policy, err)
	}
	return nil
}
