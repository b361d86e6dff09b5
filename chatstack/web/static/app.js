// The chat page: wires the link (socket.js), answers (answer.js), the conversation list, uploads and
// sign-in (auth.js). Protocol v1 (docs/protocol.md); REST under /v1 with the same token.
//
// static/config.json (`{}` here; the hosting stack writes it in the cloud) may set:
// apiBase and wsUrl (when the API is on another domain), oidc {issuer, clientId, scope, tokenType,
// logoutUrl} for sign-in, and timing {streamPingS, idlePingS, pongDeadlineS}.

import * as auth from "./auth.js";
import { Answer } from "./answer.js";
import { Link } from "./socket.js";
import { initUploads } from "./uploads.js";
import { initSidebar } from "./sidebar.js";
import { drawIcons } from "./icons.js";

const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("text"), form = $("form"), statusEl = $("status"), banner = $("banner");
const PENDING_KEY = "chatstack.pending";
const MODEL_KEY = "chatstack.model";

// What users see for each error code: no internal details, one thing they can do.
const ERRORS = {
  TOO_LARGE: "That message is too long. Shorten it and send it again.",
  GONE_CONVERSATION: "That conversation was deleted. Your message is back in the box: send it to start a new chat.",
  DELETED_ELSEWHERE: "This conversation was deleted, perhaps in another window. What you send now starts a new chat.",
  RATE_LIMITED: "You are sending messages too quickly.",
  QUOTA_EXCEEDED: "You have reached your usage limit for now.",
  MODEL_UNAVAILABLE: "The assistant is unavailable at the moment. Please try again shortly.",
  FORBIDDEN: "Your account is not allowed to do that.",
  NOT_FOUND: "That conversation no longer exists.",
  INTERNAL: "Something went wrong on our side. Please try again.",
  UNAUTHORIZED: "Your session has ended. Sign in again to continue.",
};

const STATUS_TEXT = {
  starting: "Starting…",
  connecting: "Connecting…",
  online: "Connected",
  reconnecting: "Reconnecting…",
  unauthorized: "Signed out",
  expired: "Session expired",
  forbidden: "No access",
  "signed-out": "Signed out",
};

let config = {};
let link = null;
let conversationId = null;
let expiryTimer = null;
let signInProblem = "";
const answers = new Map();  // requestId -> Answer

// ---- small helpers --------------------------------------------------------------------------
function apiUrl(path) {
  return (config.apiBase || "").replace(/\/$/, "") + path;
}

function wsUrl() {
  const base = config.wsUrl || (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  return base + (base.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(auth.storedToken());
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: "Bearer " + auth.storedToken() };
  const r = await fetch(apiUrl(path), { ...options, headers });
  if (r.status === 401) setAuthState("unauthorized");
  return r;
}

function setStatus(state) {
  statusEl.dataset.state = state;
  statusEl.textContent = STATUS_TEXT[state] || state;
}

function showBanner(parts, action) {
  banner.replaceChildren();
  for (const part of parts) banner.append(typeof part === "string" ? part : part);
  if (action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = action.label;
    b.addEventListener("click", action.run);
    banner.append(b);
  }
  banner.hidden = false;
}

function code(text) {
  const c = document.createElement("code");
  c.textContent = text;
  return c;
}

function scrollDown() {
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (nearBottom) log.scrollTop = log.scrollHeight;
}

function bubble(cls, text) {
  $("empty").hidden = true;
  const el = document.createElement("div");
  el.className = "msg " + cls;
  el.textContent = text;
  log.append(el);
  log.scrollTop = log.scrollHeight;
  return el;
}

function showError(frame) {
  let text = ERRORS[frame.code] || ERRORS.INTERNAL;
  if (frame.code === "BAD_REQUEST") text = "The message could not be sent: " + frame.message;
  if (frame.retryAfter) text += ` Try again in ${Math.ceil(frame.retryAfter)} s.`;
  const el = bubble("error", text);
  el.dataset.testid = "error";
  el.dataset.code = frame.code;
}

// ---- sign-in state ---------------------------------------------------------------------------
function setAuthState(state) {
  setStatus(state);
  if (state === "online" || state === "connecting" || state === "reconnecting") {
    banner.hidden = true;
    return;
  }
  if (!["unauthorized", "expired", "forbidden", "signed-out"].includes(state)) return;
  link?.stop();
  $("send").disabled = true;
  document.querySelector(".attach").hidden = true;
  if (state === "forbidden") {
    showBanner(["Your account is not allowed to use this chat. Ask your administrator for access."]);
    return;
  }
  if (state !== "signed-out") auth.forgetToken();
  const why = {
    unauthorized: "Your sign-in was not accepted (it may have expired or been revoked).",
    expired: "Your session has expired.",
    "signed-out": signInProblem || "You are not signed in.",
  }[state];
  if (config.oidc) {
    $("signin").hidden = false;
    showBanner([why + " "], { label: "Sign in", run: () => auth.signIn(config.oidc) });
  } else {
    showBanner([why + " Open the page from the link ", code("chatstack up"), " prints, or make a new one with ",
      code("chatstack token --user NAME --tenant TENANT"), " and add it as ", code("?token=…"), "."]);
  }
}

function watchExpiry() {
  clearTimeout(expiryTimer);
  const left = auth.secondsLeft(auth.storedToken());
  if (left === Infinity) return;
  // setTimeout's limit is about 24.8 days; check again later for tokens that live longer.
  expiryTimer = setTimeout(() => (auth.secondsLeft(auth.storedToken()) <= 0 ? setAuthState("expired") : watchExpiry()),
    Math.min(Math.max(0, left * 1000), 2 ** 31 - 1));
}

// ---- answers in flight -----------------------------------------------------------------------
function pendingRequests() {
  return JSON.parse(sessionStorage.getItem(PENDING_KEY) || "{}");
}

function rememberPending(requestId, conversation) {
  const p = pendingRequests();
  if (conversation) p[requestId] = conversation;
  else delete p[requestId];
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(p));
}

