// Answers as sanitized markdown: marked parses, DOMPurify removes anything executable, highlight.js
// colours code. Model output and document text are untrusted (a document can carry <script> or
// <img onerror>), so nothing reaches the DOM without DOMPurify, and citations are built with
// textContent only.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";
import hljs from "./vendor/highlight.min.js";

const marked = new Marked({ gfm: true, breaks: true });

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
  // id and name: an answer with <span id="stop"> took over the page's own elements (getElementById
  // found it first), hiding the Stop button and leaving Send enabled after sign-out.
  FORBID_ATTR: ["style", "id", "name"],
};

/** Replace the contents of `el` with `markdown` rendered safely. */
export function renderMarkdown(el, markdown) {
  el.innerHTML = DOMPurify.sanitize(marked.parse(markdown), PURIFY);
  for (const code of el.querySelectorAll("pre code")) {
    hljs.highlightElement(code);  // works on textContent: it cannot bring markup back
  }
}

function isWebLink(value) {
  try {
    return ["http:", "https:"].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

/**
 * One entry per cited document, in first-cited order. Several passages of one document share its
 * number; `byIndex` maps the answer's [n] markers to that number.
 */
export function groupCitations(citations) {
  const sources = [];
  const byDocument = new Map();
  const byIndex = new Map();
  for (const c of citations || []) {
    const key = c.documentId || c.source || c.title;
    let source = byDocument.get(key);
    if (!source) {
      source = { number: sources.length + 1, title: c.title || c.source || "Untitled", url: c.source, passages: [] };
      byDocument.set(key, source);
      sources.push(source);
    }
    source.passages.push(c);
    byIndex.set(c.index, source);
  }
  return { sources, byIndex };
}

function passageText(source, only) {
  const passages = only ? [only] : source.passages;
  const texts = passages.map((p) => p.text || p.snippet || "").filter(Boolean);
  if (texts.length) return texts.join("\n…\n").slice(0, 600);
  return source.url && source.url !== source.title ? source.url : "";
}

function citeMark(source, passage) {
  const web = source.url && isWebLink(source.url);
  const mark = document.createElement(web ? "a" : "span");
  mark.className = "cite";
  mark.dataset.source = String(source.number);
  if (web) {
    mark.href = source.url;
    mark.target = "_blank";
    mark.rel = "noopener noreferrer";
  } else {
    mark.tabIndex = 0;
  }
  mark.setAttribute("aria-label", `Source ${source.number}: ${source.title}`);
  mark.append(String(source.number));
  const tip = document.createElement("span");
  tip.className = "tip";
  tip.setAttribute("role", "tooltip");
  const heading = document.createElement("strong");
  heading.textContent = source.title;
  tip.append(heading, passageText(source, passage));
  mark.append(tip);
  return mark;
}

/** Turn the answer's [n] markers into numbered source marks (outside code), then list the sources once. */
export function renderCitations(body, citations) {
  const { sources, byIndex } = groupCitations(citations);
  if (!sources.length) return null;
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => (n.parentElement.closest("code, pre, a, .cite") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) if (/\[\d+\]/.test(walker.currentNode.nodeValue)) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const parts = node.nodeValue.split(/(\[\d+\])/);
    const frag = document.createDocumentFragment();
    for (const part of parts) {
      const m = /^\[(\d+)\]$/.exec(part);
      const source = m && byIndex.get(Number(m[1]));
      frag.append(source ? citeMark(source, source.passages.find((p) => p.index === Number(m[1]))) : part);
    }
    node.replaceWith(frag);
  }
  const list = document.createElement("ol");
  list.className = "sources";
  list.setAttribute("aria-label", "Sources");
  for (const source of sources) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = source.title;
    li.append(citeMark(source, null), name);
    list.append(li);
  }
  return list;
}
