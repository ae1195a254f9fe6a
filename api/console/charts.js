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
  const layers = (check.layers || []).filter((l) => Array.isArray(l.counts) && l.counts.length).map((usage) => {
    const total = Math.max(usage.counts.reduce((a, b) => a + b, 0), 1);
    return { layer: usage.layer, shares: usage.counts.map((c) => c / total) };
  });
  return shareGrid(id, layers, {
    colourAt: 1, marker: threshold, markerLabel: `collapse ${threshold}`, endLabel: "1", outline: (share) => share >= threshold,
    what: "of the routed tokens", label: "expert usage",
    caption: `Expert usage at ${check.stage} step ${check.step} (outlined: at or above the collapse threshold)`,
  });
}

/**
 * A routing profile (`GET /v1/files/{id}/routing_profile`): each expert's share of its layer's top-k
 * choices, darkest at twice the uniform share; dead experts outlined.
 */
export function profileHeatmap(id, profile, caption) {
  const experts = Math.max(1, ...profile.layers.map((l) => l.topk_share.length));
  const layers = profile.layers.map((l) => ({ layer: l.layer, shares: l.topk_share }));
  return shareGrid(id, layers, {
    colourAt: 2 / experts, marker: 1 / experts, markerLabel: `uniform 1/${experts}`, endLabel: "2× uniform",
    outline: (share) => share < profile.dead_share, what: "of the layer's top-k choices", label: "routing profile", caption,
  });
}

/** Rows of per-expert shares as a heatmap with its colour scale. data-drawn counts the cells. */
function shareGrid(id, layers, o) {
  const experts = Math.max(0, ...layers.map((l) => l.shares.length));
  const labelW = 70;
  const top = 30;
  const cell = Math.min(Math.max((WIDTH - labelW) / Math.max(experts, 1), 4), 48);
  const rowH = 22;
  const scaleW = 200;
  const height = top + layers.length * rowH + 56;
  const width = Math.max(labelW + experts * cell + 10, scaleW + 80);
  const cells = [];
  layers.forEach((row, r) => {
    row.shares.forEach((share, expert) => {
      cells.push(svg("rect", {
        x: labelW + expert * cell, y: top + r * rowH, width: cell, height: rowH,
        fill: shareColour(share / o.colourAt), class: o.outline(share) ? "over" : "cell", "data-share": share.toFixed(4),
      }, svg("title", {}, `layer ${row.layer}, expert ${expert}: ${share.toFixed(3)} ${o.what}`)));
    });
  });
  const every = Math.max(Math.ceil(experts / 16), 1);
  const scaleY = height - 34;
  const markerX = 10 + Math.min(Math.max(o.marker / o.colourAt, 0), 1) * scaleW;
  // Drawn at its own size (a few experts would otherwise be blown up to the page's width).
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "natural", role: "img", "aria-label": o.label },
    layers.map((l, i) => svg("text", { x: 4, y: top + (i + 0.7) * rowH, class: "tick" }, `layer ${l.layer}`)),
    Array.from({ length: experts }, (_, e) => e).filter((e) => e % every === 0)
      .map((e) => svg("text", { x: labelW + (e + 0.5) * cell, y: top - 6, "text-anchor": "middle", class: "tick" }, String(e))),
    cells,
    Array.from({ length: 20 }, (_, i) => svg("rect", { x: 10 + (i * scaleW) / 20, y: scaleY, width: scaleW / 20 + 0.5, height: 10, fill: shareColour((i + 0.5) / 20) })),
    svg("line", { x1: markerX, x2: markerX, y1: scaleY - 4, y2: scaleY + 14, class: "threshold" }),
    svg("text", { x: 10, y: scaleY + 26, class: "tick" }, "share 0"),
    svg("text", { x: 10 + scaleW, y: scaleY + 26, "text-anchor": "end", class: "tick" }, o.endLabel),
    svg("text", { x: markerX, y: scaleY - 8, "text-anchor": "middle", class: "tick" }, o.markerLabel));
  return h("figure.chart", { id, "data-drawn": cells.length }, h("figcaption", {}, o.caption), chart);
}
