// DOM building without HTML strings: every value the API returns (file names, suffixes, error messages)
// becomes a text node, so nothing a tenant typed can turn into markup or script.

/** h("tag.class", {attribute, onclick…}, ...children): an element; children are nodes or text. */
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const element = document.createElement(tag);
  if (classes.length) element.className = classes.join(" ");
  setProps(element, props);
  append(element, children);
  return element;
}

/** The same for SVG elements. */
export function svg(tag, props = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setProps(element, props);
  append(element, children);
  return element;
}

function setProps(element, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "value") element.value = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** An error box: the API's message, what parameter it names, and dataset lines if any. */
export function errorBox(error) {
  return h("div.error", { role: "alert" },
    h("p", {}, error.message),
    error.param ? h("p.muted", {}, `Parameter: ${error.param}`) : null,
    error.lines && error.lines.length
      ? h("ul.lines", {}, error.lines.map((l) => h("li", { "data-line": l.line }, h("strong", {}, `line ${l.line}`), `: ${l.message}`)))
      : null);
}

export function time(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "";
}

export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
