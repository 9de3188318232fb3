// One queue: its counts (polled every 5 s, with a chart), arguments and policy, bindings, and
// the forms that get messages (peek with requeue, or take), publish to it through the default
// exchange, purge it and delete it.

import { api, seg } from '/ui/api.js';
import { h, fill, num, bytes, rate, pairs, poll, section, facts } from '/ui/dom.js';
import { Chart } from '/ui/chart.js';
import { form, publishForm, dangerButton, deleteButton } from '/ui/form.js';
import { pagedTable } from '/ui/table.js';

const PERIOD_MS = 5000;

export function queuePage(main, vhost, name) {
  const path = `/queues/${seg(vhost)}/${seg(name)}`;
  const details = h('div', { id: 'queue-details' });
  const chart = new Chart('Queued messages', [{ name: 'Ready' }, { name: 'Unacked' }, { name: 'Total' }]);
  const messages = h('div', { id: 'messages' });
  const bindings = pagedTable({
    id: 'queue-bindings', filterable: false, path: () => `${path}/bindings`, pageSize: 20,
    rowKey: (b) => `${b.source}/${b.properties_key}`,
    columns: [
      { label: 'From', cell: (b) => b.source || '(AMQP default)', cols: ['source'], sort: 'source' },
      { label: 'Routing key', cell: (b) => b.routing_key, cols: ['routing_key'], sort: 'routing_key' },
      { label: 'Arguments', cell: (b) => pairs(b.arguments), cols: ['arguments'] },
    ],
  });
  fill(main,
    h('h1', {}, h('span', { class: 'muted' }, 'Queue '), h('span', { id: 'queue-name' }, name),
      h('span', { class: 'muted vhost-label' }, ` in ${vhost}`)),
    h('div', { class: 'columns' }, section('Details', details), chart.el),
    section('Get messages', getForm(path, messages), messages),
    section('Publish message', publishForm({ vhost, exchange: 'amq.default', routingKey: name })),
    section('Bindings', bindings.el),
    section('Purge and delete', h('div', { class: 'actions' },
      dangerButton('Purge messages', `Purge every ready message of ${name}?`, async () => {
        await api(`${path}/contents`, { method: 'DELETE' });
        return `Queue ${name} purged`;
      }),
      deleteButton('queue', name, path, '#/queues'))));

  const stop = poll(async () => {
    const q = await api(path);
    chart.push([q.messages_ready || 0, q.messages_unacknowledged || 0, q.messages || 0]);
    fill(details, facts([
      ['Type', q.type], ['State', q.state],
      ['Features', [q.durable && 'durable', q.auto_delete && 'auto-delete', q.exclusive && 'exclusive'].filter(Boolean).join(', ') || '–'],
      ['Arguments', pairs(q.arguments) || '–'],
      ['Policy', q.policy || '–'], ['Operator policy', q.operator_policy || '–'],
      ['Effective policy definition', pairs(q.effective_policy_definition) || '–'],
      ['Consumers', num(q.consumers)],
      ['Ready', h('span', { 'data-count': 'ready' }, num(q.messages_ready))],
      ['Unacked', h('span', { 'data-count': 'unacked' }, num(q.messages_unacknowledged))],
      ['Total', h('span', { 'data-count': 'total' }, num(q.messages))],
      ['Message bytes', bytes(q.message_bytes)],
      ['Incoming', rate(q.message_stats?.publish_details) || '0.0/s'],
      ['Deliver / get', rate(q.message_stats?.deliver_get_details) || '0.0/s'],
    ]));
  }, PERIOD_MS);
  return () => { stop(); bindings.stop(); };
}

function getForm(path, out) {
  return form({
    id: 'get-messages', submit: 'Get messages', reset: false,
    fields: [
      { name: 'ackmode', label: 'Ack mode', type: 'select', value: 'ack_requeue_true', options: [
        ['ack_requeue_true', 'Peek: requeue'], ['ack_requeue_false', 'Take: ack'],
        ['reject_requeue_false', 'Reject: dead-letter or drop']] },
      { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto string / base64'], ['base64', 'base64']] },
      { name: 'count', label: 'Messages', type: 'number', value: '1', required: true },
    ],
    onsubmit: async (v) => {
      const got = await api(`${path}/get`, { method: 'POST', body: {
        count: Number(v.count), ackmode: v.ackmode, encoding: v.encoding, truncate: 50000 } });
      fill(out, got.map((m, i) => h('article', { class: 'message' },
        h('h3', {}, `Message ${i + 1}`),
        facts([
          ['Exchange', m.exchange || '(AMQP default)'], ['Routing key', m.routing_key],
          ['Redelivered', String(m.redelivered)], ['Remaining in queue', num(m.message_count)],
          ['Properties', pairs(m.properties) || '–'],
          ['Payload', `${num(m.payload_bytes)} bytes, ${m.payload_encoding}`],
        ]),
        h('pre', { class: 'payload' }, m.payload))));
      return got.length ? `${got.length} message${got.length > 1 ? 's' : ''}` : 'Queue is empty';
    },
  });
}
