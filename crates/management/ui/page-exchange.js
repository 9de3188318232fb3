// One exchange: its type, features, arguments and policy, its message rates in and out
// (polled every 5 s, with a chart), the bindings from it and to it, the form that publishes
// a message to it, and its deletion — RabbitMQ's exchange page.

import { api, seg } from '/ui/api.js';
import { h, fill, num, rate, pairs, poll, section, facts } from '/ui/dom.js';
import { Chart } from '/ui/chart.js';
import { publishForm, deleteButton } from '/ui/form.js';
import { pagedTable, queueHref, exchangeHref } from '/ui/table.js';

const PERIOD_MS = 5000;
const DEFAULT = 'amq.default';

/// A binding's other end: a link to its queue or exchange page.
function endpoint(vhost, type, name) {
  if (type === 'queue') return h('a', { href: queueHref(vhost, name) }, name);
  return h('a', { href: exchangeHref(vhost, name) }, name || '(AMQP default)');
}

function bindingTable(id, path, vhost, side) {
  const [label, nameOf, typeOf] = side === 'to'
    ? ['To', (b) => b.destination, (b) => b.destination_type]
    : ['From', (b) => b.source, () => 'exchange'];
  return pagedTable({
    id, filterable: false, path: () => path, pageSize: 20,
    rowKey: (b) => `${b.source}/${b.destination_type}/${b.destination}/${b.properties_key}`,
    columns: [
      { label, cell: (b) => endpoint(vhost, typeOf(b), nameOf(b)), cols: ['source', 'destination', 'destination_type'] },
      { label: 'Routing key', cell: (b) => b.routing_key, cols: ['routing_key'], sort: 'routing_key' },
      { label: 'Arguments', cell: (b) => pairs(b.arguments), cols: ['arguments'] },
    ],
  });
}

export function exchangePage(main, vhost, name) {
  const path = `/exchanges/${seg(vhost)}/${seg(name || DEFAULT)}`;
  const details = h('div', { id: 'exchange-details' });
  const chart = new Chart('Message rates', [{ name: 'In' }, { name: 'Out' }], { format: (n) => `${n.toFixed(1)}/s` });
  const from = bindingTable('exchange-bindings-source', `${path}/bindings/source`, vhost, 'to');
  const to = bindingTable('exchange-bindings-destination', `${path}/bindings/destination`, vhost, 'from');
  const builtIn = !name || name.startsWith('amq.');
  fill(main,
    h('h1', {}, h('span', { class: 'muted' }, 'Exchange '), h('span', { id: 'exchange-name' }, name || '(AMQP default)'),
      h('span', { class: 'muted vhost-label' }, ` in ${vhost}`)),
    h('div', { class: 'columns' }, section('Details', details), chart.el),
    section('Bindings from this exchange', from.el),
    section('Bindings to this exchange', to.el),
    section('Publish message', publishForm({ vhost, exchange: name || DEFAULT })),
    builtIn ? null : section('Delete', h('div', { class: 'actions' },
      deleteButton('exchange', name, path, '#/exchanges'))));

  const stop = poll(async () => {
    const x = await api(path);
    const stats = x.message_stats || {};
    chart.push([stats.publish_in_details?.rate || 0, stats.publish_out_details?.rate || 0]);
    fill(details, facts([
      ['Type', x.type],
      ['Features', [x.durable && 'durable', x.auto_delete && 'auto-delete', x.internal && 'internal'].filter(Boolean).join(', ') || '–'],
      ['Arguments', pairs(x.arguments) || '–'],
      ['Policy', x.policy || '–'],
      ['Published in', h('span', { 'data-count': 'publish_in' }, num(stats.publish_in || 0))],
      ['Routed out', h('span', { 'data-count': 'publish_out' }, num(stats.publish_out || 0))],
      ['Rate in', rate(stats.publish_in_details) || '0.0/s'],
      ['Rate out', rate(stats.publish_out_details) || '0.0/s'],
    ]));
  }, PERIOD_MS);
  return () => { stop(); from.stop(); to.stop(); };
}
