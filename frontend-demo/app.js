// The demo SPA: plain ES modules, no build step. All network calls go through api() in api.js.
import { api, goToLogin, isLeaving, setLeaving } from './api.js';

const $ = (id) => document.getElementById(id);

const state = {
  user: null, // the body of GET /bff/user while signed in
  clockAbort: null, // aborts the server-sent-events stream
  timers: [],
};

// -- rendering -----------------------------------------------------------------------------

function showError(error) {
  if (isLeaving()) return; // on the way to the login page: nothing to report
  $('error').textContent = error ? `${error.message}${error.code ? ` (${error.code})` : ''}` : '';
}

function clearError() {
  $('error').textContent = '';
}

function displayName(user) {
  const claims = user.claims || {};
  return user.name || claims.name || claims.preferred_username || user.sub;
}

function renderSignedIn(signedIn) {
  $('status').textContent = signedIn ? 'signed in' : 'signed out';
  $('login').hidden = signedIn;
  $('logout').hidden = !signedIn;
  $('signed-out-help').hidden = signedIn;
  for (const section of document.querySelectorAll('.signed-in')) section.hidden = !signedIn;
  $('user-name').textContent = signedIn ? displayName(state.user) : '';
}

function renderCookieVisibility() {
  const visible = document.cookie;
  $('cookie-visibility').textContent = visible
    ? `document.cookie: ${JSON.stringify(visible)} — none of these is the session cookie: it is HttpOnly and not visible to JavaScript`
    : 'document.cookie: "" — the session cookie is HttpOnly and not visible to JavaScript';
}

function renderTokenExpiry() {
  const expiresAt = state.user && state.user.accessTokenExpiresAt;
  if (typeof expiresAt !== 'number') {
    $('token-expiry').textContent = '–';
    $('token-note').textContent = '';
    return;
  }
  const seconds = Math.max(0, Math.round(expiresAt - Date.now() / 1000));
  $('token-expiry').textContent = String(seconds);
  $('token-note').textContent = seconds === 0 ? '(expired: the next API call refreshes it, transparently)' : '';
}

