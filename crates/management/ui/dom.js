// Small DOM helpers: elements from data (text only, never parsed as HTML), number and size
// formats, the flash message line, and polling that waits for each answer before the next.

/// h('a', {href, class, onclick}, child, ...): an element; children are nodes or text.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'checked' || k === 'value' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/// Replaces an element's children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const integer = new Intl.NumberFormat('en-US');

export function num(n) {
  return typeof n === 'number' ? integer.format(n) : '';
}

export function bytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/// A `*_details` object's rate, per second.
export function rate(details) {
  return details && typeof details.rate === 'number' ? `${details.rate.toFixed(1)}/s` : '';
}

export function duration(ms) {
  if (typeof ms !== 'number') return '';
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : `${m}m ${s % 60}s`;
}

export function time(ms) {
  return typeof ms === 'number' ? new Date(ms).toLocaleString() : '';
}

/// A table's arguments or properties cell: `key: value` pairs.
export function pairs(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return '';
  return entries.map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}

let flashTimer = null;
/// A message under the header: `kind` is 'ok' or 'error'.
export function flash(text, kind = 'ok') {
  const el = document.getElementById('flash');
  clearTimeout(flashTimer);
  fill(el, text ? h('div', { class: `flash ${kind}` }, text) : null);
  if (text && kind === 'ok') flashTimer = setTimeout(() => fill(el), 4000);
}

/// Calls `f` now and then `period_ms` after each call ends (skipped while the tab is hidden);
/// returns the function that stops it.
export function poll(f, period_ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await f(); } catch (e) { flash(e.message, 'error'); }
    }
    if (!stopped) timer = setTimeout(tick, period_ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/// A section with a heading.
export function section(title, ...body) {
  return h('section', { class: 'panel' }, h('h2', {}, title), body);
}

/// A definition list from [label, value] rows.
export function facts(rows) {
  return h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}