function expecting() {
  return [...answers.values()].some((a) => !a.done);
}

function updateStop() {
  const busy = [...answers.values()].some((a) => !a.done && a.conversationId === conversationId);
  $("stop").hidden = !busy;
}

function track(answer) {
  answer.onPaint = scrollDown;
  answers.set(answer.requestId, answer);
  updateStop();
}

function onOpen() {
  for (const a of [...answers.values()]) {
    if (a.done) continue;
    // Not acknowledged: send again (the same requestId never yields two answers), a few times at
    // most: a frame the server keeps closing the link on must not be sent again on every reconnect.
    if (!a.acked && a.sendFrame) {
      a.reopens = (a.reopens || 0) + 1;
      if (a.reopens > MAX_RESENDS_ON_OPEN) {
        giveUp(a, { code: "INTERNAL" });
        continue;
      }
      link.send(a.sendFrame);
    } else link.send({ action: "resume", requestId: a.requestId, afterSeq: a.next - 1 });
  }
}

const MAX_RESENDS_ON_OPEN = 3;

/** An unacknowledged answer that will not be: say so, and put its text back in the box if empty. */
function giveUp(a, error) {
  a.fail();
  answers.delete(a.requestId);
  rememberPending(a.requestId, null);
  updateStop();
  if (a.sendFrame && !input.value) {
    input.value = a.sendFrame.text;
    input.dispatchEvent(new Event("input"));
  }
  showError(error);
}

function onFrame(frame) {
  const a = frame.requestId ? answers.get(frame.requestId) : null;
  switch (frame.type) {
    case "ack":
      if (!a) return;
      a.acked = true;
      if (!a.conversationId) {
        a.conversationId = frame.conversationId;
        if (!conversationId) openConversationId(frame.conversationId);
        sidebar.refresh().then(() => {
          if (conversationId === a.conversationId) $("title").textContent = sidebar.titleOf(conversationId) || "Conversation";
        });
      }
      rememberPending(a.requestId, a.conversationId);
      break;
    case "delta":
      a?.delta(frame);
      break;
    case "done":
      if (!a) return;
      a.finish(frame);
      rememberPending(a.requestId, null);
      updateStop();
      sidebar.refresh();
      // Cancelled, but not from here: its conversation may have been deleted (in another tab).
      if (frame.finishReason === "cancelled" && !a.stopRequested) void checkStillThere(a.conversationId);
      break;
    case "error":
      if (frame.code === "UNAUTHORIZED") return setAuthState("unauthorized");
      if (a && !a.acked && a.sendFrame && ["TOO_LARGE", "NOT_FOUND"].includes(frame.code)) {
        // Refused before it was stored: the text goes back to the box. NOT_FOUND here: the
        // conversation was deleted (in another tab): the next message starts a new one.
        if (frame.code === "NOT_FOUND") newChat();
        return giveUp(a, frame.code === "NOT_FOUND" ? { code: "GONE_CONVERSATION" } : frame);
      }
      if (a) {
        a.fail();
        answers.delete(a.requestId);
        rememberPending(a.requestId, null);
        updateStop();
        // A resumed stream that has expired: the finished answer is in the history.
        if (frame.code === "NOT_FOUND" && a.acked) return void loadConversation(a.conversationId);
      }
      showError(frame);
      break;
    default:
      // API Gateway's own message when a route's integration failed: it names no request of ours.
      if (frame.message === "Internal server error") resendUnacknowledged();
  }
}

