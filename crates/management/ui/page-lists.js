// The lists of connections, channels, exchanges and queues (paged by the server), with the
// forms that add exchanges and queues.

import { api, seg } from '/ui/api.js';
import { h, fill, num, rate, time, pairs, flash } from '/ui/dom.js';
import { form, parseArguments } from '/ui/form.js';
import { pagedTable, queueHref, exchangeHref, vhostNames, chosenVhost } from '/ui/table.js';

/// `/api/<kind>` or `/api/<kind>/<vhost>`.
const byVhost = (kind) => (vhost) => (vhost ? `/${kind}/${seg(vhost)}` : `/${kind}`);
/// `/api/<kind>` or `/api/vhosts/<vhost>/<kind>`.
const underVhost = (kind) => (vhost) => (vhost ? `/vhosts/${seg(vhost)}/${kind}` : `/${kind}`);

function page(main, title, table, ...extra) {
  fill(main, h('h1', {}, title), table.el, extra);
  return table.stop;
}

const vhostColumn = { label: 'Virtual host', cell: (i) => i.vhost, cols: ['vhost'], sort: 'vhost' };

export function connections(main) {
  const table = pagedTable({
    id: 'connections', scoped: true, path: underVhost('connections'),
    columns: [
      vhostColumn,
      { label: 'Name', cell: (c) => c.name, cols: ['name'], sort: 'name' },
      { label: 'User', cell: (c) => c.user, cols: ['user'], sort: 'user' },
      { label: 'Protocol', cell: (c) => c.protocol, cols: ['protocol'] },
      { label: 'Client', cell: (c) => [c.client_properties?.product, c.client_properties?.version].filter(Boolean).join(' '),
        cols: ['client_properties'] },
      { label: 'Channels', cell: (c) => num(c.channels), cols: ['channels'], sort: 'channels', num: true },
      { label: 'Connected', cell: (c) => time(c.connected_at), cols: ['connected_at'], sort: 'connected_at' },
      { label: '', cell: (c) => h('button', { type: 'button', class: 'danger small', onclick: () => close(c.name) }, 'Close') },
    ],
  });
  async function close(name) {
    if (!window.confirm(`Close connection ${name}?`)) return;
    try {
      await api(`/connections/${seg(name)}`, { method: 'DELETE' });
      flash(`Closed ${name}`);
      table.reload();
    } catch (e) {
      flash(e.message, 'error');
    }
  }
  return page(main, 'Connections', table);
}

export function channels(main) {
  return page(main, 'Channels', pagedTable({
    id: 'channels', scoped: true, path: underVhost('channels'),
    columns: [
      vhostColumn,
      { label: 'Channel', cell: (c) => h('a', { href: `#/channels/${seg(c.name)}` }, c.name), cols: ['name'], sort: 'name' },
      { label: 'User', cell: (c) => c.user, cols: ['user'], sort: 'user' },
      { label: 'Mode', cell: mode, cols: ['confirm', 'transactional'] },
      { label: 'State', cell: (c) => c.state, cols: ['state'] },
      { label: 'Consumers', cell: (c) => num(c.consumer_count), cols: ['consumer_count'], sort: 'consumer_count', num: true },
      { label: 'Prefetch', cell: (c) => num(c.prefetch_count), cols: ['prefetch_count'], sort: 'prefetch_count', num: true },
      { label: 'Unacked', cell: (c) => num(c.messages_unacknowledged), cols: ['messages_unacknowledged'],
        sort: 'messages_unacknowledged', num: true },
      { label: 'Publish', cell: (c) => rate(c.message_stats?.publish_details) || '0.0/s',
        cols: ['message_stats.publish_details'], num: true },
      { label: 'Deliver / get', cell: (c) => rate(c.message_stats?.deliver_get_details) || '0.0/s',
        cols: ['message_stats.deliver_get_details'], num: true },
      { label: 'Ack', cell: (c) => rate(c.message_stats?.ack_details) || '0.0/s',
        cols: ['message_stats.ack_details'], num: true },
    ],
  }));
}

/// RabbitMQ's channel modes: C (confirm), T (transactional).
function mode(c) {
  const tags = [c.confirm && ['C', 'confirm'], c.transactional && ['T', 'transactional']].filter(Boolean);
  return tags.map(([t, title]) => h('abbr', { class: 'tag', title }, t));
}

export function exchanges(main) {
  const table = pagedTable({
    id: 'exchanges', scoped: true, path: byVhost('exchanges'), rowKey: (x) => `${x.vhost}/${x.name}`,
    columns: [
      vhostColumn,
      { label: 'Name', cell: (x) => h('a', { href: exchangeHref(x.vhost, x.name) }, x.name || '(AMQP default)'), cols: ['name'], sort: 'name' },
      { label: 'Type', cell: (x) => x.type, cols: ['type'], sort: 'type' },
      { label: 'Features', cell: features, cols: ['durable', 'auto_delete', 'internal', 'arguments'] },
      { label: 'Arguments', cell: (x) => pairs(x.arguments), cols: ['arguments'] },
      { label: 'Message rate in', cell: (x) => rate(x.message_stats?.publish_in_details) || '0.0/s',
        cols: ['message_stats.publish_in_details'], num: true },
      { label: 'Message rate out', cell: (x) => rate(x.message_stats?.publish_out_details) || '0.0/s',
        cols: ['message_stats.publish_out_details'], num: true },
    ],
  });
  return page(main, 'Exchanges', table, addExchange(table));
}

