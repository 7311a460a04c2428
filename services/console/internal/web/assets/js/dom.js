// dom.js builds DOM nodes from data. Text always goes through textContent or text nodes, so
// nothing the API returns can become markup.

// h creates an element. attrs sets properties (on*, class, dataset, aria-*/other attributes);
// children are nodes, strings (as text), or nested arrays; null and false are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (k in el && !k.includes('-') && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace puts children in place of el's content, keeping the focus on the element with the same
// data-focus key if the focus was inside el (a refresh must not move the user's focus).
export function replace(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.focus : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) {
    const again = [...el.querySelectorAll('[data-focus]')].find((n) => n.dataset.focus === key);
    if (again) again.focus();
  }
}

// table builds a table: head is a list of column names, rows a list of lists of cells; the
// first cell of each row is its header (<th scope="row">). A cell is a string, a node, or null.
export function table(caption, head, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'message' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', { class: 'visually-hidden-caption' }, caption),
      h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c ?? '') : h('td', {}, c ?? ''))))))));
}

// field is a labelled form control.
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const parts = [h('label', { for: id }, label), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

// badge shows a status word, coloured by its class (the word itself carries the meaning).
export function badge(word) {
  return h('span', { class: `badge s-${word}` }, String(word).replaceAll('_', ' '));
}
