// SVG charts for the job page: line charts (loss, learning rate) and the expert-usage heatmap.
// Colours match the job report page, and every legend entry is drawn in its line's colour.

import { h, svg } from "./dom.js";

const WIDTH = 720;
const HEIGHT = 220;
const MARGIN = 48;

/** Min and max, widened when equal so a flat line still gets a scale. */
function bounds(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < Number.EPSILON * Math.max(Math.abs(hi), 1)) {
    const pad = 0.5 * Math.max(Math.abs(lo), 1e-9);
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

export function short(v) {
  if (v !== 0 && (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e5)) return v.toExponential(1);
  return String(Number(v.toFixed(3)));
}

/**
 * A line chart of `series` ([{name, color, points: [[x, y]]}]); series without points are left out.
 * The figure's data-drawn attribute counts the lines drawn.
 */
export function lineChart(id, title, series) {
  const drawn = series.filter((s) => s.points.length);
  const all = drawn.flatMap((s) => s.points);
  const [x0, x1] = bounds(all.map((p) => p[0]));
  const [y0, y1] = bounds(all.map((p) => p[1]));
  const x = (v) => MARGIN + ((v - x0) / (x1 - x0)) * (WIDTH - 2 * MARGIN);
  const y = (v) => HEIGHT - MARGIN - ((v - y0) / (y1 - y0)) * (HEIGHT - 2 * MARGIN);
  const ticks = [0, 1, 2, 3, 4].map((i) => i / 4);
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title },
    svg("rect", { x: MARGIN, y: MARGIN, width: WIDTH - 2 * MARGIN, height: HEIGHT - 2 * MARGIN, class: "plot" }),
    ticks.map((t) => {
      const vx = x0 + (x1 - x0) * t;
      const vy = y0 + (y1 - y0) * t;
      return [
        svg("text", { x: x(vx), y: HEIGHT - MARGIN + 16, "text-anchor": "middle", class: "tick" }, String(Math.round(vx))),
        svg("text", { x: MARGIN - 6, y: y(vy) + 4, "text-anchor": "end", class: "tick" }, short(vy)),
      ];
    }),
    drawn.map((s) => [
      svg("polyline", {
        points: s.points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" "),
        fill: "none", stroke: s.color, "stroke-width": 1.6, "data-series": s.name,
      }),
      // Sparse series (validation loss is measured every few steps) get a dot per point, so that even
      // a single measurement shows.
      s.points.length <= 20 ? s.points.map(([px, py]) => svg("circle", { cx: x(px).toFixed(1), cy: y(py).toFixed(1), r: 2.5, fill: s.color })) : null,
    ]));
  const legend = h("ul.legend", {}, drawn.map((s) =>
    h("li", {}, h("span.swatch", { "data-color": s.color }), h("span", { "data-color": s.color }, s.name))));
  const figure = h("figure.chart", { id, "data-drawn": drawn.length }, h("figcaption", {}, title), chart, legend);
  colourLegend(figure);
  return figure;
}

/** Inline style attributes are refused by the page's policy; colours are set through the CSSOM. */
function colourLegend(root) {
  for (const element of root.querySelectorAll("[data-color]")) {
    if (element.classList.contains("swatch")) element.style.background = element.dataset.color;
    else element.style.color = element.dataset.color;
  }
}

/** White for an even share, dark red for an expert that takes every token. */
export function shareColour(share) {
  const t = Math.min(Math.max(share, 0), 1);
  const channel = (from, to) => Math.round(from + (to - from) * t).toString(16).padStart(2, "0");
  return `#${channel(255, 165)}${channel(255, 15)}${channel(255, 21)}`;
}

/**
 * Every expert's share of its layer's routed tokens at one monitor check: a row per MoE layer, a cell
 * per expert, cells at or above the collapse threshold outlined, and a colour scale with the
 * threshold marked. data-drawn counts the cells.
 */
export function expertHeatmap(id, check, threshold) {
  const layers = (check.layers || []).filter((l) => Array.isArray(l.counts) && l.counts.length);
  const experts = Math.max(0, ...layers.map((l) => l.counts.length));
  const labelW = 70;
  const top = 30;
  const cell = Math.min(Math.max((WIDTH - labelW) / Math.max(experts, 1), 4), 48);
  const rowH = 22;
  const scaleW = 200;
  const height = top + layers.length * rowH + 56;
  const width = Math.max(labelW + experts * cell + 10, scaleW + 80);
  const cells = [];
  layers.forEach((usage, row) => {
    const total = Math.max(usage.counts.reduce((a, b) => a + b, 0), 1);
    usage.counts.forEach((count, expert) => {
      const share = count / total;
      const rect = svg("rect", {
        x: labelW + expert * cell, y: top + row * rowH, width: cell, height: rowH,
        fill: shareColour(share), class: share >= threshold ? "over" : "cell", "data-share": share.toFixed(4),
      }, svg("title", {}, `layer ${usage.layer}, expert ${expert}: ${share.toFixed(3)} of the routed tokens`));
      cells.push(rect);
    });
  });
  const every = Math.max(Math.ceil(experts / 16), 1);
  const scaleY = height - 34;
  const thresholdX = 10 + Math.min(Math.max(threshold, 0), 1) * scaleW;
  // Drawn at its own size (a few experts would otherwise be blown up to the page's width).
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "natural", role: "img", "aria-label": "expert usage" },
    layers.map((l, i) => svg("text", { x: 4, y: top + (i + 0.7) * rowH, class: "tick" }, `layer ${l.layer}`)),
    Array.from({ length: experts }, (_, e) => e).filter((e) => e % every === 0)
      .map((e) => svg("text", { x: labelW + (e + 0.5) * cell, y: top - 6, "text-anchor": "middle", class: "tick" }, String(e))),
    cells,
    Array.from({ length: 20 }, (_, i) => svg("rect", { x: 10 + (i * scaleW) / 20, y: scaleY, width: scaleW / 20 + 0.5, height: 10, fill: shareColour((i + 0.5) / 20) })),
    svg("line", { x1: thresholdX, x2: thresholdX, y1: scaleY - 4, y2: scaleY + 14, class: "threshold" }),
    svg("text", { x: 10, y: scaleY + 26, class: "tick" }, "share 0"),
    svg("text", { x: 10 + scaleW, y: scaleY + 26, "text-anchor": "end", class: "tick" }, "1"),
    svg("text", { x: thresholdX, y: scaleY - 8, "text-anchor": "middle", class: "tick" }, `collapse ${threshold}`));
  return h("figure.chart", { id, "data-drawn": cells.length },
    h("figcaption", {}, `Expert usage at ${check.stage} step ${check.step} (outlined: at or above the collapse threshold)`), chart);
}
