// A job's page: status and actions, live progress over Server-Sent Events (loss and learning-rate
// curves, every expert's share per layer, monitor alerts), the evaluation table, checkpoints,
// artifact downloads and the event log.

import { download, followEvents, get, jobPath, post, signOut } from "./api.js";
import { expertHeatmap, lineChart, short } from "./charts.js";
import { bytes, errorBox, fill, h, time } from "./dom.js";

const TERMINAL = ["succeeded", "failed", "cancelled"];
const LOG_LINES = 300;
/** Past this many points a series drops every other one: a job of any length draws in bounded time. */
const MAX_POINTS = 4000;
/** Larger artifacts are not fetched into the tab's memory: the page shows the CLI command instead. */
const BROWSER_DOWNLOAD_BYTES = 512 * 1024 * 1024;

/** Shows job `id`; returns a function that stops following it. */
export function jobView(main, id) {
  const page = {
    id, job: null, steps: [], checks: [], report: null, log: [], refreshes: 0,
    header: h("section", { id: "job-header" }), actions: h("div.row", { id: "job-actions" }), actionResult: h("div"),
    progress: h("section", { id: "progress" }), charts: h("section.charts"), usage: h("section", { id: "usage" }),
    alerts: h("section", { id: "alerts" }), evaluation: h("section", { id: "evaluation-section" }),
    checkpoints: h("section", { id: "checkpoints" }), artifacts: h("section", { id: "artifacts" }),
    logBox: h("ol.log", { id: "log", reversed: true }), connection: h("p.muted", { id: "connection" }),
  };
  fill(main, page.header, page.actions, page.actionResult, page.connection, page.progress, page.charts, page.usage, page.alerts,
    page.evaluation, page.artifacts, page.checkpoints, h("h2", {}, "Events"), page.logBox);
  const redraw = throttled(() => drawLive(page), 400);
  const refresh = throttled(() => refreshJob(page), 500);
  refreshJob(page);
  return followEvents(id, {
    onEvent: (event) => {
      if (event.type === "metrics" && event.data) thin(page.steps, event.data, MAX_POINTS);
      else if (event.type === "monitor" && event.data) thin(page.checks, event.data, MAX_POINTS);
      else if (event.type === "evaluation" && event.data) page.report = event.data.report;
      else refresh();
      page.log.push(event);
      if (page.log.length > LOG_LINES) page.log.shift();
      redraw();
    },
    onDone: () => { fill(page.connection); refresh(); redraw(); },
    onError: (error) => showError(page, error),
    onStatus: (status) => fill(page.connection, status === "reconnecting" ? "Connection lost; reconnecting…" : ""),
  });
}

function thin(items, item, max) {
  items.push(item);
  if (items.length > max) {
    const kept = items.filter((_, i) => i % 2 === 0 || i === items.length - 1);
    items.splice(0, items.length, ...kept);
  }
}

/** Runs `fn` at most once per `ms`, and once more after the last call. */
function throttled(fn, ms) {
  let timer = null;
  return () => { timer ??= setTimeout(() => { timer = null; fn(); }, ms); };
}

async function refreshJob(page) {
  // Several refreshes may be in flight; only the newest one draws.
  page.refreshes += 1;
  const mine = page.refreshes;
  try {
    const [job, checkpoints] = await Promise.all([get(jobPath(page.id)), get(jobPath(page.id, "/checkpoints?limit=100"))]);
    if (mine !== page.refreshes) return;
    page.job = job;
    drawJob(page, checkpoints.data);
  } catch (error) {
    if (mine === page.refreshes) showError(page, error);
  }
}

/** An error under the actions; a credential that stopped working sends the user back to sign in. */
function showError(page, error) {
  if (error.status === 401) {
    signOut();
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return;
  }
  fill(page.actionResult, errorBox(error));
}

