// The console's pages other than a job's: sign-in, datasets, the job list and the new-job form.

import { get, post, signIn, signOut } from "./api.js";
import { bytes, errorBox, fill, h, time } from "./dom.js";
import { profileHeatmap } from "./charts.js";
import { optionsForm, schemas } from "./options.js";

/** Sign in with an API key (`mtk-…`) or a token; checked against the API before it is kept. */
export function signInView(main, onSignedIn) {
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, placeholder: "mtk-… or a token" });
  const result = h("div", { id: "sign-in-result" });
  const form = h("form.card", { id: "sign-in", onsubmit: async (event) => {
    event.preventDefault();
    signIn(key.value.trim());
    try {
      await get("/v1/fine_tuning/jobs?limit=1");
      onSignedIn();
    } catch (error) {
      signOut();
      fill(result, errorBox(error));
    }
  } },
  h("h1", {}, "Sign in"),
  h("p.muted", {}, "With an API key of your tenant (an operator creates one with POST /v1/admin/api_keys) or a token. It is kept in this tab only."),
  h("label", { for: "api-key" }, "API key"), key,
  h("button", { type: "submit" }, "Sign in"), result);
  fill(main, form);
  key.focus();
}

/** Datasets: upload (validated as it streams; refused lines are listed in place) and the file list. */
export async function filesView(main, isCurrent) {
  const file = h("input", { id: "upload-file", type: "file", accept: ".jsonl,.json,.txt", required: true });
  const result = h("div", { id: "upload-result" });
  const list = h("div", { id: "files" });
  const form = h("form.card", { id: "upload", onsubmit: async (event) => {
    event.preventDefault();
    const body = new FormData();
    body.append("purpose", "fine-tune");
    body.append("file", file.files[0]);
    fill(result, h("p.muted", {}, `Uploading ${file.files[0].name}…`));
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const uploaded = await post("/v1/files", body);
      fill(result, h("p.ok", { "data-file": uploaded.id }, `${uploaded.filename} is ${uploaded.id}: ${uploaded.example_count} examples, ${uploaded.format} format, about ${uploaded.estimated_tokens} tokens.`));
      form.reset();
      await show();
    } catch (error) {
      fill(result, errorBox(error));
    } finally {
      submit.disabled = false;
    }
  } },
  h("h2", {}, "Upload a dataset"),
  h("p.muted", {}, "JSONL in chat, alpaca or prompt/completion format. Every line is checked as it uploads; a file with errors is refused and nothing is stored."),
  file, h("button", { type: "submit" }, "Upload"), result);
  const routing = h("div", { id: "routing" });
  const show = () => showFiles(list, (f) => routingPanel(routing, f, isCurrent));
  fill(main, form, h("h2", {}, "Datasets"), list, routing);
  if (isCurrent()) await show();
}

