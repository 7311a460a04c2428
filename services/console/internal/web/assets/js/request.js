// request.js is one request's page (#/requests/{id}): its state, what it waits for, each
// webhook's attempts, its timeline, Retry for a request in error, and Approve or Deny for one in
// the pre-approval stage. Refreshed every 3 seconds while the tab is visible.

import { h, replace, table, badge, field } from './dom.js';
import * as api from './api.js';
import { when, words, waitingText } from './format.js';

function facts(r) {
  const items = [
    ['Status', badge(r.status)],
    ['Step', words(r.step)],
    ['Policy', h('a', { href: `#/policies/${encodeURIComponent(r.policy_key)}` }, r.policy_key)],
    ['External id', r.external_id ?? '—'],
    ['Created', when(r.created_at)],
    ['Started', when(r.started_processing_at)],
    ['Paused', when(r.paused_at)],
    ['Finished', when(r.finished_processing_at)],
  ];
  if (r.deny_reason) items.push(['Deny reason', r.deny_reason]);
  return h('dl', { class: 'facts' }, items.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
}

function errorPart(r) {
  if (!r.error) return null;
  const e = r.error;
  return h('div', { class: 'message error', id: 'request-error' },
    h('strong', {}, 'Error: '), e.message,
    ` (step ${words(e.step)}${e.webhook_key ? `, webhook ${e.webhook_key}` : ''})`);
}

function attemptsPart(r) {
  const hooks = r.webhooks || [];
  if (hooks.length === 0) return h('p', { class: 'message' }, 'The policy has no webhooks.');
  return hooks.map((w) => h('section', { class: 'webhook' },
    h('h3', {}, `${w.callback_type === 'pre' ? 'Pre-execution' : w.callback_type === 'post' ? 'Post-execution' : 'Pre-approval'} webhook ${w.key} `, badge(w.outcome)),
    h('p', { class: 'hint' }, `${words(w.direction)}, order ${w.order}${w.interrupted ? `, ${w.interrupted} interrupted calls` : ''}${w.reply ? `, replied ${words(w.reply)}` : ''}`),
    table(`Attempts of webhook ${w.key}`, ['Attempt', 'At', 'Status code', 'Latency', 'Error'],
      (w.attempts || []).map((a, i) => [
        String(i + 1),
        when(a.at),
        a.status == null ? 'no answer' : String(a.status),
        `${Math.round(a.latency_ms)} ms`,
        a.error ?? '—',
      ]), 'Not called yet.')));
}

function timelinePart(r) {
  const tl = r.timeline || [];
  return table('Timeline', ['#', 'At', 'Status', 'From', 'Step', 'Webhook', 'Action', 'Error'],
    tl.map((e) => [
      String(e.seq),
      when(e.at),
      badge(e.status),
      e.previous ? words(e.previous) : '—',
      words(e.step),
      e.webhook_key ?? '—',
      e.action ? words(e.action) : '—',
      e.error ?? '—',
    ]), 'No timeline is recorded for this request.');
}

export function render(main, ctx, id) {
  const body = h('div', { id: 'request-body' }, h('p', { class: 'message' }, 'Loading…'));
  const actions = h('div', { class: 'actions', id: 'request-actions' });
  main.append(
    h('p', {}, h('a', { href: '#/requests' }, '← All requests')),
    ctx.heading(`Request ${id}`),
    actions,
    body);

  let current = null;
  const retry = h('button', {
    type: 'button', class: 'primary', id: 'retry',
    onclick: async () => {
      retry.disabled = true;
      ctx.announce('Retrying…');
      try {
        const r = await api.call('POST', `/api/v1/privacy-request/${api.seg(id)}/retry`);
        ctx.announce(`Retried: the request is ${words(r.status)} at step ${words(r.step)}.`);
        await load();
      } catch (err) {
        ctx.announce(`Retry failed: ${err.message}`, true);
      } finally {
        retry.disabled = false;
      }
    },
  }, 'Retry');

  // The review of a request awaiting pre-approval or not eligible for it (SPEC §7): approve, or
  // deny with an optional reason.
  const reason = h('input', { type: 'text', id: 'deny-reason', maxLength: 512, autocomplete: 'off' });
  const review = (approve) => async () => {
    approveButton.disabled = denyButton.disabled = true;
    ctx.announce(approve ? 'Approving…' : 'Denying…');
    try {
      const body = approve ? {} : (reason.value.trim() ? { reason: reason.value.trim() } : {});
      const r = await api.call('POST', `/api/v1/privacy-request/${api.seg(id)}/${approve ? 'approve' : 'deny'}`, body);
      ctx.announce(`${approve ? 'Approved' : 'Denied'}: the request is ${words(r.status)}.`);
      reason.value = '';
      await load();
    } catch (err) {
      ctx.announce(`${approve ? 'Approval' : 'Denial'} failed: ${err.message}`, true);
    } finally {
      approveButton.disabled = denyButton.disabled = false;
    }
  };
  const approveButton = h('button', { type: 'button', class: 'primary', id: 'approve', onclick: review(true) }, 'Approve');
  const denyButton = h('button', { type: 'button', id: 'deny', onclick: review(false) }, 'Deny');
  const reviewPart = h('div', { class: 'review' },
    approveButton,
    field('Reason for a denial (optional)', reason, 'Recorded with the request and sent nowhere else.'),
    denyButton);
  const reviewable = (status) => status === 'awaiting_pre_approval' || status === 'pre_approval_not_eligible';

  async function load() {
    try {
      const r = await api.get(`/api/v1/privacy-request/${api.seg(id)}`);
      if (!ctx.alive()) return;
      const changed = JSON.stringify(r) !== JSON.stringify(current);
      current = r;
      // The action nodes stay the same, so their focus (and a reason being typed) survives a
      // refresh.
      const want = r.status === 'error' ? retry : reviewable(r.status) ? reviewPart : null;
      if (want && !actions.contains(want)) {
        actions.replaceChildren(want);
      } else if (!want && actions.firstChild) {
        if (actions.contains(document.activeElement)) main.querySelector('h1').focus();
        actions.replaceChildren();
      }
      if (!changed) return;
      replace(body,
        facts(r),
        errorPart(r),
        h('h2', {}, 'Waiting for'),
        h('p', { id: 'waiting-for' }, waitingText(r.waiting_for, r.status)),
        h('h2', {}, 'Timeline'),
        timelinePart(r),
        h('h2', {}, 'Webhooks'),
        attemptsPart(r));
    } catch (err) {
      if (!ctx.alive()) return;
      if (err.status === 404) replace(body, h('p', { class: 'message error' }, err.message));
      ctx.fail(err);
    }
  }
  load();
  ctx.poll(load);
}
