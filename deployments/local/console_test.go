package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/policyhooks/policyhooks/shared/testkit"
)

// chromiumPath is Debian's Chromium (apt-get install chromium), which the console's browser tests
// drive.
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium tab on the console of a stack.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	// shots is where screenshots go (CONSOLE_SCREENSHOTS); empty: none are taken.
	shots string

	mu       sync.Mutex
	problems []string
}

// newBrowser starts Chromium headless, in a fresh profile, with every background fetch off (the
// machine's network is closed), at 1280x800.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the console's browser tests need Chromium at %s (as root: apt-get update && apt-get install -y chromium): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	b := &browser{t: t, ctx: ctx, base: base, shots: os.Getenv("CONSOLE_SCREENSHOTS")}
	// The first run starts the browser, which lives as long as the context it runs with: ctx itself,
	// not one with a timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}

	// Script errors and Content-Security-Policy violations fail the test at its end.
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	entries := chromedp.Events(ctx, log.EntryAdded)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil {
				text += " " + d.Exception.Description
			}
			b.problem(fmt.Sprintf("script exception at %s:%d: %s", d.URL, d.LineNumber+1, text))
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			if strings.Contains(ev.Entry.Text, "Content Security Policy") {
				b.problem("CSP violation: " + ev.Entry.Text)
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Error(p)
		}
	})
	return b
}

func (b *browser) problem(p string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, p)
}

// do runs actions, failing the test on the first error.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (page: %s)", err, b.pageText())
	}
}

// eval returns the value of a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true.
func (b *browser) waitFor(what, expr string, within time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("browser: waiting for %s: %v\npage: %s", what, err, b.pageText())
	}
}

// waitText waits until the element sel holds text.
func (b *browser) waitText(sel, text string, within time.Duration) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%q in %s", text, sel),
		fmt.Sprintf(`(document.querySelector(%s)?.textContent || '').includes(%s)`, jsString(sel), jsString(text)), within)
}

// pageText is the visible text of the page and the status region, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + ' | ' + document.getElementById('status').textContent + ' | ' + document.querySelector('main').innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return tail(s, 3000)
}

// open navigates to a hash route of the console and waits for its heading to take the focus.
func (b *browser) open(hash, heading string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base + "/" + hash))
	b.waitFor("the heading "+heading+" to have the focus",
		fmt.Sprintf(`document.activeElement && document.activeElement.tagName === 'H1' && document.activeElement.textContent === %s`, jsString(heading)), 10*time.Second)
}

