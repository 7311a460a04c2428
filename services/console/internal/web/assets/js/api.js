// api.js talks to the console's own origin, which proxies the config and callback APIs. The access
// token lives in sessionStorage only (gone with the tab), and is only ever sent in the
// Authorization header.

const TOKEN = 'policyhooks.token';
const EXPIRES = 'policyhooks.expires';

// ApiError is a failed call: its message is the API's detail text.
export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

let onSignedOut = () => {};

// whenSignedOut registers what to do when a call finds the session over (a 401, or the token's
// lifetime passed).
export function whenSignedOut(fn) { onSignedOut = fn; }

export function signedIn() {
  const tok = sessionStorage.getItem(TOKEN);
  const exp = Number(sessionStorage.getItem(EXPIRES) || 0);
  if (!tok) return false;
  if (exp && Date.now() >= exp) {
    signOut();
    return false;
  }
  return true;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(EXPIRES);
}

// signIn exchanges client credentials for an access token (OAuth2 client credentials grant).
export async function signIn(clientId, clientSecret) {
  const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret });
  const res = await fetch('/api/v1/oauth/token', { method: 'POST', body, credentials: 'omit', cache: 'no-store' });
  const data = await readJSON(res);
  if (!res.ok) throw new ApiError(res.status, detailText(data, res));
  sessionStorage.setItem(TOKEN, data.access_token);
  if (data.expires_in) {
    // A little early (a minute, or a tenth of a short lifetime), so that a call never races the expiry.
    const margin = Math.min(60, data.expires_in / 10);
    sessionStorage.setItem(EXPIRES, String(Date.now() + (data.expires_in - margin) * 1000));
  }
}

// call makes an authorized API call; body (if any) is sent as JSON. It returns the parsed JSON
// answer, or throws an ApiError with the API's detail.
export async function call(method, path, body) {
  if (!signedIn()) {
    onSignedOut('Your session has ended. Sign in again.');
    throw new ApiError(401, 'Not signed in');
  }
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}`, Accept: 'application/json' };
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await readJSON(res);
  if (res.status === 401) {
    signOut();
    onSignedOut('Your session has ended. Sign in again.');
    throw new ApiError(401, detailText(data, res));
  }
  if (!res.ok) throw new ApiError(res.status, detailText(data, res), Number(res.headers.get('Retry-After')) || 0);
  return data;
}

export const get = (path) => call('GET', path);

// all reads every page of a config list (pages of 100, the most the API gives) and returns the
// items, each key once: a list that changes between two pages may shift an item onto both.
export async function all(path) {
  const size = 100;
  const at = (n) => get(`${path}${path.includes('?') ? '&' : '?'}page=${n}&size=${size}`);
  const first = await at(1);
  const rest = await Promise.all(Array.from({ length: Math.max(0, (first.pages || 0) - 1) }, (_, i) => at(i + 2)));
  const seen = new Set();
  return [first, ...rest].flatMap((p) => p.items || []).filter((it) => {
    if (it.key === undefined) return true;
    if (seen.has(it.key)) return false;
    seen.add(it.key);
    return true;
  });
}

// seg escapes one path segment.
export const seg = encodeURIComponent;

async function readJSON(res) {
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

// detailText turns an error body into words: a string detail as it is, a validation list as
// "where: what" items.
export function detailText(data, res) {
  const d = data && data.detail;
  if (typeof d === 'string') return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).filter((l) => l !== 'body').join('.') || 'body'}: ${e.msg}`).join('; ');
  }
  return `${res.status} ${res.statusText || 'error'}`;
}
