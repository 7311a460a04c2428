// app.js is the console's entry point: sign in, the hash router, the status region and polling.

import { h, field } from './dom.js';
import * as api from './api.js';
import * as requests from './requests.js';
import * as request from './request.js';
import * as connections from './connections.js';
import * as policies from './policies.js';

const main = document.getElementById('main');
const status = document.getElementById('status');
const nav = document.getElementById('nav');
const signOutButton = document.getElementById('sign-out');

// The routes: a pattern over the hash path, and the page that renders it.
const routes = [
  { re: /^\/requests$/, page: requests, nav: 'requests' },
  { re: /^\/requests\/(.+)$/, page: request, nav: 'requests' },
  { re: /^\/connections$/, page: connections, nav: 'connections' },
  { re: /^\/policies$/, page: policies, nav: 'policies', list: true },
  { re: /^\/policies\/(.+)$/, page: policies, nav: 'policies' },
];

// announce puts a message in the aria-live status region (read out by screen readers).
let pendingStatus = null;
export function announce(text, isError = false) {
  clearStatus();
  status.classList.toggle('error', isError);
  // A fresh text node after clearing makes a repeated message be announced again.
  pendingStatus = setTimeout(() => { status.textContent = text; }, 30);
}

// clearStatus empties the status region: a page's messages do not follow the user to the next.
function clearStatus() {
  clearTimeout(pendingStatus);
  status.textContent = '';
  status.classList.remove('error');
}

let generation = 0;
let cleanups = [];

function stopPage() {
  generation += 1;
  for (const fn of cleanups) fn();
  cleanups = [];
}

// poll runs fn every 3 seconds while the tab is visible (and at once when it becomes visible
// again), until the page changes. A run never overlaps the previous one.
function poll(fn, ms = 3000) {
  let timer = null;
  let stopped = false;
  let running = false;
  const tick = async () => {
    if (stopped) return;
    if (document.visibilityState === 'visible' && !running) {
      running = true;
      try { await fn(); } catch { /* the page shows its own errors */ } finally { running = false; }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  const onVisible = () => {
    if (document.visibilityState === 'visible' && !stopped) {
      clearTimeout(timer);
      tick();
    }
  };
  document.addEventListener('visibilitychange', onVisible);
  timer = setTimeout(tick, ms);
  cleanups.push(() => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
  });
}

// heading makes the page's h1, which takes the focus on navigation.
function heading(text) {
  return h('h1', { tabindex: '-1', id: 'page-heading' }, text);
}

function route() {
  stopPage();
  clearStatus();
  const path = location.hash.replace(/^#/, '') || '/requests';
  if (!api.signedIn()) {
    renderSignIn();
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  const hit = routes.find((r) => r.re.test(path));
  if (!hit) {
    location.replace('#/requests');
    return;
  }
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.nav === hit.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const mine = generation;
  const ctx = {
    announce,
    poll,
    heading,
    alive: () => mine === generation,
    // fail shows an API error's detail (an ended session goes back to sign in on its own).
    fail: (err) => { if (err.status !== 401) announce(err.message, true); },
  };
  main.replaceChildren();
  const params = path.match(hit.re).slice(1).map(decodeURIComponent);
  hit.page.render(main, ctx, hit.list ? null : params[0]);
  const hd = main.querySelector('h1');
  if (hd) hd.focus();
}

function renderSignIn(message) {
  nav.hidden = true;
  signOutButton.hidden = true;
  const id = h('input', { type: 'text', name: 'client_id', autocomplete: 'username', required: true, spellcheck: 'false' });
  const secret = h('input', { type: 'password', name: 'client_secret', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', {
    class: 'signin',
    onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      announce('Signing in…');
      try {
        await api.signIn(id.value.trim(), secret.value);
        secret.value = '';
        announce('Signed in.');
        if (!location.hash || location.hash === '#/sign-in') location.hash = '#/requests';
        else route();
      } catch (err) {
        announce(`Sign in failed: ${err.message}`, true);
        secret.focus();
      } finally {
        submit.disabled = false;
      }
    },
  },
  field('Client id', id),
  field('Client secret', secret),
  submit);
  main.replaceChildren(
    heading('Sign in'),
    h('p', {}, 'Sign in with an OAuth client\'s id and secret (make run prints the root client\'s).'),
    form);
  if (message) announce(message, true);
  main.querySelector('h1').focus();
}

api.whenSignedOut((message) => {
  stopPage();
  renderSignIn(message);
});

signOutButton.addEventListener('click', () => {
  api.signOut();
  stopPage();
  renderSignIn();
  announce('Signed out.');
});

// The skip link moves the focus to the page without touching the hash (the router's).
document.getElementById('skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  (main.querySelector('h1') || main).focus();
});

window.addEventListener('hashchange', route);
route();