// Send again what was not acknowledged (the same requestId never yields two answers), twice at
// most; then the answer fails with a message instead of waiting forever.
function resendUnacknowledged() {
  for (const a of [...answers.values()]) {
    if (a.done || a.acked || !a.sendFrame) continue;
    a.resends = (a.resends || 0) + 1;
    if (a.resends <= 2) {
      link.send(a.sendFrame);
      continue;
    }
    a.fail();
    answers.delete(a.requestId);
    updateStop();
    showError({ code: "INTERNAL" });
  }
}

/** The open conversation is gone (deleted elsewhere): say so and start a new chat. */
async function checkStillThere(id) {
  if (!id || id !== conversationId) return;
  const r = await api(`/v1/conversations/${encodeURIComponent(id)}`);
  if (r.status !== 404 || conversationId !== id) return;
  newChat();
  showError({ code: "DELETED_ELSEWHERE" });
  void sidebar.refresh();
}

// ---- conversations ---------------------------------------------------------------------------
function openConversationId(id) {
  conversationId = id;
  const hash = id ? "#c=" + id : "";
  history.replaceState(history.state, "", location.pathname + location.search + hash);
  sidebar.select(id);
}

function clearLog() {
  for (const el of [...log.children]) if (el.id !== "empty") el.remove();
  $("empty").hidden = false;
}

async function loadConversation(id) {
  clearLog();
  openConversationId(id);
  $("title").textContent = sidebar.titleOf(id) || "Conversation";
  // Every page, oldest first (a long conversation has more than one page of 500).
  const items = [];
  let after = 0;
  for (;;) {
    const r = await api(`/v1/conversations/${encodeURIComponent(id)}/messages?limit=500&afterSeq=${after}`);
    if (conversationId !== id) return;  // another one was opened meanwhile
    if (!r.ok) {
      if (r.status === 404 || r.status === 400) {
        openConversationId(null);
        $("title").textContent = "New chat";
      }
      if (r.status !== 401) showError({ code: r.status === 404 || r.status === 400 ? "NOT_FOUND" : "INTERNAL" });
      return;
    }
    const page = await r.json();
    items.push(...page.items);
    if (page.nextAfterSeq == null) break;
    after = page.nextAfterSeq;
  }
  const answered = new Set();
  for (const m of items) {
    if (m.role === "user") bubble("user", m.content);
    else {
      answered.add(m.requestId);
      const a = Answer.fromHistory(m);
      $("empty").hidden = true;
      log.append(a.el);
    }
  }
  // Answers still streaming (sent before a reload or a switch): show them and follow them again.
  for (const [requestId, conv] of Object.entries(pendingRequests())) {
    if (conv !== id) continue;
    if (answered.has(requestId)) {
      rememberPending(requestId, null);
      continue;
    }
    let a = answers.get(requestId);
    if (!a) {
      a = new Answer({ requestId, conversationId: id, acked: true });
      track(a);
      if (link?.open) link.send({ action: "resume", requestId, afterSeq: 0 });
    }
    $("empty").hidden = true;
    log.append(a.el);
  }
  log.scrollTop = log.scrollHeight;
  updateStop();
}

function newChat() {
  clearLog();
  openConversationId(null);
  $("title").textContent = "New chat";
  updateStop();
  input.focus();
}

const sidebar = initSidebar({
  api,
  current: () => conversationId,
  open: (id) => loadConversation(id),
  deleted: (id) => {
    if (id === conversationId) newChat();
  },
  renamed: (id, title) => {
    if (id === conversationId) $("title").textContent = title;
  },
});

// ---- sending ---------------------------------------------------------------------------------
// The protocol's limits (docs/protocol.md): 32,000 characters of text, 128 KB a frame. Over the
// second the server closes the socket (1009), and a frame sent again on every reconnect would close
// it again for ever: both are refused here, before anything is sent.
const MAX_TEXT_CHARS = 32000;
const MAX_FRAME_BYTES = 128 * 1024;

