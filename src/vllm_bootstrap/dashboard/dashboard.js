// The dashboard: reads the server's own API every REFRESH_MS and redraws the tables; the
// helpers every section uses are in page.js, the Model profiles and Batches sections in
// profiles.js and batches.js. Everything shown comes from users (model names, logs,
// errors): it is only ever set as text (textContent), never parsed as HTML. A new key's
// secret is in the answer to its POST /keys alone: it lives in the "new key" box until Done
// (or its revocation), nowhere else.
import { renderBatches } from "./batches.js";
import {
  actions, api, bar, button, el, fill, given, namePath, reasons, row, showError, size,
  duration, splitArgs, when, whenChanged,
} from "./page.js";
import { renderProfiles } from "./profiles.js";

const REFRESH_MS = 2000;
const LOG_POLL_MS = 1000;
const LOG_KEEP_CHARS = 200000;
const USAGE_DAYS = 30;
const KEY_NUMBERS = ["max_concurrency", "requests_per_minute", "tokens_per_minute", "priority"];
const LIVE_DOWNLOADS = ["queued", "downloading"];
const ENDED_LAUNCHES = ["stopped", "failed"];
const log = { launchId: null, offset: 0 };
const newKey = { id: null }; // the key whose secret the "new key" box shows
// A box without nvidia-smi has no GPUs for good: once GET /gpus said so (an empty list where
// a GPU box whose nvidia-smi fails answers an error), the GPU section says so calmly.
const box = { cpu: false };
const shown = { launches: [] }; // the last listing, drawn again when the filter changes

function gib(mib) { return mib === null || mib === undefined ? "-" : `${(mib / 1024).toFixed(1)} GiB`; }

function renderStats(stats, cpuBox) {
  const host = stats.host;
  const memory = host.memory;
  document.getElementById("host").textContent =
    `load ${host.load_average.join(" ")} on ${host.cpu_count} CPUs · memory ` +
    `${(memory.used_bytes / 2 ** 30).toFixed(1)} of ${(memory.total_bytes / 2 ** 30).toFixed(1)} GiB`;
  // nvidia-smi's failure is an alarm on a GPU box; on a CPU box it is how things are.
  document.getElementById("gpu-error").textContent = cpuBox ? "" : stats.error || "";
  document.getElementById("cpu-box").hidden = !cpuBox;
  document.getElementById("gpus").hidden = cpuBox;
  fill("gpus", stats.gpus.map((gpu) => row([
    gpu.index, gpu.name,
    bar(gpu.memory_used_mib / gpu.memory_total_mib, `${gib(gpu.memory_used_mib)} / ${gib(gpu.memory_total_mib)}`),
    bar((gpu.utilization_percent || 0) / 100, gpu.utilization_percent === null ? "-" : `${gpu.utilization_percent}%`),
    gpu.temperature_c === null ? "-" : `${gpu.temperature_c} °C`,
    gpu.power_watts === null ? "-" : `${gpu.power_watts} W`,
    gpu.launch_id || "",
  ], { "data-gpu": gpu.index })));
}

// Asked only while /stats shows no GPU, until the answer is a CPU box.
async function isCpuBox(stats) {
  if (!box.cpu && stats.gpus.length === 0) {
    box.cpu = await api("GET", "/gpus").then((gpus) => gpus.length === 0, () => false);
  }
  return box.cpu;
}

// With "hide ended" (the default) stopped and failed launches are left out, but for the one
// whose log is open: a launch started from the form that fails stays, with why.
function renderLaunches(launches) {
  shown.launches = launches;
  const hideEnded = document.getElementById("hide-ended").checked;
  const listed = launches.filter((launch) =>
    !hideEnded || !ENDED_LAUNCHES.includes(launch.state) || launch.launch_id === log.launchId);
  const hidden = launches.length - listed.length;
  document.getElementById("launches-hidden").textContent = hidden ? `(${hidden} hidden)` : "";
  fill("launches", listed.slice(-30).reverse().map((launch) => {
    const live = !ENDED_LAUNCHES.includes(launch.state);
    const phase = launch.progress === null || launch.progress === undefined
      ? (launch.phase || "")
      : bar(launch.progress, `${launch.phase} ${Math.round(launch.progress * 100)}%`);
    const buttons = actions(
      button("Log", async () => showLog(launch.launch_id), true),
      live ? button("Stop", () => api("POST", `/stop/${launch.launch_id}`).then(refresh)) : null);
    const state = el("td", { className: `state-${launch.state}` }, launch.state, reasons(launch.error));
    return row([launch.launch_id, state, phase, el("td", { className: "model" }, launch.model),
      launch.gpu_ids.join(",") || "cpu", launch.port, launch.in_flight || 0, buttons],
    { "data-launch-id": launch.launch_id, "data-state": launch.state });
  }));
}

