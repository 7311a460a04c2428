package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	callback "github.com/policyhooks/policyhooks/services/callback/app"
	config "github.com/policyhooks/policyhooks/services/config/app"
	console "github.com/policyhooks/policyhooks/services/console/app"
	executor "github.com/policyhooks/policyhooks/services/executor/app"
	"github.com/policyhooks/policyhooks/shared/devstack"
	"github.com/policyhooks/policyhooks/shared/devstack/ferret"
	"github.com/policyhooks/policyhooks/shared/envconfig"
	"github.com/policyhooks/policyhooks/shared/logging"
	"github.com/policyhooks/policyhooks/shared/tracing"
	"github.com/rs/zerolog"
)

// Default addresses of the local stack (SPEC §8 and the README).
const (
	natsAddr     = "127.0.0.1:4222"
	storeAddr    = "127.0.0.1:27017"
	configAddr   = "127.0.0.1:8080"
	callbackAddr = "127.0.0.1:8081"
	executorAddr = "127.0.0.1:8082"
	consoleAddr  = "127.0.0.1:8083"
)

// Stack is a running local system.
type Stack struct {
	NATSURL     string
	MongoURI    string
	ConfigURL   string
	CallbackURL string
	ExecutorURL string
	// ConsoleURL is the operator console's base URL; empty when the stack runs none.
	ConsoleURL string
	DataDir    string
	Env        map[string]string

	stop     func()
	wait     []func() error
	waitOnce sync.Once
	waitErr  error
}

// Options chooses the addresses of a stack; tests use "127.0.0.1:0" everywhere.
type Options struct {
	DataDir      string
	NATSAddr     string
	StoreAddr    string
	ConfigAddr   string
	CallbackAddr string
	ExecutorAddr string
	// ConsoleAddr is where the operator console listens; empty: no console.
	ConsoleAddr string
	Log         io.Writer
}

func run(ctx context.Context, dataDir string, getenv func(string) string, stdout io.Writer) error {
	s, err := Start(ctx, Options{
		DataDir: dataDir, NATSAddr: natsAddr, StoreAddr: storeAddr,
		ConfigAddr: configAddr, CallbackAddr: callbackAddr, ExecutorAddr: executorAddr, ConsoleAddr: consoleAddr,
		Log: os.Stderr,
	}, getenv)
	if err != nil {
		return err
	}
	s.printBanner(stdout)
	<-ctx.Done()
	fmt.Fprintln(stdout, "policyhooks: stopping (draining consumers and in-flight requests)...")
	return s.Wait()
}

