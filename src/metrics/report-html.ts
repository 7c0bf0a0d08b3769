// `uffd report`: pictures of restores as one self-contained HTML page (no network fetch: styles, script and
// data are inline). Per record: the address space as a heat map of first-fault time, pages faulted over
// time, the fault service histogram; for two records, their overlap. The data is aggregated here (a few
// thousand cells, whatever the memory size) and drawn by a small inline script on canvases.
import { basename } from 'node:path';
import type { WorkingSetRecord } from './working-set.js';
import { diffWorkingSets, workingSetStats } from './working-set-ops.js';
import type { WorkingSetStats } from './working-set-ops.js';

/** Heat map cells across (rows follow from the page count). */
const COLUMNS = 128;
const MAX_CELLS = COLUMNS * 96;
const TIME_BINS = 60;

interface RecordView {
  name: string;
  stats: WorkingSetStats;
  snapshotPages: number;
  pagesPerCell: number;
  /** Per cell: the earliest first-fault time in µs of its pages, or -1 if none faulted. */
  cells: number[];
  /** New pages per time bin, over [0, settle]. */
  bins: number[];
  binMicros: number;
  service: { label: string; count: number }[];
}

interface ReportData {
  title: string;
  generated: string;
  records: RecordView[];
  overlap?: { a: string; b: string; jaccard: number; both: number; onlyA: number; onlyB: number; pagesPerCell: number; cells: number[] };
}

function cellsFor(record: WorkingSetRecord): { pagesPerCell: number; snapshotPages: number } {
  const snapshotPages = Math.max(1, Math.ceil(record.snapshot.size / record.pageSize));
  return { snapshotPages, pagesPerCell: Math.max(1, Math.ceil(snapshotPages / MAX_CELLS)) };
}

function view(name: string, record: WorkingSetRecord): RecordView {
  const stats = workingSetStats(record);
  const { snapshotPages, pagesPerCell } = cellsFor(record);
  const cells = new Array<number>(Math.ceil(snapshotPages / pagesPerCell)).fill(-1);
  record.offsets.forEach((offset, i) => {
    const cell = Math.floor(offset / record.pageSize / pagesPerCell);
    const t = record.micros[i] ?? 0;
    if ((cells[cell] ?? -1) < 0 || t < (cells[cell] ?? 0)) cells[cell] = t;
  });
  const binMicros = Math.max(1, stats.settleMicros / TIME_BINS);
  const bins = new Array<number>(TIME_BINS).fill(0);
  for (const t of record.micros) {
    const b = Math.min(TIME_BINS - 1, Math.floor(t / binMicros));
    bins[b] = (bins[b] ?? 0) + 1;
  }
  const us = (n: number): string => (n === Infinity ? '∞' : n >= 1000 ? `${String(n / 1000)} ms` : `${String(n)} µs`);
  const service = (record.serviceMicros?.buckets ?? []).map((b) => ({ label: `${us(b.lowMicros)}–${us(b.highMicros)}`, count: b.count }));
  return { name, stats, snapshotPages, pagesPerCell, cells, bins, binMicros, service };
}

function overlapOf(names: [string, string], a: WorkingSetRecord, b: WorkingSetRecord): NonNullable<ReportData['overlap']> {
  const d = diffWorkingSets(a, b, names);
  const { snapshotPages, pagesPerCell } = cellsFor(a);
  // Per cell: bit 1 = some page of A, bit 2 = some page of B.
  const cells = new Array<number>(Math.ceil(snapshotPages / pagesPerCell)).fill(0);
  const mark = (r: WorkingSetRecord, bit: number): void => {
    for (const o of r.offsets) {
      const c = Math.floor(o / r.pageSize / pagesPerCell);
      cells[c] = (cells[c] ?? 0) | bit;
    }
  };
  mark(a, 1);
  mark(b, 2);
  return { a: names[0], b: names[1], jaccard: d.jaccard, both: d.both, onlyA: d.onlyA, onlyB: d.onlyB, pagesPerCell, cells };
}