// shot writes a PNG of the viewport into the screenshot directory, if there is one.
func (b *browser) shot(name string) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	// Let the last refresh paint, and take the focus ring away from the picture.
	b.do(chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur()`))
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// TestConsole drives the operator console in Chromium against a whole local stack: sign in, the
// requests page and a paused request's reason, a failed request's timeline and Retry, reordering
// a policy's webhooks with the buttons, and the connections page's health and secret form.
func TestConsole(t *testing.T) {
	f := startFlow(t, map[string]string{
		"EXECUTION_STAGE": "skip", "CIRCUIT_BREAKER_FAILURES": "2", "CIRCUIT_BREAKER_COOLDOWN": "1m",
		"WEBHOOK_RETRY_BASE_DELAY": "50ms", "WEBHOOK_RETRY_MAX_DELAY": "100ms", "WEBHOOK_MAX_ATTEMPTS": "20",
	}, "127.0.0.1:0")
	f.answer("/halt", `{"halt": true}`)
	f.answer("/ok", `{}`)
	var mu sync.Mutex
	failing := true
	f.rcv.On("/lookup", func(int, testkit.Call) testkit.Answer {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return testkit.Answer{Status: 404, Body: "no such user"}
		}
		return testkit.Answer{Body: `{}`}
	})
	f.policy("console_paused", []hookSpec{{"ask", "two_way", "/halt"}}, nil)
	f.policy("console_failing", []hookSpec{{"first", "one_way", "/ok"}, {"lookup", "two_way", "/lookup"}}, nil)
	f.policy("console_order", []hookSpec{{"a", "one_way", "/ok"}, {"b", "one_way", "/ok"}, {"c", "one_way", "/ok"}}, nil)
	// A receiver that is down (503) opens its connection's breaker after two calls.
	down := f.downAt("/down")
	f.policy("console_down", []hookSpec{{"crm", "one_way", "/down"}}, nil)
	f.submit("pri_console_down", "console_down", "down@example.com")
	f.submit("pri_console_paused", "console_paused", "paused@example.com")
	f.submit("pri_console_failed", "console_failing", "failed@example.com")
	f.waitStatus("pri_console_paused", "paused", 20*time.Second)
	f.waitStatus("pri_console_failed", "error", 20*time.Second)
	f.waitingFor("pri_console_down", "connection", 20*time.Second)

	b := newBrowser(t, f.stack.ConsoleURL)

	t.Run("sign in", func(t *testing.T) {
		b.t, f.t = t, t
		b.signIn(f)
		if !eval[bool](b, `sessionStorage.getItem('policyhooks.token')?.length > 20 && localStorage.length === 0 && !location.href.includes(sessionStorage.getItem('policyhooks.token'))`) {
			t.Fatal("the token is not (only) in sessionStorage")
		}
	})

	t.Run("a paused request and why it waits", func(t *testing.T) {
		b.t, f.t = t, t
		b.open("#/requests", "Privacy requests")
		link := `#attention a[href="#/requests/pri_console_paused"]`
		b.waitFor("the paused request among those needing attention", fmt.Sprintf(`!!document.querySelector(%s)`, jsString(link)), 10*time.Second)
		b.waitText("#all-requests", "pri_console_failed", 5*time.Second)
		b.shot("requests")
		// A refresh (every 3 s) keeps the focus where the user put it.
		b.do(chromedp.Focus(chromedp.CSS(`#all-requests a[href="#/requests/pri_console_down"]`)))
		b.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#all-requests table').dataset.old = '1'`))
		b.waitFor("a refresh", `!document.querySelector('#all-requests table[data-old]')`, 5*time.Second)
		if got := eval[string](b, `document.activeElement?.getAttribute('href') || ''`); got != "#/requests/pri_console_down" {
			t.Fatalf("after a refresh the focus is on %q, want the link to pri_console_down", got)
		}
		// Several statuses and a policy narrow the list.
		rowsOf := `[...document.querySelectorAll('#all-requests tbody th')].map((c) => c.textContent).sort().join(',')`
		b.do(
			chromedp.Click(chromedp.CSS(`input[name=status][value=paused]`)),
			chromedp.Click(chromedp.CSS(`input[name=status][value=error]`)),
			chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)),
		)
		b.waitFor("paused and failed requests only", rowsOf+` === 'pri_console_failed,pri_console_paused'`, 5*time.Second)
		b.waitFor("the policies in the filter", `!!document.querySelector('#filter-policy option[value=console_paused]')`, 5*time.Second)
		b.do(
			chromedp.SetValue(chromedp.ID("filter-policy"), "console_paused"),
			chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)),
		)
		b.waitFor("the paused request only", rowsOf+` === 'pri_console_paused'`, 5*time.Second)
		b.waitText("#status", "1 request matches; 1 needs attention.", 5*time.Second)
		b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=button]`)))
		b.waitFor("every request again", rowsOf+` === 'pri_console_down,pri_console_failed,pri_console_paused'`, 5*time.Second)
		b.do(
			chromedp.SendKeys(chromedp.ID("filter-id"), "pri_console_failed"),
			chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)),
		)
		b.waitFor("the request of that id", rowsOf+` === 'pri_console_failed'`, 5*time.Second)
		b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=button]`)))
		b.waitFor("every request again", rowsOf+` === 'pri_console_down,pri_console_failed,pri_console_paused'`, 5*time.Second)
		b.do(chromedp.Click(chromedp.CSS(link)))
		b.waitFor("the request's heading to have the focus", `document.activeElement?.textContent === 'Request pri_console_paused'`, 10*time.Second)
		b.waitText("#waiting-for", "Waits for the receiver of webhook ask to resume it, until ", 10*time.Second)
	})

	t.Run("a failed request: timeline and retry", func(t *testing.T) {
		b.t, f.t = t, t
		b.open("#/requests/pri_console_failed", "Request pri_console_failed")
		b.waitText("#request-error", "lookup", 10*time.Second)
		b.waitFor("a timeline row in error", `[...document.querySelectorAll('#request-body table')].some((t) => t.querySelector('caption')?.textContent === 'Timeline' && [...t.querySelectorAll('tbody td:nth-child(3)')].some((c) => c.textContent === 'error'))`, 10*time.Second)
		b.waitFor("the attempt's status code", `[...document.querySelectorAll('#request-body table')].some((t) => t.querySelector('caption')?.textContent === 'Attempts of webhook lookup' && t.querySelector('tbody').textContent.includes('404'))`, 5*time.Second)
		b.shot("request")
		mu.Lock()
		failing = false
		mu.Unlock()
		b.do(chromedp.Click(chromedp.ID("retry")))
		b.waitText("#status", "Retried: the request is in processing", 10*time.Second)
		f.waitStatus("pri_console_failed", "complete", 20*time.Second)
		b.waitText("#request-body dl", "complete", 10*time.Second)
	})

	t.Run("reorder a policy's webhooks", func(t *testing.T) {
		b.t, f.t = t, t
		b.open("#/policies/console_order", "Policy console_order")
		b.waitFor("the webhooks", `!!document.querySelector('button[aria-label="Move down a"]')`, 10*time.Second)
		b.shot("policy")
		// By mouse: a goes down, after b.
		b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Move down a"]`)))
		b.waitText("#status", "Moved a to position 2", 10*time.Second)
		if got := preOrder(f, "console_order"); got != "b,a,c" {
			t.Fatalf("order after moving a down = %s, want b,a,c", got)
		}
		// By keyboard: c goes up, before a; the focus follows c.
		b.do(chromedp.Focus(chromedp.CSS(`button[aria-label="Move up c"]`)), chromedp.KeyEvent("\r"))
		b.waitText("#status", "Moved c to position 2", 10*time.Second)
		if got := preOrder(f, "console_order"); got != "b,c,a" {
			t.Fatalf("order after moving c up = %s, want b,c,a", got)
		}
		b.waitFor("the focus to stay on c's button", `document.activeElement?.getAttribute('aria-label') === 'Move up c'`, 5*time.Second)
	})

	t.Run("pre-approval webhooks: add, reorder, remove", func(t *testing.T) {
		b.t, f.t = t, t
		b.open("#/policies", "Policies")
		b.waitFor("the pre-approval section and its connections", `document.querySelector('#pre-approval')?.textContent === 'No pre-approval webhook.' &&
			!!document.querySelector('#pa-connection option[value="console_order_b"]')`, 10*time.Second)
		for _, w := range []struct{ conn, name, key string }{{"console_order_a", "Fraud check", "fraud"}, {"console_order_b", "Age check", "age"}} {
			b.do(
				chromedp.SetValue(chromedp.CSS(`#pa-connection`), w.conn),
				chromedp.SendKeys(chromedp.CSS(`#pa-name`), w.name),
				chromedp.SendKeys(chromedp.CSS(`#pa-key`), w.key),
				chromedp.Click(chromedp.CSS(`#add-pre-approval button[type=submit]`)),
			)
			b.waitText("#status", "Added pre-approval webhook "+w.key+".", 10*time.Second)
		}
		if got := preApprovalOrder(f); got != "fraud:console_order_a,age:console_order_b" {
			t.Fatalf("pre-approval webhooks after adding two = %s", got)
		}
		if eval[bool](b, `document.querySelector('#pa-name').value !== '' || document.querySelector('#pa-key').value !== ''`) {
			t.Fatal("the add form keeps the last webhook's name or key")
		}
		b.shot("pre-approval")
		// By keyboard: age goes up, before fraud; the focus follows it to its disabled-up row.
		b.do(chromedp.Focus(chromedp.CSS(`button[aria-label="Move up pre-approval age"]`)), chromedp.KeyEvent("\r"))
		b.waitText("#status", "Moved pre-approval webhook age to position 1.", 10*time.Second)
		if got := preApprovalOrder(f); got != "age:console_order_b,fraud:console_order_a" {
			t.Fatalf("pre-approval webhooks after moving age up = %s", got)
		}
		b.waitFor("the focus on age's Move down", `document.activeElement?.getAttribute('aria-label') === 'Move down pre-approval age'`, 5*time.Second)
		b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Remove pre-approval fraud"]`)))
		b.waitText("#status", "Removed pre-approval webhook fraud.", 10*time.Second)
		if got := preApprovalOrder(f); got != "age:console_order_b" {
			t.Fatalf("pre-approval webhooks after removing fraud = %s", got)
		}
		// A refused add (the name is taken) says why and changes nothing.
		b.do(
			chromedp.SetValue(chromedp.CSS(`#pa-connection`), "console_order_c"),
			chromedp.SendKeys(chromedp.CSS(`#pa-name`), "Age check"),
			chromedp.Click(chromedp.CSS(`#add-pre-approval button[type=submit]`)),
		)
		b.waitText("#status", "multiple webhooks", 10*time.Second)
		if got := preApprovalOrder(f); got != "age:console_order_b" {
			t.Fatalf("pre-approval webhooks after a refused add = %s", got)
		}
		f.mustAPI(http.MethodDelete, "/api/v1/dsr/webhook/pre_approval/age", "")
	})

	t.Run("connections: health and a secret form that shows no stored value", func(t *testing.T) {
		b.t, f.t = t, t
		b.open("#/connections", "Connections")
		b.waitFor("every connection healthy but console_down_crm", `(() => { const rows = [...document.querySelectorAll('#connections tbody tr')];
			const health = (r) => r.querySelector('td:nth-child(6)').textContent;
			return rows.length === 7 && rows.every((r) => r.textContent.includes('console_down_crm')
				? health(r).startsWith('open 2 failed calls in a row') : health(r) === 'healthy'); })()`, 10*time.Second)
		b.shot("connections")
		// The receiver is back; the operator closes the breaker rather than wait for its probe.
		down.Store(false)
		b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Close breaker of console_down_crm"]`)))
		b.waitText("#status", "The circuit breaker of console_down_crm is closed.", 10*time.Second)
		if _, body := f.api(http.MethodGet, f.stack.ConfigURL+"/api/v1/connection/console_down_crm/health", ""); !strings.Contains(string(body), `"changed_by":"operator"`) && !strings.Contains(string(body), `"changed_by": "operator"`) {
			t.Fatalf("health after closing = %s, want closed by the operator", body)
		}
		f.waitStatus("pri_console_down", "complete", 20*time.Second)
		// The poll may redraw the table as the held request's call succeeds; click once it is still.
		b.waitFor("console_down_crm healthy in the table", `(() => { const r = [...document.querySelectorAll('#connections tbody tr')].find((r) => r.textContent.includes('console_down_crm'));
			return !!r && r.querySelector('td:nth-child(6)').textContent.startsWith('healthy') && !document.querySelector('button[aria-label^="Close breaker"]'); })()`, 10*time.Second)
		b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Set secrets of console_order_a"]`)))
		b.waitFor("the secret form", `document.activeElement?.id === 'secret-form-heading'`, 5*time.Second)
		if got := eval[string](b, `[...document.querySelectorAll('#secret-form input')].map((i) => i.name + ':' + i.type + ':' + i.value).join(',')`); got != "url:url:,authorization:password:,signing_secret:password:" {
			t.Fatalf("secret form inputs = %s, want empty url, authorization and signing_secret (password)", got)
		}
		const secret = "Bearer console-secret-7d1f"
		b.do(
			chromedp.SendKeys(chromedp.CSS(`#secret-form input[name=url]`), f.rcv.URL("/ok")),
			chromedp.SendKeys(chromedp.CSS(`#secret-form input[name=authorization]`), secret),
			chromedp.Click(chromedp.CSS(`#secret-form button[type=submit]`)),
		)
		b.waitText("#status", "Secrets of console_order_a saved (not verified).", 10*time.Second)
		if eval[bool](b, fmt.Sprintf(`document.documentElement.outerHTML.includes(%s) || document.documentElement.outerHTML.includes('flow-test') || [...document.querySelectorAll('input')].some((i) => i.value !== '')`, jsString(secret[7:]))) {
			t.Fatal("the page shows a secret after saving it")
		}
		// Save and verify: the host resolves and the TLS handshake completes; the table shows the test.
		b.do(
			chromedp.SendKeys(chromedp.CSS(`#secret-form input[name=url]`), f.rcv.URL("/ok")),
			chromedp.SendKeys(chromedp.CSS(`#secret-form input[name=authorization]`), secret),
			chromedp.Click(chromedp.CSS(`#save-verify`)),
		)
		b.waitText("#status", "Secrets of console_order_a saved; verification succeeded.", 10*time.Second)
		b.waitFor("console_order_a's test status in the table", `(() => { const r = [...document.querySelectorAll('#connections tbody tr')].find((r) => r.textContent.includes('console_order_a'));
			return !!r && r.querySelector('td:nth-child(4)').textContent === 'succeeded'; })()`, 10*time.Second)
		if eval[bool](b, `[...document.querySelectorAll('input')].some((i) => i.value !== '')`) {
			t.Fatal("the form keeps what was typed after saving and verifying")
		}
	})

	t.Run("narrow", func(t *testing.T) {
		b.t, f.t = t, t
		b.do(chromedp.EmulateViewport(400, 800))
		defer b.do(chromedp.EmulateViewport(1280, 800))
		for _, p := range []struct{ hash, heading string }{
			{"#/requests", "Privacy requests"}, {"#/requests/pri_console_failed", "Request pri_console_failed"},
			{"#/connections", "Connections"}, {"#/policies/console_order", "Policy console_order"},
		} {
			b.open(p.hash, p.heading)
			b.waitFor("the page's tables", `!document.querySelector('main').textContent.includes('Loading…')`, 10*time.Second)
			if w := eval[int](b, `document.documentElement.scrollWidth`); w > 400 {
				t.Errorf("%s is %d px wide in a 400 px window; only its tables may scroll sideways", p.hash, w)
			}
		}
	})

	t.Run("sign out", func(t *testing.T) {
		b.t, f.t = t, t
		b.do(chromedp.Click(chromedp.ID("sign-out")))
		b.waitFor("the sign-in page", `document.activeElement?.textContent === 'Sign in'`, 5*time.Second)
		if n := eval[int](b, `sessionStorage.length`); n != 0 {
			t.Fatalf("sessionStorage holds %d items after signing out, want 0", n)
		}
	})
}