/** Send `text`; false when it was not sent (the caller keeps it in the box). */
function send(text) {
  if ($("send").disabled) return false;
  const requestId = crypto.randomUUID();
  const frame = { action: "sendMessage", requestId, text };
  if (conversationId) frame.conversationId = conversationId;
  const model = $("model").value;
  if (!$("model-label").hidden && model) frame.options = { model };
  if ([...text].length > MAX_TEXT_CHARS || new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
    showError({ code: "TOO_LARGE" });
    return false;
  }
  bubble("user", text);
  const a = new Answer({ requestId, conversationId, sendFrame: frame });
  track(a);
  log.append(a.el);
  log.scrollTop = log.scrollHeight;
  // While reconnecting the message waits and goes out when the link is back (see onOpen).
  link.send(frame);
  return true;
}

async function loadModels() {
  try {
    const r = await api("/v1/models");
    if (!r.ok) return;
    const models = ((await r.json()).data || []).map((m) => m.id).filter(Boolean);
    if (models.length < 2) return;  // nothing to choose
    const select = $("model");
    for (const id of models) select.append(new Option(id, id));
    const saved = localStorage.getItem(MODEL_KEY);
    if (saved && models.includes(saved)) select.value = saved;
    select.addEventListener("change", () => localStorage.setItem(MODEL_KEY, select.value));
    $("model-label").hidden = false;
  } catch {
    /* no model list offered: keep the default */
  }
}

// ---- start -----------------------------------------------------------------------------------
async function loadConfig() {
  try {
    const r = await fetch("static/config.json", { cache: "no-store" });
    if (r.ok) return await r.json();
  } catch {
    /* no config: local defaults */
  }
  return {};
}

function bindUi() {
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !send(text)) return;
    input.value = "";
    autosize();
  });
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, innerHeight * 0.4) + "px";
  };
  input.addEventListener("input", () => {
    autosize();
    link?.checkSoon();
  });
  input.addEventListener("focus", () => link?.checkSoon());
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") {
      stop();
    }
  });
  const stop = () => {
    for (const a of answers.values()) {
      if (!a.done && a.conversationId === conversationId) {
        a.stopRequested = true;
        link.send({ action: "cancel", requestId: a.requestId });
      }
    }
  };
  $("stop").addEventListener("click", stop);
  $("new").addEventListener("click", newChat);
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault();  // focus without touching the address bar's #c=conversation
    input.focus();
  });
  $("signin").addEventListener("click", () => auth.signIn(config.oidc));
  $("signout").addEventListener("click", async () => {
    link?.stop();
    if (!(await auth.signOut(config.oidc))) setAuthState("signed-out");
  });
  document.addEventListener("visibilitychange", () => !document.hidden && link?.checkSoon());
  addEventListener("online", () => link && !link.open && !link.stopped && link.start());
  addEventListener("hashchange", () => {
    const id = new URLSearchParams(location.hash.slice(1)).get("c");
    if (id && id !== conversationId) loadConversation(id);
  });
}

async function main() {
  drawIcons();
  bindUi();
  auth.adoptTokenFromUrl();
  config = await loadConfig();
  if (config.oidc) {
    try {
      await auth.completeSignIn(config.oidc);
    } catch (err) {
      auth.forgetToken();  // a sign-in answer this tab did not ask for replaces nothing
      signInProblem = err.message;
    }
  }
  const token = auth.storedToken();
  if (!token) return setAuthState("signed-out");
  if (auth.secondsLeft(token) <= 0) return setAuthState("expired");
  if (config.oidc) $("signout").hidden = false;
  watchExpiry();
  // Adding documents needs documents:write (or admin); hide the control from readers whose token says so.
  const scopes = auth.claims(token)?.[config.scopesClaim || "scope"];
  const granted = typeof scopes === "string" ? scopes.split(" ") : Array.isArray(scopes) ? scopes : null;
  if (granted && !granted.some((s) => s === "documents:write" || s === "admin")) document.querySelector(".attach").hidden = true;
  initUploads({ apiUrl, token: auth.storedToken, onUnauthorized: () => setAuthState("unauthorized") });
  link = new Link(
    {
      url: wsUrl,
      probe: async () => {
        try {
          return (await fetch(apiUrl("/v1/conversations?limit=1"), {
            headers: { Authorization: "Bearer " + auth.storedToken() },
            signal: AbortSignal.timeout(10000),
          })).status;
        } catch {
          return 0;
        }
      },
      expecting,
      onFrame,
      onOpen,
      onState: (state) => setAuthState(state),
    },
    config.timing,
  );
  link.start();
  await sidebar.refresh();
  loadModels();
  const id = new URLSearchParams(location.hash.slice(1)).get("c");
  if (id) await loadConversation(id);
  else input.focus();
}

main();
