package connection

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/netguard"
	"github.com/policyhooks/policyhooks/shared/secret"
	"github.com/rs/zerolog"
)

// VerifyTimeout bounds the whole verification of a connection's secrets (resolve, connect, TLS
// handshake).
const VerifyTimeout = 5 * time.Second

// Service applies the connection rules over a Store.
type Service struct {
	store   Store
	users   Users
	pub     Publisher
	keyring *secret.Keyring
	guard   netguard.Policy
	roots   *x509.CertPool
	log     zerolog.Logger
	now     func() time.Time
	// breakers are the connections' circuit breakers (UseBreakers); nil in tests without them.
	breakers Breakers
}

// NewService returns a Service. keyring seals secrets (purpose secret.PurposeSecrets); guard checks
// secret URLs and the verification dial; roots are the trusted roots of the verification
// handshake (nil: the system roots).
func NewService(store Store, users Users, pub Publisher, keyring *secret.Keyring, guard netguard.Policy,
	roots *x509.CertPool, log zerolog.Logger) *Service {
	return &Service{store: store, users: users, pub: pub, keyring: keyring, guard: guard, roots: roots, log: log,
		now: func() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }}
}

// Get returns one connection.
func (s *Service) Get(ctx context.Context, key string) (Connection, error) {
	return s.store.GetConnection(ctx, key)
}

// List returns a page of connections ordered by name, and the total.
func (s *Service) List(ctx context.Context, f Filter, skip, limit int) ([]Connection, int, error) {
	return s.store.ListConnections(ctx, f, skip, limit)
}

// Failed is an item of a bulk upsert that was not applied.
type Failed struct {
	// Err is why: a *KeyTakenError or a *TypeChangeError.
	Err  error
	Data Input
}

// Upsert creates or updates each item by key. Items that conflict go to failed, among them a
// type change of a connection that webhooks use (the store refuses it in the same conditional
// write that changes the type); any other error stops the upsert. Plans of policies using an
// updated connection are re-published.
func (s *Service) Upsert(ctx context.Context, items []Input) ([]Connection, []Failed, error) {
	succeeded := []Connection{}
	failed := []Failed{}
	for _, in := range items {
		c, err := s.store.UpsertConnection(ctx, in, s.now())
		var inUse *InUseError
		if errors.As(err, &inUse) {
			failed = append(failed, Failed{Err: &TypeChangeError{Type: in.Type, InUse: inUse}, Data: in})
			continue
		}
		if errors.Is(err, ErrKeyTaken) {
			failed = append(failed, Failed{Err: err, Data: in})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		succeeded = append(succeeded, c)
		s.republish(ctx, c.Key)
	}
	return succeeded, failed, nil
}

// Delete removes a connection that no webhook uses; the store checks that in the conditional
// write that deletes it (an *InUseError names the webhooks).
func (s *Service) Delete(ctx context.Context, key string) error {
	if err := s.store.DeleteConnection(ctx, key); err != nil {
		return err
	}
	s.forgetBreaker(ctx, key)
	return nil
}

// InvalidError is a secrets field that fails validation (422).
type InvalidError struct {
	Loc []any
	Msg string
}

func (e *InvalidError) Error() string { return e.Msg }

// TestResult is the outcome of a verification.
type TestResult struct {
	At        time.Time
	Succeeded bool
	Reason    string
}

// SetSecrets validates, seals and stores the https secrets of key; with verify it also resolves
// the host of the URL, and then of the oauth2 token URL when there is one, and completes a TLS
// handshake with each (no HTTP request, so no token is fetched), presenting the secrets' client
// certificate when the server asks for one, records the outcome and returns it (nil without
// verify). The public keys of the Ed25519 signing keys are stored beside the sealed secrets, in the
// same write. The plaintext never leaves this function other than sealed.
func (s *Service) SetSecrets(ctx context.Context, key string, sec event.HTTPSSecrets, verify bool) (*TestResult, error) {
	c, err := s.store.GetConnection(ctx, key)
	if err != nil {
		return nil, err
	}
	if c.Type != HTTPS {
		return nil, &InvalidError{Loc: []any{"body"}, Msg: fmt.Sprintf(
			"Secrets can only be set here for https connections; ConnectionConfig '%s' is of type %s.", key, c.Type)}
	}
	if err := s.validate(sec); err != nil {
		return nil, err
	}
	keys, err := signingKeysOf(sec)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(sec)
	if err != nil {
		return nil, fmt.Errorf("connection: encode secrets: %w", err)
	}
	sealed, err := s.keyring.Seal(plain, []byte(key))
	if err != nil {
		return nil, fmt.Errorf("connection: seal secrets of %q: %w", key, err)
	}
	var result *TestResult
	if verify {
		// The handshakes present the client certificate as the executor's calls and token
		// requests do.
		cert, err := clientCertificate(sec)
		if err != nil {
			return nil, err
		}
		result = &TestResult{At: s.now(), Succeeded: true}
		if err := s.verify(ctx, sec.URL, cert); err != nil {
			result.Succeeded = false
			result.Reason = err.Error()
		} else if sec.OAuth2 != nil {
			if err := s.verify(ctx, sec.OAuth2.TokenURL, cert); err != nil {
				result.Succeeded = false
				result.Reason = "token_url: " + err.Error()
			}
		}
	}
	if _, err := s.store.SetSecrets(ctx, key, sealed, DisplayURL(sec.URL), keys, result); err != nil {
		return nil, err
	}
	s.republish(ctx, key)
	return result, nil
}

func (s *Service) validate(sec event.HTTPSSecrets) error {
	if err := s.checkURL(sec.URL); err != nil {
		return &InvalidError{Loc: []any{"body", "url"}, Msg: err.Error()}
	}
	if err := checkHeaders(sec.Headers); err != nil {
		return err
	}
	if err := checkAuthorization(sec.Authorization); err != nil {
		return err
	}
	if err := checkOAuth2(sec.OAuth2, s.checkURL); err != nil {
		return err
	}
	if err := checkClientCertificate(sec, s.now()); err != nil {
		return err
	}
	if err := checkAuthorizationSource(sec); err != nil {
		return err
	}
	return checkSigning(sec, s.now())
}

// checkURL returns why raw is not a URL the executor may call (its scheme, form or host), nil
// when it is. A refused destination (ErrForbiddenAddress) is not a malformed URL: like a host
// name that resolves to a private address, it is stored, reported by the verification, and
// refused by the executor.
func (s *Service) checkURL(raw string) error {
	if err := s.guard.CheckURL(raw); err != nil && !errors.Is(err, netguard.ErrForbiddenAddress) {
		return err
	}
	return nil
}

// clientCertProbe bounds the wait, after a TLS 1.3 handshake in which the server asked for a
// client certificate, for the server's verdict on it.
const clientCertProbe = time.Second

// verify resolves the URL's host and completes a TLS handshake with it through the guarded
// dialer (so through the proxy when there is one, as the calls go), presenting cert when the
// server asks for a client certificate; for an allowed plain http URL it only connects. A
// destination the guard refuses is not dialled. In TLS 1.3 a server judges the client's
// certificate after the client's side of the handshake is done, so when it asked for one, verify
// waits up to clientCertProbe for a refusal.
func (s *Service) verify(ctx context.Context, raw string, cert *tls.Certificate) error {
	if err := s.guard.CheckURL(raw); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid url: %w", err)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, VerifyTimeout)
	defer cancel()
	conn, err := s.guard.Dialer(VerifyTimeout).DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if u.Scheme == "http" {
		return nil
	}
	asked := false
	tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname(), RootCAs: s.roots, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			if cert == nil {
				return &tls.Certificate{}, nil // none: the server decides whether that will do
			}
			return cert, nil
		}})
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake%s: %w", certNote(asked, cert), err)
	}
	if asked && tc.ConnectionState().Version == tls.VersionTLS13 {
		deadline := time.Now().Add(clientCertProbe)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = tc.SetReadDeadline(deadline)
		// A server that accepts the certificate waits for the request; one that refuses it sends
		// an alert (or closes the connection).
		_, err := tc.Read(make([]byte, 1))
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return fmt.Errorf("tls handshake%s: %w", certNote(asked, cert), err)
		}
	}
	return tc.Close()
}

