// Administration: users, virtual hosts, permissions, topic permissions, limits and policies,
// each a paged list with a delete (or clear) button per row and a form that adds one.

import { api, seg } from '/ui/api.js';
import { h, fill, pairs, flash } from '/ui/dom.js';
import { form, parseArguments } from '/ui/form.js';
import { pagedTable, vhostNames } from '/ui/table.js';

/// A row's delete button: asks, calls DELETE `path`, reloads the table.
function deleteButton(table, what, path) {
  return h('button', {
    type: 'button', class: 'danger small',
    onclick: async () => {
      if (!window.confirm(`Delete ${what}?`)) return;
      try {
        await api(path, { method: 'DELETE' });
        flash(`Deleted ${what}`);
        table.reload();
      } catch (e) {
        flash(e.message, 'error');
      }
    },
  }, 'Delete');
}

/// A list page: title, the table made by `makeTable(tableRef)`, and the add form made by
/// `makeForm(table, vhosts)` (vhosts: the names the user may see).
function adminPage(main, title, makeTable, makeForm, formTitle) {
  const ref = {};
  const table = makeTable(ref);
  ref.table = table;
  const box = h('div');
  fill(main, h('h1', {}, title), table.el,
    h('details', { class: 'panel', id: `${table.el.id}-add`, open: true }, h('summary', {}, formTitle), box));
  vhostNames().then((vhosts) => fill(box, makeForm(table, vhosts))).catch((e) => fill(box, e.message));
  return table.stop;
}

export function users(main) {
  return adminPage(main, 'Users', (ref) => pagedTable({
    id: 'users', path: () => '/users',
    columns: [
      { label: 'Name', cell: (u) => u.name, cols: ['name'], sort: 'name' },
      { label: 'Tags', cell: (u) => (u.tags || []).join(', '), cols: ['tags'] },
      { label: 'Password', cell: (u) => (u.password_hash ? u.hashing_algorithm : 'none (certificate login only)'),
        cols: ['password_hash', 'hashing_algorithm'] },
      { label: '', cell: (u) => deleteButton(ref.table, `user ${u.name}`, `/users/${seg(u.name)}`) },
    ],
  }), (table) => form({
    id: 'add-user', submit: 'Add user',
    fields: [
      { name: 'name', label: 'Username', required: true },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password' },
      { name: 'tags', label: 'Tags (comma separated)', placeholder: 'administrator, monitoring, policymaker, management' },
    ],
    onsubmit: async (v) => {
      const tags = v.tags.split(',').map((t) => t.trim()).filter(Boolean);
      await api(`/users/${seg(v.name)}`, { method: 'PUT', body: v.password ? { password: v.password, tags } : { tags } });
      table.reload();
      return `User ${v.name} saved`;
    },
  }), 'Add or update a user');
}

export function vhosts(main) {
  return adminPage(main, 'Virtual hosts', (ref) => pagedTable({
    id: 'vhosts', path: () => '/vhosts',
    columns: [
      { label: 'Name', cell: (v) => v.name, cols: ['name'], sort: 'name' },
      { label: 'Description', cell: (v) => v.description || '', cols: ['description'] },
      { label: 'Tags', cell: (v) => (v.tags || []).join(', '), cols: ['tags'] },
      { label: '', cell: (v) => deleteButton(ref.table, `virtual host ${v.name}`, `/vhosts/${seg(v.name)}`) },
    ],
  }), (table) => form({
    id: 'add-vhost', submit: 'Add virtual host',
    fields: [
      { name: 'name', label: 'Name', required: true },
      { name: 'description', label: 'Description' },
    ],
    onsubmit: async (v) => {
      await api(`/vhosts/${seg(v.name)}`, { method: 'PUT', body: { description: v.description } });
      table.reload();
      return `Virtual host ${v.name} added`;
    },
  }), 'Add a virtual host');
}

