// policies.js is the policies page (#/policies: every policy, and the pre-approval webhooks they
// share, preapproval.js) and one policy's page (#/policies/{key}): its ordered pre- and
// post-execution webhooks, adding one (the whole list is PUT back), removing one
// (DELETE) and moving one up or down (PATCH of its order), all with buttons.

import { h, replace, table, field } from './dom.js';
import * as api from './api.js';
import { when, whenText, words } from './format.js';
import * as preapproval from './preapproval.js';
import { actions, refocus, fillConnections } from './webhooks.js';

const KINDS = [
  { kind: 'pre_execution', title: 'Pre-execution webhooks' },
  { kind: 'post_execution', title: 'Post-execution webhooks' },
];

export function render(main, ctx, key) {
  if (key == null) renderList(main, ctx);
  else renderPolicy(main, ctx, key);
}

function renderList(main, ctx) {
  const list = h('div', { id: 'policies' }, h('p', { class: 'message' }, 'Loading…'));
  main.append(ctx.heading('Policies'), list);
  api.all('/api/v1/policy').then((items) => {
    if (!ctx.alive()) return;
    replace(list, table('Policies', ['Name', 'Key', 'Updated'],
      items.map((p) => [
        h('a', { href: `#/policies/${encodeURIComponent(p.key)}` }, p.name),
        h('code', {}, p.key),
        when(p.updated_at),
      ]), 'No policy yet.'));
  }).catch(ctx.fail);
  preapproval.render(main, ctx);
}

function renderPolicy(main, ctx, key) {
  const base = `/api/v1/policy/${api.seg(key)}`;
  const facts = h('div', { id: 'policy-facts' });
  const sections = Object.fromEntries(KINDS.map(({ kind }) => [kind, h('div', { id: `hooks-${kind}` }, h('p', { class: 'message' }, 'Loading…'))]));
  const lists = {};
  const connection = h('select', { name: 'connection', required: true, id: 'add-connection' });
  const kindSelect = h('select', { name: 'kind', id: 'add-kind' }, KINDS.map(({ kind, title }) => h('option', { value: kind }, title.replace(' webhooks', ''))));
  const direction = h('select', { name: 'direction', id: 'add-direction' },
    h('option', { value: 'one_way' }, 'one way (no reply)'),
    h('option', { value: 'two_way' }, 'two way (may halt the request)'));
  const name = h('input', { type: 'text', name: 'name', required: true, id: 'add-name', maxlength: '255' });
  const hookKey = h('input', { type: 'text', name: 'key', id: 'add-key', pattern: '[a-zA-Z0-9_\\-]+(\\.[a-zA-Z0-9_\\-]+)*', spellcheck: 'false' });
  const addForm = h('form', {
    class: 'stack-form', id: 'add-webhook',
    onsubmit: async (e) => {
      e.preventDefault();
      const kind = kindSelect.value;
      const item = { connection_config_key: connection.value, direction: direction.value, name: name.value.trim() };
      if (hookKey.value.trim()) item.key = hookKey.value.trim();
      const body = (lists[kind] || []).map(input).concat([item]);
      try {
        await api.call('PUT', `${base}/webhook/${kind}`, body);
        name.value = '';
        hookKey.value = '';
        await load();
        ctx.announce(`Added webhook ${item.key || item.name} to the ${words(kind)} webhooks.`);
      } catch (err) {
        ctx.fail(err);
      }
    },
  },
  h('h2', {}, 'Add a webhook'),
  field('List', kindSelect),
  field('Connection', connection, 'An https connection; its URL and secrets are used for the call.'),
  field('Direction', direction),
  field('Name', name),
  field('Key (optional)', hookKey, 'Letters, digits, _, - and dots; derived from the name when empty.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add webhook')));

  main.append(
    h('p', {}, h('a', { href: '#/policies' }, '← All policies')),
    ctx.heading(`Policy ${key}`),
    facts,
    ...KINDS.flatMap(({ kind, title }) => [h('h2', { id: `h-${kind}` }, title), sections[kind]]),
    addForm);

  // input is a webhook as PUT takes it back.
  const input = (w) => ({ connection_config_key: w.connection_config.key, direction: w.direction, name: w.name, key: w.key });

  async function move(kind, w, to, dir) {
    try {
      await api.call('PATCH', `${base}/webhook/${kind}/${api.seg(w.key)}`, { order: to });
      await load(`${kind}-${dir}-${w.key}`);
      ctx.announce(`Moved ${w.key} to position ${to + 1} of the ${words(kind)} webhooks.`);
    } catch (err) {
      ctx.fail(err);
    }
  }

  async function remove(kind, w) {
    try {
      await api.call('DELETE', `${base}/webhook/${kind}/${api.seg(w.key)}`);
      await load();
      ctx.announce(`Removed webhook ${w.key}.`);
      document.getElementById(`h-${kind}`)?.setAttribute('tabindex', '-1');
      document.getElementById(`h-${kind}`)?.focus();
    } catch (err) {
      ctx.fail(err);
    }
  }

  function hookTable(kind, title, hooks) {
    const n = hooks.length;
    return table(title, ['Position', 'Name', 'Key', 'Direction', 'Connection', 'Actions'],
      hooks.map((w, i) => [
        String(i + 1),
        w.name,
        h('code', {}, w.key),
        words(w.direction),
        w.connection_config ? w.connection_config.key : '—',
        actions({ key: w.key, i, n, label: '', focus: `${kind}-`, move: (to, dir) => move(kind, w, to, dir), remove: () => remove(kind, w) }),
      ]), 'No webhook.');
  }

  // load reads the policy and both lists; focusKey names the button to focus afterwards (the one
  // just pressed, in its new row; a disabled one hands the focus to its row's other move button).
  async function load(focusKey) {
    try {
      const [p, ...pages] = await Promise.all([api.get(base), ...KINDS.map(({ kind }) => api.all(`${base}/webhook/${kind}`))]);
      if (!ctx.alive()) return;
      replace(facts, h('p', {}, `${p.name}; updated ${whenText(p.updated_at)}.`));
      KINDS.forEach(({ kind, title }, i) => {
        lists[kind] = pages[i].sort((a, b) => a.order - b.order);
        replace(sections[kind], hookTable(kind, title, lists[kind]));
      });
      refocus(main, focusKey);
    } catch (err) {
      if (ctx.alive()) ctx.fail(err);
    }
  }

  fillConnections(connection, ctx);
  load();
}