function renderDownloads(listing) {
  fill("downloads", listing.data.slice(-30).reverse().map((download) => {
    const live = LIVE_DOWNLOADS.includes(download.state);
    // Why it failed is shown, not hidden in a tooltip: a full disk or a refused token.
    const state = el("td", { className: `state-${download.state}` }, download.state,
      reasons(download.error));
    const cancel = actions(live ? button("Cancel", () => cancelDownload(download)) : null);
    return row([download.id, state,
      el("td", { className: "model" }, `${download.model}@${download.revision}`),
      bar(download.progress, `${size(download.bytes_done)} / ${size(download.bytes_total)}`),
      `${download.files_done}/${download.files_total}`,
      given(download.bytes_per_second) ? `${size(download.bytes_per_second)}/s` : "-",
      duration(download.eta_seconds), cancel],
    { "data-download-id": download.id, "data-model": download.model, "data-state": download.state });
  }));
}

function renderCache(cache) {
  document.getElementById("cache-info").textContent = `${cache.path} · ${size(cache.free_bytes)} free`;
  fill("cache", cache.data.map((entry) => {
    const users = [...entry.launches.map((id) => `launch ${id}`),
      ...entry.profiles.map((name) => `profile ${name}`), ...(entry.downloading ? ["a download"] : [])];
    // A revision fetched by its commit has no branch or tag naming it: its commit, short.
    const revisions = entry.revisions.map((revision) =>
      revision.refs.length ? revision.refs.join(",") : revision.commit.slice(0, 12));
    return row([el("td", { className: "model" }, entry.model), size(entry.size_on_disk),
      revisions.join(", ") || "-", el("td", { className: "model" }, users.join(", ") || "-"),
      entry.last_used ? new Date(entry.last_used).toLocaleString() : "-",
      actions(button("Remove", () => removeCached(entry)))], { "data-model": entry.model });
  }));
}

function renderKeys(keys) {
  fill("keys", keys.map((key) => {
    const revoke = actions(button("Revoke", () => revokeKey(key)));
    return row([key.name, `${key.prefix}…`, key.scopes.join(", "),
      el("td", { className: "model" }, given(key.models) ? key.models.join(", ") : "all"),
      limits(key), key.priority, given(key.expires_at) ? when(key.expires_at) : "never",
      key.in_flight || 0, revoke], { "data-key-id": key.id, "data-key-name": key.name });
  }));
}

function limits(key) {
  const parts = [];
  if (given(key.max_concurrency)) parts.push(`${key.max_concurrency} at once`);
  if (given(key.requests_per_minute)) parts.push(`${key.requests_per_minute} requests/min`);
  if (given(key.tokens_per_minute)) parts.push(`${key.tokens_per_minute} tokens/min`);
  return parts.join(" · ") || "none";
}

// Newest day first; a revoked key's usage stays, under its name.
function renderUsage(usage, keys) {
  const live = keys ? new Set(keys.map((key) => key.id)) : null;
  const entries = usage.data.slice().sort((a, b) =>
    b.day.localeCompare(a.day) || a.key.localeCompare(b.key) || a.model.localeCompare(b.model));
  fill("usage", entries.map((entry) => row([entry.day,
    live && !live.has(entry.key_id) ? `${entry.key} (revoked)` : entry.key,
    el("td", { className: "model" }, entry.model), entry.requests, entry.prompt_tokens,
    entry.completion_tokens, entry.errors, entry.batch_lines, entry.load_gpu_seconds],
  { "data-key-id": entry.key_id, "data-model": entry.model, "data-day": entry.day })));
}

function usagePath() {
  const since = new Date(Date.now() - (USAGE_DAYS - 1) * 86400000).toISOString().slice(0, 10);
  return `/usage?group_by=key,model,day&since=${since}`;
}

