// The conversation list (GET /v1/conversations): open, rename (PATCH) and delete (DELETE), all by
// keyboard too. On a narrow screen the list slides over the chat and closes once a choice is made.

import { icon } from "./icons.js";

export function initSidebar({ api, current, open, deleted, renamed }) {
  const list = document.getElementById("conversations");
  const note = document.getElementById("side-note");
  const side = document.getElementById("sidebar");
  const opener = document.getElementById("open-side");
  const titles = new Map();

  const setOpen = (on) => {
    side.classList.toggle("open", on);
    opener.setAttribute("aria-expanded", String(on));
    if (on) (list.querySelector("[aria-current=true] .open") || document.getElementById("new")).focus();
  };
  opener.addEventListener("click", () => setOpen(true));
  document.getElementById("close-side").addEventListener("click", () => {
    setOpen(false);
    opener.focus();
  });
  side.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && side.classList.contains("open")) {
      setOpen(false);
      opener.focus();
    }
  });
  document.getElementById("new").addEventListener("click", () => setOpen(false));

  function select(id) {
    for (const li of list.children) li.setAttribute("aria-current", String(li.dataset.id === id));
  }

  function button(cls, text, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = text;
    if (label) b.setAttribute("aria-label", label);
    if (label) b.title = label;
    return b;
  }

  function startRename(li, c) {
    const field = document.createElement("input");
    field.value = c.title;
    field.maxLength = 200;
    field.setAttribute("aria-label", "New name for the conversation");
    li.replaceChildren(field);
    field.focus();
    field.select();
    let settled = false;
    const finish = async (save) => {
      if (settled) return;
      settled = true;
      const title = field.value.trim();
      field.remove();  // the list is redrawn below (a list holding a rename field is left alone)
      if (save && title && title !== c.title) {
        const r = await api(`/v1/conversations/${c.id}`, {
          method: "PATCH",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ title }),
        });
        if (r.ok) {
          c.title = title;
          renamed(c.id, title);
        } else {
          note.textContent = "The conversation could not be renamed.";
        }
      }
      await refresh();
      list.querySelector(`li[data-id="${c.id}"] .open`)?.focus();
    };
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        finish(true);
      } else if (e.key === "Escape") {
        e.stopPropagation();
        finish(false);
      }
    });
    field.addEventListener("blur", () => finish(true));
  }

  async function remove(c) {
    if (!confirm(`Delete “${c.title}”? Its messages are deleted too.`)) return;
    const r = await api(`/v1/conversations/${c.id}`, { method: "DELETE" });
    if (r.ok || r.status === 404) deleted(c.id);
    else note.textContent = "The conversation could not be deleted.";
    await refresh();
  }

  function item(c) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.dataset.testid = "conversation";
    const openBtn = button("open", c.title);
    openBtn.title = c.title;
    openBtn.addEventListener("click", () => {
      open(c.id);
      setOpen(false);
    });
    const renameBtn = button("act rename", "", `Rename “${c.title}”`);
    renameBtn.append(icon("pencil"));
    renameBtn.addEventListener("click", () => startRename(li, c));
    const deleteBtn = button("act delete", "", `Delete “${c.title}”`);
    deleteBtn.append(icon("trash"));
    deleteBtn.addEventListener("click", () => remove(c));
    li.append(openBtn, renameBtn, deleteBtn);
    return li;
  }

  let refreshing = null;
  let again = false;
  function refresh() {
    // One request at a time; a refresh asked for meanwhile runs once more after the current one.
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        await load();
      } while (again);
      refreshing = null;
    })();
    return refreshing;
  }

  // Pages of 100, the most recent first; "Show older" adds one, and a refresh reloads as many.
  let pages = 1;

  async function load() {
    const items = [];
    let cursor = null;
    for (let page = 0; page < pages; page++) {
      let r;
      try {
        r = await api("/v1/conversations?limit=100" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      } catch {
        note.textContent = "The conversation list is not reachable right now.";
        return;
      }
      if (!r.ok) {
        if (r.status !== 401) note.textContent = "The conversation list could not be loaded.";
        return;
      }
      const body = await r.json();
      items.push(...body.items);
      cursor = body.nextCursor;
      if (!cursor) break;
    }
    if (list.querySelector("input")) return;  // do not pull a rename field from under the user
    titles.clear();
    const seen = new Set();  // a conversation that moved up between two pages is listed once
    const unique = items.filter((c) => !seen.has(c.id) && seen.add(c.id));
    for (const c of unique) titles.set(c.id, c.title);
    const rows = unique.map(item);
    if (cursor) {
      const li = document.createElement("li");
      const more = button("more", "Show older conversations");
      more.dataset.testid = "more-conversations";
      more.addEventListener("click", () => {
        pages += 1;
        refresh();
      });
      li.append(more);
      rows.push(li);
    }
    list.replaceChildren(...rows);
    note.textContent = unique.length ? "" : "No conversations yet.";
    select(current());
  }

  return { refresh, select, titleOf: (id) => titles.get(id) };
}
