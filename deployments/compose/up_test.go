package compose_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/policyhooks/policyhooks/chaos"
	"github.com/policyhooks/policyhooks/shared/event"
)

// images are the tarballs of make images that compose.yaml runs.
var images = []string{"nats-server", "store", "config", "callback", "executor", "console", "receiver"}

// composeRequests is how many requests TestComposeUp submits, at composeRate per second; killAfter
// (a third of the way in) is when it kills the stream leader.
const (
	composeRequests = 80
	composeRate     = 4.0
	killAfter       = 7 * time.Second
)

// TestComposeUp is make compose: it brings compose.yaml up under podman-compose from the images of
// make images, runs the README's walkthrough against it (a connection and its secret, a policy with
// two halting two-way pre-execution webhooks and a post-execution one, requests submitted on NATS,
// the data layer answered, the receiver resuming each halt), SIGKILLs the NATS container leading the
// PRIVACY_REQUESTS stream while requests flow and starts it again, and then checks every request:
// complete, every webhook answered, one complete event, the data layer run once per execution.
//
// It needs podman, podman-compose and root (podman runs rootful with runc here,
// ../../../shared/notes/cluster-and-deployments.md §4), so make test does not run it: COMPOSE=1
// does, and then a missing tool or image fails the test.
func TestComposeUp(t *testing.T) {
	if os.Getenv("COMPOSE") != "1" {
		t.Skip("COMPOSE=1 (make compose) runs compose.yaml under podman-compose; make test checks the files only")
	}
	for _, tool := range []string{"podman", "podman-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (apt-get install podman podman-compose runc)", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	imagesDir := os.Getenv("IMAGES_DIR")
	if imagesDir == "" {
		imagesDir = filepath.Join("..", "..", ".data", "images")
	}
	u := newUp(t, imagesDir)
	for _, img := range images {
		u.run(ctx, "podman", "load", "-q", "-i", filepath.Join(imagesDir, img+".tar"))
	}
	start := time.Now()
	u.run(ctx, "podman-compose", u.compose("up", "-d")...)
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range []string{"nats-1", "nats-2", "nats-3", "config", "callback", "console", "executor-1", "executor-2", "receiver"} {
				out, _ := exec.Command("podman", "logs", "--tail", "15", u.container(svc)).CombinedOutput()
				t.Logf("logs of %s:\n%s", svc, out)
			}
		}
		down, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		u.run(down, "podman-compose", u.compose("down", "-v", "-t", "5")...)
	})

	for _, svc := range []string{u.configURL, u.callbackURL, u.consoleURL} {
		if err := waitReady(ctx, svc+"/ready"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("compose: config, callback and the console ready %.1fs after up", time.Since(start).Seconds())

	nc, err := nats.Connect(u.natsURLs, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, base: u.configURL}
	c.walkthrough(ctx, u.env["OAUTH_ROOT_CLIENT_ID"], u.env["OAUTH_ROOT_CLIENT_SECRET"])
	if err := waitPlan(ctx, js); err != nil {
		t.Fatal(err)
	}

	dl := chaos.NewDataLayer()
	cons, err := dl.Subscribe(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	dlCtx, stopDL := context.WithCancel(ctx)
	var dlDone sync.WaitGroup
	dlDone.Go(func() { dl.Run(dlCtx, js, cons) })
	defer func() { stopDL(); dlDone.Wait() }()

	// Submit at composeRate; a third of the way in, SIGKILL the stream leader's container and start
	// it again 3 s later.
	ids := make([]string, composeRequests)
	var submitted sync.WaitGroup
	submitErr := make(chan error, 1)
	submitted.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / composeRate))
		defer tick.Stop()
		for i := range ids {
			<-tick.C
			ids[i] = fmt.Sprintf("pri_compose_%03d", i)
			if err := submit(ctx, js, ids[i]); err != nil {
				submitErr <- err
				return
			}
		}
	})
	time.Sleep(killAfter)
	leader, err := streamLeader(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	u.run(ctx, "podman", "kill", "--signal", "KILL", u.container(leader))
	time.Sleep(3 * time.Second)
	u.run(ctx, "podman", "start", u.container(leader))
	t.Logf("compose: SIGKILLed %s (leader of %s) at +%.1fs, started it again 3 s later", leader, event.Stream,
		killedAt.Sub(start).Seconds())
	submitted.Wait()
	select {
	case err := <-submitErr:
		t.Fatal(err)
	default:
	}

	// Every request must settle, then each is checked.
	records := map[string]*chaos.Record{}
	settle := time.Now()
	for _, id := range ids {
		rec, err := c.waitTerminal(ctx, u.callbackURL, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		records[id] = rec
	}
	t.Logf("compose: %d requests settled %.1fs after the last submission", len(ids), time.Since(settle).Seconds())
	events, err := chaos.ReadStatusEvents(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, id := range ids {
		if problems := checkRequest(records[id], events[id], dl.Deliveries(id)); len(problems) > 0 {
			failed++
			t.Errorf("%s: %s\n%s", id, strings.Join(problems, "; "), records[id].Raw)
		}
	}
	if p := dl.Problems(); len(p) > 0 {
		t.Errorf("data layer: %v", p)
	}
	t.Logf("compose: %d of %d requests complete with every check holding", len(ids)-failed, len(ids))
}

// checkRequest returns what is wrong with one request at the end: it must be complete; its two
// pre-execution webhooks must have halted (the receiver resumed them) and its post-execution one
// succeeded, each with a 200 as its last attempt; the stream must hold exactly one complete status
// event and no error; and the data layer must have run it once, every delivery with one execution id.
func checkRequest(rec *chaos.Record, evs []chaos.StatusEvent, deliveries []chaos.Delivery) []string {
	var problems []string
	if rec.Status != "complete" {
		problems = append(problems, "status "+rec.Status)
	}
	want := map[string]string{"prep_systems_webhook": "halted", "wake_up_snowflake_db": "halted", "log_out_webhook": "succeeded"}
	if len(rec.Webhooks) != len(want) {
		problems = append(problems, fmt.Sprintf("%d webhooks, want %d", len(rec.Webhooks), len(want)))
	}
	for _, w := range rec.Webhooks {
		if w.Outcome != want[w.Key] {
			problems = append(problems, fmt.Sprintf("%s outcome %q, want %q", w.Key, w.Outcome, want[w.Key]))
		}
		if n := len(w.Attempts); n == 0 || w.Attempts[n-1].Status == nil || *w.Attempts[n-1].Status != http.StatusOK {
			problems = append(problems, w.Key+": no attempt answered 200")
		}
	}
	complete := 0
	for _, e := range evs {
		switch e.Event.Status {
		case event.StatusComplete:
			complete++
		case event.StatusError:
			problems = append(problems, "an error status event")
		}
	}
	if complete != 1 {
		problems = append(problems, fmt.Sprintf("%d complete status events, want 1", complete))
	}
	ran, execIDs := 0, map[string]bool{}
	for _, d := range deliveries {
		execIDs[d.ExecutionID] = true
		if d.Ran {
			ran++
		}
	}
	if ran != 1 || len(execIDs) != 1 {
		problems = append(problems, fmt.Sprintf("data layer ran it %d times over %d execution ids, want once over one", ran, len(execIDs)))
	}
	return problems
}

// up is one compose project: its name, environment (secrets and free ports) and addresses.
type up struct {
	t                                  *testing.T
	project                            string
	env                                map[string]string
	conf                               string
	configURL, callbackURL, consoleURL string
	natsURLs                           string
}

func newUp(t *testing.T, imagesDir string) *up {
	t.Helper()
	if _, err := os.Stat(filepath.Join(imagesDir, "store.tar")); err != nil {
		t.Fatalf("no images in %s (run make images first): %v", imagesDir, err)
	}
	// podman as these machines run it: runc, and ulimits a process without CAP_SYS_RESOURCE may set.
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits=[\"nofile=1024:1024\",\"nproc=1024:1024\"]\n[engine]\nruntime=\"runc\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := &up{t: t, project: "phcompose" + randomHex(t, 3), conf: conf, env: map[string]string{
		"APP_ENCRYPTION_KEY":       randomHex(t, 16),
		"OAUTH_ROOT_CLIENT_ID":     "root-" + randomHex(t, 4),
		"OAUTH_ROOT_CLIENT_SECRET": randomHex(t, 16),
	}}
	var urls []string
	for _, name := range []string{"NATS_PORT_1", "NATS_PORT_2", "NATS_PORT_3", "CONFIG_PORT", "CALLBACK_PORT", "CONSOLE_PORT"} {
		port := freePort(t)
		u.env[name] = port
		if strings.HasPrefix(name, "NATS_") {
			urls = append(urls, "nats://127.0.0.1:"+port)
		}
	}
	u.natsURLs = strings.Join(urls, ",")
	u.configURL = "http://127.0.0.1:" + u.env["CONFIG_PORT"]
	u.callbackURL = "http://127.0.0.1:" + u.env["CALLBACK_PORT"]
	u.consoleURL = "http://127.0.0.1:" + u.env["CONSOLE_PORT"]
	return u
}

// compose returns podman-compose's arguments for this project and compose.yaml, then args.
func (u *up) compose(args ...string) []string {
	return append([]string{"-p", u.project, "-f", "compose.yaml"}, args...)
}

// container is the name podman-compose 1.0.3 gives a service's container.
func (u *up) container(service string) string { return u.project + "_" + service + "_1" }

// run runs a command with the project's environment and fails the test if it fails.
func (u *up) run(ctx context.Context, name string, args ...string) {
	u.t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+u.conf)
	for k, v := range u.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		u.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out, 40))
	}
}

