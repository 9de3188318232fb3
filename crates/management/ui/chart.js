// A live line chart drawn as SVG: a fixed number of samples, one polyline per series, a y axis
// rounded to a readable maximum, and a legend with each series' latest value. No inline
// styles (the page's CSP): colours come from style.css by series position.

import { h, num } from '/ui/dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 160;
const LEFT = 56;
const PAD = 8;

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `n`.
function niceMax(n) {
  if (n <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= n);
}

export class Chart {
  /// `series`: [{name}]; `format`: a value's label (a count, a rate).
  constructor(title, series, { samples = 60, format = num } = {}) {
    this.series = series;
    this.samples = samples;
    this.format = format;
    this.data = [];
    this.svg = s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart', role: 'img', 'aria-label': title });
    this.legend = h('ul', { class: 'legend' });
    this.el = h('figure', { class: 'chart-box' }, h('figcaption', {}, title), this.svg, this.legend);
  }

  /// Adds one sample: a value per series, in order.
  push(values) {
    this.data.push(values);
    if (this.data.length > this.samples) this.data.shift();
    this.draw();
  }

  draw() {
    const max = niceMax(Math.max(0, ...this.data.flat()));
    const x = (i) => LEFT + ((WIDTH - LEFT - PAD) * (i + this.samples - this.data.length)) / (this.samples - 1);
    const y = (v) => PAD + (HEIGHT - 2 * PAD) * (1 - v / max);
    const grid = [0, 0.5, 1].map((f) => [
      s('line', { x1: LEFT, x2: WIDTH - PAD, y1: y(max * f), y2: y(max * f), class: 'grid' }),
      s('text', { x: LEFT - 6, y: y(max * f) + 4, class: 'axis' }, this.format(max * f)),
    ]);
    const lines = this.series.map((_, k) => s('polyline', {
      points: this.data.map((values, i) => `${x(i).toFixed(1)},${y(values[k]).toFixed(1)}`).join(' '),
      class: `line line-${k}`,
    }));
    this.svg.replaceChildren(...grid.flat(), ...lines);
    const last = this.data[this.data.length - 1] || [];
    this.legend.replaceChildren(...this.series.map((serie, k) => h('li', {},
      h('span', { class: `swatch swatch-${k}` }), `${serie.name} `,
      h('strong', { 'data-series': serie.name }, last[k] === undefined ? '' : this.format(last[k])))));
  }
}
