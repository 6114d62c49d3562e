// The one fetch wrapper. Every call to the BFF (/bff/...) and to the APIs behind it (/api/...)
// goes through `api()`, which
//   - sends the anti-forgery header (X-CSRF: 1) that the BFF requires on every state-changing
//     endpoint and every proxied call (a cross-site page cannot add it without a CORS preflight);
//   - sends the HttpOnly session cookie (same origin), and never sees or sends a token;
//   - on 401 `session_expired`, or 401 `not_authenticated` on a call that needs a user, sends the
//     browser to /bff/login?returnTo=<this page>, so the user comes back where they were.

export const CSRF_HEADER = { 'X-CSRF': '1' };

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export function loginUrl() {
  const here = window.location.pathname + window.location.search;
  return `/bff/login?returnTo=${encodeURIComponent(here)}`;
}

let leaving = false;

export function goToLogin() {
  leaving = true;
  window.location.assign(loginUrl());
}

/** True once the page is navigating away (to the login, or logging out): callers stop showing
 * errors then, and a 401 no longer sends the browser to the login. */
export function isLeaving() {
  return leaving;
}

export function setLeaving(value) {
  leaving = value;
}

/**
 * fetch() with the anti-forgery header and the 401 handling above.
 * options: method, json (a body to send as JSON), needsUser (default true), stream (return the
 * Response itself, for server-sent events), signal.
 * Returns the parsed JSON body (null for 204), or the Response when `stream` is set.
 */
export async function api(path, { method = 'GET', json, needsUser = true, stream = false, signal } = {}) {
  const headers = { ...CSRF_HEADER, Accept: stream ? 'text/event-stream' : 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const { code, detail } = await readError(response);
    const signedOut = code === 'session_expired' || (needsUser && code === 'not_authenticated');
    if (response.status === 401 && signedOut && !leaving) {
      goToLogin();
    }
    throw new ApiError(response.status, code, detail);
  }
  if (stream) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

async function readError(response) {
  try {
    const body = await response.json();
    return { code: body.error, detail: body.detail || body.error_description || '' };
  } catch {
    return { code: undefined, detail: `HTTP ${response.status}` };
  }
}
