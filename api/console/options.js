// The job form's MoE options, built from the API's own OpenAPI document (the MoeSftQatOptions schema):
// the fields, their descriptions and their defaults are exactly what the API accepts, so the form
// cannot drift from the API. A field left as it was is not sent, so the API applies its default
// (and chooses what depends on the model, such as the QAT format).

import { h } from "./dom.js";

let schemasPromise = null;

/** The components of /openapi.json (fetched once; the document is public). */
export function schemas() {
  schemasPromise ??= fetch("/openapi.json")
    .then((r) => {
      if (!r.ok) throw new Error(`Could not read the API's options (/openapi.json answered ${r.status}); reload to try again.`);
      return r.json();
    })
    .then((spec) => spec.components.schemas)
    .catch((error) => { schemasPromise = null; throw error; });
  return schemasPromise;
}

/** A property's schema with $ref and oneOf [null, X] unwrapped; `nullable` when null is allowed. */
function resolve(all, property) {
  let schema = property;
  let nullable = false;
  let description = property.description;
  if (schema.oneOf) {
    nullable = schema.oneOf.some((s) => s.type === "null");
    const inner = schema.oneOf.find((s) => s.type !== "null");
    description ??= inner.description;
    schema = inner;
  }
  if (schema.$ref) {
    description ??= schema.description;
    schema = all[schema.$ref.split("/").pop()];
  }
  let type = schema.type;
  if (Array.isArray(type)) {
    nullable ||= type.includes("null");
    type = type.find((t) => t !== "null");
  }
  return { schema, type, nullable, description: description ?? schema.description, default: property.default };
}

const label = (name) => name.replaceAll("_", " ");

/**
 * A fieldset per object schema, a control per leaf. Returns {element, value, mark}: `value()` gives
 * the changed options as the nested object the API expects, `mark(param)` highlights the control of
 * a parameter the API refused (e.g. `method.moe_sft_qat.lora.r`).
 */
export function optionsForm(all, rootName, prefix) {
  const controls = [];
  const element = objectFields(all, all[rootName], prefix, controls, 0);
  const value = () => {
    const out = {};
    for (const control of controls) {
      const v = control.read();
      if (v === undefined) continue;
      const path = control.path.slice(prefix.length + 1).split(".");
      let node = out;
      for (const key of path.slice(0, -1)) node = node[key] ??= {};
      node[path.at(-1)] = v;
    }
    return out;
  };
  const mark = (param) => {
    for (const c of controls) c.row.classList.toggle("refused", c.path === param);
    const hit = controls.find((c) => c.path === param);
    if (hit) { hit.row.closest("details")?.setAttribute("open", ""); hit.row.scrollIntoView({ block: "center" }); }
    return Boolean(hit);
  };
  return { element, value, mark };
}

function objectFields(all, schema, path, controls, depth) {
  const rows = [];
  const nested = [];
  for (const [name, property] of Object.entries(schema.properties || {})) {
    const field = resolve(all, property);
    const fieldPath = `${path}.${name}`;
    if (field.type === "object" && field.schema.properties) {
      nested.push(h("details.group", { "data-param": fieldPath },
        h("summary", {}, label(name), field.description ? h("span.muted", {}, ` — ${firstSentence(field.description)}`) : null),
        objectFields(all, field.schema, fieldPath, controls, depth + 1)));
    } else {
      const control = leaf(all, field, fieldPath);
      controls.push(control);
      rows.push(control.row);
    }
  }
  return h("div.fields", {}, rows, nested);
}

function firstSentence(text) {
  const end = text.search(/\.(\s|$)/);
  return end > 0 ? text.slice(0, end + 1) : text;
}

/** One control: {path, row, read()}; read() is undefined while the control shows the default. */
function leaf(all, field, path) {
  const id = `opt-${path.replaceAll(".", "-")}`;
  const { schema, type } = field;
  let input;
  let read;
  if (schema.oneOf && schema.oneOf.some((s) => s.type === "boolean")) {
    // A union such as lora.target_experts: true or false, or a value written as JSON.
    const json = h("textarea", { id: `${id}-json`, name: `${path}.json`, rows: 2, hidden: true,
      placeholder: schema.oneOf.map((s) => s.description).filter(Boolean).join(" Or: ") });
    input = h("select", { id, name: path,
      onchange: () => { json.hidden = input.value !== "json"; } },
      h("option", { value: "" }, field.default !== undefined ? `default (${JSON.stringify(field.default)})` : "default"),
      h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"), h("option", { value: "json" }, "other (JSON)"));
    read = () => (input.value === "" ? undefined : input.value === "json" ? parseJson(json.value, path) : input.value === "true");
    const row = h("div.field", { "data-param": path }, h("label", { for: id }, label(path.split(".").pop())), input, json,
      field.description ? h("p.help", {}, field.description) : null);
    return { path, row, read };
  }
  if (schema.enum) {
    // The first choice sends nothing: the API's default, which may depend on the model.
    input = h("select", { id, name: path },
      h("option", { value: "" }, field.default !== undefined ? `default (${field.default})` : "default"),
      schema.enum.map((v) => h("option", { value: v }, v)));
    read = () => input.value || undefined;
  } else if (type === "boolean") {
    input = h("select", { id, name: path },
      h("option", { value: "" }, field.default !== undefined ? `default (${field.default})` : "default"),
      h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
    read = () => (input.value === "" ? undefined : input.value === "true");
  } else if (type === "integer" || type === "number") {
    input = h("input", { id, name: path, type: "number", step: type === "integer" ? 1 : "any",
      min: schema.minimum, placeholder: field.default ?? (field.nullable ? "default" : "") });
    read = () => {
      // Text the browser cannot read as a number shows as empty: refuse it rather than send the default.
      if (input.validity.badInput) throw Object.assign(new Error(`${path}: "${label(path.split(".").pop())}" is not a number.`), { param: path });
      return input.value === "" ? undefined : Number(input.value);
    };
  } else if (type === "array" && schema.items?.type === "string") {
    // One item per line: prompts may contain commas.
    input = h("textarea", { id, name: path, rows: 2, placeholder: (field.default || []).join("\n") || "one per line" });
    read = () => (input.value.trim() === "" ? undefined : input.value.split("\n").map((s) => s.trim()).filter(Boolean));
  } else if (type === "array") {
    input = h("textarea", { id, name: path, rows: 2, placeholder: "JSON array, e.g. [{\"prompt\": \"…\", \"answer\": \"…\"}]" });
    read = () => (input.value.trim() === "" ? undefined : parseJson(input.value, path));
  } else if (type === "object") {
    // A map such as lora.rank_pattern: JSON.
    input = h("textarea", { id, name: path, rows: 2, placeholder: "JSON object, e.g. {\"experts.3\": 16}" });
    read = () => (input.value.trim() === "" ? undefined : parseJson(input.value, path));
  } else {
    input = h("input", { id, name: path, type: "text", placeholder: field.default ?? "" });
    read = () => input.value || undefined;
  }
  const row = h("div.field", { "data-param": path },
    h("label", { for: id }, label(path.split(".").pop())), input,
    field.description ? h("p.help", {}, field.description) : null);
  return { path, row, read };
}

function parseJson(text, path) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw Object.assign(new Error(`${path}: not valid JSON (${e.message}).`), { param: path });
  }
}
