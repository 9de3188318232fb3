// The management API from the browser: basic auth with the credentials of the login form,
// kept in sessionStorage (gone when the tab closes), errors as ApiError with RabbitMQ's reason.

const KEY = 'lepus.credentials';

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
  }
}

function token(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return btoa(String.fromCharCode(...bytes));
}

export function session() {
  const raw = sessionStorage.getItem(KEY);
  return raw ? JSON.parse(raw) : null;
}

export function logout() {
  sessionStorage.removeItem(KEY);
}

let onUnauthorised = () => {};
/// What to do when the stored credentials stop working (the app shows the login page).
export function whenUnauthorised(f) {
  onUnauthorised = f;
}

async function request(auth, path, { method = 'GET', body } = {}) {
  const headers = { authorization: `Basic ${auth}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  // credentials: 'omit' keeps the browser from showing its own login dialog on a 401.
  const response = await fetch(`/api${path}`, {
    method, headers, credentials: 'omit', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const reason = data && (data.reason || data.error);
    throw new ApiError(response.status, reason || response.statusText);
  }
  return data;
}

/// Checks the credentials with /api/whoami and keeps them for the session.
export async function login(user, password) {
  const auth = token(user, password);
  const me = await request(auth, '/whoami');
  sessionStorage.setItem(KEY, JSON.stringify({ auth, name: me.name, tags: me.tags }));
  return me;
}

/// Calls the API as the logged-in user: `api('/queues?page=1')`, `api(path, {method, body})`.
export async function api(path, options) {
  const s = session();
  if (!s) {
    onUnauthorised();
    throw new ApiError(401, 'Not logged in');
  }
  try {
    return await request(s.auth, path, options);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && e.message === 'Login failed') {
      logout();
      onUnauthorised();
    }
    throw e;
  }
}

/// One path segment.
export const seg = encodeURIComponent;

/// A query string from the entries whose value is not empty.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