export function permissions(main) {
  return adminPage(main, 'Permissions', (ref) => pagedTable({
    id: 'permissions', path: () => '/permissions', filterable: false, rowKey: (p) => `${p.user}@${p.vhost}`,
    columns: [
      { label: 'User', cell: (p) => p.user, cols: ['user'], sort: 'user' },
      { label: 'Virtual host', cell: (p) => p.vhost, cols: ['vhost'], sort: 'vhost' },
      { label: 'Configure', cell: (p) => h('code', {}, p.configure), cols: ['configure'] },
      { label: 'Write', cell: (p) => h('code', {}, p.write), cols: ['write'] },
      { label: 'Read', cell: (p) => h('code', {}, p.read), cols: ['read'] },
      { label: '', cell: (p) => deleteButton(ref.table, `${p.user}'s permissions in ${p.vhost}`,
        `/permissions/${seg(p.vhost)}/${seg(p.user)}`) },
    ],
  }), (table, vhostList) => form({
    id: 'set-permission', submit: 'Set permission',
    fields: [
      { name: 'user', label: 'User', required: true },
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostList, value: '/' },
      { name: 'configure', label: 'Configure regexp', value: '.*' },
      { name: 'write', label: 'Write regexp', value: '.*' },
      { name: 'read', label: 'Read regexp', value: '.*' },
    ],
    reset: false,
    onsubmit: async (v) => {
      await api(`/permissions/${seg(v.vhost)}/${seg(v.user)}`, { method: 'PUT', body: {
        configure: v.configure, write: v.write, read: v.read } });
      table.reload();
      return `Permissions of ${v.user} in ${v.vhost} set`;
    },
  }), 'Set permissions');
}

export function policies(main) {
  return adminPage(main, 'Policies', (ref) => pagedTable({
    id: 'policies', path: () => '/policies', rowKey: (p) => `${p.vhost}/${p.name}`,
    columns: [
      { label: 'Virtual host', cell: (p) => p.vhost, cols: ['vhost'], sort: 'vhost' },
      { label: 'Name', cell: (p) => p.name, cols: ['name'], sort: 'name' },
      { label: 'Pattern', cell: (p) => h('code', {}, p.pattern), cols: ['pattern'] },
      { label: 'Apply to', cell: (p) => p['apply-to'], cols: ['apply-to'] },
      { label: 'Definition', cell: (p) => pairs(p.definition), cols: ['definition'] },
      { label: 'Priority', cell: (p) => String(p.priority), cols: ['priority'], sort: 'priority', num: true },
      { label: '', cell: (p) => deleteButton(ref.table, `policy ${p.name}`, `/policies/${seg(p.vhost)}/${seg(p.name)}`) },
    ],
  }), (table, vhostList) => form({
    id: 'add-policy', submit: 'Add policy',
    fields: [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostList, value: '/' },
      { name: 'name', label: 'Name', required: true },
      { name: 'pattern', label: 'Pattern (regexp)', required: true, placeholder: '^orders\\.' },
      { name: 'apply_to', label: 'Apply to', type: 'select', options: ['all', 'queues', 'exchanges'] },
      { name: 'priority', label: 'Priority', type: 'number', value: '0' },
      { name: 'definition', label: 'Definition (key=value per line)', type: 'textarea', required: true, placeholder: 'max-length=1000' },
    ],
    onsubmit: async (v) => {
      await api(`/policies/${seg(v.vhost)}/${seg(v.name)}`, { method: 'PUT', body: {
        pattern: v.pattern, 'apply-to': v.apply_to, priority: Number(v.priority), definition: parseArguments(v.definition) } });
      table.reload();
      return `Policy ${v.name} set`;
    },
  }), 'Add or update a policy');
}

/// A row's button that clears every limit the row shows (one DELETE per limit).
function clearLimitsButton(table, what, base, limits) {
  return h('button', {
    type: 'button', class: 'danger small',
    onclick: async () => {
      if (!window.confirm(`Clear the limits of ${what}?`)) return;
      try {
        for (const name of Object.keys(limits || {})) await api(`${base}/${seg(name)}`, { method: 'DELETE' });
        flash(`Cleared the limits of ${what}`);
        table.reload();
      } catch (e) {
        flash(e.message, 'error');
      }
    },
  }, 'Clear');
}

