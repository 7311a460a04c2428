package compose_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// secrets are the variables compose.yaml requires; the values are placeholders for loading only.
var secrets = map[string]string{
	"APP_ENCRYPTION_KEY":       "0123456789abcdef0123456789abcdef",
	"OAUTH_ROOT_CLIENT_ID":     "root",
	"OAUTH_ROOT_CLIENT_SECRET": "root-secret",
}

// productionSecrets are the variables compose.production.yaml requires on top.
var productionSecrets = map[string]string{
	"MONGO_ROOT_PASSWORD": "root-password",
	"MONGO_PASSWORD":      "policyhooks-password",
	"CALLBACK_PUBLIC_URL": "https://callback.example.com",
}

// load loads files as docker compose does (interpolation, schema, semantics) with env as the whole
// environment; nothing from the test's own environment or an .env file leaks in.
func load(t *testing.T, env map[string]string, files ...string) (*types.Project, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory("."), cli.WithEnv(list),
		cli.WithName("policyhooks"), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return opts.LoadProject(ctx)
}

func merged(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func env(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// natsUsers are the services that connect to NATS.
var natsUsers = []string{"config", "callback", "executor-1", "executor-2"}

// TestComposeFile loads compose.yaml and checks what the deployment promises: a 3-node cluster,
// every service told all three servers and three replicas, every container non-root and read-only
// from this project's images, executors given longer than their shutdown grace to stop, and the
// secrets required rather than defaulted.
func TestComposeFile(t *testing.T) {
	p, err := load(t, secrets, "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"callback", "config", "console", "executor-1", "executor-2", "nats-1", "nats-2", "nats-3", "receiver", "store"}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for name, s := range p.Services {
		if s.User != "65532" || !s.ReadOnly {
			t.Errorf("%s: user %q, read_only %v; want 65532 and read-only", name, s.User, s.ReadOnly)
		}
		if !strings.HasPrefix(s.Image, "registry.invalid/policyhooks/") {
			t.Errorf("%s: image %q is not one make images builds", name, s.Image)
		}
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := p.Services[name]
		args := strings.Join(s.Command, " ")
		for _, want := range []string{"--name=" + name, "--jetstream", "--routes=nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222", "--store_dir=/home/nonroot/"} {
			if !strings.Contains(args, want) {
				t.Errorf("%s: command %q lacks %q", name, args, want)
			}
		}
		if len(s.Volumes) != 1 || s.Volumes[0].Target != "/home/nonroot" {
			t.Errorf("%s: volumes %+v, want one volume at /home/nonroot (its store survives a restart)", name, s.Volumes)
		}
	}
	for _, name := range natsUsers {
		s := p.Services[name]
		if got := env(s, "NATS_URL"); got != "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222" {
			t.Errorf("%s: NATS_URL %q, want all three servers", name, got)
		}
		if got := env(s, "NATS_REPLICAS"); got != "3" {
			t.Errorf("%s: NATS_REPLICAS %q, want 3", name, got)
		}
		for k, v := range secrets {
			if got := env(s, k); got != v {
				t.Errorf("%s: %s = %q, want it from the environment", name, k, got)
			}
		}
	}
	for _, name := range []string{"executor-1", "executor-2"} {
		s := p.Services[name]
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < 30*time.Second {
			t.Errorf("%s: stop_grace_period %v, want at least the 25 s EXECUTOR_SHUTDOWN_GRACE plus slack", name, s.StopGracePeriod)
		}
		if got := env(s, "CALLBACK_PUBLIC_URL"); got != "http://callback:8081" {
			t.Errorf("%s: CALLBACK_PUBLIC_URL %q", name, got)
		}
	}
	if got := env(p.Services["config"], "MONGODB_URI"); !strings.Contains(got, "store:27017") || !strings.Contains(got, "maxPoolSize=1") {
		t.Errorf("config: MONGODB_URI %q, want the store with maxPoolSize=1", got)
	}

	// Each secret is required: leaving one out is an error that names it.
	for k := range secrets {
		partial := merged(secrets)
		delete(partial, k)
		if _, err := load(t, partial, "compose.yaml"); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("without %s: %v, want an error naming it", k, err)
		}
	}
}

// TestComposeProductionFile loads compose.yaml with compose.production.yaml: the embedded store and
// the example receiver are gone, config uses the replica set with the majority guarantees and its
// own user, and webhooks are public https only.
func TestComposeProductionFile(t *testing.T) {
	p, err := load(t, merged(secrets, productionSecrets), "compose.yaml", "compose.production.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"store", "receiver"} {
		if _, ok := p.Services[gone]; ok {
			t.Errorf("service %s is still there", gone)
		}
	}
	if _, ok := p.Volumes["store"]; ok {
		t.Error("volume store is still there")
	}
	for _, name := range []string{"mongo-1", "mongo-2", "mongo-3"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no %s", name)
		}
		args := strings.Join(s.Command, " ")
		if !strings.Contains(args, "--replSet=rs0") || !strings.Contains(args, "--keyFile=") {
			t.Errorf("%s: command %q, want a member of rs0 with a key file", name, args)
		}
	}
	cfg := p.Services["config"]
	uri := env(cfg, "MONGODB_URI")
	for _, want := range []string{"mongo-1:27017,mongo-2:27017,mongo-3:27017", "replicaSet=rs0", "policyhooks:policyhooks-password@"} {
		if !strings.Contains(uri, want) {
			t.Errorf("config: MONGODB_URI %q lacks %q", uri, want)
		}
	}
	if strings.Contains(uri, "maxPoolSize=1") {
		t.Errorf("config: MONGODB_URI %q keeps FerretDB's maxPoolSize=1", uri)
	}
	if _, ok := cfg.DependsOn["store"]; ok {
		t.Error("config still depends on store")
	}
	if _, ok := cfg.DependsOn["mongo-init"]; !ok {
		t.Error("config does not wait for mongo-init")
	}
	for _, name := range []string{"config", "executor-1", "executor-2"} {
		s := p.Services[name]
		if env(s, "WEBHOOK_ALLOW_HTTP") != "false" || env(s, "WEBHOOK_ALLOW_PRIVATE_NETWORKS") != "false" {
			t.Errorf("%s: WEBHOOK_ALLOW_HTTP %q, WEBHOOK_ALLOW_PRIVATE_NETWORKS %q; want both false", name,
				env(s, "WEBHOOK_ALLOW_HTTP"), env(s, "WEBHOOK_ALLOW_PRIVATE_NETWORKS"))
		}
	}
	if got := env(p.Services["executor-1"], "CALLBACK_PUBLIC_URL"); got != productionSecrets["CALLBACK_PUBLIC_URL"] {
		t.Errorf("executor-1: CALLBACK_PUBLIC_URL %q", got)
	}
	for k := range productionSecrets {
		partial := merged(secrets, productionSecrets)
		delete(partial, k)
		if _, err := load(t, partial, "compose.yaml", "compose.production.yaml"); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("without %s: %v, want an error naming it", k, err)
		}
	}
}

// TestComposeLoaderIsStrict: the loader these tests rely on refuses what a typo makes, so a passing
// test means something.
func TestComposeLoaderIsStrict(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key":       "services:\n  a:\n    image: x\n    stop_grace_periods: 1s\n",
		"unknown condition": "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_ready}\n  b:\n    image: x\n",
		"undefined service": "services:\n  a:\n    image: x\n    depends_on: [c]\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := dir + "/" + strings.ReplaceAll(name, " ", "_") + ".yaml"
			if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := load(t, nil, f); err == nil {
				t.Fatal("loaded without an error")
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
