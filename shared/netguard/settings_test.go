package netguard

import (
	"encoding/pem"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/policyhooks/policyhooks/shared/envconfig"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewTLSServer(nil)
	srv.Close()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("defaults", func(t *testing.T) {
		r := envconfig.New(func(string) string { return "" })
		s := Read(r)
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if s.WebhookAllowHTTP || s.WebhookAllowPrivate || s.WebhookAllowedHosts != nil || s.WebhookDeniedCIDRs != nil || s.WebhookRoots != nil {
			t.Fatalf("defaults: got %+v", s)
		}
	})
	t.Run("values", func(t *testing.T) {
		env := map[string]string{
			"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "yes", "WEBHOOK_CA_FILE": caFile,
			"WEBHOOK_ALLOWED_HOSTS": " Hooks.Example.com., *.partner.test ,under_score.test",
			"WEBHOOK_DENIED_CIDRS":  "10.1.2.3/8, 169.254.169.254, fd00:ec2::/32, ::ffff:192.168.0.0/112",
		}
		r := envconfig.New(func(k string) string { return env[k] })
		s := Read(r)
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		wantHosts := []string{"hooks.example.com", "*.partner.test", "under_score.test"}
		wantCIDRs := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.169.254/32"),
			netip.MustParsePrefix("fd00:ec2::/32"), netip.MustParsePrefix("192.168.0.0/16")}
		if !s.WebhookAllowHTTP || !s.WebhookAllowPrivate || !slices.Equal(s.WebhookAllowedHosts, wantHosts) ||
			!slices.Equal(s.WebhookDeniedCIDRs, wantCIDRs) || s.WebhookRoots == nil {
			t.Fatalf("got %+v, want hosts %v and ranges %v", s, wantHosts, wantCIDRs)
		}
		p := s.Policy()
		if !p.AllowHTTP || !p.AllowPrivate || !slices.Equal(p.AllowedHosts, wantHosts) || !slices.Equal(p.Denied, wantCIDRs) {
			t.Fatalf("Policy() = %+v", p)
		}
	})
	tests := []struct {
		name, value string
		want        string // in the error
	}{
		{"WEBHOOK_ALLOW_PRIVATE_NETWORKS", "perhaps", "WEBHOOK_ALLOW_PRIVATE_NETWORKS: must be true or false"},
		{"WEBHOOK_CA_FILE", "/does/not/exist.pem", "WEBHOOK_CA_FILE: cannot read"},
		{"WEBHOOK_CA_FILE", notPEM, "WEBHOOK_CA_FILE: holds no PEM certificate"},
		{"WEBHOOK_ALLOWED_HOSTS", "a.test,,b.test", "WEBHOOK_ALLOWED_HOSTS: entry 2 is empty"},
		{"WEBHOOK_ALLOWED_HOSTS", "a.test,", "WEBHOOK_ALLOWED_HOSTS: entry 2 is empty"},
		{"WEBHOOK_ALLOWED_HOSTS", "https://hooks.example.com", `entry "https://hooks.example.com" must be a host name, not a URL`},
		{"WEBHOOK_ALLOWED_HOSTS", "hooks.example.com:443", "without a port"},
		{"WEBHOOK_ALLOWED_HOSTS", "hooks.example.com/path", "without a path"},
		{"WEBHOOK_ALLOWED_HOSTS", "user@hooks.example.com", "without a path or user information"},
		{"WEBHOOK_ALLOWED_HOSTS", "10.0.0.1", "not an IP address"},
		{"WEBHOOK_ALLOWED_HOSTS", "[::1]", "without a port"},
		{"WEBHOOK_ALLOWED_HOSTS", "*", "must be a host name"},
		{"WEBHOOK_ALLOWED_HOSTS", "a.*.example.com", "must be a host name"},
		{"WEBHOOK_ALLOWED_HOSTS", "bücher.example", "must be a host name"},
		{"WEBHOOK_DENIED_CIDRS", "10.0.0.0/33", `WEBHOOK_DENIED_CIDRS: entry "10.0.0.0/33" is not a CIDR range`},
		{"WEBHOOK_DENIED_CIDRS", "metadata", "is not a CIDR range"},
		{"WEBHOOK_DENIED_CIDRS", "fe80::1%eth0", "is not a CIDR range"},
		{"WEBHOOK_DENIED_CIDRS", "10.0.0.0/8;192.168.0.0/16", "is not a CIDR range"},
		{"WEBHOOK_DENIED_CIDRS", " ,10.0.0.0/8", "WEBHOOK_DENIED_CIDRS: entry 1 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			r := envconfig.New(func(k string) string {
				if k == tt.name {
					return tt.value
				}
				return ""
			})
			Read(r)
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Err() = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
