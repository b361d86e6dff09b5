// The WebSocket link: connect, notice a dead link, reconnect with backoff, and tell a refused token
// apart from a network problem.
//
// A browser never sees the HTTP status of a refused handshake (every failure reads as close 1006),
// so after a handshake fails the page asks the REST API with the same token: 401 means the token
// is not (or no longer) accepted, 403 that it lacks the chat scope; only then does it stop retrying.
//
// A stalled network (no FIN, no RST) looks "open" for minutes. Pings cost an invocation each in the
// cloud, so they are sent when an answer is expected and the link has been quiet for `streamPingS`,
// when the user comes back to the page or starts typing, and every `idlePingS` otherwise (under API
// Gateway's 10-minute idle limit). No frame within `pongDeadlineS` of a ping: the link is dropped
// and rebuilt, and unfinished answers resume.

export const DEFAULT_TIMING = { streamPingS: 8, idlePingS: 240, pongDeadlineS: 20, activePingS: 30 };

export class Link {
  /**
   * @param {object} o
   * @param {() => string} o.url WebSocket URL (with the current token)
   * @param {() => Promise<number>} o.probe HTTP status of an authenticated REST call (0: unreachable)
   * @param {() => boolean} o.expecting whether an answer is on its way (pings sooner)
   * @param {(frame: object) => void} o.onFrame
   * @param {(state: string) => void} o.onState "connecting" | "online" | "reconnecting" | "unauthorized" | "forbidden"
   * @param {() => void} o.onOpen
   */
  constructor(o, timing = DEFAULT_TIMING) {
    this.o = o;
    this.t = { ...DEFAULT_TIMING, ...timing };
    this.ws = null;
    this.backoffMs = 500;
    this.lastFrameAt = 0;
    this.pingSentAt = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.connect(false);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.drop();
  }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  connect(retrying) {
    this.o.onState(retrying ? "reconnecting" : "connecting");
    let opened = false;
    const ws = new WebSocket(this.o.url());
    this.ws = ws;
    // A handshake into a stalled network neither opens nor fails for a long time: give up and retry.
    const giveUp = setTimeout(() => {
      if (this.ws === ws && !opened) {
        this.drop();
        this.afterClose(true);
      }
    }, this.t.pongDeadlineS * 1000);
    ws.onopen = () => {
      clearTimeout(giveUp);
      opened = true;
      this.backoffMs = 500;
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      this.o.onState("online");
      this.o.onOpen();
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;  // not a protocol frame
      }
      this.o.onFrame(frame);
    };
    ws.onclose = () => {
      clearTimeout(giveUp);
      if (this.ws !== ws) return;
      this.ws = null;
      this.afterClose(opened);
    };
  }

  async afterClose(opened) {
    if (this.stopped) return;
    if (!opened) {
      const status = await this.o.probe();
      if (status === 401) return this.o.onState("unauthorized");
      if (status === 403) return this.o.onState("forbidden");
    }
    this.o.onState("reconnecting");
    // The server closing an idle or long-lived link (1001) is routine: come back at once.
    const delay = opened ? 200 : this.backoffMs;
    if (!opened) this.backoffMs = Math.min(this.backoffMs * 2, 15000);
    this.retryTimer = setTimeout(() => this.connect(true), delay + Math.random() * 250);
  }

  /** Abandon the current socket (it may be stalled: its close handshake would never finish). */
  drop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
  }

  ping() {
    if (this.open && !this.pingSentAt) {
      this.pingSentAt = Date.now();
      this.ws.send('{"action":"ping"}');
    }
  }

  /** The user is here (typing, back on the tab): make sure "connected" is true before they rely on it. */
  checkSoon() {
    if (Date.now() - this.lastFrameAt > this.t.activePingS * 1000) this.ping();
  }

  tick() {
    if (!this.open) return;
    const now = Date.now();
    if (this.pingSentAt && now - this.pingSentAt > this.t.pongDeadlineS * 1000) {
      this.drop();
      this.afterClose(true);
      return;
    }
    const quiet = (now - this.lastFrameAt) / 1000;
    if (quiet > (this.o.expecting() ? this.t.streamPingS : this.t.idlePingS)) this.ping();
  }
}