// Start starts the embedded NATS and store (unless NATS_URL / MONGODB_URI point elsewhere) and the
// three services, and the console when o.ConsoleAddr is set, and returns once all serve.
func Start(ctx context.Context, o Options, getenv func(string) string) (*Stack, error) {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	creds, err := loadOrCreateCredentials(filepath.Join(o.DataDir, "credentials.env"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stack{stop: cancel, DataDir: o.DataDir}
	fail := func(err error) (*Stack, error) {
		cancel()
		_ = s.Wait()
		return nil, err
	}

	env := map[string]string{
		"WEBHOOK_ALLOW_HTTP":             "true",
		"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
		"LOG_FORMAT":                     "console",
	}
	for k, v := range creds {
		env[k] = v
	}
	if u := getenv("NATS_URL"); u != "" {
		s.NATSURL = u
	} else {
		host, port, err := splitAddr(o.NATSAddr)
		if err != nil {
			return fail(err)
		}
		n, err := devstack.StartNATS(filepath.Join(o.DataDir, "nats"), host, port)
		if err != nil {
			return fail(err)
		}
		s.wait = append(s.wait, func() error { n.Shutdown(); return nil })
		s.NATSURL = n.URL()
	}
	env["NATS_URL"] = s.NATSURL
	if u := getenv("MONGODB_URI"); u != "" {
		s.MongoURI = u
	} else {
		st, err := ferret.Start(filepath.Join(o.DataDir, "store"), o.StoreAddr)
		if err != nil {
			return fail(err)
		}
		s.wait = append(s.wait, func() error { st.Stop(); return nil })
		s.MongoURI = st.URI()
	}
	env["MONGODB_URI"] = s.MongoURI

	// Each service gets its own HTTP_ADDR; the rest is shared. Real environment variables win.
	lookup := func(service, addr string) func(string) string {
		return func(k string) string {
			if k == "HTTP_ADDR" {
				if v := getenv(strings.ToUpper(service) + "_HTTP_ADDR"); v != "" {
					return v
				}
				return addr
			}
			if v := getenv(k); v != "" {
				return v
			}
			return env[k]
		}
	}
	logOut := o.Log
	if logOut == nil {
		logOut = io.Discard
	}
	// Each service logs as its own settings say (LOG_LEVEL, LOG_FORMAT; console unless set).
	logger := func(service string, c envconfig.Common) (zerolog.Logger, error) {
		return logging.New(logOut, c.LogLevel, c.LogFormat, service)
	}

	// Config first (it publishes the plans), then callback (its address goes into reply-to), then
	// the executor.
	cfgEnv := lookup("config", o.ConfigAddr)
	cfgCfg, err := config.LoadConfig(cfgEnv)
	if err != nil {
		return fail(fmt.Errorf("config service: %w", err))
	}
	cfgLog, err := logger("config", cfgCfg.Common)
	if err != nil {
		return fail(err)
	}
	cfgSvc, err := config.Start(ctx, cfgCfg, cfgLog)
	if err != nil {
		return fail(fmt.Errorf("config service: %w", err))
	}
	s.wait = append(s.wait, cfgSvc.Wait)
	s.ConfigURL = "http://" + cfgSvc.Addr()

	cbEnv := lookup("callback", o.CallbackAddr)
	cbCfg, err := callback.LoadConfig(cbEnv)
	if err != nil {
		return fail(fmt.Errorf("callback service: %w", err))
	}
	cbLog, err := logger("callback", cbCfg.Common)
	if err != nil {
		return fail(err)
	}
	if cbCfg.Tracing, err = tracing.Setup(ctx, "callback", cbEnv); err != nil {
		return fail(fmt.Errorf("callback service: %w", err))
	}
	s.wait = append(s.wait, func() error { tracing.ShutdownWithin(cbCfg.Tracing, 5*time.Second, cbLog); return nil })
	cbSvc, err := callback.Start(ctx, cbCfg, cbLog)
	if err != nil {
		return fail(fmt.Errorf("callback service: %w", err))
	}
	s.wait = append(s.wait, cbSvc.Wait)
	s.CallbackURL = "http://" + cbSvc.Addr()
	env["CALLBACK_PUBLIC_URL"] = s.CallbackURL

	// The console after callback: it proxies the config and callback APIs.
	if o.ConsoleAddr != "" {
		env["CONFIG_URL"] = s.ConfigURL
		env["CALLBACK_URL"] = s.CallbackURL
		coCfg, err := console.LoadConfig(lookup("console", o.ConsoleAddr))
		if err != nil {
			return fail(fmt.Errorf("console: %w", err))
		}
		coLog, err := logging.New(logOut, coCfg.LogLevel, coCfg.LogFormat, "console")
		if err != nil {
			return fail(err)
		}
		coSvc, err := console.Start(ctx, coCfg, coLog)
		if err != nil {
			return fail(fmt.Errorf("console: %w", err))
		}
		s.wait = append(s.wait, coSvc.Wait)
		s.ConsoleURL = "http://" + coSvc.Addr()
	}

	exEnv := lookup("executor", o.ExecutorAddr)
	exCfg, err := executor.LoadConfig(exEnv)
	if err != nil {
		return fail(fmt.Errorf("executor: %w", err))
	}
	exLog, err := logger("executor", exCfg.Common)
	if err != nil {
		return fail(err)
	}
	if exCfg.Tracing, err = tracing.Setup(ctx, "executor", exEnv); err != nil {
		return fail(fmt.Errorf("executor: %w", err))
	}
	s.wait = append(s.wait, func() error { tracing.ShutdownWithin(exCfg.Tracing, 5*time.Second, exLog); return nil })
	exSvc, err := executor.Start(ctx, exCfg, exLog)
	if err != nil {
		return fail(fmt.Errorf("executor: %w", err))
	}
	s.wait = append(s.wait, exSvc.Wait)
	s.ExecutorURL = "http://" + exSvc.Addr()

	s.Env = map[string]string{}
	for _, k := range []string{"APP_ENCRYPTION_KEY", "OAUTH_ROOT_CLIENT_ID", "OAUTH_ROOT_CLIENT_SECRET"} {
		s.Env[k] = cfgEnv(k)
	}
	return s, nil
}

// Stop asks every part to stop; Wait waits for them.
func (s *Stack) Stop() { s.stop() }

// Wait stops the services in reverse start order (executor first, NATS last) and returns their
// errors. It may be called more than once.
func (s *Stack) Wait() error {
	s.waitOnce.Do(func() {
		s.stop()
		var errs []error
		for i := len(s.wait) - 1; i >= 0; i-- {
			if err := s.wait[i](); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
		s.waitErr = errors.Join(errs...)
	})
	return s.waitErr
}

func (s *Stack) printBanner(w io.Writer) {
	consoleLine := ""
	if s.ConsoleURL != "" {
		consoleLine = fmt.Sprintf("  console        %s  (sign in with the root client below)\n", s.ConsoleURL)
	}
	fmt.Fprintf(w, `
policyhooks is running (Ctrl-C stops it; data is kept in %s)

%s  config API     %s/api/v1          (OpenAPI: %s/api/v1/openapi.json)
  callback API   %s/api/v1
  executor       %s/health, /metrics
  NATS           %s               (make nats, then: bin/nats -s %s ...)
  MongoDB store  %s

  root client    OAUTH_ROOT_CLIENT_ID=%s
                 OAUTH_ROOT_CLIENT_SECRET=%s

  Local settings: WEBHOOK_ALLOW_HTTP=true and WEBHOOK_ALLOW_PRIVATE_NETWORKS=true, so http:// and
  loopback webhook URLs are accepted. Do not use these settings in production.

`, s.DataDir, consoleLine, s.ConfigURL, s.ConfigURL, s.CallbackURL, s.ExecutorURL, s.NATSURL, s.NATSURL, s.MongoURI,
		s.Env["OAUTH_ROOT_CLIENT_ID"], s.Env["OAUTH_ROOT_CLIENT_SECRET"])
}

// loadOrCreateCredentials reads KEY=VALUE lines from path, generating the encryption key and root
// client on first use; the file is readable by its owner only.
func loadOrCreateCredentials(path string) (map[string]string, error) {
	creds := map[string]string{}
	f, err := os.Open(path)
	switch {
	case err == nil:
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
				creds[k] = v
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("credentials: %w", err)
	}
	changed := false
	for k, n := range map[string]int{"APP_ENCRYPTION_KEY": 16, "OAUTH_ROOT_CLIENT_SECRET": 24} {
		if creds[k] == "" {
			creds[k] = randomHex(n)
			changed = true
		}
	}
	if creds["OAUTH_ROOT_CLIENT_ID"] == "" {
		creds["OAUTH_ROOT_CLIENT_ID"] = "root"
		changed = true
	}
	if changed {
		var b strings.Builder
		b.WriteString("# Generated by make run for the local stack. Environment variables override these.\n")
		for _, k := range []string{"APP_ENCRYPTION_KEY", "OAUTH_ROOT_CLIENT_ID", "OAUTH_ROOT_CLIENT_SECRET"} {
			fmt.Fprintf(&b, "%s=%s\n", k, creds[k])
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
	}
	return creds, nil
}

func randomHex(nBytes int) string {
	b := make([]byte, nBytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func splitAddr(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	if p == 0 {
		p = -1
	}
	return host, p, nil
}
