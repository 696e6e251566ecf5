// The Model profiles section: each profile with its state, Load and Unload as its state
// allows, Edit and Remove; one form adds a profile or, after Edit, changes it (PUT
// /models/{name}, whose 422 is shown as the server words it).
import {
  actions, api, button, changed, el, fill, given, joinArgs, namePath, reasons, row, showError,
  splitArgs,
} from "./page.js";

const FLAGS = ["sleep", "priority_scheduling", "pinned", "preload"];
// Which button a state allows: Load wakes a sleeping profile; Unload puts a loaded one to
// sleep (or stops it) and stops a sleeping one.
const LOADABLE = ["not loaded", "sleeping"];
const UNLOADABLE = ["loaded", "sleeping"];
const form = document.getElementById("profile-form");
const field = (name) => form.elements.namedItem(name);

export function renderProfiles(profiles, cpuBox) {
  fill("profiles", profiles.map((profile) => {
    const status = profile.status || {};
    const path = `/models/${namePath(profile.name)}`;
    const load = button("Load", () => api("POST", `${path}/load`).then(changed));
    load.disabled = !LOADABLE.includes(status.state);
    const unload = button("Unload", () => api("POST", `${path}/unload`).then(changed), true);
    unload.disabled = !UNLOADABLE.includes(status.state);
    const state = el("td", { className: `state-${String(status.state).replace(" ", "-")}` },
      status.state, reasons(status.last_error));
    return row([profile.name, el("td", { className: "model" }, profile.model),
      cpuBox ? "cpu" : gpus(profile), options(profile), state, status.launch_id || "",
      status.in_flight || 0,
      actions(load, unload, button("Edit", async () => edit(profile), true),
        button("Remove", () => remove(profile), true))],
    { "data-profile": profile.name, "data-state": status.state });
  }));
}

function gpus(profile) {
  if (given(profile.gpu_ids)) return profile.gpu_ids.join(",");
  return `${profile.gpu_count ?? 1} free`;
}

function options(profile) {
  const shown = FLAGS.filter((flag) => profile[flag]).map((flag) => flag.replace("_", " "));
  if (given(profile.idle_ttl_seconds)) shown.push(`idle ${profile.idle_ttl_seconds} s`);
  return el("td", { className: "model" }, shown.join(", ") || "-");
}

// The form holds the profile; its name stays as it is (another name is another profile).
function edit(profile) {
  form.reset();
  field("name").value = profile.name;
  field("name").readOnly = true;
  field("model").value = profile.model;
  field("gpu_count").value = profile.gpu_count ?? "";
  field("gpu_ids").value = given(profile.gpu_ids) ? profile.gpu_ids.join(",") : "";
  field("extra_args").value = joinArgs(profile.extra_args || []);
  field("env").value = Object.entries(profile.env || {}).map(([name, value]) => `${name}=${value}`).join("\n");
  field("idle_ttl_seconds").value = profile.idle_ttl_seconds ?? "";
  for (const flag of FLAGS) field(flag).checked = Boolean(profile[flag]);
  form.querySelector("button[type=submit]").textContent = "Save profile";
  document.getElementById("profile-new").hidden = false;
  document.getElementById("profile-error").textContent = "";
  field("model").focus();
}

function addMode() {
  form.reset();
  field("name").readOnly = false;
  form.querySelector("button[type=submit]").textContent = "Add profile";
  document.getElementById("profile-new").hidden = true;
  document.getElementById("profile-error").textContent = "";
}

async function remove(profile) {
  const question = `Remove the profile ${profile.name}? A launch of it runs on until it is ` +
    "stopped; clients asking for it get model_not_found.";
  if (!window.confirm(question)) return;
  document.getElementById("profile-error").textContent = "";
  await api("DELETE", `/models/${namePath(profile.name)}`);
  if (field("name").readOnly && field("name").value === profile.name) addMode();
  await changed();
}

// The body of PUT /models/{name}: blank fields are left out (the server's defaults).
function body() {
  const text = (name) => field(name).value.trim();
  const profile = { name: text("name"), model: text("model"), extra_args: splitArgs(text("extra_args")) };
  if (text("gpu_count")) profile.gpu_count = Number(text("gpu_count"));
  if (text("gpu_ids")) profile.gpu_ids = text("gpu_ids").split(",").map((gpu) => Number(gpu.trim()));
  profile.env = {};
  text("env").split("\n").forEach((line, index) => {
    if (!line.trim()) return;
    const equals = line.indexOf("=");
    if (equals < 1) throw new Error(`env line ${index + 1}: NAME=value expected, got ${JSON.stringify(line)}`);
    profile.env[line.slice(0, equals).trim()] = line.slice(equals + 1);
  });
  if (text("idle_ttl_seconds")) profile.idle_ttl_seconds = Number(text("idle_ttl_seconds"));
  for (const flag of FLAGS) profile[flag] = field(flag).checked;
  return profile;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  document.getElementById("profile-error").textContent = "";
  try {
    const profile = body();
    await api("PUT", `/models/${namePath(profile.name)}`, profile);
    addMode();
    await changed();
  } catch (error) {
    showError(error, form);
  }
});

document.getElementById("profile-new").addEventListener("click", addMode);
