package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests: it issues server and client certificates (ECDSA P-256)
// valid from an hour ago for a day.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA returns a new CA whose certificate has the common name name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testkit: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testkit: CA certificate: %v", err)
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// PEM returns the CA's certificate in PEM.
func (ca *CA) PEM() []byte { return ca.pem }

// Pool returns a pool holding the CA's certificate alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// File writes the CA's certificate, and the PEM of extra after it, to a file in t.TempDir() and
// returns its path (for WEBHOOK_CA_FILE).
func (ca *CA) File(t testing.TB, extra ...[]byte) string {
	t.Helper()
	b := append([]byte(nil), ca.pem...)
	for _, e := range extra {
		b = append(b, e...)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return path
}

// Server issues a certificate for server authentication of hosts (names or IP addresses).
func (ca *CA) Server(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, hosts[0], func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				c.IPAddresses = append(c.IPAddresses, ip)
			} else {
				c.DNSNames = append(c.DNSNames, h)
			}
		}
	})
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatalf("testkit: server certificate: %v", err)
	}
	return cert
}

// Client issues a certificate for client authentication with common name cn, and returns the PEM
// of its chain (the certificate alone) and of its private key (PKCS #8).
func (ca *CA) Client(t testing.TB, cn string) (certPEM, keyPEM string) {
	t.Helper()
	return ca.Issue(t, cn, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
}

// Issue issues a certificate with common name cn, digital signature key usage and the changes of
// edit (nil: none), and returns the PEM of the certificate and of its new private key (PKCS #8).
func (ca *CA) Issue(t testing.TB, cn string, edit func(*x509.Certificate)) (certPEM, keyPEM string) {
	t.Helper()
	key := newKey(t)
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testkit: key of %q: %v", cn, err)
	}
	return ca.Sign(t, cn, &key.PublicKey, edit), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}))
}

// Sign issues a certificate for the public key pub (of a key made elsewhere) as Issue does, and
// returns its PEM.
func (ca *CA) Sign(t testing.TB, cn string, pub crypto.PublicKey, edit func(*x509.Certificate)) string {
	t.Helper()
	tmpl := template(t, cn)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatalf("testkit: certificate %q: %v", cn, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testkit: key: %v", err)
	}
	return key
}

func template(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testkit: serial: %v", err)
	}
	now := time.Now()
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
}
