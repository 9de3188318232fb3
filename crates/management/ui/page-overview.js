// The overview: totals, live charts of queued messages and message rates (polled every 5 s
// from /api/overview), the node with its listeners and alarms (/api/nodes), and, for
// administrators, definitions export and import.

import { api, session } from '/ui/api.js';
import { h, fill, num, bytes, duration, poll, section, facts, flash } from '/ui/dom.js';
import { Chart } from '/ui/chart.js';

const PERIOD_MS = 5000;

const RATES = [['Publish', 'publish'], ['Confirm', 'confirm'], ['Deliver / get', 'deliver_get'],
  ['Redelivered', 'redeliver'], ['Ack', 'ack']];

function total(label, key) {
  return h('div', { class: 'total' }, h('span', { class: 'label' }, label), h('strong', { 'data-total': key }, '–'));
}

export function overview(main) {
  const queued = new Chart('Queued messages', [{ name: 'Ready' }, { name: 'Unacked' }, { name: 'Total' }]);
  const rates = new Chart('Message rates', RATES.map(([name]) => ({ name })),
    { format: (v) => `${v >= 10 ? num(Math.round(v)) : v.toFixed(1)}/s` });
  const totals = h('div', { class: 'totals' },
    total('Connections', 'connections'), total('Channels', 'channels'), total('Exchanges', 'exchanges'),
    total('Queues', 'queues'), total('Consumers', 'consumers'), total('Ready', 'messages_ready'),
    total('Unacked', 'messages_unacknowledged'), total('Total messages', 'messages'));
  const node = h('div', { id: 'node' });
  const alarms = h('div', { id: 'alarms' });
  const listeners = h('tbody');
  fill(main,
    h('h1', {}, 'Overview'),
    totals,
    h('div', { class: 'charts' }, queued.el, rates.el),
    h('div', { class: 'columns' },
      section('Node', node),
      section('Alarms', alarms),
      section('Listeners', h('table', { class: 'list', id: 'listeners' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Protocol'), h('th', {}, 'Address'), h('th', { class: 'num' }, 'Port'))),
        listeners))),
    session().tags.includes('administrator') ? definitions() : null);

  return poll(async () => {
    const o = await api('/overview');
    const counts = { ...o.object_totals, ...o.queue_totals };
    totals.querySelectorAll('[data-total]').forEach((el) => { el.textContent = num(counts[el.dataset.total] ?? 0); });
    const q = o.queue_totals || {};
    queued.push([q.messages_ready || 0, q.messages_unacknowledged || 0, q.messages || 0]);
    const stats = o.message_stats || {};
    rates.push(RATES.map(([, key]) => (stats[`${key}_details`] || {}).rate || 0));
    fill(listeners, (o.listeners || []).map((l) => h('tr', {},
      h('td', {}, l.protocol), h('td', {}, l.ip_address), h('td', { class: 'num' }, l.port))));
    const n = await nodeDetails();
    fill(node, facts([
      ['Name', o.node], ['Product', `${o.product_name} ${o.product_version}`],
      ['RabbitMQ compatibility', o.rabbitmq_version], ['Cluster', o.cluster_name],
      ...(n ? [['Uptime', duration(n.uptime)], ['Memory', bytes(n.mem_used)], ['File descriptors', num(n.fd_used)],
        ['Sockets', num(n.sockets_used)], ['Processors', num(n.processors)]] : []),
    ]));
    const raised = n ? [n.mem_alarm && 'Memory alarm', n.disk_free_alarm && 'Disk space alarm'].filter(Boolean) : [];
    fill(alarms, n ? (raised.length ? raised.map((a) => h('p', { class: 'alarm' }, a)) : h('p', { class: 'ok' }, 'No alarms'))
      : h('p', { class: 'muted' }, 'Needs the monitoring tag'));
  }, PERIOD_MS);
}

/// The node's details, or null for a user without the monitoring tag.
async function nodeDetails() {
  const tags = session().tags;
  if (!tags.includes('monitoring') && !tags.includes('administrator')) return null;
  const nodes = await api('/nodes');
  return nodes[0] || null;
}

function definitions() {
  const file = h('input', { type: 'file', accept: 'application/json,.json', id: 'definitions-file' });
  return section('Definitions',
    h('p', { class: 'muted' }, 'Users, vhosts, permissions, policies, exchanges, queues and bindings, in RabbitMQ\'s format.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: exportDefinitions }, 'Download'),
      file,
      h('button', { type: 'button', onclick: () => importDefinitions(file) }, 'Upload')));
}

async function exportDefinitions() {
  const doc = await api('/definitions');
  const url = URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: 'application/json' }));
  const a = h('a', { href: url, download: 'lepus-definitions.json' });
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

async function importDefinitions(input) {
  const chosen = input.files[0];
  if (!chosen) {
    flash('Choose a definitions file first', 'error');
    return;
  }
  try {
    await api('/definitions', { method: 'POST', body: JSON.parse(await chosen.text()) });
    flash(`Imported ${chosen.name}`);
  } catch (e) {
    flash(e.message, 'error');
  }
}