async function refresh() {
  const [health, stats, launches, profiles, downloads, cache, batches, keys, usage] =
    await Promise.allSettled([
      api("GET", "/health"), api("GET", "/stats"), api("GET", "/launch?all=true"),
      api("GET", "/models"), api("GET", "/downloads"), api("GET", "/cache"),
      api("GET", "/v1/batches?limit=20"), api("GET", "/keys"), api("GET", usagePath()),
    ]);
  const healthText = health.status === "fulfilled"
    ? `up · ${health.value.live_launches} live launch(es) · updated ${new Date().toLocaleTimeString()}`
    : `unreachable: ${health.reason.message}`;
  document.getElementById("health").textContent = healthText;
  if (stats.status === "fulfilled") renderStats(stats.value, await isCpuBox(stats.value));
  if (launches.status === "fulfilled") renderLaunches(launches.value);
  if (profiles.status === "fulfilled") renderProfiles(profiles.value, box.cpu);
  if (downloads.status === "fulfilled") renderDownloads(downloads.value);
  if (cache.status === "fulfilled") renderCache(cache.value);
  if (batches.status === "fulfilled") await renderBatches(batches.value);
  const liveKeys = keys.status === "fulfilled" ? keys.value.data : null;
  if (liveKeys) renderKeys(liveKeys);
  if (usage.status === "fulfilled") renderUsage(usage.value, liveKeys);
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

async function revokeKey(key) {
  const question = `Revoke the key ${key.name} (${key.prefix}…)? Its next request is refused; ` +
    "its usage stays.";
  if (!window.confirm(question)) return;
  document.getElementById("key-error").textContent = "";
  await api("DELETE", `/keys/${encodeURIComponent(key.id)}`);
  if (newKey.id === key.id) hideSecret();
  await refresh();
}

async function cancelDownload(download) {
  document.getElementById("download-error").textContent = "";
  await api("DELETE", `/downloads/${encodeURIComponent(download.id)}`);
  await refresh();
}

// The server refuses (409) while a live launch or a download uses the model: its message,
// naming them, goes to the section's error line.
async function removeCached(entry) {
  const question = `Remove ${entry.model} (${size(entry.size_on_disk)}) from the cache? ` +
    "A later launch downloads it again.";
  if (!window.confirm(question)) return;
  document.getElementById("cache-error").textContent = "";
  await api("DELETE", `/cache/${namePath(entry.model)}`);
  await refresh();
}

function showSecret(created) {
  newKey.id = created.id;
  document.getElementById("new-key-name").textContent = created.name;
  document.getElementById("new-key-copy").textContent = "Copy";
  const field = document.getElementById("new-key-secret");
  field.value = created.key;
  document.getElementById("new-key").hidden = false;
  field.focus();
  field.select();
}

function hideSecret() {
  newKey.id = null;
  document.getElementById("new-key-secret").value = "";
  document.getElementById("new-key").hidden = true;
}

// The clipboard API needs a secure context (https or localhost); elsewhere the
// older copy command, and failing both the text stays selected for the user to copy.
async function copySecret() {
  const field = document.getElementById("new-key-secret");
  field.select();
  const copied = navigator.clipboard
    ? await navigator.clipboard.writeText(field.value).then(() => true, () => false)
    : document.execCommand("copy");
  document.getElementById("new-key-copy").textContent = copied ? "Copied" : "Press Ctrl+C";
}

document.getElementById("launch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { model: form.model.value.trim() };
  const gpus = form.gpus.value.trim();
  if (gpus) body.gpu_ids = gpus.split(",").map((gpu) => Number(gpu.trim()));
  document.getElementById("launch-error").textContent = "";
  try {
    const args = splitArgs(form.args.value);
    if (args.length) body.extra_args = args;
    const launch = await api("POST", "/launch", body);
    form.reset();
    await refresh();
    await showLog(launch.launch_id);
  } catch (error) {
    showError(error);
  }
});

document.getElementById("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const field = (name) => form.elements.namedItem(name).value.trim();
  const body = {
    name: field("name"),
    scopes: Array.from(form.querySelectorAll("input[name=scopes]:checked"), (box) => box.value),
  };
  const models = field("models").split(",").map((model) => model.trim()).filter(Boolean);
  if (models.length) body.models = models;
  for (const name of KEY_NUMBERS) if (field(name)) body[name] = Number(field(name));
  document.getElementById("key-error").textContent = "";
  try {
    const created = await api("POST", "/keys", body);
    form.reset();
    showSecret(created);
    await refresh();
  } catch (error) {
    showError(error, form);
  }
});

document.getElementById("download-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { model: form.elements.namedItem("repo").value.trim() };
  const revision = form.elements.namedItem("revision").value.trim();
  if (revision) body.revision = revision;
  document.getElementById("download-error").textContent = "";
  try {
    await api("POST", "/downloads", body);
    form.reset();
    await refresh();
  } catch (error) {
    showError(error, form);
  }
});

document.getElementById("new-key-copy").addEventListener("click", () => copySecret());
document.getElementById("new-key-done").addEventListener("click", hideSecret);
document.getElementById("hide-ended").addEventListener("change", () => renderLaunches(shown.launches));

whenChanged(refresh);

setInterval(() => refresh().catch(() => {}), REFRESH_MS);
setInterval(() => pollLog().catch(() => {}), LOG_POLL_MS);
refresh().catch(() => {});
