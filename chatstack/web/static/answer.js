// One assistant answer on screen: deltas applied in seq order (replays dropped, gaps held back),
// text revealed smoothly between deltas, markdown re-rendered at most every RENDER_MS, and the
// citations added once the whole text is shown.
//
// The server batches tokens into fewer, larger deltas; shown as they arrive, text would jump a
// sentence at a time. Instead each animation frame reveals a share of what has arrived but is not
// shown yet, so the backlog drains in about DRAIN_MS whatever the delta size.

import { renderCitations, renderMarkdown } from "./render.js";

const DRAIN_MS = 220;
const RENDER_MS = 50;
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)").matches;

const FINISH_NOTES = {
  length: "The answer reached its length limit.",
  cancelled: "Stopped.",
};

export class Answer {
  constructor({ requestId, conversationId = null, sendFrame = null, acked = false }) {
    this.requestId = requestId;
    this.conversationId = conversationId;
    this.sendFrame = sendFrame;  // the sendMessage frame, re-sent (same requestId) if never acknowledged
    this.acked = acked;
    this.next = 1;
    this.pending = new Map();
    this.text = "";
    this.shown = 0;
    this.done = false;
    this.finished = false;
    this.citations = [];
    this.finishReason = null;
    this.lastRender = 0;
    this.el = document.createElement("article");
    this.el.className = "msg assistant streaming";
    this.el.dataset.testid = "answer";
    this.el.setAttribute("aria-busy", "true");
    this.body = document.createElement("div");
    this.body.className = "body";
    this.el.append(this.body);
  }

  /** A delta frame: true when it moved the text on. */
  delta(frame) {
    if (this.done || frame.seq < this.next) return false;  // replayed after a resume: already have it
    this.pending.set(frame.seq, frame);
    while (this.pending.has(this.next)) {
      const d = this.pending.get(this.next);
      this.pending.delete(this.next);
      if (d.restart) {  // another worker took over with different text: start again
        this.text = "";
        this.shown = 0;
      }
      this.text += d.text;
      this.next += 1;
    }
    this.kick();
    return true;
  }

  finish(frame) {
    if (this.done) return;
    this.done = true;
    if (typeof frame.text === "string") this.text = frame.text;  // the stored answer wins over pieces
    if (this.shown > this.text.length) this.shown = 0;
    this.citations = frame.citations || [];
    this.finishReason = frame.finishReason;
    this.kick();
  }

  /** A finished answer loaded from history: shown at once. */
  static fromHistory(message) {
    const a = new Answer({ requestId: message.requestId, acked: true });
    a.text = message.content;
    a.shown = a.text.length;
    a.done = true;
    a.citations = message.citations || [];
    a.finishReason = message.finishReason;
    a.complete();
    return a;
  }

  fail() {
    this.done = true;
    if (this.text && this.shown < this.text.length) {  // show all that was delivered, not the reveal's share
      this.shown = this.text.length;
      this.paint(true);
    }
    this.finished = true;
    this.el.classList.remove("streaming");
    this.el.removeAttribute("aria-busy");
    if (!this.text) this.el.remove();
  }

  kick() {
    if (!this.animating) {
      this.animating = true;
      this.lastFrame = performance.now();
      requestAnimationFrame((t) => this.step(t));
    }
    // Hidden tabs get no animation frames: show everything now.
    if (document.hidden || reducedMotion) {
      this.shown = this.text.length;
      this.paint(true);
    }
  }

  step(now) {
    const dt = Math.max(0, now - this.lastFrame);
    this.lastFrame = now;
    const backlog = this.text.length - this.shown;
    if (backlog > 0) this.shown += Math.max(1, Math.ceil(backlog * Math.min(1, dt / DRAIN_MS)));
    this.paint(false);
    if (this.shown < this.text.length || (this.done && !this.finished)) {
      requestAnimationFrame((t) => this.step(t));
    } else {
      this.animating = false;
    }
  }

  paint(force) {
    if (this.finished) return;
    const now = performance.now();
    const caughtUp = this.shown >= this.text.length;
    if (this.done && caughtUp) return this.complete();
    if (!force && now - this.lastRender < RENDER_MS && !caughtUp) return;
    this.lastRender = now;
    renderMarkdown(this.body, this.text.slice(0, this.shown));
    this.onPaint?.();
  }

  complete() {
    this.finished = true;
    this.el.classList.remove("streaming");
    this.el.removeAttribute("aria-busy");
    renderMarkdown(this.body, this.text);
    const sources = renderCitations(this.body, this.citations);
    if (sources) this.el.append(sources);
    const note = FINISH_NOTES[this.finishReason];
    if (note) {
      const p = document.createElement("p");
      p.className = "note";
      p.textContent = note;
      this.el.append(p);
    }
    this.el.dataset.done = "true";
    this.onPaint?.();
  }
}
