// Forms from a list of fields: labelled inputs, submit that disables itself while the call
// runs, and the API's answer (or its error reason) shown under the button.

import { api, seg } from '/ui/api.js';
import { h, flash } from '/ui/dom.js';

function input(f) {
  const common = { name: f.name, id: f.id, required: f.required, placeholder: f.placeholder };
  switch (f.type) {
    case 'select':
      return h('select', common, (f.options || []).map((o) => {
        const [value, label] = Array.isArray(o) ? o : [o, o];
        return h('option', { value, selected: value === f.value }, label);
      }));
    case 'checkbox':
      return h('input', { ...common, type: 'checkbox', checked: Boolean(f.value) });
    case 'textarea':
      return h('textarea', { ...common, rows: f.rows || 3, value: f.value || '' });
    default:
      return h('input', { ...common, type: f.type || 'text', value: f.value ?? '', autocomplete: f.autocomplete || 'off' });
  }
}

/// A form: `fields` [{name, label, type, options, value, required, placeholder, wide}], `onsubmit`
/// gets {name: value} (checkboxes as booleans) and returns a message for success, or throws.
export function form({ id, fields, submit, onsubmit, reset = true }) {
  const status = h('span', { class: 'form-status', role: 'status' });
  const button = h('button', { type: 'submit' }, submit);
  const el = h('form', { id, class: 'form' },
    fields.map((f) => h('label', { class: f.type === 'checkbox' ? 'check' : f.wide ? 'wide' : '' },
      h('span', {}, f.label), input(f))),
    h('div', { class: 'actions' }, button, status));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const f of fields) {
      const control = el.elements[f.name];
      values[f.name] = f.type === 'checkbox' ? control.checked : control.value;
    }
    button.disabled = true;
    status.className = 'form-status';
    status.textContent = '…';
    try {
      const message = await onsubmit(values);
      status.className = 'form-status ok';
      status.textContent = message || 'Done';
      if (reset) el.querySelectorAll('input[type=text], input[type=password], textarea').forEach((c) => { c.value = ''; });
    } catch (e) {
      status.className = 'form-status error';
      status.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

/// `key=value` lines to an object; a value that reads as JSON (a number, true, a list) is
/// taken as such, anything else as a string.
export function parseArguments(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const at = trimmed.indexOf('=');
    if (at <= 0) throw new Error(`"${trimmed}" is not key=value`);
    const key = trimmed.slice(0, at).trim();
    const raw = trimmed.slice(at + 1).trim();
    try { out[key] = JSON.parse(raw); } catch { out[key] = raw; }
  }
  return out;
}

/// A button that asks first, then runs `action` and flashes its outcome.
export function dangerButton(label, question, action) {
  return h('button', {
    type: 'button', class: 'danger',
    onclick: async () => {
      if (!window.confirm(question)) return;
      try {
        flash(await action() || `${label}: done`);
      } catch (e) {
        flash(e.message, 'error');
      }
    },
  }, label);
}

/// The form that publishes a message to `exchange` through the API; with `routingKey` given
/// (a queue's page: the default exchange) the key is fixed, else it is a field.
export function publishForm({ vhost, exchange, routingKey }) {
  const keyField = routingKey === undefined ? [{ name: 'routing_key', label: 'Routing key', id: 'routing-key' }] : [];
  return form({
    id: 'publish-message', submit: 'Publish message',
    fields: [
      ...keyField,
      { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 – non-persistent'], ['2', '2 – persistent']] },
      { name: 'headers', label: 'Headers (key=value per line)', type: 'textarea', rows: 2 },
      { name: 'properties', label: 'Properties (key=value per line)', type: 'textarea', rows: 2, placeholder: 'content_type=text/plain' },
      { name: 'payload', label: 'Payload', type: 'textarea', rows: 5, id: 'payload', wide: true },
    ],
    onsubmit: async (v) => {
      const properties = { ...parseArguments(v.properties), delivery_mode: Number(v.delivery_mode) };
      const headers = parseArguments(v.headers);
      if (Object.keys(headers).length) properties.headers = headers;
      const answer = await api(`/exchanges/${seg(vhost)}/${seg(exchange)}/publish`, { method: 'POST', body: {
        routing_key: routingKey ?? v.routing_key, payload: v.payload, payload_encoding: 'string', properties } });
      return answer.routed ? 'Message published' : 'Message published, but not routed';
    },
  });
}

/// The button that deletes the `kind` (`queue`, `exchange`) `name` at `path` through the API,
/// then shows the list at `listHash`.
export function deleteButton(kind, name, path, listHash) {
  return dangerButton(`Delete ${kind}`, `Delete ${kind} ${name}?`, async () => {
    await api(path, { method: 'DELETE' });
    location.hash = listHash;
    return `${kind[0].toUpperCase()}${kind.slice(1)} ${name} deleted`;
  });
}