// signIn signs in with the stack's root client and waits for the requests page.
func (b *browser) signIn(f *flow) {
	b.t.Helper()
	b.open("", "Sign in")
	b.do(
		chromedp.SendKeys(chromedp.CSS(`input[name=client_id]`), f.stack.Env["OAUTH_ROOT_CLIENT_ID"]),
		chromedp.SendKeys(chromedp.CSS(`input[name=client_secret]`), f.stack.Env["OAUTH_ROOT_CLIENT_SECRET"]+"\r"),
	)
	b.waitFor("the requests page", `document.activeElement?.textContent === 'Privacy requests'`, 10*time.Second)
}

// TestConsoleReview: with the pre-approval stage on and no pre-approval webhook, requests wait for
// an operator; on a request's page the operator denies one with a reason and approves another,
// and the API shows the first denied with that reason and the second run to complete.
func TestConsoleReview(t *testing.T) {
	f := startFlow(t, map[string]string{"EXECUTION_STAGE": "skip", "PRE_APPROVAL": "true"}, "127.0.0.1:0")
	f.answer("/ok", `{}`)
	f.policy("console_review", []hookSpec{{"wake", "one_way", "/ok"}}, nil)
	f.submit("pri_review_deny", "console_review", "deny@example.com")
	f.submit("pri_review_approve", "console_review", "approve@example.com")
	f.waitStatus("pri_review_deny", "awaiting_pre_approval", 20*time.Second)
	f.waitStatus("pri_review_approve", "awaiting_pre_approval", 20*time.Second)

	b := newBrowser(t, f.stack.ConsoleURL)
	b.signIn(f)

	b.open("#/requests/pri_review_deny", "Request pri_review_deny")
	b.waitText("#waiting-for", "operator", 10*time.Second)
	const reason = "not a customer of ours"
	b.do(
		chromedp.SendKeys(chromedp.ID("deny-reason"), reason),
		chromedp.Click(chromedp.ID("deny")),
	)
	b.waitText("#status", "Denied: the request is denied.", 10*time.Second)
	status, body := f.api(http.MethodGet, f.stack.CallbackURL+"/api/v1/privacy-request/pri_review_deny", "")
	if status != http.StatusOK || !strings.Contains(string(body), `"status":"denied"`) || !strings.Contains(string(body), `"deny_reason":"`+reason+`"`) {
		t.Fatalf("after Deny: %d %s, want denied with the reason", status, body)
	}
	b.waitFor("the review buttons gone", `!document.getElementById('approve') && !document.getElementById('deny')`, 10*time.Second)

	b.open("#/requests/pri_review_approve", "Request pri_review_approve")
	b.waitFor("the Approve button", `!!document.getElementById('approve')`, 10*time.Second)
	b.do(chromedp.Focus(chromedp.ID("approve")), chromedp.KeyEvent("\r"))
	b.waitText("#status", "Approved: the request is ", 10*time.Second)
	f.waitStatus("pri_review_approve", "complete", 20*time.Second)
	b.waitText("#request-body dl", "complete", 10*time.Second)
}

