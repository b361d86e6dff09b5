// Documents for the answers to cite: POST /v1/documents (multipart), with upload progress.
// fetch() cannot report upload progress, so this uses XMLHttpRequest. Files come from the 📎 picker
// or are dropped on the page.

import { icon } from "./icons.js";

const MAX_BYTES = 20 * 1024 * 1024;  // the API's limit (lambdas/rag/parsing.py MAX_DOCUMENT_BYTES)

export function initUploads({ apiUrl, token, onUnauthorized }) {
  const picker = document.getElementById("file");
  const list = document.getElementById("uploads");

  function row(name) {
    const li = document.createElement("li");
    li.dataset.testid = "upload";
    li.dataset.state = "sending";
    const label = document.createElement("span");
    label.textContent = name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", `Uploading ${name}`);
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "Uploading…";
    const close = document.createElement("button");
    close.type = "button";
    close.className = "close";
    close.append(icon("close"));
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", () => li.remove());
    li.append(label, bar, state, close);
    list.append(li);
    return { li, bar, state };
  }

  function finish(ui, kind, text) {
    ui.li.dataset.state = kind;
    ui.bar.remove();
    ui.state.textContent = text;
    if (kind === "done") setTimeout(() => ui.li.remove(), 15000);
  }

  function upload(file) {
    const ui = row(file.name);
    if (file.size > MAX_BYTES) return finish(ui, "error", "is larger than 20 MB and was not added.");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("/v1/documents"));
    xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) ui.bar.value = Math.round((e.loaded / e.total) * 100);
    });
    xhr.upload.addEventListener("load", () => {
      ui.bar.removeAttribute("value");  // sent; the server now reads and indexes it
      ui.state.textContent = "Indexing…";
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON: use the status alone */
      }
      if (xhr.status === 200 || xhr.status === 201) {
        const what = body.deduplicated ? "was already added" : `added (${body.chunks} passage${body.chunks === 1 ? "" : "s"})`;
        return finish(ui, "done", `${what}: answers can cite it now.`);
      }
      if (xhr.status === 401) onUnauthorized();
      const message = {
        400: body.error?.message || "could not be read.",
        413: "is larger than 20 MB and was not added.",
        403: "could not be added: your account is not allowed to add documents.",
        401: "could not be added: please sign in again.",
        429: "could not be added now: too many requests. Try again shortly.",
      }[xhr.status] || "could not be added. Please try again.";
      finish(ui, "error", message);
    });
    xhr.addEventListener("error", () => finish(ui, "error", "could not be sent: the service is not reachable."));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  }

  picker.addEventListener("change", () => {
    for (const file of picker.files) upload(file);
    picker.value = "";
  });
  let depth = 0;
  addEventListener("dragenter", (e) => {
    if (e.dataTransfer?.types.includes("Files")) document.body.classList.toggle("dragging", ++depth > 0);
  });
  addEventListener("dragleave", () => document.body.classList.toggle("dragging", --depth > 0));
  addEventListener("dragover", (e) => e.preventDefault());
  addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    for (const file of e.dataTransfer?.files || []) upload(file);
  });
}