function features(o) {
  const tags = [o.durable && ['D', 'durable'], o.auto_delete && ['AD', 'auto-delete'], o.internal && ['I', 'internal'],
    o.exclusive && ['Excl', 'exclusive']].filter(Boolean);
  return tags.map(([t, title]) => h('abbr', { class: 'tag', title }, t));
}

function addExchange(table) {
  const box = h('div');
  vhostNames().then((names) => {
    fill(box, form({
      id: 'add-exchange', submit: 'Add exchange',
      fields: [
        { name: 'vhost', label: 'Virtual host', type: 'select', options: names, value: chosenVhost() || '/' },
        { name: 'name', label: 'Name', required: true },
        { name: 'type', label: 'Type', type: 'select', options: ['direct', 'fanout', 'topic', 'headers', 'x-delayed-message'] },
        { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
        { name: 'auto_delete', label: 'Auto delete', type: 'checkbox' },
        { name: 'internal', label: 'Internal', type: 'checkbox' },
        { name: 'arguments', label: 'Arguments (key=value per line)', type: 'textarea', placeholder: 'alternate-exchange=my-ae' },
      ],
      onsubmit: async (v) => {
        await api(`/exchanges/${seg(v.vhost)}/${seg(v.name)}`, { method: 'PUT', body: {
          type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: parseArguments(v.arguments) } });
        table.reload();
        return `Exchange ${v.name} declared`;
      },
    }));
  }).catch((e) => fill(box, e.message));
  return h('details', { class: 'panel', id: 'add-exchange-panel' }, h('summary', {}, 'Add an exchange'), box);
}

export function queues(main) {
  const table = pagedTable({
    id: 'queues', scoped: true, path: byVhost('queues'), rowKey: (q) => `${q.vhost}/${q.name}`,
    columns: [
      vhostColumn,
      { label: 'Name', cell: (q) => h('a', { href: queueHref(q.vhost, q.name) }, q.name), cols: ['name'], sort: 'name' },
      { label: 'Type', cell: (q) => q.type, cols: ['type'], sort: 'type' },
      { label: 'Features', cell: (q) => [features(q), Object.keys(q.arguments || {}).length ? h('abbr', { class: 'tag', title: pairs(q.arguments) }, 'Args') : null],
        cols: ['durable', 'auto_delete', 'exclusive', 'arguments'] },
      { label: 'Policy', cell: (q) => q.policy || '', cols: ['policy'], sort: 'policy' },
      { label: 'State', cell: (q) => q.state, cols: ['state'] },
      { label: 'Consumers', cell: (q) => num(q.consumers), cols: ['consumers'], sort: 'consumers', num: true },
      { label: 'Ready', cell: (q) => num(q.messages_ready), cols: ['messages_ready'], sort: 'messages_ready', num: true },
      { label: 'Unacked', cell: (q) => num(q.messages_unacknowledged), cols: ['messages_unacknowledged'], sort: 'messages_unacknowledged', num: true },
      { label: 'Total', cell: (q) => num(q.messages), cols: ['messages'], sort: 'messages', num: true },
      { label: 'Incoming', cell: (q) => rate(q.message_stats?.publish_details), cols: ['message_stats.publish_details'], num: true },
      { label: 'Deliver / get', cell: (q) => rate(q.message_stats?.deliver_get_details), cols: ['message_stats.deliver_get_details'], num: true },
    ],
  });
  return page(main, 'Queues', table, addQueue(table));
}

function addQueue(table) {
  const box = h('div');
  vhostNames().then((names) => {
    fill(box, form({
      id: 'add-queue', submit: 'Add queue',
      fields: [
        { name: 'vhost', label: 'Virtual host', type: 'select', options: names, value: chosenVhost() || '/' },
        { name: 'name', label: 'Name', required: true, id: 'queue-name' },
        { name: 'type', label: 'Type', type: 'select', options: ['classic', 'quorum'] },
        { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
        { name: 'auto_delete', label: 'Auto delete', type: 'checkbox' },
        { name: 'arguments', label: 'Arguments (key=value per line)', type: 'textarea', placeholder: 'x-message-ttl=60000' },
      ],
      onsubmit: async (v) => {
        const args = parseArguments(v.arguments);
        if (v.type !== 'classic') args['x-queue-type'] = v.type;
        await api(`/queues/${seg(v.vhost)}/${seg(v.name)}`, { method: 'PUT', body: {
          durable: v.durable, auto_delete: v.auto_delete, arguments: args } });
        table.reload();
        return `Queue ${v.name} declared`;
      },
    }));
  }).catch((e) => fill(box, e.message));
  return h('details', { class: 'panel', id: 'add-queue-panel' }, h('summary', {}, 'Add a queue'), box);
}
