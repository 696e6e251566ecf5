// The dashboard: reads the server's own API every REFRESH_MS and redraws the tables.
// Everything shown comes from users (model names, logs, errors): it is only ever set as
// text (textContent), never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
const LOG_POLL_MS = 1000;
const LOG_KEEP_CHARS = 200000;
const log = { launchId: null, offset: 0 };

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: keep the text */ }
  if (!response.ok) throw new Error(describe(data, response.status));
  return data;
}

function describe(data, status) {
  if (data && typeof data.detail === "string") return data.detail;
  if (data && Array.isArray(data.detail)) return data.detail.map((e) => e.msg).join("; ");
  if (data && data.error && data.error.message) return data.error.message;
  return `the server answered ${status}`;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function bar(fraction, label) {
  const inner = el("span");
  inner.style.width = `${Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100)}%`;
  return el("span", {}, el("span", { className: "bar" }, inner), label);
}

function button(text, onClick, secondary) {
  const node = el("button", { type: "button", textContent: text, className: secondary ? "secondary" : "" });
  node.addEventListener("click", () => onClick().catch(showError));
  return node;
}

function fill(tableId, rows) {
  document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
}

function row(cells, attributes) {
  const tr = el("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  for (const cell of cells) tr.append(cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell));
  return tr;
}

function gib(mib) { return mib === null || mib === undefined ? "-" : `${(mib / 1024).toFixed(1)} GiB`; }

function renderStats(stats) {
  const host = stats.host;
  const memory = host.memory;
  document.getElementById("host").textContent =
    `load ${host.load_average.join(" ")} on ${host.cpu_count} CPUs · memory ` +
    `${(memory.used_bytes / 2 ** 30).toFixed(1)} of ${(memory.total_bytes / 2 ** 30).toFixed(1)} GiB` +
    (stats.error ? ` · ${stats.error}` : "");
  fill("gpus", stats.gpus.map((gpu) => row([
    gpu.index, gpu.name,
    bar(gpu.memory_used_mib / gpu.memory_total_mib, `${gib(gpu.memory_used_mib)} / ${gib(gpu.memory_total_mib)}`),
    bar((gpu.utilization_percent || 0) / 100, gpu.utilization_percent === null ? "-" : `${gpu.utilization_percent}%`),
    gpu.temperature_c === null ? "-" : `${gpu.temperature_c} °C`,
    gpu.power_watts === null ? "-" : `${gpu.power_watts} W`,
    gpu.launch_id || "",
  ], { "data-gpu": gpu.index })));
}

function renderLaunches(launches) {
  fill("launches", launches.slice(-30).reverse().map((launch) => {
    const live = !["stopped", "failed"].includes(launch.state);
    const phase = launch.progress === null || launch.progress === undefined
      ? (launch.phase || "")
      : bar(launch.progress, `${launch.phase} ${Math.round(launch.progress * 100)}%`);
    const actions = el("td", {},
      button("Log", async () => showLog(launch.launch_id), true),
      live ? button("Stop", () => api("POST", `/stop/${launch.launch_id}`).then(refresh)) : null);
    const state = el("td", { className: `state-${launch.state}`, title: launch.error || "" }, launch.state);
    return row([launch.launch_id, state, phase, el("td", { className: "model" }, launch.model),
      launch.gpu_ids.join(",") || "cpu", launch.port, launch.in_flight || 0, actions],
    { "data-launch-id": launch.launch_id, "data-state": launch.state });
  }));
}

function renderProfiles(profiles) {
  fill("profiles", profiles.map((profile) => {
    const status = profile.status || {};
    const path = `/models/${encodeURIComponent(profile.name).replace(/%2F/g, "/")}`;
    const actions = el("td", {},
      button("Load", () => api("POST", `${path}/load`).then(refresh)),
      button("Unload", () => api("POST", `${path}/unload`).then(refresh), true));
    return row([profile.name, el("td", { className: "model" }, profile.model), status.state,
      status.launch_id || "", status.in_flight || 0, actions], { "data-profile": profile.name });
  }));
}

function renderBatches(listing) {
  fill("batches", listing.data.map((batch) => {
    const counts = batch.request_counts;
    const finished = counts.completed + counts.failed;
    return row([batch.id, batch.status, batch.endpoint,
      bar(counts.total ? finished / counts.total : 0, `${finished}/${counts.total}`), counts.failed],
    { "data-batch": batch.id });
  }));
}

async function refresh() {
  const [health, stats, launches, profiles, batches] = await Promise.allSettled([
    api("GET", "/health"), api("GET", "/stats"), api("GET", "/launch?all=true"),
    api("GET", "/models"), api("GET", "/v1/batches?limit=20"),
  ]);
  const healthText = health.status === "fulfilled"
    ? `up · ${health.value.live_launches} live launch(es) · updated ${new Date().toLocaleTimeString()}`
    : `unreachable: ${health.reason.message}`;
  document.getElementById("health").textContent = healthText;
  if (stats.status === "fulfilled") renderStats(stats.value);
  if (launches.status === "fulfilled") renderLaunches(launches.value);
  if (profiles.status === "fulfilled") renderProfiles(profiles.value);
  if (batches.status === "fulfilled") renderBatches(batches.value);
}

function showLog(launchId) {
  log.launchId = launchId;
  log.offset = 0;
  document.getElementById("log-launch").textContent = launchId;
  document.getElementById("log").textContent = "";
  return pollLog();
}

async function pollLog() {
  if (!log.launchId) return;
  const launchId = log.launchId;
  const chunk = await api("GET", `/logs/${launchId}?offset=${log.offset}`);
  if (launchId !== log.launchId) return; // another launch was chosen meanwhile
  log.offset = chunk.next_offset;
  if (!chunk.content) return;
  const pre = document.getElementById("log");
  const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  // A progress bar rewrites its line with \r: show each update on a line of its own.
  const text = chunk.content.replace(/\r(?!\n)/g, "\n");
  pre.textContent = (pre.textContent + text).slice(-LOG_KEEP_CHARS);
  if (follow) pre.scrollTop = pre.scrollHeight;
}

function showError(error) {
  document.getElementById("launch-error").textContent = error.message;
}

document.getElementById("launch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { model: form.model.value.trim() };
  const gpus = form.gpus.value.trim();
  if (gpus) body.gpu_ids = gpus.split(",").map((gpu) => Number(gpu.trim()));
  const args = form.args.value.trim();
  if (args) body.extra_args = args.split(/\s+/);
  document.getElementById("launch-error").textContent = "";
  try {
    const launch = await api("POST", "/launch", body);
    form.reset();
    await refresh();
    await showLog(launch.launch_id);
  } catch (error) {
    showError(error);
  }
});

setInterval(() => refresh().catch(() => {}), REFRESH_MS);
setInterval(() => pollLog().catch(() => {}), LOG_POLL_MS);
refresh().catch(() => {});