// certNote says, for a failed handshake's reason, whether the server asked for a client
// certificate and whether the secrets had one to give.
func certNote(asked bool, cert *tls.Certificate) string {
	switch {
	case !asked:
		return ""
	case cert == nil:
		return " (the server asked for a client certificate; the secrets have none)"
	default:
		return " (the server asked for a client certificate and was given client_certificate)"
	}
}

// DisplayURL returns the scheme and host (with its port) of raw, "" when it has none: safe to show
// operators and to store. The path, query, fragment and user information are dropped, since for
// Slack-, Teams- or Zapier-style hooks the path itself is the credential.
func DisplayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
}

// Reseal re-seals, under the current key, every stored secret that was sealed under the previous
// one, finishing a key rotation. A value changed meanwhile is left alone.
func (s *Service) Reseal(ctx context.Context) error {
	all, err := s.store.AllConnections(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range all {
		if c.Secrets == "" || s.keyring.IsCurrent(c.Secrets) {
			continue
		}
		plain, err := s.keyring.Open(c.Secrets, []byte(c.Key))
		if err != nil {
			errs = append(errs, fmt.Errorf("connection: open secrets of %q: %w", c.Key, err))
			continue
		}
		sealed, err := s.keyring.Seal(plain, []byte(c.Key))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.store.ResealSecrets(ctx, c.Key, c.Secrets, sealed); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info().Str("connection", c.Key).Msg("connection secrets re-sealed under the current key")
		s.republish(ctx, c.Key)
	}
	return errors.Join(errs...)
}

// republish puts the plans of the policies using key; a failure is logged, the periodic full
// re-publish heals it.
func (s *Service) republish(ctx context.Context, key string) {
	_, policies, err := s.users.WebhooksUsing(ctx, key)
	if err == nil && len(policies) > 0 {
		err = s.pub.PublishPolicies(ctx, policies...)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("connection", key).Msg("re-publishing plans failed; the periodic re-publish will retry")
	}
}
