// A list page's table, paged, filtered and sorted by the server (the API's `page`,
// `page_size`, `name`, `use_regex`, `sort`, `sort_reverse` and `columns`): it never asks for
// more than one page, so it stays fast with 100,000 queues. Refreshed every 5 s.

import { api, ApiError, query, seg } from '/ui/api.js';
import { h, fill, num, poll } from '/ui/dom.js';

const VHOST_KEY = 'lepus.vhost';
const REFRESH_MS = 5000;

/// The vhost chosen in a list's toolbar ('' for all), shared by the list pages.
export function chosenVhost() {
  return sessionStorage.getItem(VHOST_KEY) || '';
}

/// The names of the vhosts the user may see.
export async function vhostNames() {
  return (await api('/vhosts?columns=name')).map((v) => v.name);
}

/// A <select> of the vhosts the user may see, after an option for all of them.
async function vhostSelect(attrs) {
  const names = await vhostNames();
  return h('select', attrs, h('option', { value: '' }, 'All virtual hosts'),
    names.map((name) => h('option', { value: name, selected: name === attrs.value }, name)));
}

/// `columns`: [{label, cell(item), cols: [API columns it needs], sort: API sort key, num}];
/// `path(vhost)`: the API path of the list (vhost '' for all); `scoped`: offer the vhost
/// chooser; `filterable`: offer the name filter (lists of objects with a `name`);
/// `rowKey(item)`: the row's data-key.
export function pagedTable({ id, path, columns, scoped = false, filterable = true, rowKey = (i) => i.name, pageSize = 100 }) {
  const state = { page: 1, page_size: pageSize, name: '', use_regex: false, sort: '', sort_reverse: false,
    vhost: scoped ? chosenVhost() : '' };
  const wanted = [...new Set(columns.flatMap((c) => c.cols || []))].join(',');
  const summary = h('span', { class: 'summary muted' });
  const tbody = h('tbody');
  const pageInfo = h('span', { class: 'page-info' });
  const prev = h('button', { type: 'button', class: 'prev', onclick: () => go(state.page - 1) }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'next', onclick: () => go(state.page + 1) }, 'Next ›');
  const head = h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '' },
    c.sort ? h('button', { type: 'button', class: 'sort', 'data-sort': c.sort, onclick: () => sortBy(c.sort) }, c.label) : c.label)));
  let filterTimer = null;
  const filter = h('input', {
    type: 'search', class: 'filter', placeholder: 'Filter by name', 'aria-label': 'Filter by name',
    oninput: () => { clearTimeout(filterTimer); filterTimer = setTimeout(() => { state.name = filter.value; go(1); }, 250); },
  });
  const regex = h('input', { type: 'checkbox', class: 'regex', onchange: () => { state.use_regex = regex.checked; go(1); } });
  const size = h('select', { class: 'page-size', 'aria-label': 'Page size',
    onchange: () => { state.page_size = Number(size.value); go(1); } },
  [20, 100, 500].map((n) => h('option', { value: n, selected: n === pageSize }, `${n} per page`)));
  const toolbar = h('div', { class: 'toolbar' },
    filterable ? [filter, h('label', { class: 'check' }, regex, 'Regex')] : null, size, summary);
  if (scoped) {
    vhostSelect({ class: 'vhost', 'aria-label': 'Virtual host', value: state.vhost })
      .then((select) => {
        select.addEventListener('change', () => { state.vhost = select.value; sessionStorage.setItem(VHOST_KEY, select.value); go(1); });
        toolbar.prepend(select);
      })
      .catch(() => {});
  }
  const el = h('div', { class: 'paged', id },
    toolbar,
    h('div', { class: 'scroll' }, h('table', { class: 'list' }, h('thead', {}, head), tbody)),
    h('div', { class: 'pager' }, prev, pageInfo, next));

  let serial = 0;
  async function load() {
    const mine = ++serial;
    const filtered = state.name;
    const q = query({ page: state.page, page_size: state.page_size, name: filtered,
      use_regex: state.use_regex ? 'true' : '', sort: state.sort, sort_reverse: state.sort_reverse ? 'true' : '',
      columns: wanted });
    let data;
    try {
      data = await api(path(state.vhost) + q);
    } catch (e) {
      if (e instanceof ApiError && e.status === 400 && state.page > 1 && /page out of range/i.test(e.message)) {
        state.page = 1;
        return load();
      }
      throw e;
    }
    if (mine === serial) render(data, filtered);
  }

  /// Shows a page; the table's data-filter tells which name filter it was asked with.
  function render(data, filtered) {
    el.dataset.filter = filtered;
    fill(tbody, data.items.length ? data.items.map((item) => h('tr', { 'data-key': rowKey(item) },
      columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(item))))) :
      h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, state.name ? 'Nothing matches the filter' : 'None')));
    const pages = Math.max(1, data.page_count);
    pageInfo.textContent = `Page ${data.page} of ${num(pages)}`;
    prev.disabled = data.page <= 1;
    next.disabled = data.page >= pages;
    const items = `item${data.total_count === 1 ? '' : 's'}`;
    summary.textContent = data.filtered_count === data.total_count
      ? `${num(data.total_count)} ${items}` : `${num(data.filtered_count)} of ${num(data.total_count)} ${items}`;
    head.querySelectorAll('button.sort').forEach((b) => {
      b.className = b.dataset.sort === state.sort ? `sort ${state.sort_reverse ? 'desc' : 'asc'}` : 'sort';
    });
  }

  function sortBy(key) {
    state.sort_reverse = state.sort === key ? !state.sort_reverse : false;
    state.sort = key;
    go(state.page);
  }

  function go(page) {
    state.page = Math.max(1, page);
    load().catch((e) => fill(tbody, h('tr', {}, h('td', { colspan: columns.length, class: 'error' }, e.message))));
  }

  const stop = poll(load, REFRESH_MS);
  return { el, stop, reload: () => go(state.page) };
}

/// A link to a queue's page.
export function queueHref(vhost, name) {
  return `#/queues/${seg(vhost)}/${seg(name)}`;
}

/// An exchange's page (the default exchange as `amq.default`, as the API names it in paths).
export function exchangeHref(vhost, name) {
  return `#/exchanges/${seg(vhost)}/${seg(name || 'amq.default')}`;
}
