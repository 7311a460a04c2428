package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlocks returns the ```sh code blocks of the README in order.
func readmeBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestReadmeQuickstart runs every sh block of the README, in order, in one bash at the repository
// root, against a real local stack (embedded NATS and FerretDB, the three services) on free ports:
// the quickstart must take a request through a halt, a resume and the data layer to complete.
func TestReadmeQuickstart(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README quickstart needs curl on the PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 8 {
		t.Fatalf("README has %d sh blocks, want the whole quickstart", len(blocks))
	}
	data := t.TempDir()
	var logs bytes.Buffer
	stack, err := Start(ctx, Options{
		DataDir: data, NATSAddr: "127.0.0.1:0", StoreAddr: "127.0.0.1:0",
		ConfigAddr: "127.0.0.1:0", CallbackAddr: "127.0.0.1:0", ExecutorAddr: "127.0.0.1:0",
		Log: &syncBuffer{b: &logs},
	}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stack.Wait(); err != nil {
			t.Errorf("stack shutdown: %v", err)
		}
	}()

	script := "set -euo pipefail\nset -x\n" + strings.Join(blocks, "\n")
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// The script leaves background jobs (the receiver, nats sub) holding its output open: once bash
	// exits, stop waiting for them after a moment.
	cmd.WaitDelay = 3 * time.Second
	cmd.Env = append(os.Environ(),
		"PH_CONFIG="+stack.ConfigURL,
		"PH_CALLBACK="+stack.CallbackURL,
		"PH_DATA="+data,
		"PH_RECEIVER_ADDR="+freeAddr(t),
		"NATS_URL="+stack.NATSURL,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	// Background jobs of the script (the receiver, nats sub) end with it.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // bash exited 0; only its background jobs still held the output
	}
	if err != nil {
		t.Fatalf("README quickstart failed: %v\n--- script output ---\n%s\n--- stack log (tail) ---\n%s", err, out.String(), tail(logs.String(), 4000))
	}

	// The request went through two halts and the data layer, and the receiver saw every call.
	text := out.String()
	for _, want := range []string{
		`"new_order"`, `halted request pri_quickstart_1`, `resumed request pri_quickstart_1: HTTP 200`,
		"privacy.request.status.paused", "privacy.request.status.complete",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("quickstart output lacks %q", want)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, stack.CallbackURL+"/api/v1/privacy-request/pri_quickstart_1", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken(t, ctx, stack))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("customer-1@example.com")) || bytes.Contains(raw, []byte("555-0100")) {
		t.Errorf("the request view shows identity data: %s", raw)
	}
	var view struct {
		Status   string `json:"status"`
		Webhooks []struct {
			Key     string `json:"key"`
			Outcome string `json:"outcome"`
		} `json:"webhooks"`
	}
	if err := json.Unmarshal(raw, &view); err != nil {
		t.Fatal(err)
	}
	if view.Status != "complete" || len(view.Webhooks) != 3 {
		t.Fatalf("request view = %+v, want complete with 3 webhooks", view)
	}
	if logText := logs.String(); strings.Contains(logText, "customer-1@example.com") || strings.Contains(logText, "test_authorization") {
		t.Error("the services logged an identity value or a secret")
	}
}

func accessToken(t *testing.T, ctx context.Context, s *Stack) string {
	t.Helper()
	body := strings.NewReader("grant_type=client_credentials&client_id=" + s.Env["OAUTH_ROOT_CLIENT_ID"] +
		"&client_secret=" + s.Env["OAUTH_ROOT_CLIENT_SECRET"])
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.ConfigURL+"/api/v1/oauth/token", body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