function drawJob(page, checkpoints) {
  const job = page.job;
  fill(page.header,
    h("h1.mono", {}, job.id),
    h("p", {}, h("span.status", { id: "job-status", "data-status": job.status }, job.status), ` ${job.model}`,
      job.fine_tuned_model ? h("span.mono", {}, ` → ${job.fine_tuned_model}`) : null),
    h("p.muted", {}, `created ${time(job.created_at)}`, job.finished_at ? `, finished ${time(job.finished_at)}` : "", `, attempt ${job.attempt}`),
    job.error ? errorBox(job.error) : null);
  const finished = TERMINAL.includes(job.status);
  const act = (name) => async (event) => {
    event.target.disabled = true;
    try {
      await post(jobPath(job.id, `/${name}`));
      fill(page.actionResult);
    } catch (error) {
      showError(page, error);
    }
    refreshJob(page);
  };
  fill(page.actions,
    h("button", { id: "pause", type: "button", disabled: finished || ["pausing", "paused"].includes(job.status), onclick: act("pause") }, "Pause"),
    h("button", { id: "resume", type: "button", disabled: job.status !== "paused", onclick: act("resume") }, "Resume"),
    h("button.danger", { id: "cancel", type: "button", disabled: finished, onclick: act("cancel") }, "Cancel"),
    h("button", { id: "report", type: "button", onclick: () => download(jobPath(job.id, "/report"), `${job.id}-report.html`).catch((e) => showError(page, e)) }, "Download report"));
  drawEvaluation(page);
  fill(page.artifacts, h("h2", {}, "Artifacts"), job.artifacts.length === 0 ? h("p.muted", {}, "None yet: they are written when the job succeeds.") : h("table", {},
    h("thead", {}, h("tr", {}, ["name", "size", "sha256", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, job.artifacts.map((a) => h("tr", { "data-artifact": a.name },
      h("td.mono", {}, a.name), h("td", {}, bytes(a.bytes)), h("td.mono.hash", {}, a.sha256),
      h("td", {}, a.bytes <= BROWSER_DOWNLOAD_BYTES
        ? h("button", { type: "button", "data-download": a.name, onclick: () => downloadArtifact(page, a.name) }, "Download")
        : h("code.mono", {}, `moetune artifacts download ${job.id} ${a.name}`)))))));
  fill(page.checkpoints, h("h2", {}, "Checkpoints"), checkpoints.length === 0 ? h("p.muted", {}, "None yet.") : h("table", {},
    h("thead", {}, h("tr", {}, ["name", "stage", "step", "attempt", "size", "stored at"].map((c) => h("th", {}, c)))),
    h("tbody", {}, checkpoints.map((c) => h("tr", { "data-checkpoint": c.name },
      h("td.mono", {}, c.name), h("td", {}, c.stage), h("td", {}, c.step_number), h("td", {}, c.attempt), h("td", {}, bytes(c.bytes)), h("td.mono", {}, c.uri))))));
  drawLive(page);
}

function downloadArtifact(page, name) {
  const path = jobPath(page.id, `/artifacts/${name.split("/").map(encodeURIComponent).join("/")}/content`);
  download(path, name.replaceAll("/", "_")).catch((error) => showError(page, error));
}

/** SFT steps, then QAT steps after them on one axis (as on the report page). */
function onOneAxis(steps) {
  const sftSteps = Math.max(0, ...steps.filter((s) => s.stage === "sft").map((s) => s.step));
  return steps.map((s) => ({ ...s, x: s.stage === "qat" ? s.step + sftSteps : s.step }));
}

function drawLive(page) {
  const steps = onOneAxis(page.steps);
  const last = page.steps.at(-1);
  fill(page.progress, last ? [
    h("p", { id: "progress-text" }, `${last.stage.toUpperCase()} step ${last.step} of ${last.total_steps}: loss ${short(last.train_loss)}, learning rate ${short(last.learning_rate)}, ${Math.round(last.tokens_per_second)} tokens/s`),
    h("progress", { max: last.total_steps, value: last.step }),
  ] : h("p.muted", { id: "progress-text" }, "No training step yet."));
  const pick = (stage) => steps.filter((s) => s.stage === stage).map((s) => [s.x, s.train_loss]);
  fill(page.charts,
    lineChart("loss-chart", "Loss", [
      { name: "SFT training loss", color: "#1f77b4", points: pick("sft") },
      { name: "QAT training loss", color: "#d62728", points: pick("qat") },
      { name: "validation loss", color: "#2ca02c", points: steps.filter((s) => s.validation_loss != null).map((s) => [s.x, s.validation_loss]) },
    ]),
    lineChart("lr-chart", "Learning rate", [{ name: "learning rate", color: "#9467bd", points: steps.map((s) => [s.x, s.learning_rate]) }]));
  const threshold = page.job?.method?.moe_sft_qat?.monitor?.top1_share_threshold ?? 0.7;
  const check = page.checks.at(-1);
  fill(page.usage, h("h2", {}, "Expert usage"), check ? expertHeatmap("usage-heatmap", check, threshold)
    : h("p.muted", {}, "The monitor has not run yet."));
  const alerts = page.checks.filter((c) => c.alert);
  fill(page.alerts, h("h2", {}, `Monitor alerts (${alerts.length})`), alerts.length === 0 ? h("p.muted", {}, "None: no layer's routing collapsed.")
    : h("ul", {}, alerts.map((c) => h("li.alert", {}, `${c.stage} step ${c.step}: mean top-1 share ${c.mean_top1_share.toFixed(3)}, mean normalised entropy ${c.mean_entropy_norm.toFixed(3)}${c.action ? ` (${c.action.replaceAll("_", " ")})` : ""}`))));
  drawEvaluation(page);
  fill(page.logBox, page.log.slice().reverse().map((e) => h(`li.${e.level === "error" ? "bad" : e.level === "warn" ? "warn" : "info"}`, {},
    h("span.muted", {}, time(e.created_at)), " ", e.message)));
}

/** The base / SFT / PTQ / SFT+QAT table: from the evaluation event, or the finished job's result. */
function drawEvaluation(page) {
  const rows = page.report?.table ?? page.job?.result?.eval;
  if (!Array.isArray(rows) || rows.length === 0) {
    fill(page.evaluation, h("h2", {}, "Evaluation"), h("p.muted", {}, "Written when training ends."));
    return;
  }
  // Columns no row has a value for (task accuracy without eval prompts) are left out.
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => r[k] !== null && r[k] !== undefined)))];
  const cell = (v) => (typeof v === "number" ? short(v) : v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  fill(page.evaluation, h("h2", {}, "Evaluation"), h("table", { id: "evaluation" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.replaceAll("_", " "))))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, cell(r[c]))))))));
}
