package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/policyhooks/policyhooks/shared/testkit"
)

// TestEgressProxyAndClientCertificate runs the whole stack with WEBHOOK_PROXY_URL pointing at a
// real CONNECT proxy that requires credentials, and a connection whose receiver requires a client
// certificate (tls.RequireAndVerifyClientCert): config's verify=true and the executor's calls
// both go through the proxy, which is asked for tunnels to judged addresses only, and the mTLS
// receiver is called with the connection's certificate while verify without it fails.
func TestEgressProxyAndClientCertificate(t *testing.T) {
	proxy := testkit.NewProxy(t, testkit.ProxyOptions{User: "egress", Password: "e2e-proxy-password"})
	f := newFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "WEBHOOK_PROXY_URL": proxy.URL()})
	ca := testkit.NewCA(t, "e2e client CA")
	// httptest's server certificate, which the stack trusts through the flow's WEBHOOK_CA_FILE.
	mtls := testkit.NewReceiverTLS(t, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()})
	certPEM, keyPEM := ca.Client(t, "policyhooks-e2e")

	f.policy("egress", []hookSpec{{"pre", "one_way", "/pre"}}, nil)
	f.mustAPI(http.MethodPatch, "/api/v1/connection",
		`[{"name": "mTLS hooks", "key": "mtls_hooks", "connection_type": "https", "access": "read"}]`)
	put := func(withCert bool) map[string]any {
		t.Helper()
		body := map[string]any{"url": mtls.URL("/after"), "authorization": "Bearer e2e"}
		if withCert {
			body["client_certificate"], body["client_key"] = certPEM, keyPEM
		}
		b, _ := json.Marshal(body)
		var out map[string]any
		if err := json.Unmarshal(f.mustAPI(http.MethodPut, "/api/v1/connection/mtls_hooks/secret?verify=true", string(b)), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := put(false); out["test_status"] != "failed" ||
		!strings.Contains(fmt.Sprint(out["failure_reason"]), "the server asked for a client certificate") {
		t.Fatalf("verify without the certificate: %v, want failed, the server asking for one", out)
	}
	if out := put(true); out["test_status"] != "succeeded" {
		t.Fatalf("verify with the certificate: %v, want succeeded", out)
	}
	verifyTunnels := proxy.Tunnels()
	if verifyTunnels < 2 {
		t.Fatalf("config's verifications opened %d tunnels through the proxy, want 2", verifyTunnels)
	}
	f.mustAPI(http.MethodPut, "/api/v1/policy/egress/webhook/post_execution",
		`[{"connection_config_key": "mtls_hooks", "direction": "one_way", "key": "after", "name": "after"}]`)

	f.submit("pri_egress", "egress", "a@example.com")
	f.waitStatus("pri_egress", "complete", 30*time.Second)
	if n := len(f.callsTo("/pre")); n != 1 {
		t.Fatalf("/pre called %d times, want 1", n)
	}
	after := mtls.CallsOf("pri_egress", "/after")
	if len(after) != 1 || after[0].ClientCN != "policyhooks-e2e" || after[0].Header.Get("Authorization") != "Bearer e2e" {
		t.Fatalf("the mTLS receiver got %v, want one call with the connection's certificate", after)
	}

	port := func(raw string) string {
		u, _ := url.Parse(raw)
		return u.Port()
	}
	targets := proxy.Targets()
	judged := []string{"127.0.0.1:" + port(f.rcv.URL("/")), "127.0.0.1:" + port(mtls.URL("/"))}
	for _, want := range judged {
		if !slices.Contains(targets, want) {
			t.Errorf("the proxy was never asked for %s (targets %v): a call went around it", want, targets)
		}
	}
	for _, got := range targets {
		if !slices.Contains(judged, got) {
			t.Errorf("CONNECT %s, want only the receivers' judged addresses %v", got, judged)
		}
	}
	if proxy.Tunnels() <= verifyTunnels || proxy.Tunnels() != len(targets) || proxy.Others() != 0 {
		t.Errorf("tunnels %d (after verify %d) for %d CONNECTs and %d other requests; want the calls' tunnels too, each CONNECT answered",
			proxy.Tunnels(), verifyTunnels, len(targets), proxy.Others())
	}
}