async function showFiles(list, openRouting) {
  const files = await get("/v1/files?limit=100");
  fill(list, files.data.length === 0 ? h("p.muted", {}, "No datasets yet.") : h("table", {},
    h("thead", {}, h("tr", {}, ["id", "name", "examples", "format", "size", "status", "uploaded", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, files.data.map((f) => h("tr", { "data-file": f.id },
      h("td.mono", {}, f.id), h("td", {}, f.filename), h("td", {}, f.example_count ?? ""), h("td", {}, f.format ?? ""),
      h("td", {}, bytes(f.bytes)), h("td", {}, f.status, f.status_details ? h("p.muted", {}, f.status_details) : null),
      h("td", {}, time(f.created_at)),
      h("td", {}, f.status === "processed" ? h("button", { type: "button", "data-routing": f.id, onclick: () => openRouting(f) }, "Routing") : null))))));
}

const ENDED = ["succeeded", "failed", "cancelled"];

/**
 * A dataset's routing profile under a base model: the newest one is shown (polled while it runs), and
 * "Profile" runs a new one on a runner. Drawn as a heatmap, a row per MoE layer.
 */
async function routingPanel(panel, file, isCurrent) {
  let models;
  try {
    models = await get("/v1/models");
  } catch (error) {
    fill(panel, errorBox(error));
    return;
  }
  const model = h("select", { id: "profile-model" }, models.data.map((m) => h("option", { value: m.id }, m.id)));
  const examples = h("input", { id: "profile-examples", type: "number", min: 1, max: 10000, step: 1, placeholder: "256" });
  const result = h("div", { id: "profile-result" });
  const path = `/v1/files/${encodeURIComponent(file.id)}/routing_profile`;
  let shown = 0;
  const show = async (create) => {
    const mine = ++shown;
    const current = () => mine === shown && isCurrent() && panel.isConnected;
    try {
      const body = { model: model.value, ...(examples.value ? { max_examples: Number(examples.value) } : {}) };
      let profile = create ? await post(path, body) : await get(`${path}?model=${encodeURIComponent(model.value)}`);
      while (!ENDED.includes(profile.status) && current()) {
        const cancel = h("button.danger", { type: "button", id: "profile-cancel",
          onclick: () => post(`${path}/cancel?model=${encodeURIComponent(model.value)}`).catch((error) => fill(result, errorBox(error))) }, "Cancel");
        fill(result, h("p.muted", { "data-status": profile.status }, `Routing profile ${profile.status}… `, cancel));
        await new Promise((resolve) => setTimeout(resolve, 2000));
        profile = await get(`${path}?model=${encodeURIComponent(model.value)}`);
      }
      if (current()) fill(result, describeProfile(profile));
    } catch (error) {
      if (!current()) return;
      fill(result, error.status === 404 ? h("p.muted", { "data-status": "none" }, "No routing profile of this dataset under this model yet.") : errorBox(error));
    }
  };
  model.onchange = () => show(false);
  fill(panel, h("div.card", { "data-file": file.id },
    h("h2", {}, `Routing of ${file.filename}`),
    h("p.muted", {}, "How a base model's routers spread this dataset's tokens over the experts of each MoE layer, before any training: the experts a LoRA on experts would exercise (lora.target_experts: {\"from_profile\": …}) and the dead ones."),
    row("profile-model", "model", model), row("profile-examples", "examples", examples, "The first examples of the file (default 256)."),
    h("button", { type: "button", id: "profile-run", onclick: () => show(true) }, "Profile"), result));
  await show(false);
}

function describeProfile(p) {
  if (p.status !== "succeeded" || !p.training) return errorBox(new Error(`Routing profile ${p.status}: ${p.error?.message ?? "no result"}`));
  const dead = p.training.layers.reduce((n, l) => n + l.dead_experts.length, 0);
  return h("div", { "data-status": "succeeded" },
    h("p", {}, `${p.training.tokens} tokens of ${p.training.examples} examples, top-${p.training.top_k}: ${dead} dead experts over ${p.training.layers.length} MoE layers.`),
    profileHeatmap("profile-heatmap", p.training, `Share of each layer's top-k choices under ${p.model} (outlined: dead experts)`),
    p.validation ? profileHeatmap("profile-heatmap-validation", p.validation, "The validation file") : null);
}

/** The job list, newest first, refreshed every few seconds while shown. */
export async function jobsView(main, isCurrent) {
  const table = h("div", { id: "jobs" });
  fill(main, h("div.row", {}, h("h1", {}, "Fine-tuning jobs"), h("a.button", { href: "#/new" }, "New job")), table);
  while (isCurrent()) {
    let jobs;
    try {
      jobs = await get("/v1/fine_tuning/jobs?limit=50");
    } catch (error) {
      // A refused credential ends the page (the router signs out); anything else is shown and retried.
      if (error.status === 401) throw error;
      fill(table, errorBox(error));
      await new Promise((resolve) => setTimeout(resolve, 3000));
      continue;
    }
    if (!isCurrent()) return;
    fill(table, jobs.data.length === 0 ? h("p.muted", {}, "No jobs yet: upload a dataset, then create a job.") : h("table", {},
      h("thead", {}, h("tr", {}, ["job", "model", "status", "created", "fine-tuned model"].map((c) => h("th", {}, c)))),
      h("tbody", {}, jobs.data.map((j) => h("tr", { "data-job": j.id },
        h("td.mono", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)), h("td", {}, j.model),
        h("td", {}, h("span.status", { "data-status": j.status }, j.status)), h("td", {}, time(j.created_at)),
        h("td.mono", {}, j.fine_tuned_model ?? ""))))));
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

/** The new-job form: model, files, the common settings, and every MoE option with its default. */
export async function newJobView(main, openJob, isCurrent) {
  const [models, files, all] = await Promise.all([get("/v1/models"), get("/v1/files?limit=100"), schemas()]);
  if (!isCurrent()) return;
  const usable = files.data.filter((f) => f.status === "processed");
  const select = (id, options, empty) => h("select", { id, required: !empty },
    empty ? h("option", { value: "" }, empty) : null, options.map(([value, text]) => h("option", { value }, text)));
  const model = select("job-model", models.data.map((m) => [m.id, `${m.id} (${m.architecture})`]));
  const fileChoices = usable.map((f) => [f.id, `${f.filename} — ${f.example_count} examples (${f.id})`]);
  const training = select("job-training-file", fileChoices);
  const validation = select("job-validation-file", fileChoices, "none: hold out part of the training file");
  const suffix = h("input", { id: "job-suffix", maxlength: 64, placeholder: "optional" });
  const epochs = h("input", { id: "job-n-epochs", placeholder: "auto" });
  const batch = h("input", { id: "job-batch-size", placeholder: "auto" });
  const seed = h("input", { id: "job-seed", inputmode: "numeric", placeholder: "random" });
  const options = optionsForm(all, "MoeSftQatOptions", "method.moe_sft_qat");
  const result = h("div", { id: "job-result" });
  // "auto", a whole number, or the text as typed (the API then says what is wrong with it).
  const auto = (v) => (v.trim() === "auto" ? "auto" : integer(v));
  const body = () => ({
    model: model.value, training_file: training.value, validation_file: validation.value || undefined,
    suffix: suffix.value || undefined, seed: integer(seed.value),
    hyperparameters: { n_epochs: auto(epochs.value), batch_size: auto(batch.value) },
    method: { type: "moe_sft_qat", moe_sft_qat: options.value() },
  });
  const refuse = (error) => {
    const marked = error.param && options.mark(error.param);
    fill(result, errorBox(error));
    if (!marked) result.scrollIntoView({ block: "center" });
  };
  const estimate = async () => {
    try {
      fill(result, estimateBox(await post("/v1/fine_tuning/jobs/estimate", body())));
    } catch (error) { refuse(error); }
  };
  const form = h("form.card", { id: "new-job", onsubmit: async (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const job = await post("/v1/fine_tuning/jobs", body());
      openJob(job.id);
    } catch (error) {
      refuse(error);
    } finally {
      submit.disabled = false;
    }
  } },
  h("h1", {}, "New fine-tuning job"),
  usable.length === 0 ? h("p.error", {}, "No processed dataset yet: upload one under Datasets first.") : null,
  h("div.fields", {},
    row("job-model", "model", model, "The base model (GET /v1/models)."),
    row("job-training-file", "training file", training, "A processed fine-tune dataset."),
    row("job-validation-file", "validation file", validation, "Used for validation loss, the monitor's prompts and the evaluation table."),
    row("job-suffix", "suffix", suffix, "Up to 64 characters added to the fine-tuned model's name."),
    row("job-n-epochs", "epochs", epochs, "\"auto\" (1) or a positive integer."),
    row("job-batch-size", "batch size", batch, "\"auto\" (4) or a positive integer."),
    row("job-seed", "seed", seed, "Any non-negative integer; the same seed and data train the same model.")),
  h("h2", {}, "MoE SFT → QAT options"),
  h("p.muted", {}, "Every field shows the API's default; leave it to keep the default."),
  options.element,
  h("div.row", {}, h("button", { type: "button", id: "estimate", onclick: estimate }, "Estimate"), h("button", { type: "submit" }, "Create job")),
  result);
  fill(main, form);
}

/** A whole number typed in decimal that JSON carries exactly; other text is sent as typed, for the
 *  API to refuse with its message (never rounded or dropped here). */
function integer(value) {
  const text = value.trim();
  if (text === "") return undefined;
  return /^[0-9]+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : text;
}

function row(id, text, input, help) {
  return h("div.field", {}, h("label", { for: id }, text), input, h("p.help", {}, help));
}

/** What the estimate said: whether and where the job fits, its size and expected duration. */
function estimateBox(e) {
  const classes = e.runner_classes || [];
  return h("div.card", { id: "estimate-result", "data-fits": String(e.fits) },
    h("h3", {}, e.fits ? "Fits a runner now" : "Does not fit any runner now"),
    e.reason ? h("p.error", {}, e.reason) : null,
    h("p", {}, `About ${e.expected_trained_tokens.toLocaleString()} trained tokens; world size ${e.world_size}.`),
    classes.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["runner class", "runners", "needs", "fits", "expected duration", "GPU-hours"].map((c) => h("th", {}, c)))),
      h("tbody", {}, classes.map((c) => h("tr", {},
        h("td.mono", {}, c.class), h("td", {}, c.runners), h("td", {}, bytes(c.needed_memory_bytes)),
        h("td", {}, c.fits ? "yes" : `no${c.reason ? `: ${c.reason}` : ""}`),
        h("td", {}, c.expected_duration_seconds != null ? `${Math.round(c.expected_duration_seconds)} s` : "no measurement yet"),
        h("td", {}, c.gpu_hours != null ? c.gpu_hours.toFixed(3) : ""))))) : null);
}