function formatTime(value) {
  if (value === null || value === undefined) return '?';
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

function renderTodos(todos) {
  const list = $('todo-list');
  list.replaceChildren(
    ...todos.map((todo) => {
      const item = document.createElement('li');
      item.dataset.id = todo.id;
      const text = document.createElement('span');
      text.className = 'todo-text';
      text.textContent = todo.text;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'todo-delete';
      remove.textContent = 'delete';
      remove.addEventListener('click', () => deleteTodo(todo.id));
      item.append(text, ' ', remove);
      return item;
    }),
  );
}

function renderSessions(sessions) {
  $('sessions').replaceChildren(
    ...sessions.map((session) => {
      const item = document.createElement('li');
      item.dataset.id = session.id;
      if (session.current) item.classList.add('current');
      const agent = document.createElement('span');
      agent.className = 'session-agent';
      // "Chrome 126 on Linux" from the BFF; the raw User-Agent on hover.
      agent.textContent = session.device || session.userAgent || 'Unknown device';
      agent.title = session.userAgent || '';
      const times = document.createElement('span');
      times.className = 'session-times';
      times.textContent = `created ${formatTime(session.createdAt)}, last used ${formatTime(session.lastUsedAt)}`;
      item.append(agent, ' — ', times);
      if (session.current) {
        const mark = document.createElement('em');
        mark.textContent = ' (this device)';
        item.append(mark);
      } else {
        const end = document.createElement('button');
        end.type = 'button';
        end.className = 'session-logout';
        end.textContent = 'log out this device';
        end.addEventListener('click', () => endSession(session.id));
        item.append(' ', end);
      }
      return item;
    }),
  );
}

// -- the signed-in user ----------------------------------------------------------------------

async function loadUser({ needsUser }) {
  try {
    state.user = await api('/bff/user', { needsUser });
    return true;
  } catch (error) {
    state.user = null;
    if (error.status === 401) return false;
    throw error;
  }
}

/** Re-read /bff/user (the access token's expiry changes when the BFF refreshes it). */
async function refreshUser() {
  if (!state.user) return;
  try {
    await loadUser({ needsUser: true }); // gone (another device logged us out): off to the login
    renderTokenExpiry();
  } catch (error) {
    showError(error);
  }
}

async function loadMe() {
  const me = await api('/api/me');
  $('api-me').textContent = `${me.name ?? me.sub} (sub "${me.sub}")`;
}

// -- to-dos ------------------------------------------------------------------------------------

async function loadTodos() {
  renderTodos(await api('/api/todos'));
}

async function addTodo(event) {
  event.preventDefault();
  const input = $('todo-input');
  const text = input.value.trim();
  if (!text) return;
  try {
    await api('/api/todos', { method: 'POST', json: { text } });
    input.value = '';
    clearError();
    await loadTodos();
  } catch (error) {
    showError(error);
  }
  refreshUser();
}

async function deleteTodo(id) {
  try {
    await api(`/api/todos/${encodeURIComponent(id)}`, { method: 'DELETE' });
    clearError();
    await loadTodos();
  } catch (error) {
    showError(error);
  }
  refreshUser();
}

// -- sessions ----------------------------------------------------------------------------------

async function loadSessions() {
  const body = await api('/bff/sessions');
  renderSessions(Array.isArray(body) ? body : body.sessions || []);
}

async function endSession(id) {
  try {
    await api(`/bff/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' });
    clearError();
    await loadSessions();
  } catch (error) {
    showError(error);
  }
}

async function logoutOthers() {
  try {
    await api('/bff/sessions/revoke-others', { method: 'POST' });
    clearError();
    await loadSessions();
  } catch (error) {
    showError(error);
  }
}

async function logout() {
  // Signed out from here on: the clock loop must not reconnect, and a late 401 from a call still
  // in flight must not send the browser to the login page instead of the provider's logout.
  state.user = null;
  stopBackground();
  setLeaving(true);
  try {
    const body = await api('/bff/logout', { method: 'POST', needsUser: false });
    if (body && body.logoutUrl) {
      window.location.assign(body.logoutUrl); // the provider's end-session page, then back here
    } else {
      window.location.reload();
    }
  } catch (error) {
    setLeaving(false);
    showError(error);
    // The session may or may not have ended: show what the BFF says now.
    await loadUser({ needsUser: false }).catch(() => {});
    renderSignedIn(Boolean(state.user));
  }
}

// -- the clock: server-sent events read with fetch() ------------------------------------------
// EventSource cannot send the anti-forgery header, so the stream is read from fetch() instead.
// The demo API ends a stream when the access token that opened it expires; reconnecting goes
// through the BFF again, which refreshes the token first.

async function runClock() {
  while (state.user) {
    const abort = new AbortController();
    state.clockAbort = abort;
    let delay = 250;
    try {
      const response = await api('/api/clock', { stream: true, signal: abort.signal });
      refreshUser(); // the BFF refreshed the token to open this stream if it had to: show the new expiry
      await readEvents(response, (event) => {
        if (event.type === 'tick') {
          const data = JSON.parse(event.data);
          $('clock').textContent = new Date(data.epoch * 1000).toLocaleTimeString();
        }
      });
      // The stream ended with its token (event "token-expired"): reconnect, the BFF refreshes.
    } catch (error) {
      if (abort.signal.aborted) return;
      showError(error);
      delay = 2000;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { type: 'message', data: '' };
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event.type = text;
        else if (field === 'data') event.data += (event.data ? '\n' : '') + text;
      }
      if (event.data) onEvent(event);
    }
  }
}

// -- start -------------------------------------------------------------------------------------

function stopBackground() {
  if (state.clockAbort) state.clockAbort.abort();
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

async function start() {
  renderCookieVisibility();
  $('login').addEventListener('click', goToLogin);
  $('logout').addEventListener('click', logout);
  $('todo-form').addEventListener('submit', addTodo);
  $('logout-others').addEventListener('click', logoutOthers);
  try {
    await loadUser({ needsUser: false });
  } catch (error) {
    showError(error);
  }
  renderSignedIn(Boolean(state.user));
  if (!state.user) return;
  renderTokenExpiry();
  try {
    await Promise.all([loadTodos(), loadSessions(), loadMe()]);
    clearError();
  } catch (error) {
    showError(error);
  }
  runClock();
  state.timers.push(
    setInterval(renderTokenExpiry, 250),
    setInterval(renderCookieVisibility, 2000),
    setInterval(refreshUser, 5000),
    setInterval(() => loadSessions().catch(showError), 10000),
  );
}

start();
