// webhooks.js is what the two ordered webhook lists of the console share: a policy's pre- and
// post-execution webhooks (policies.js) and the pre-approval webhooks (preapproval.js).

import { h } from './dom.js';
import * as api from './api.js';

// actions returns a row's Move up, Move down and Remove buttons for webhook key at position i of
// n. label names the list in the buttons' accessible names ("Move up <label><key>"), and focus
// prefixes their data-focus keys ("<focus>up-<key>"), which refocus finds after a redraw.
export function actions({ key, i, n, label, focus, move, remove }) {
  return h('div', { class: 'actions' },
    h('button', { type: 'button', disabled: i === 0, dataset: { focus: `${focus}up-${key}` }, 'aria-label': `Move up ${label}${key}`, onclick: () => move(i - 1, 'up') }, 'Move up'),
    h('button', { type: 'button', disabled: i === n - 1, dataset: { focus: `${focus}down-${key}` }, 'aria-label': `Move down ${label}${key}`, onclick: () => move(i + 1, 'down') }, 'Move down'),
    h('button', { type: 'button', dataset: { focus: `${focus}remove-${key}` }, 'aria-label': `Remove ${label}${key}`, onclick: remove }, 'Remove'));
}

// refocus puts the focus back on the button with data-focus key inside root after a redraw (the
// one just pressed, in its new row); a disabled one (moved to an end) hands it to its row's other
// move button.
export function refocus(root, key) {
  if (!key) return;
  let btn = root.querySelector(`[data-focus="${CSS.escape(key)}"]`);
  if (btn && btn.disabled) btn = btn.closest('.actions').querySelector('button:not(:disabled)');
  btn?.focus();
}

// fillConnections adds an option to select for every https connection (a webhook can only use one).
export function fillConnections(select, ctx) {
  api.all('/api/v1/connection?connection_type=https').then((items) => {
    if (!ctx.alive()) return;
    for (const c of items) select.append(h('option', { value: c.key }, `${c.name} (${c.key})`));
  }).catch(ctx.fail);
}
