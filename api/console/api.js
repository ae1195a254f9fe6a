// The console's API client: the same /v1 API every client uses, with the signed-in credential.
// The key lives in sessionStorage: it is gone when the tab closes and is never sent anywhere but here.

const KEY = "moetune.credential";

export const credential = () => sessionStorage.getItem(KEY);
export const signIn = (key) => sessionStorage.setItem(KEY, key);
export const signOut = () => sessionStorage.removeItem(KEY);

/** An error answer of the API: its message, code, parameter and dataset lines. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail.message);
    this.status = status;
    this.code = detail.code;
    this.param = detail.param;
    this.lines = detail.lines || [];
  }
}

async function errorOf(response) {
  let detail = { message: `The API answered ${response.status} ${response.statusText}.`, code: "http_error" };
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) detail = body.error;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, detail);
}

function headers(extra = {}) {
  return { authorization: `Bearer ${credential()}`, ...extra };
}

/** Sends a request; a JSON body unless it is FormData. POSTs carry an Idempotency-Key (the forms
 *  disable their button while a request is in flight, so a double click sends one request). */
export async function request(method, path, body) {
  const extra = method === "POST" ? { "idempotency-key": crypto.randomUUID() } : {};
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    extra["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers: headers(extra), body: payload });
  if (!response.ok) throw await errorOf(response);
  return response;
}

export const get = async (path) => (await request("GET", path)).json();
export const post = async (path, body) => (await request("POST", path, body)).json();

export const jobPath = (id, rest = "") => `/v1/fine_tuning/jobs/${encodeURIComponent(id)}${rest}`;

/** Downloads a file the API serves behind the credential: fetched into memory, then saved from a
 *  blob URL (so only for files that fit a browser tab; see job.js for larger ones). */
export async function download(path, filename) {
  const blob = await (await request("GET", path)).blob();
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** One Server-Sent Events frame: its fields (data lines joined); comment lines are keep-alives. */
function parseFrame(frame) {
  const fields = { data: [] };
  for (const line of frame.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") fields.data.push(value);
    else fields[name] = value;
  }
  return { ...fields, data: fields.data.join("\n") };
}

/** The server sends a keep-alive every 15 s: this long without a byte means the connection is dead. */
const SILENCE_MS = 45_000;

/**
 * Follows a job's events over `events?stream=true`, oldest first. fetch rather than EventSource,
 * which cannot send the credential. After a dropped or silent connection it reconnects with
 * Last-Event-ID and continues after the last event it handled; `onStatus` hears "live" or
 * "reconnecting". Returns a function that stops following.
 */
export function followEvents(jobId, { onEvent, onDone, onError, onStatus = () => {} }) {
  let lastId = null;
  let stopped = false;
  let connection = null;
  const stop = () => { stopped = true; connection?.abort(); };
  (async () => {
    let delay = 1000;
    while (!stopped) {
      // One controller per connection: whatever ends it (an error, silence, stop) closes it, so
      // no stream is left open on the server.
      connection = new AbortController();
      let silence = null;
      const heard = () => { clearTimeout(silence); silence = setTimeout(() => connection.abort(), SILENCE_MS); };
      try {
        const extra = { accept: "text/event-stream" };
        if (lastId) extra["last-event-id"] = lastId;
        heard();
        const response = await fetch(jobPath(jobId, "/events?stream=true"), { headers: headers(extra), signal: connection.signal });
        if (!response.ok) throw await errorOf(response);
        onStatus("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          heard();
          delay = 1000;
          buffer += value;
          let end;
          while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const frame = parseFrame(buffer.slice(0, end));
            buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
            if (frame.event === "done") { stopped = true; onDone(); return; }
            // A frame that cannot be shown is skipped, not retried: reconnecting would bring it back.
            if (frame.data) {
              try { onEvent(JSON.parse(frame.data)); } catch (error) { console.error("event not shown", frame.id, error); }
            }
            if (frame.id) lastId = frame.id;
          }
        }
      } catch (error) {
        if (stopped) return;
        // A refusal (no such job, key revoked) will not change by retrying; a dropped connection, a
        // busy server or the tenant's cap on open streams will.
        if (error instanceof ApiError && error.status < 500 && error.status !== 429) { onError(error); return; }
      } finally {
        clearTimeout(silence);
        connection.abort();
      }
      if (stopped) return;
      onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  })();
  return stop;
}
