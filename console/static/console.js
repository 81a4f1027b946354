// dispenser console: what htmx does not do for us. Confirmations of
// changes that cannot be undone, and an upload whose progress the page
// shows. The file goes as the request body itself
// (no multipart), streamed by the server into ImportCodes.
"use strict";

// Changes that cannot be undone ask first (forms with data-confirm).
document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    ev.preventDefault();
    ev.stopImmediatePropagation();
  }
}, true);

document.addEventListener("submit", (ev) => {
  const form = ev.target;
  if (!(form instanceof HTMLFormElement) || form.id !== "import") return;
  ev.preventDefault();
  const file = form.elements.file.files[0];
  if (!file) return;
  const box = document.getElementById("import-progress");
  const bar = box.querySelector("progress");
  const phase = box.querySelector(".phase");
  const result = document.getElementById("import-result");
  const max = Number(form.dataset.max || 0);
  if (max > 0 && file.size > max) {
    result.textContent = "The file is larger than the server accepts (" + max + " bytes).";
    return;
  }
  const params = new URLSearchParams({
    format: form.elements.format.value,
    strict: form.elements.strict.checked ? "true" : "false",
    source_name: file.name,
  });
  const token = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/pools/" + encodeURIComponent(form.dataset.pool) + "/import?" + params.toString());
  xhr.setRequestHeader("X-CSRF-Token", token);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  box.hidden = false;
  bar.value = 0;
  phase.textContent = "uploading";
  result.textContent = "";
  form.querySelector("button").disabled = true;
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) {
      bar.value = Math.round((100 * e.loaded) / e.total);
      phase.textContent = "uploading " + bar.value + "%";
    }
  });
  xhr.upload.addEventListener("load", () => {
    bar.removeAttribute("value"); // indeterminate while the codes land
    phase.textContent = "uploaded; landing the codes in Postgres";
  });
  const done = (html) => {
    form.querySelector("button").disabled = false;
    box.hidden = true;
    result.innerHTML = html; // the server's fragment: counts and line numbers, never code text
  };
  xhr.addEventListener("load", () => done(xhr.responseText));
  xhr.addEventListener("error", () => done('<p class="error">The upload failed; nothing was imported.</p>'));
  xhr.send(file);
});
