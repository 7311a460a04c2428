// requests.js is the requests page (#/requests): filters, the requests that need attention, and
// every request, page by page, refreshed every 3 seconds while the tab is visible.

import { h, replace, table, field, badge } from './dom.js';
import * as api from './api.js';
import { when } from './format.js';

const STATUSES = ['pending', 'in_processing', 'paused', 'awaiting_pre_approval', 'pre_approval_not_eligible', 'error', 'complete', 'denied'];
const ATTENTION = ['paused', 'error', 'awaiting_pre_approval', 'pre_approval_not_eligible'];
const SIZE = 25;

// The filters outlive the page, so that going to a request and back keeps them.
const filters = { statuses: [], policy: '', id: '', externalId: '', createdFrom: '', createdTo: '', page: 1 };

function query(statuses, page, size) {
  const q = new URLSearchParams();
  for (const s of statuses) q.append('status', s);
  if (filters.policy) q.set('policy_key', filters.policy);
  if (filters.id) q.set('id', filters.id);
  if (filters.externalId) q.set('external_id', filters.externalId);
  if (filters.createdFrom) q.set('created_gt', new Date(filters.createdFrom).toISOString());
  if (filters.createdTo) q.set('created_lt', new Date(filters.createdTo).toISOString());
  q.set('sort_field', 'created_at');
  q.set('sort_direction', 'desc');
  q.set('page', String(page));
  q.set('size', String(size));
  return `/api/v1/privacy-request?${q}`;
}

function rows(items) {
  return items.map((r) => [
    h('a', { href: `#/requests/${encodeURIComponent(r.id)}`, class: 'mono', dataset: { focus: `req-${r.id}` } }, r.id),
    r.external_id ?? '—',
    r.policy_key,
    badge(r.status),
    r.step ? r.step.replaceAll('_', ' ') : '—',
    when(r.created_at),
    when(r.updated_at),
  ]);
}

const HEAD = ['Request', 'External id', 'Policy', 'Status', 'Step', 'Created', 'Updated'];

export function render(main, ctx) {
  const attention = h('div', { id: 'attention' }, h('p', { class: 'message' }, 'Loading…'));
  const all = h('div', { id: 'all-requests' });
  const pager = h('div', { class: 'pager', id: 'pager' });
  const notice = h('div', { id: 'list-notice' });

  const statusBoxes = STATUSES.map((s) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'status', value: s, checked: filters.statuses.includes(s) }), s.replaceAll('_', ' ')));
  const policy = h('select', { name: 'policy', id: 'filter-policy' }, h('option', { value: '' }, 'Any policy'));
  const id = h('input', { type: 'text', name: 'id', id: 'filter-id', value: filters.id, spellcheck: 'false' });
  const externalId = h('input', { type: 'text', name: 'external_id', id: 'filter-external-id', value: filters.externalId, spellcheck: 'false' });
  const from = h('input', { type: 'datetime-local', name: 'created_from', id: 'filter-from', value: filters.createdFrom, step: '1' });
  const to = h('input', { type: 'datetime-local', name: 'created_to', id: 'filter-to', value: filters.createdTo, step: '1' });
  const form = h('form', {
    class: 'filters',
    onsubmit: (e) => {
      e.preventDefault();
      filters.statuses = statusBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      filters.policy = policy.value;
      filters.id = id.value.trim();
      filters.externalId = externalId.value.trim();
      filters.createdFrom = from.value;
      filters.createdTo = to.value;
      filters.page = 1;
      refresh(true);
    },
  },
  h('fieldset', { class: 'statuses' }, h('legend', {}, 'Status'), statusBoxes),
  field('Policy', policy),
  field('Request id', id),
  field('External id', externalId),
  field('Created from', from),
  field('Created to', to),
  h('div', { class: 'actions' },
    h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
    h('button', {
      type: 'button',
      onclick: () => {
        Object.assign(filters, { statuses: [], policy: '', id: '', externalId: '', createdFrom: '', createdTo: '', page: 1 });
        for (const l of statusBoxes) l.querySelector('input').checked = false;
        policy.value = '';
        id.value = '';
        externalId.value = '';
        from.value = '';
        to.value = '';
        refresh(true);
      },
    }, 'Clear filters')));

  main.append(
    ctx.heading('Privacy requests'),
    form,
    notice,
    h('h2', { id: 'attention-heading' }, 'Needs attention'),
    h('p', { class: 'hint' }, 'Paused, in error, or waiting for pre-approval or a review.'),
    attention,
    h('h2', { id: 'all-heading' }, 'All requests'),
    all,
    pager);

  api.all('/api/v1/policy').then((items) => {
    if (!ctx.alive()) return;
    for (const p of items) policy.append(h('option', { value: p.key }, `${p.name} (${p.key})`));
    policy.value = filters.policy;
  }).catch(ctx.fail);

  const pagerButton = (label, page, enabled) => h('button', {
    type: 'button', disabled: !enabled, dataset: { focus: `pager-${label}` },
    onclick: () => { filters.page = page; refresh(true); },
  }, label);

  // refresh reads both lists; explicit (a filter or page change) also announces the result.
  async function refresh(explicit = false) {
    const wanted = filters.statuses.length ? ATTENTION.filter((s) => filters.statuses.includes(s)) : ATTENTION;
    try {
      const [att, list] = await Promise.all([
        wanted.length ? api.get(query(wanted, 1, 50)) : Promise.resolve({ items: [], total: 0 }),
        api.get(query(filters.statuses, filters.page, SIZE)),
      ]);
      if (!ctx.alive()) return;
      replace(notice);
      replace(attention, table('Requests that need attention', HEAD, rows(att.items),
        'No request needs attention.'),
      att.total > att.items.length ? h('p', { class: 'hint' }, `Showing ${att.items.length} of ${att.total}.`) : null);
      replace(all, table('All requests', HEAD, rows(list.items), 'No request matches the filters.'));
      const pages = Math.max(1, list.pages || 1);
      replace(pager,
        pagerButton('Previous page', filters.page - 1, filters.page > 1),
        h('span', {}, `Page ${list.page} of ${pages} (${list.total} ${list.total === 1 ? 'request' : 'requests'})`),
        pagerButton('Next page', filters.page + 1, filters.page < pages));
      if (explicit) {
        ctx.announce(`${list.total} ${list.total === 1 ? 'request matches' : 'requests match'}; ${att.total} ${att.total === 1 ? 'needs' : 'need'} attention.`);
      }
    } catch (err) {
      if (!ctx.alive()) return;
      if (err.status === 503) {
        // The callback's request index is loading after a start: say so, the poll tries again.
        replace(notice, h('p', { class: 'message' }, `${err.message} Trying again…`));
        return;
      }
      if (err.status === 400 || err.status === 422) {
        replace(notice, h('p', { class: 'message error' }, err.message));
      }
      ctx.fail(err);
    }
  }
  refresh();
  ctx.poll(() => refresh());
}