// preOrder returns the keys of a policy's pre-execution webhooks in order, from the config API.
// preApprovalOrder returns the pre-approval webhooks as the API lists them, key:connection each.
func preApprovalOrder(f *flow) string {
	f.t.Helper()
	var page struct {
		Items []struct {
			Key              string `json:"key"`
			ConnectionConfig struct {
				Key string `json:"key"`
			} `json:"connection_config"`
		} `json:"items"`
	}
	if err := json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/dsr/webhook/pre_approval", ""), &page); err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, w := range page.Items {
		out = append(out, w.Key+":"+w.ConnectionConfig.Key)
	}
	return strings.Join(out, ",")
}

func preOrder(f *flow, policy string) string {
	f.t.Helper()
	var page struct {
		Items []struct {
			Key   string `json:"key"`
			Order int    `json:"order"`
		} `json:"items"`
	}
	if err := json.Unmarshal(f.mustAPI(http.MethodGet, "/api/v1/policy/"+policy+"/webhook/pre_execution", ""), &page); err != nil {
		f.t.Fatal(err)
	}
	keys := make([]string, len(page.Items))
	for i, w := range page.Items {
		if w.Order != i {
			f.t.Fatalf("webhook %s has order %d at place %d", w.Key, w.Order, i)
		}
		keys[i] = w.Key
	}
	return strings.Join(keys, ",")
}
