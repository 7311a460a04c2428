// format.js turns API values into words and times for people.

import { h } from './dom.js';

const pad = (n) => String(n).padStart(2, '0');

// when formats an RFC 3339 time in the browser's time zone, as YYYY-MM-DD HH:MM:SS, in a <time>.
export function when(iso) {
  if (!iso) return '—';
  return h('time', { datetime: iso }, whenText(iso));
}

export function whenText(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// words replaces the underscores of an API word.
export const words = (s) => (s == null ? '—' : String(s).replaceAll('_', ' '));

// waitingText says what a request waits for (the waiting_for of GET /privacy-request/{id}).
export function waitingText(w, status) {
  if (!w) {
    switch (status) {
      case 'error': return 'An operator\'s retry: the request stays in error until then.';
      case 'complete': return 'Nothing: the request is complete.';
      case 'denied': return 'Nothing: the request was denied.';
      default: return 'Nothing: the request is running.';
    }
  }
  const until = w.until ? whenText(w.until) : null;
  const hook = w.webhook_key ? `webhook ${w.webhook_key}` : 'its webhook';
  switch (w.reason) {
    case 'resume':
      return `Waits for the receiver of ${hook} to resume it${until ? `, until ${until}; then it goes to error` : ''}.`;
    case 'data_layer':
      return `Waits for the data layer to report the execution${until ? `, until ${until} (the execution deadline)` : ''}.`;
    case 'retry':
      return `Waits to call ${hook} again${until ? ` at ${until}` : ''}, after a failed attempt.`;
    case 'pre_approval': {
      const keys = (w.webhook_keys || []).join(', ');
      return `Waits for the replies of the pre-approval webhooks${keys ? ` ${keys}` : ''}${until ? `, until ${until}` : ''}.`;
    }
    case 'review':
      return 'Waits for an operator to approve or deny it.';
    case 'connection':
      return `Waits for the connection of ${hook} to be healthy again (its circuit breaker is open)${until ? `; it looks again at ${until}` : ''}.`;
    default:
      return `Waits for ${words(w.reason)}${until ? ` until ${until}` : ''}.`;
  }
}