/** The report page for `records` (named by their paths). */
export function renderReport(records: readonly { path: string; record: WorkingSetRecord }[], now = new Date()): string {
  if (records.length === 0) throw new RangeError('report needs at least one record');
  const named = records.map((r) => ({ name: basename(r.path), record: r.record }));
  const data: ReportData = {
    title: named.length === 1 ? `Restore of ${named[0]?.name ?? ''}` : `Restores: ${named.map((n) => n.name).join(', ')}`,
    generated: now.toISOString(),
    records: named.map((n) => view(n.name, n.record)),
  };
  const [first, second] = named;
  if (first !== undefined && second !== undefined && first.record.pageSize === second.record.pageSize) {
    data.overlap = overlapOf([first.name, second.name], first.record, second.record);
  }
  // Inside <script>: "<" escaped so no "</script>" in a file name ends the element.
  const json = JSON.stringify(data).replace(/</g, '\\u003c');
  const title = data.title.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fbfbfd; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 6px; } h3 { font-size: 13px; margin: 14px 0 4px; color: #4a5263; }
.meta { color: #6a7283; font-size: 12px; } .card { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
canvas { display: block; image-rendering: pixelated; } .legend { font-size: 12px; color: #4a5263; display: flex; gap: 14px; align-items: center; margin-top: 4px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -2px; margin-right: 4px; }
#errors { color: #b00020; white-space: pre-wrap; } table { border-collapse: collapse; font-size: 13px; } td { padding: 1px 12px 1px 0; }
</style></head>
<body data-rendered="pending">
<h1 id="title"></h1><div class="meta" id="generated"></div><div id="errors"></div><main id="main"></main>
<script type="application/json" id="data">${json}</script>
<script>
"use strict";
window.addEventListener('error', function (e) { report(e.message); });
function report(message) { document.getElementById('errors').textContent += message + '\\n'; document.body.dataset.rendered = 'error'; }
function el(tag, attrs, text) { var n = document.createElement(tag); for (var k in attrs) n.setAttribute(k, attrs[k]); if (text !== undefined) n.textContent = text; return n; }
function ms(us) { return us >= 1000 ? (us / 1000).toFixed(1) + ' ms' : us.toFixed(0) + ' µs'; }
function mib(b) { return (b / 1048576).toFixed(1) + ' MiB'; }
// Early faults bright, late ones dark (a perceptual ramp, yellow -> teal -> purple).
var RAMP = [[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]];
function ramp(x) { x = Math.max(0, Math.min(1, x)) * (RAMP.length - 1); var i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i, a = RAMP[i], b = RAMP[i + 1];
  return 'rgb(' + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(',') + ')'; }
function grid(cells, color, columns) {
  var size = Math.max(3, Math.min(8, Math.floor(1024 / columns))), rows = Math.ceil(cells.length / columns);
  var c = el('canvas', { width: columns * size, height: rows * size }), g = c.getContext('2d');
  for (var i = 0; i < cells.length; i++) { g.fillStyle = color(cells[i]); g.fillRect((i % columns) * size, Math.floor(i / columns) * size, size - (size > 3 ? 1 : 0), size - (size > 3 ? 1 : 0)); }
  return c;
}
function bars(values, labels, color, height) {
  var w = Math.max(4, Math.floor(960 / Math.max(1, values.length))), c = el('canvas', { width: values.length * w + 40, height: height + 30 }), g = c.getContext('2d');
  var max = Math.max.apply(null, values.concat([1]));
  g.font = '10px system-ui, sans-serif'; g.fillStyle = '#6a7283'; g.fillText(String(max), 0, 10);
  for (var i = 0; i < values.length; i++) { var h = Math.round((values[i] / max) * height); g.fillStyle = color; g.fillRect(40 + i * w, height - h + 12, w - 1, h); }
  g.fillStyle = '#6a7283'; if (labels.length > 0) { g.fillText(labels[0], 40, height + 26); g.textAlign = 'right'; g.fillText(labels[labels.length - 1], c.width, height + 26); }
  return c;
}
function render(data) {
  document.getElementById('title').textContent = data.title;
  document.getElementById('generated').textContent = 'generated ' + data.generated + ' by uffd report';
  var main = document.getElementById('main');
  data.records.forEach(function (r) {
    var card = el('section', { class: 'card', 'data-record': r.name });
    var s = r.stats;
    card.appendChild(el('h2', {}, r.name));
    card.appendChild(el('div', { class: 'meta' }, s.pages + ' pages of ' + (s.pageSize / 1024) + ' KiB (' + mib(s.bytes) + ') faulted of ' + r.snapshotPages
      + '; half by ' + ms(s.p50Micros) + ', 90% by ' + ms(s.p90Micros) + ', the last at ' + ms(s.settleMicros) + ' (' + s.ended + ')'));
    card.appendChild(el('h3', {}, 'Address space by first-fault time (one cell = ' + r.pagesPerCell + ' page' + (r.pagesPerCell === 1 ? '' : 's') + ', row by row from offset 0)'));
    var span = Math.max(1, s.settleMicros);
    card.appendChild(grid(r.cells, function (t) { return t < 0 ? '#e6e8ee' : ramp(t / span); }, ${String(COLUMNS)}));
    var legend = el('div', { class: 'legend' });
    [['first', 0], ['middle', 0.5], ['last', 1]].forEach(function (p) { var l = el('span'); l.appendChild(el('span', { class: 'swatch', style: 'background:' + ramp(p[1]) })); l.appendChild(document.createTextNode(p[0] + ' (' + ms(p[1] * span) + ')')); legend.appendChild(l); });
    var never = el('span'); never.appendChild(el('span', { class: 'swatch', style: 'background:#e6e8ee' })); never.appendChild(document.createTextNode('never faulted')); legend.appendChild(never);
    card.appendChild(legend);
    card.appendChild(el('h3', {}, 'New pages over time (' + ms(r.binMicros) + ' per bar)'));
    card.appendChild(bars(r.bins, ['0', ms(r.binMicros * r.bins.length)], '#3b528b', 90));
    card.appendChild(el('h3', {}, 'Fault service time (log2 buckets)'));
    if (r.service.length === 0) card.appendChild(el('div', { class: 'meta' }, 'not in this record'));
    else card.appendChild(bars(r.service.map(function (b) { return b.count; }), [r.service[0].label, r.service[r.service.length - 1].label], '#21918c', 70));
    main.appendChild(card);
  });
  if (data.overlap) {
    var o = data.overlap, card = el('section', { class: 'card', id: 'overlap' });
    card.appendChild(el('h2', {}, 'Overlap of ' + o.a + ' and ' + o.b));
    card.appendChild(el('div', { class: 'meta' }, 'Jaccard ' + o.jaccard.toFixed(3) + ': ' + o.both + ' pages in both, ' + o.onlyA + ' only in ' + o.a + ', ' + o.onlyB + ' only in ' + o.b));
    var colors = ['#e6e8ee', '#3b82f6', '#f59e0b', '#16a34a'];
    card.appendChild(grid(o.cells, function (bits) { return colors[bits]; }, ${String(COLUMNS)}));
    var legend2 = el('div', { class: 'legend' });
    [['only ' + o.a, 1], ['only ' + o.b, 2], ['both', 3], ['neither', 0]].forEach(function (p) { var l = el('span'); l.appendChild(el('span', { class: 'swatch', style: 'background:' + colors[p[1]] })); l.appendChild(document.createTextNode(p[0])); legend2.appendChild(l); });
    card.appendChild(legend2);
    main.appendChild(card);
  }
}
try { render(JSON.parse(document.getElementById('data').textContent)); if (document.body.dataset.rendered === 'pending') document.body.dataset.rendered = 'ok'; }
catch (e) { report(String(e && e.stack || e)); }
</script>
</body></html>
`;
}
