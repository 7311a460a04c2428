// connections.js is the connections page (#/connections): every connection with its last test and
// its endpoint's health (circuit breaker), a form to set an https connection's secrets (never
// showing stored ones: the API does not return them), and closing an open breaker.

import { h, replace, table, field, badge } from './dom.js';
import * as api from './api.js';
import { when, whenText } from './format.js';

function testStatus(c) {
  if (c.last_test_succeeded === true) return badge('succeeded');
  if (c.last_test_succeeded === false) return badge('failed');
  return 'not tested';
}

function healthCell(hl) {
  if (!hl || hl.state === 'closed') {
    const failures = hl && hl.failures ? ` (${hl.failures} failed calls in a row)` : '';
    return [badge('healthy'), failures];
  }
  return h('span', {}, badge('open'),
    ` ${hl.failures} failed calls in a row`,
    hl.probe_at ? `; next probe ${whenText(hl.probe_at)}` : '',
    hl.probe_in_flight ? '; a probe is in flight' : '',
    hl.last_error ? `; last error: ${hl.last_error}` : '');
}

export function render(main, ctx) {
  const list = h('div', { id: 'connections' }, h('p', { class: 'message' }, 'Loading…'));
  const formArea = h('div', { id: 'secret-form-area' });
  main.append(ctx.heading('Connections'), list, formArea);

  function secretForm(c) {
    const url = h('input', { type: 'url', name: 'url', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'https://example.com/hook' });
    const auth = h('input', { type: 'password', name: 'authorization', required: true, autocomplete: 'new-password' });
    const signing = h('input', { type: 'password', name: 'signing_secret', autocomplete: 'new-password' });
    const result = h('div', { id: 'secret-result' });
    const submit = async (verify) => {
      if (!form.reportValidity()) return;
      const body = { url: url.value.trim(), authorization: auth.value };
      if (signing.value) body.signing_secret = signing.value;
      ctx.announce(verify ? 'Saving and verifying…' : 'Saving…');
      try {
        const r = await api.call('PUT', `/api/v1/connection/${api.seg(c.key)}/secret?verify=${verify}`, body);
        // The form never keeps what was typed once it is stored.
        url.value = ''; auth.value = ''; signing.value = '';
        const text = r.test_status
          ? `Secrets of ${c.key} saved; verification ${r.test_status}${r.failure_reason ? `: ${r.failure_reason}` : ''}.`
          : `Secrets of ${c.key} saved (not verified).`;
        replace(result, h('p', { class: r.test_status === 'failed' ? 'message error' : 'message' }, text));
        ctx.announce(text, r.test_status === 'failed');
        load();
      } catch (err) {
        replace(result, h('p', { class: 'message error' }, err.message));
        ctx.fail(err);
      }
    };
    const form = h('form', {
      class: 'stack-form', id: 'secret-form', 'aria-labelledby': 'secret-form-heading',
      onsubmit: (e) => { e.preventDefault(); submit(false); },
    },
    h('h2', { id: 'secret-form-heading', tabindex: '-1' }, `Set the secrets of ${c.name} (${c.key})`),
    h('p', { class: 'hint' }, 'Stored secrets are never shown; saving replaces all of them.'),
    field('Webhook URL', url),
    field('Authorization header value', auth),
    field('Signing secret (optional)', signing, 'whsec_… or any string; HMAC signature v1.'),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Save'),
      h('button', { type: 'button', id: 'save-verify', onclick: () => submit(true) }, 'Save and verify'),
      h('button', { type: 'button', onclick: () => { formArea.replaceChildren(); list.querySelector(`[data-focus="secret-${CSS.escape(c.key)}"]`)?.focus(); } }, 'Cancel')),
    result);
    formArea.replaceChildren(form);
    form.querySelector('h2').focus();
  }

  async function closeBreaker(c) {
    try {
      await api.call('POST', `/api/v1/connection/${api.seg(c.key)}/health/close`, {});
      // The table is redrawn before the news: the row shrinks as its button goes, and a click aimed
      // at a row below must not land on its neighbour.
      await load();
      ctx.announce(`The circuit breaker of ${c.key} is closed.`);
    } catch (err) {
      ctx.fail(err);
    }
  }

  async function load() {
    try {
      // Two lists, not a call per connection: a connection with no breaker entry never failed.
      const [items, breakers] = await Promise.all([api.all('/api/v1/connection'), api.all('/api/v1/connection_health')]);
      const byKey = new Map(breakers.map((b) => [b.connection_key, b]));
      const health = items.map((c) => byKey.get(c.key) || null);
      if (!ctx.alive()) return;
      replace(list, table('Connections', ['Name', 'Key', 'Type', 'Test status', 'Last test', 'Health', 'Actions'],
        items.map((c, i) => [
          c.name,
          h('code', {}, c.key),
          c.connection_type,
          testStatus(c),
          when(c.last_test_timestamp),
          healthCell(health[i]),
          h('div', { class: 'actions' },
            c.connection_type === 'https' ? h('button', {
              type: 'button', dataset: { focus: `secret-${c.key}` }, 'aria-label': `Set secrets of ${c.key}`,
              onclick: () => secretForm(c),
            }, 'Set secrets') : null,
            health[i] && health[i].state === 'open' ? h('button', {
              type: 'button', dataset: { focus: `close-${c.key}` }, 'aria-label': `Close breaker of ${c.key}`,
              onclick: () => closeBreaker(c),
            }, 'Close breaker') : null),
        ]), 'No connection yet.'));
    } catch (err) {
      if (ctx.alive()) ctx.fail(err);
    }
  }
  load();
  ctx.poll(load);
}
