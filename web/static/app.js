// bootherd UI behaviour, kept small: live refresh from server-sent events, upload progress,
// the profile form's kind switch, and confirmations. Pages work without it (minus live parts).
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

// Parts marked data-live="URL" are re-fetched when a boot step happens (and every second while
// transfers run, whose progress produces no steps).
function setupLive() {
  const parts = [...document.querySelectorAll("[data-live]")];
  if (parts.length === 0) return;
  let pending = null;
  const refresh = async () => {
    pending = null;
    for (const part of parts) {
      try {
        const response = await fetch(part.dataset.live, { credentials: "same-origin" });
        if (response.ok && !part.contains(document.activeElement)) {
          part.innerHTML = await response.text();
        }
      } catch (_) { /* the next event retries */ }
    }
    schedulePoll();
  };
  const soon = () => { if (!pending) pending = setTimeout(refresh, 300); };
  const schedulePoll = () => {
    const busy = document.querySelector("[data-active-transfers]");
    if (busy && busy.dataset.activeTransfers !== "0") soon();
  };
  if (window.EventSource) {
    const events = new EventSource("/api/v1/events");
    // Marks the page as receiving live updates (the browser tests wait for it).
    events.addEventListener("open", () => { document.body.dataset.live = "connected"; });
    events.addEventListener("step", soon);
    events.addEventListener("lagged", soon);
  }
  schedulePoll();
}

// Uploads go straight to the API as a stream (no multipart), with a progress bar.
function setupUpload() {
  const form = document.getElementById("upload");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    const image = form.elements.image.value.trim();
    const name = form.elements.as.value.trim() || file?.name;
    if (!file || !image) return;
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/api/v1/images/${encodeURIComponent(image)}/files/${encodeURIComponent(name)}`);
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${name}…`;
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
    });
    xhr.addEventListener("load", () => {
      let message = "";
      try { message = JSON.parse(xhr.responseText).error ?? ""; } catch (_) { /* not JSON */ }
      if (xhr.status === 201) {
        bar.value = 100;
        status.textContent = `Uploaded ${name} into ${image}.`;
        setTimeout(() => window.location.reload(), 600);
      } else {
        status.textContent = `Upload failed (${xhr.status}): ${message || xhr.statusText}`;
        status.className = "error";
      }
    });
    xhr.addEventListener("error", () => {
      status.textContent = "Upload failed: the connection broke. Nothing was stored; try again.";
      status.className = "error";
    });
    xhr.send(file);
  });
}

// Show only the fields of the chosen profile kind.
function setupProfileForm() {
  const kind = document.getElementById("kind");
  if (!kind) return;
  const apply = () => {
    for (const set of document.querySelectorAll("fieldset[data-kinds]")) {
      set.hidden = !set.dataset.kinds.split(" ").includes(kind.value);
    }
  };
  kind.addEventListener("change", apply);
  apply();
}

function setupConfirm() {
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset?.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupLive();
  setupUpload();
  setupProfileForm();
  setupConfirm();
});