func tail(b []byte, lines int) string {
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func waitReady(ctx context.Context, u string) error {
	var last string
	for {
		resp, err := http.Get(u)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never ready: %s", u, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// client calls the config and callback APIs with the root client's token.
type client struct {
	t     *testing.T
	base  string
	token string
}

// walkthrough is the README's walkthrough, steps 1 to 3: a token, an https connection and its
// secret (the receiver on the compose network), a policy with two two-way pre-execution webhooks
// and one one-way post-execution webhook.
func (c *client) walkthrough(ctx context.Context, id, secret string) {
	c.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	c.do(ctx, http.MethodPost, c.base+"/api/v1/oauth/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), &tok)
	c.token = tok.AccessToken
	c.json(ctx, http.MethodPatch, "/api/v1/connection", `[{"name": "My Webhook Connection Configuration",
		"key": "test_webhook_connection_config", "connection_type": "https", "access": "read"}]`)
	c.json(ctx, http.MethodPut, "/api/v1/connection/test_webhook_connection_config/secret?verify=false",
		`{"url": "http://receiver:9000/hook", "authorization": "test_authorization"}`)
	c.json(ctx, http.MethodPatch, "/api/v1/policy", `[{"name": "My Policy", "key": "my_policy"}]`)
	c.json(ctx, http.MethodPut, "/api/v1/policy/my_policy/webhook/pre_execution", `[
		{"connection_config_key": "test_webhook_connection_config", "direction": "two_way", "key": "prep_systems_webhook", "name": "Prep Systems Webhook"},
		{"connection_config_key": "test_webhook_connection_config", "direction": "two_way", "key": "wake_up_snowflake_db", "name": "Wake up Snowflake DB Webhook"}]`)
	c.json(ctx, http.MethodPut, "/api/v1/policy/my_policy/webhook/post_execution", `[
		{"connection_config_key": "test_webhook_connection_config", "direction": "one_way", "key": "log_out_webhook", "name": "Log the user out"}]`)
}

func (c *client) json(ctx context.Context, method, path, body string) {
	c.t.Helper()
	c.do(ctx, method, c.base+path, "application/json", strings.NewReader(body), nil)
}

func (c *client) do(ctx context.Context, method, u, contentType string, body io.Reader, out any) {
	c.t.Helper()
	status, b, err := c.request(ctx, method, u, contentType, body)
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("%s %s: %d %v %s", method, u, status, err, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v", method, u, err)
		}
	}
}

func (c *client) request(ctx context.Context, method, u, contentType string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitTerminal polls the callback until request id is complete or in error (3 minutes at most).
func (c *client) waitTerminal(ctx context.Context, callback, id string) (*chaos.Record, error) {
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		status, b, err := c.request(ctx, http.MethodGet, callback+"/api/v1/privacy-request/"+id, "", nil)
		if err == nil && status == http.StatusOK {
			rec := &chaos.Record{Raw: string(b)}
			if err := json.Unmarshal(b, rec); err != nil {
				return nil, err
			}
			if rec.Terminal() {
				return rec, nil
			}
			last = rec.Status + " at " + rec.Step
		} else {
			last = fmt.Sprintf("%d %v %s", status, err, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil, fmt.Errorf("not settled within 3 minutes: %s", last)
}

// waitPlan waits until config has published my_policy's plan with its three webhooks.
func waitPlan(ctx context.Context, js jetstream.JetStream) error {
	var last error
	for ctx.Err() == nil {
		kv, err := js.KeyValue(ctx, event.BucketPlans)
		if err == nil {
			var e jetstream.KeyValueEntry
			if e, err = kv.Get(ctx, event.KVKey("my_policy")); err == nil {
				var p event.Plan
				if err = json.Unmarshal(e.Value(), &p); err == nil && len(p.Pre) == 2 && len(p.Post) == 1 {
					return nil
				}
			}
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("plan of my_policy not published: %v", last)
}

// submit publishes request id as an upstream system would, retrying with the same message id while
// the cluster elects a leader (30 s at most).
func submit(ctx context.Context, js jetstream.JetStream, id string) error {
	body := fmt.Sprintf(`{"id": %q, "policy_key": "my_policy", "identity": {"email": "customer-%s@example.com"}}`, id, id)
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, event.SubjectSubmitted, []byte(body), jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("submit %s: %w", id, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// streamLeader names the NATS server leading the PRIVACY_REQUESTS stream (its compose service).
func streamLeader(ctx context.Context, js jetstream.JetStream) (string, error) {
	s, err := js.Stream(ctx, event.Stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", event.Stream)
	}
	return info.Cluster.Leader, nil
}