/// Vhost limits and user limits: two lists, and a form that sets one limit of either.
export function limits(main) {
  const vhostRef = {};
  const vhostTable = pagedTable({
    id: 'vhost-limits', path: () => '/vhost-limits', filterable: false, rowKey: (l) => l.vhost,
    columns: [
      { label: 'Virtual host', cell: (l) => l.vhost, cols: ['vhost'], sort: 'vhost' },
      { label: 'Limits', cell: (l) => pairs(l.value), cols: ['value'] },
      { label: '', cell: (l) => clearLimitsButton(vhostRef.table, `virtual host ${l.vhost}`,
        `/vhost-limits/${seg(l.vhost)}`, l.value) },
    ],
  });
  vhostRef.table = vhostTable;
  const userRef = {};
  const userTable = pagedTable({
    id: 'user-limits', path: () => '/user-limits', filterable: false, rowKey: (l) => l.user,
    columns: [
      { label: 'User', cell: (l) => l.user, cols: ['user'], sort: 'user' },
      { label: 'Limits', cell: (l) => pairs(l.value), cols: ['value'] },
      { label: '', cell: (l) => clearLimitsButton(userRef.table, `user ${l.user}`, `/user-limits/${seg(l.user)}`, l.value) },
    ],
  });
  userRef.table = userTable;
  const setLimit = form({
    id: 'set-limit', submit: 'Set limit',
    fields: [
      { name: 'owner', label: 'Of', type: 'select', options: [['vhost', 'a virtual host'], ['user', 'a user']] },
      { name: 'name', label: 'Virtual host or user', required: true },
      { name: 'limit', label: 'Limit', type: 'select',
        options: ['max-connections', 'max-queues', 'max-channels'] },
      { name: 'value', label: 'Value (-1: no limit)', type: 'number', required: true, value: '100' },
    ],
    onsubmit: async (v) => {
      const base = v.owner === 'user' ? '/user-limits' : '/vhost-limits';
      await api(`${base}/${seg(v.name)}/${seg(v.limit)}`, { method: 'PUT', body: { value: Number(v.value) } });
      (v.owner === 'user' ? userTable : vhostTable).reload();
      return `${v.limit} of ${v.name} set to ${v.value}`;
    },
  });
  fill(main, h('h1', {}, 'Limits'), h('h2', {}, 'Virtual hosts'), vhostTable.el, h('h2', {}, 'Users'), userTable.el,
    h('details', { class: 'panel', id: 'limits-add', open: true }, h('summary', {}, 'Set a limit'), setLimit));
  return () => { vhostTable.stop(); userTable.stop(); };
}

export function topicPermissions(main) {
  return adminPage(main, 'Topic permissions', (ref) => pagedTable({
    id: 'topic-permissions', path: () => '/topic-permissions', filterable: false,
    rowKey: (p) => `${p.user}@${p.vhost}/${p.exchange}`,
    columns: [
      { label: 'User', cell: (p) => p.user, cols: ['user'], sort: 'user' },
      { label: 'Virtual host', cell: (p) => p.vhost, cols: ['vhost'], sort: 'vhost' },
      { label: 'Exchange', cell: (p) => p.exchange, cols: ['exchange'] },
      { label: 'Write', cell: (p) => h('code', {}, p.write), cols: ['write'] },
      { label: 'Read', cell: (p) => h('code', {}, p.read), cols: ['read'] },
      { label: '', cell: (p) => deleteButton(ref.table, `${p.user}'s topic permissions in ${p.vhost}`,
        `/topic-permissions/${seg(p.vhost)}/${seg(p.user)}`) },
    ],
  }), (table, vhostList) => form({
    id: 'set-topic-permission', submit: 'Set topic permission',
    fields: [
      { name: 'user', label: 'User', required: true },
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostList, value: '/' },
      { name: 'exchange', label: 'Exchange', value: 'amq.topic', required: true },
      { name: 'write', label: 'Write regexp', value: '.*' },
      { name: 'read', label: 'Read regexp', value: '.*' },
    ],
    reset: false,
    onsubmit: async (v) => {
      await api(`/topic-permissions/${seg(v.vhost)}/${seg(v.user)}`, { method: 'PUT', body: {
        exchange: v.exchange, write: v.write, read: v.read } });
      table.reload();
      return `Topic permissions of ${v.user} on ${v.exchange} in ${v.vhost} set`;
    },
  }), 'Set topic permissions');
}
