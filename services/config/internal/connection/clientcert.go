package connection

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// Bounds of the client certificate of https secrets (SPEC §2).
const (
	// MaxClientCertificate is the longest client_certificate (a PEM chain), in bytes.
	MaxClientCertificate = 64 << 10
	// MaxClientCertificates is the most certificates in the chain.
	MaxClientCertificates = 8
	// MaxClientKey is the longest client_key (one PEM private key), in bytes.
	MaxClientKey = 16 << 10
)

// checkClientCertificate returns an *InvalidError for the first of client_certificate and
// client_key of sec that is not acceptable at now, and nil when neither is given or both are:
// they go together; the certificate is a PEM chain, leaf first, of at most MaxClientCertificates
// parsable certificates, whose leaf has not expired and, when it names extended key usages,
// allows client authentication; the key is one unencrypted PEM private key (PKCS #8, PKCS #1 or
// SEC 1, after EC PARAMETERS or not) matching the leaf. The messages name the field, never its
// value.
func checkClientCertificate(sec event.HTTPSSecrets, now time.Time) error {
	certPEM, keyPEM := sec.ClientCertificate, sec.ClientKey
	if certPEM == "" && keyPEM == "" {
		return nil
	}
	invalid := func(field, format string, args ...any) error {
		return &InvalidError{Loc: []any{"body", field}, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case certPEM == "":
		return invalid("client_certificate", "field required: client_certificate and client_key are given together")
	case keyPEM == "":
		return invalid("client_key", "field required: client_certificate and client_key are given together")
	case len(certPEM) > MaxClientCertificate:
		return invalid("client_certificate", "ensure this value has at most %d bytes", MaxClientCertificate)
	case len(keyPEM) > MaxClientKey:
		return invalid("client_key", "ensure this value has at most %d bytes", MaxClientKey)
	}
	var chain []*x509.Certificate
	rest := []byte(certPEM)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type != "CERTIFICATE":
			return invalid("client_certificate", "holds a PEM block of type %q: only CERTIFICATE blocks, leaf first (the private key goes in client_key)",
				blockType(block.Type))
		case len(chain) == MaxClientCertificates:
			return invalid("client_certificate", "ensure the chain has at most %d certificates", MaxClientCertificates)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return invalid("client_certificate", "certificate %d of the chain does not parse as X.509", len(chain)+1)
		}
		chain = append(chain, cert)
	}
	switch {
	case len(chain) == 0:
		return invalid("client_certificate", "is not a PEM certificate chain (-----BEGIN CERTIFICATE-----)")
	case len(bytes.TrimSpace(rest)) > 0:
		return invalid("client_certificate", "has text after its last PEM certificate")
	}
	leaf := chain[0]
	if now.After(leaf.NotAfter) {
		return invalid("client_certificate", "the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return invalid("client_certificate", "the certificate's extended key usage does not allow client authentication (clientAuth)")
	}
	var key *pem.Block
	rest = []byte(keyPEM)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
		case block.Type == "EC PARAMETERS": // openssl ecparam -genkey writes them before the key
			continue
		case key != nil:
			return invalid("client_key", "must hold one PEM private key, not more")
		default:
			key = block
			continue
		}
		break
	}
	switch {
	case key == nil:
		return invalid("client_key", "is not a PEM private key (-----BEGIN PRIVATE KEY-----)")
	case len(bytes.TrimSpace(rest)) > 0:
		return invalid("client_key", "has text after its PEM private key")
	case key.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(key.Headers["Proc-Type"], "ENCRYPTED"):
		return invalid("client_key", "an encrypted private key is not supported: give it unencrypted (it is sealed at rest)")
	case key.Type != "PRIVATE KEY" && key.Type != "RSA PRIVATE KEY" && key.Type != "EC PRIVATE KEY":
		return invalid("client_key", "holds a PEM block of type %q, not PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", blockType(key.Type))
	}
	if _, err := parseKey(key); err != nil {
		return invalid("client_key", "does not parse as a %s", key.Type)
	}
	if _, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM)); err != nil {
		return invalid("client_key", "does not match the public key of the certificate (the first of client_certificate)")
	}
	return nil
}

// parseKey parses a PEM private key block of the types checkClientCertificate accepts.
func parseKey(b *pem.Block) (any, error) {
	switch b.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	}
	return x509.ParsePKCS8PrivateKey(b.Bytes)
}

// blockType is a PEM block's type as a message may show it: printable and short.
func blockType(t string) string {
	if len(t) > 40 || strings.ContainsFunc(t, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return "?"
	}
	return t
}

// clientCertificate returns the client certificate of validated secrets, nil when they have none.
func clientCertificate(sec event.HTTPSSecrets) (*tls.Certificate, error) {
	if sec.ClientCertificate == "" {
		return nil, nil
	}
	cert, err := tls.X509KeyPair([]byte(sec.ClientCertificate), []byte(sec.ClientKey))
	if err != nil {
		return nil, fmt.Errorf("connection: client certificate: %w", err)
	}
	return &cert, nil
}
