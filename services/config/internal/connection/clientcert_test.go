package connection

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// keyOf returns the private key of a PEM PKCS #8 key.
func keyOf(t *testing.T, keyPEM string) any {
	t.Helper()
	b, _ := pem.Decode([]byte(keyPEM))
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCheckClientCertificate puts client certificates and keys of every shape through the check
// (SPEC §2): what the executor can present is accepted; anything else is an *InvalidError naming
// the field, whose message never holds the key.
func TestCheckClientCertificate(t *testing.T) {
	ca := testkit.NewCA(t, "check CA")
	certPEM, keyPEM := ca.Client(t, "client")
	_, otherKey := ca.Client(t, "other")
	expired, expiredKey := ca.Issue(t, "expired", func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	})
	serverOnly, serverOnlyKey := ca.Issue(t, "server", func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	noEKU, noEKUKey := ca.Issue(t, "no eku", nil)
	sec1, err := x509.MarshalECPrivateKey(keyOf(t, keyPEM).(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	ecParams := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert := ca.Sign(t, "rsa", &rsaKey.PublicKey, nil)
	rsaPKCS1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	encrypted := strings.Replace(keyPEM, "-----BEGIN PRIVATE KEY-----\n",
		"-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00000000000000000000000000000000\n\n", 1)
	longChain := strings.Repeat(string(ca.PEM()), MaxClientCertificates) // with the leaf: one too many
	secretPart, certPart := keyPEM[40:80], certPEM[40:80]

	for _, tc := range []struct {
		name      string
		cert, key string
		field     string // "" when accepted
		msg       string
	}{
		{"none", "", "", "", ""},
		{"leaf and PKCS #8 key", certPEM, keyPEM, "", ""},
		{"chain with its CA", certPEM + string(ca.PEM()), keyPEM, "", ""},
		{"SEC 1 key after EC PARAMETERS", certPEM, ecParams, "", ""},
		{"RSA PKCS #1 key", rsaCert, rsaPKCS1, "", ""},
		{"no extended key usage", noEKU, noEKUKey, "", ""},
		{"certificate alone", certPEM, "", "client_key", "field required"},
		{"key alone", "", keyPEM, "client_certificate", "field required"},
		{"certificate too long", certPEM + strings.Repeat(" ", MaxClientCertificate), keyPEM, "client_certificate", "at most"},
		{"key too long", certPEM, keyPEM + strings.Repeat(" ", MaxClientKey), "client_key", "at most"},
		{"not PEM", "certificate", keyPEM, "client_certificate", "not a PEM certificate chain"},
		{"key in the chain", certPEM + keyPEM, keyPEM, "client_certificate", `"PRIVATE KEY"`},
		{"text after the chain", certPEM + "trailing", keyPEM, "client_certificate", "text after"},
		{"broken certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", keyPEM, "client_certificate", "does not parse"},
		{"chain too long", certPEM + longChain, keyPEM, "client_certificate", "at most 8 certificates"},
		{"expired", expired, expiredKey, "client_certificate", "expired"},
		{"server authentication only", serverOnly, serverOnlyKey, "client_certificate", "client authentication"},
		{"key not PEM", certPEM, "key", "client_key", "not a PEM private key"},
		{"another key", certPEM, otherKey, "client_key", "does not match"},
		{"two keys", certPEM, keyPEM + otherKey, "client_key", "one PEM private key"},
		{"text after the key", certPEM, keyPEM + "trailing", "client_key", "text after"},
		{"encrypted key", certPEM, encrypted, "client_key", "encrypted"},
		{"PKCS #8 encrypted key", certPEM, strings.ReplaceAll(keyPEM, "PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), "client_key", "encrypted"},
		{"certificate as the key", certPEM, certPEM, "client_key", `"CERTIFICATE"`},
		{"broken key", certPEM, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "client_key", "does not parse"},
	} {
		err := checkClientCertificate(event.HTTPSSecrets{ClientCertificate: tc.cert, ClientKey: tc.key}, time.Now())
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v, want it accepted", tc.name, err)
			}
			continue
		}
		var inv *InvalidError
		if !errors.As(err, &inv) || len(inv.Loc) != 2 || inv.Loc[1] != tc.field || !strings.Contains(inv.Msg, tc.msg) {
			t.Errorf("%s: %v, want an *InvalidError at body.%s saying %q", tc.name, err, tc.field, tc.msg)
			continue
		}
		if strings.Contains(inv.Msg, secretPart) || strings.Contains(inv.Msg, certPart) || strings.Contains(inv.Msg, "trailing") {
			t.Errorf("%s: the message quotes the value: %s", tc.name, inv.Msg)
		}
	}
}
