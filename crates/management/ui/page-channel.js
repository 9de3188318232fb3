// One channel: its connection, mode, prefetch and unsettled counts, its message counts and
// rates (polled every 5 s), and its consumers with their queues — RabbitMQ's channel page,
// kept small.

import { api, seg } from '/ui/api.js';
import { h, fill, num, rate, poll, section, facts } from '/ui/dom.js';
import { queueHref } from '/ui/table.js';

const PERIOD_MS = 5000;

/// A count and its rate, as `12 (2.4/s)`.
function counted(stats, key) {
  return `${num(stats[key] || 0)} (${rate(stats[`${key}_details`]) || '0.0/s'})`;
}

export function channelPage(main, name) {
  const details = h('div', { id: 'channel-details' });
  const consumers = h('div', { id: 'channel-consumers' });
  fill(main,
    h('h1', {}, h('span', { class: 'muted' }, 'Channel '), h('span', { id: 'channel-name' }, name)),
    section('Details', details),
    section('Consumers', consumers));
  return poll(async () => {
    const c = await api(`/channels/${seg(name)}`);
    const stats = c.message_stats || {};
    fill(details, facts([
      ['Connection', c.connection_details?.name],
      ['Virtual host', c.vhost],
      ['User', c.user],
      ['Mode', [c.confirm && 'confirm', c.transactional && 'transactional'].filter(Boolean).join(', ') || '–'],
      ['Prefetch', `${num(c.prefetch_count)} per consumer, ${num(c.global_prefetch_count)} per channel`],
      ['Unacked', h('span', { 'data-count': 'messages_unacknowledged' }, num(c.messages_unacknowledged))],
      ['Unconfirmed', num(c.messages_unconfirmed)],
      ['Published', counted(stats, 'publish')],
      ['Delivered / got', counted(stats, 'deliver_get')],
      ['Acknowledged', counted(stats, 'ack')],
    ]));
    const rows = (c.consumer_details || []).map((d) => h('tr', { 'data-key': d.consumer_tag },
      h('td', {}, h('a', { href: queueHref(d.queue.vhost, d.queue.name) }, d.queue.name)),
      h('td', {}, d.consumer_tag),
      h('td', {}, d.ack_required ? 'yes' : 'no'),
      h('td', { class: 'num' }, num(d.prefetch_count))));
    fill(consumers, rows.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['Queue', 'Consumer tag', 'Ack required', 'Prefetch'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows))
      : h('p', { class: 'muted' }, 'No consumers'));
  }, PERIOD_MS);
}
