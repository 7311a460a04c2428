// preapproval.js is the section of the policies page (#/policies) that shows the pre-approval
// webhooks: one ordered list for every policy, called before a request runs when config has
// PRE_APPROVAL on (SPEC §4). Moving one puts the whole list back in its new order (PUT); removing
// one deletes it (DELETE); the form adds one at the end (PUT).

import { h, replace, table, field } from './dom.js';
import * as api from './api.js';
import { actions, refocus, fillConnections } from './webhooks.js';

const BASE = '/api/v1/dsr/webhook/pre_approval';

export function render(main, ctx) {
  const section = h('div', { id: 'pre-approval' }, h('p', { class: 'message' }, 'Loading…'));
  const connection = h('select', { name: 'connection', required: true, id: 'pa-connection' });
  const name = h('input', { type: 'text', name: 'name', required: true, id: 'pa-name', maxlength: '255' });
  const key = h('input', { type: 'text', name: 'key', id: 'pa-key', pattern: '[a-zA-Z0-9_\\-]+(\\.[a-zA-Z0-9_\\-]+)*', spellcheck: 'false' });
  let hooks = [];

  // input is a webhook as PUT takes it back.
  const input = (w) => ({ connection_config_key: w.connection_config.key, name: w.name, key: w.key });

  // put replaces the whole list and reports whether it was stored.
  async function put(list, focusKey, news) {
    try {
      await api.call('PUT', BASE, list);
    } catch (err) {
      ctx.fail(err);
      return false;
    }
    await load(focusKey);
    ctx.announce(news);
    return true;
  }

  const form = h('form', {
    class: 'stack-form', id: 'add-pre-approval',
    onsubmit: async (e) => {
      e.preventDefault();
      const item = { connection_config_key: connection.value, name: name.value.trim() };
      if (key.value.trim()) item.key = key.value.trim();
      if (await put(hooks.map(input).concat([item]), null, `Added pre-approval webhook ${item.key || item.name}.`)) {
        name.value = '';
        key.value = '';
      }
    },
  },
  h('h3', {}, 'Add a pre-approval webhook'),
  field('Connection', connection, 'An https connection; its URL and secrets are used for the call.'),
  field('Name', name),
  field('Key (optional)', key, 'Letters, digits, _, - and dots; derived from the name when empty.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add pre-approval webhook')));

  main.append(
    h('h2', { id: 'h-pre-approval', tabindex: '-1' }, 'Pre-approval webhooks'),
    h('p', { class: 'hint' }, 'Asked before any policy runs, in this order, when the config service has PRE_APPROVAL on; each replies eligible or not eligible.'),
    section,
    form);

  function move(w, from, to, dir) {
    const list = hooks.map(input);
    const [it] = list.splice(from, 1);
    list.splice(to, 0, it);
    return put(list, `pa-${dir}-${w.key}`, `Moved pre-approval webhook ${w.key} to position ${to + 1}.`);
  }

  async function remove(w) {
    try {
      await api.call('DELETE', `${BASE}/${api.seg(w.key)}`);
      await load();
      ctx.announce(`Removed pre-approval webhook ${w.key}.`);
      document.getElementById('h-pre-approval')?.focus();
    } catch (err) {
      ctx.fail(err);
    }
  }

  // load reads the list; focusKey names the button to focus afterwards (the one just pressed, in
  // its new row; a disabled one hands the focus to its row's other move button).
  async function load(focusKey) {
    try {
      const items = await api.all(BASE);
      if (!ctx.alive()) return;
      hooks = items;
      const n = hooks.length;
      replace(section, table('Pre-approval webhooks', ['Position', 'Name', 'Key', 'Connection', 'Actions'],
        hooks.map((w, i) => [
          String(i + 1),
          w.name,
          h('code', {}, w.key),
          w.connection_config ? w.connection_config.key : '—',
          actions({ key: w.key, i, n, label: 'pre-approval ', focus: 'pa-', move: (to, dir) => move(w, i, to, dir), remove: () => remove(w) }),
        ]), 'No pre-approval webhook.'));
      refocus(section, focusKey);
    } catch (err) {
      if (ctx.alive()) ctx.fail(err);
    }
  }

  fillConnections(connection, ctx);
  load();
}
