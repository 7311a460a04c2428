package app

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfig(t *testing.T) {
	c, err := LoadConfig(env(map[string]string{"CONFIG_URL": "http://127.0.0.1:8080/", "CALLBACK_URL": "https://cb.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8083" || c.ConfigURL != "http://127.0.0.1:8080" || c.CallbackURL != "https://cb.example" || c.LogLevel != "info" {
		t.Fatalf("config = %+v", c)
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing set", map[string]string{}, []string{"CONFIG_URL: is required", "CALLBACK_URL: is required"}},
		{"not URLs", map[string]string{"CONFIG_URL": "config:8080", "CALLBACK_URL": "ftp://x"}, []string{"CONFIG_URL: must be an absolute", "CALLBACK_URL: must be an absolute"}},
		{"a path", map[string]string{"CONFIG_URL": "http://x/api", "CALLBACK_URL": "http://y"}, []string{"CONFIG_URL: must be a base URL"}},
		{"log level", map[string]string{"CONFIG_URL": "http://x", "CALLBACK_URL": "http://y", "LOG_LEVEL": "loud"}, []string{"LOG_LEVEL"}},
	}
	for _, tt := range tests {
		_, err := LoadConfig(env(tt.env))
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err = %v, want it to say %q", tt.name, err, w)
			}
		}
	}
}

// TestStartServesUntilCancelled starts the console on a free port, asks it for its page and
// health, and stops it.
func TestStartServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Config{HTTPAddr: "127.0.0.1:0", ConfigURL: "http://127.0.0.1:1", CallbackURL: "http://127.0.0.1:1"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/": 200, "/health": 200, "/ready": 503} {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the console did not stop")
	}
}
