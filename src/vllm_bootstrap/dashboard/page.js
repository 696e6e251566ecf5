// What every section of the dashboard uses: asking the API, building rows, showing errors,
// saving a file. Everything shown is set as text (textContent, or a string appended to an
// element), never parsed as HTML: names, logs and errors come from users.

const SIZE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
const after = { change: async () => {} }; // the page's refresh, once dashboard.js gives it

// The page redraws after a change (a launch, a load, a batch...): `whenChanged` says how.
export function whenChanged(refresh) { after.change = refresh; }
export function changed() { return after.change(); }

// One request with the browser's own credentials (the access key, as Basic); an answer
// that is not 2xx is thrown as an Error carrying the server's message.
export async function request(method, path, { body, headers } = {}) {
  const options = { method, credentials: "same-origin", headers: { ...headers } };
  if (body instanceof FormData) {
    options.body = body; // the browser writes the multipart Content-Type and its boundary
  } else if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) throw new Error(describe(parsed(await response.text()), response.status));
  return response;
}

export async function api(method, path, body) {
  return parsed(await (await request(method, path, { body })).text());
}

function parsed(text) {
  try { return text ? JSON.parse(text) : null; } catch (_) { return text; } // not JSON: the text
}

// The server's message in each of its shapes: FastAPI's detail (a 422's names each field
// that is wrong), and OpenAI's error object under /v1.
function describe(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && Array.isArray(data.detail)) return data.detail.map((e) => e.msg).join("; ");
  if (data && data.error && data.error.message) return data.error.message;
  return `the server answered ${status}`;
}

// The file at `path` saved by the browser as `filename`: fetched with the page's
// credentials (a plain link would lose the server's error), then handed over as a Blob URL
// through an <a download>, which is a download, not something the page loads.
export async function saveFile(path, filename) {
  const blob = await (await request("GET", path)).blob();
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function bar(fraction, label) {
  const inner = el("span");
  inner.style.width = `${Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100)}%`;
  return el("span", {}, el("span", { className: "bar" }, inner), label);
}

// A button whose action's refusal goes to its section's error line.
export function button(text, onClick, secondary) {
  const node = el("button", { type: "button", textContent: text, className: secondary ? "secondary" : "" });
  node.addEventListener("click", () => onClick().catch((error) => showError(error, node)));
  return node;
}

// Lines of text under a state: why a launch, a load, a download or a batch failed. Shown,
// not hidden in a tooltip.
export function reasons(...lines) {
  const shown = lines.filter((line) => line);
  return shown.length ? el("div", { className: "reason" }, shown.join("\n")) : null;
}

export function fill(tableId, rows) {
  document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
}

export function row(cells, attributes) {
  const tr = el("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  for (const cell of cells) tr.append(cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell));
  return tr;
}

export function actions(...buttons) { return el("td", { className: "actions" }, ...buttons); }

// In the error line of the section `near` is in; the launch form's when it has none.
export function showError(error, near) {
  const box = near && near.closest("section").querySelector(".error");
  (box || document.getElementById("launch-error")).textContent = error.message;
}

export function given(value) { return value !== null && value !== undefined; }

// Binary units, as the command line shows them: 512 B, 3.0 MiB, 1.2 GiB.
export function size(bytes) {
  if (!given(bytes)) return "-";
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < SIZE_UNITS.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${SIZE_UNITS[unit]}`;
}

export function duration(seconds) {
  if (!given(seconds)) return "-";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

export function when(unixSeconds) { return new Date(unixSeconds * 1000).toLocaleString(); }

// A model or profile name as a path: its "/" stay (org/name), the rest is escaped.
export function namePath(name) { return encodeURIComponent(name).replace(/%2F/g, "/"); }

// vLLM arguments as typed: split at spaces, quotes ('...' or "...") keep spaces in one
// argument (--hf-overrides '{"a": 1}'). joinArgs writes a list back the same way.
export function splitArgs(text) {
  const args = [];
  let current = null;
  let quote = null;
  for (const char of text) {
    if (quote) {
      if (char === quote) quote = null; else current += char;
    } else if (char === "'" || char === "\"") {
      quote = char;
      current = current ?? "";
    } else if (/\s/.test(char)) {
      if (current !== null) args.push(current);
      current = null;
    } else {
      current = (current ?? "") + char;
    }
  }
  if (quote) throw new Error(`the vLLM arguments have an unclosed ${quote}`);
  if (current !== null) args.push(current);
  return args;
}

export function joinArgs(args) {
  return args.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\"'\"'")}'`)).join(" ");
}
