// The Batches section: a form that uploads a JSONL file (POST /v1/files, purpose "batch")
// and starts its batch (POST /v1/batches); each batch with its progress, why it failed (its
// errors by line, else the first lines of its error file), Cancel while it runs, and its
// output and error files to save.
import {
  actions, api, bar, button, changed, el, fill, reasons, request, row, saveFile, showError, when,
} from "./page.js";

const RUNNING = ["validating", "in_progress", "finalizing"];
const ENDED = ["completed", "failed", "cancelled", "expired"];
const SHOWN_ERRORS = 5;
const ERROR_FILE_HEAD_BYTES = 16384; // enough for the first lines, however large the file
const form = document.getElementById("batch-form");
const errorFileHeads = new Map(); // error file id -> its first lines, read once

export async function renderBatches(listing) {
  const batches = listing.data;
  await Promise.all(batches.filter(needsErrorFile).map((batch) => readErrorFile(batch.error_file_id)));
  fill("batches", batches.map((batch) => {
    const counts = batch.request_counts;
    const finished = counts.completed + counts.failed;
    // A batch that failed before it ran has no requests: its progress is not a 0/0 bar.
    const progress = counts.total ? bar(finished / counts.total, `${finished}/${counts.total}`) : "-";
    const status = el("td", { className: `state-${batch.status}` }, batch.status, reasons(...why(batch)));
    return row([batch.id, status, batch.endpoint, progress, counts.failed, when(batch.created_at),
      actions(
        RUNNING.includes(batch.status) ? button("Cancel", () => cancel(batch)) : null,
        batch.output_file_id ? button("Output", () => save(batch, batch.output_file_id, "output"), true) : null,
        batch.error_file_id ? button("Errors", () => save(batch, batch.error_file_id, "errors"), true) : null)],
    { "data-batch": batch.id, "data-status": batch.status });
  }));
}

// Its errors (a file that failed validation: line by line), else its error file's first
// lines once it has ended.
function why(batch) {
  const errors = batch.errors ? batch.errors.data : [];
  if (errors.length) {
    const lines = errors.slice(0, SHOWN_ERRORS).map((error) =>
      `${error.line ? `line ${error.line}: ` : ""}${error.code}: ${error.message}`);
    if (errors.length > SHOWN_ERRORS) lines.push(`… and ${errors.length - SHOWN_ERRORS} more`);
    return lines;
  }
  return ENDED.includes(batch.status) ? errorFileHeads.get(batch.error_file_id) || [] : [];
}

function needsErrorFile(batch) {
  return !(batch.errors && batch.errors.data.length) && ENDED.includes(batch.status) &&
    batch.error_file_id && !errorFileHeads.has(batch.error_file_id);
}

async function readErrorFile(fileId) {
  errorFileHeads.set(fileId, []); // asked once, whatever the answer
  try {
    const response = await request("GET", `/v1/files/${encodeURIComponent(fileId)}/content`,
      { headers: { range: `bytes=0-${ERROR_FILE_HEAD_BYTES - 1}` } });
    const text = await response.text();
    const complete = response.status === 200 || text.endsWith("\n");
    const lines = text.split("\n").slice(0, complete ? undefined : -1).filter(Boolean);
    const shown = lines.slice(0, SHOWN_ERRORS).map(errorLine);
    if (lines.length > SHOWN_ERRORS || !complete) shown.push("… (the Errors file has them all)");
    errorFileHeads.set(fileId, shown);
  } catch (error) {
    errorFileHeads.set(fileId, [`its error file could not be read: ${error.message}`]);
  }
}

// One result line of the error file: its custom_id and the error, as OpenAI writes them.
function errorLine(text) {
  try {
    const result = JSON.parse(text);
    const response = result.response;
    const body = response && response.body;
    const message = (result.error && `${result.error.code}: ${result.error.message}`) ||
      (body && body.error && body.error.message) || (response && `HTTP ${response.status_code}`);
    return `${result.custom_id}: ${message}`;
  } catch (_) {
    return text.slice(0, 300);
  }
}

async function cancel(batch) {
  if (!window.confirm(`Cancel the batch ${batch.id}? What has finished is kept.`)) return;
  document.getElementById("batch-error").textContent = "";
  await api("POST", `/v1/batches/${encodeURIComponent(batch.id)}/cancel`);
  await changed();
}

function save(batch, fileId, kind) {
  document.getElementById("batch-error").textContent = "";
  return saveFile(`/v1/files/${encodeURIComponent(fileId)}/content`, `${batch.id}_${kind}.jsonl`);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = form.elements.namedItem("file").files[0];
  document.getElementById("batch-error").textContent = "";
  try {
    const upload = new FormData();
    upload.append("purpose", "batch");
    upload.append("file", file, file.name);
    const uploaded = await api("POST", "/v1/files", upload);
    await api("POST", "/v1/batches", {
      input_file_id: uploaded.id,
      endpoint: form.elements.namedItem("endpoint").value,
      completion_window: "24h",
    });
    form.reset();
    await changed();
  } catch (error) {
    showError(error, form);
  }
});
