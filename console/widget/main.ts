// kefu's web widget: one script a shop puts on its pages.
//
//   <script src="https://KEFU/widget.js" data-site="KEY" async></script>
//
// Attributes: data-site (the site's key in kefu's channels file; required), data-lang
// (zh|en), data-title, data-color (#rgb or #rrggbb), data-product (the SKU of the product
// page; any data-product-NAME attribute adds product.NAME to the turn's context, so rules
// can read product.name, product.material...), data-dwell (seconds on a product page
// before its `product_dwell` event, default 60, 0 for none), data-user-id (the shop's
// customer id, when there is no signed identity), data-identity (a signed identity token,
// see docs/api.md).
//
// It finds kefu's address from its own `src`, draws a bubble and a chat panel in a shadow
// root (full screen under 480 px), sends each message to POST /v1/chat as a stream, keeps
// the conversation (session id and token in localStorage per site), draws it again from
// /v1/sessions/{id}/history after a reload, listens for agents' messages on
// /v1/sessions/{id}/events, and asks for a 1-5 rating when the conversation ends. Page
// events (a product page's dwell, `window.kefu.event(...)` from the shop's code; see
// events.ts) go to POST /v1/events, and a proactive message they bring arrives on the live
// stream, with the unread dot while the panel is closed. The camera button sends a photo
// (checked here for its size, then POST /v1/images and the chat with `images: [{id}]`),
// drawn at once in the customer's bubble, where the server's refusal is shown too. It
// talks to kefu only: no other request, no font download.

import { CSS } from "./style";
import { STRINGS, type Lang, type Strings } from "./i18n";
import { readEvents } from "./sse";
import { exposeEvents, watchDwell, type Post } from "./events";

interface Stored {
  id: string;
  token: string;
  turns: number;
  rated: boolean;
}

interface Done {
  reply?: string;
  source?: string;
  choices?: string[];
  handoff?: { reason?: string; place?: number | null } | null;
  session_token?: string;
  dropped?: boolean;
  trace?: { stage: string; detail: string }[];
}

interface ApiErrorBody {
  error?: { type?: string; message?: string; reply?: string };
}

/** A photo as the chat takes it: an upload's id. */
type PhotoInput = { id: string };

/** A photo's bubble: its element, and its error line. */
interface PhotoBubble {
  box: HTMLDivElement;
  error: (text: string, retry?: () => void) => void;
}

/** The largest photo sent (the server's default limit; it checks again). */
const MAX_PHOTO_BYTES = 10 * 1024 * 1024;

type Role = "customer" | "kefu" | "agent";

const ICON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 3C6.5 3 2 6.9 2 11.7c0 2.6 1.3 4.9 3.4 6.5L4.6 22l4.3-2.3c1 .3 2 .4 3.1.4 5.5 0 10-3.9 10-8.7S17.5 3 12 3zm-4.5 10a1.3 1.3 0 110-2.6 1.3 1.3 0 010 2.6zm4.5 0a1.3 1.3 0 110-2.6 1.3 1.3 0 010 2.6zm4.5 0a1.3 1.3 0 110-2.6 1.3 1.3 0 010 2.6z"/></svg>';

const CAMERA =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M9 4 7.2 6H4a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2V8a2 2 0 0 0-2-2h-3.2L15 4H9zm3 4.5a4.5 4.5 0 1 1 0 9 4.5 4.5 0 0 1 0-9zm0 2a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5z"/></svg>';

/** The script element that loaded this file. */
function ownScript(): HTMLScriptElement | null {
  const current = document.currentScript;
  if (current instanceof HTMLScriptElement && current.src) return current;
  return document.querySelector<HTMLScriptElement>('script[data-site][src*="widget.js"]');
}

/** A new session id: `w_` and 22 random base64url characters (128 bits). */
function newSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const b64 = btoa(String.fromCharCode(...bytes));
  return "w_" + b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

class Widget {
  private readonly base: string;
  private readonly site: string;
  private readonly t: Strings;
  private readonly storeKey: string;
  private readonly context: Record<string, unknown> | null;
  private readonly user: Record<string, unknown> | null;
  private readonly identity: string | null;
  private stored: Stored;
  private lastSeq = 0;
  private readonly seen = new Set<number>();
  private events: EventSource | null = null;
  private reconnectDelay = 2000;
  private busy = false;
  private askedLeaving = false;
  /** The bubbles of photos, by their element: a failed turn's error goes there too. */
  private readonly photos = new WeakMap<HTMLDivElement, PhotoBubble>();

  private readonly root: HTMLDivElement;
  private readonly bubble: HTMLButtonElement;
  private readonly dot: HTMLSpanElement;
  private readonly panel: HTMLElement;
  private readonly status: HTMLDivElement;
  private readonly log: HTMLDivElement;
  private readonly choices: HTMLDivElement;
  private readonly notice: HTMLDivElement;
  private readonly rate: HTMLDivElement;
  private readonly input: HTMLTextAreaElement;
  private readonly sendButton: HTMLButtonElement;
  private photoButton: HTMLButtonElement | null = null;

  constructor(script: HTMLScriptElement) {
    const data = script.dataset;
    this.base = script.src.replace(/\/widget\.js(?:[?#].*)?$/, "");
    this.site = data.site || "";
    const lang: Lang = data.lang === "en" || (!data.lang && /^en/i.test(document.documentElement.lang)) ? "en" : "zh";
    this.t = STRINGS[lang];
    this.storeKey = `kefu-widget:${this.site}`;
    this.identity = data.identity || null;
    this.user = !this.identity && data.userId ? { id: data.userId } : null;
    this.context = productContext(data);
    this.stored = this.load();

    const host = document.createElement("div");
    host.setAttribute("data-kefu-widget", "");
    // Inline and important: the host page's `* {...!important}` cannot restyle the host,
    // so nothing inherits into the shadow root.
    host.style.setProperty("all", "initial", "important");
    // Not positioned: the bubble and panel are fixed to the viewport themselves.
    host.style.setProperty("display", "contents", "important");
    const shadow = host.attachShadow({ mode: "open" });
    const style = el("style");
    style.textContent = CSS;
    this.root = el("div", "root");
    this.root.lang = lang === "zh" ? "zh-CN" : "en";
    const color = data.color && /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i.test(data.color) ? data.color : null;
    if (color) this.root.style.setProperty("--accent", color);

    this.bubble = el("button", "bubble");
    this.bubble.type = "button";
    this.bubble.setAttribute("aria-label", this.t.open);
    this.bubble.innerHTML = ICON; // a constant
    this.dot = el("span", "dot");
    this.dot.hidden = true;
    this.bubble.append(this.dot);

    this.panel = el("section", "panel");
    this.panel.hidden = true;
    this.panel.setAttribute("role", "dialog");
    const title = data.title || this.t.title;
    this.panel.setAttribute("aria-label", title);
    const header = el("header");
    const close = el("button", "close", "×");
    close.type = "button";
    close.setAttribute("aria-label", this.t.close);
    header.append(el("span", "title", title), close);
    this.status = el("div", "status");
    this.status.setAttribute("role", "status");
    this.status.hidden = true;
    this.log = el("div", "log");
    this.log.setAttribute("aria-live", "polite");
    this.choices = el("div", "choices");
    this.notice = el("div", "notice");
    this.notice.setAttribute("role", "alert");
    this.notice.hidden = true;
    this.rate = el("div", "rate");
    this.rate.hidden = true;
    const form = el("form");
    this.input = el("textarea");
    this.input.rows = 1;
    this.input.maxLength = 2000;
    this.input.placeholder = this.t.placeholder;
    this.input.setAttribute("aria-label", this.t.placeholder);
    this.sendButton = el("button", undefined, this.t.send);
    this.sendButton.type = "submit";
    form.append(...this.photoControls(), this.input, this.sendButton);
    this.panel.append(header, this.status, this.log, this.choices, this.notice, this.rate, form);
    this.root.append(this.bubble, this.panel);
    shadow.append(style, this.root);
    document.body.append(host);

    this.bubble.addEventListener("click", () => this.open());
    close.addEventListener("click", () => this.close());
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter breaks the line; not while an input method composes.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      }
    });

    if (this.stored.token) void this.restore();
    const post: Post = (type, fields) => this.postEvent(type, fields);
    watchDwell(data, post);
    exposeEvents(post);
  }

  /**
   * A page event to POST /v1/events (its conversation's token when it has one). When the
   * event started the conversation (a proactive message to a new visitor), the answer
   * carries its token: the live stream opens and brings the message.
   */
  private async postEvent(type: string, data: Record<string, unknown>): Promise<boolean> {
    const body: Record<string, unknown> = { type, session_id: this.stored.id, data };
    if (this.user) body.user = this.user;
    if (this.identity) body.identity = this.identity;
    const headers: Record<string, string> = { "Content-Type": "application/json", "X-Kefu-Site": this.site };
    if (this.stored.token) headers["X-Kefu-Session-Token"] = this.stored.token;
    try {
      const res = await fetch(`${this.base}/v1/events`, { method: "POST", headers, body: JSON.stringify(body) });
      if (!res.ok) return false;
      const answer = (await res.json().catch(() => ({}))) as { session_token?: string };
      if (answer.session_token && !this.stored.token) {
        this.stored.token = answer.session_token;
        this.save();
      }
      this.listen();
      return true;
    } catch {
      return false; // kefu unreachable: a page event is not worth a retry
    }
  }

  /** The stored conversation of this site, or a new one. */
  private load(): Stored {
    try {
      const raw = localStorage.getItem(this.storeKey);
      const s = raw ? (JSON.parse(raw) as Partial<Stored>) : null;
      if (s && typeof s.id === "string" && /^w_[A-Za-z0-9_-]{22}$/.test(s.id)) {
        return { id: s.id, token: String(s.token || ""), turns: Number(s.turns) || 0, rated: !!s.rated };
      }
    } catch {
      // No storage (a sandboxed frame, private mode): the conversation lasts the page.
    }
    return { id: newSessionId(), token: "", turns: 0, rated: false };
  }

  private save(): void {
    try {
      localStorage.setItem(this.storeKey, JSON.stringify(this.stored));
    } catch {
      // As above: kept in memory only.
    }
  }

  private url(path: string, query: Record<string, string> = {}): string {
    const q = new URLSearchParams({ ...query, site: this.site }).toString();
    return `${this.base}/v1/sessions/${encodeURIComponent(this.stored.id)}/${path}?${q}`;
  }

  private open(): void {
    this.panel.hidden = false;
    this.dot.hidden = true;
    if (!this.log.childElementCount) this.add("kefu", this.t.greeting);
    this.input.focus();
    this.scroll();
  }

  private close(): void {
    // Leaving after a real conversation: ask for a rating once before closing.
    if (this.stored.turns >= 2 && !this.stored.rated && !this.askedLeaving && this.rate.hidden) {
      this.askedLeaving = true;
      this.askRating(this.t.rateLeaving);
      return;
    }
    this.panel.hidden = true;
    this.bubble.focus();
  }

  private scroll(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }

  /** A message in the log. */
  private add(role: Role, text: string): { box: HTMLDivElement; set: (text: string) => void } {
    const box = el("div", `msg ${role}`);
    const who = role === "customer" ? this.t.me : role === "agent" ? this.t.agent : this.t.kefu;
    const body = el("div", "text", text);
    box.append(el("span", "who", who), body);
    this.log.append(box);
    this.scroll();
    return {
      box,
      set: (t: string) => {
        body.textContent = t;
        this.scroll();
      },
    };
  }

  private showStatus(text: string): void {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  private showNotice(text: string, retry?: () => void): void {
    this.notice.replaceChildren(el("span", undefined, text));
    if (retry) {
      const again = el("button", undefined, this.t.retry);
      again.type = "button";
      again.addEventListener("click", () => {
        this.notice.hidden = true;
        retry();
      });
      this.notice.append(again);
    }
    this.notice.hidden = false;
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    this.sendButton.disabled = busy;
    if (this.photoButton) this.photoButton.disabled = busy;
  }

  private submit(): void {
    const text = this.input.value.trim();
    if (!text || this.busy) return;
    this.input.value = "";
    void this.send(text, this.add("customer", text).box);
  }

  /** Sends one message (with its photos) and draws the answer as it streams in. */
  private async send(text: string, mine: HTMLDivElement, images?: PhotoInput[]): Promise<void> {
    this.setBusy(true);
    this.notice.hidden = true;
    this.choices.replaceChildren();
    mine.classList.remove("failed");
    let answer: ReturnType<Widget["add"]> | null = null;
    const drop = () => {
      answer?.box.remove();
      answer = null;
    };
    const failed = (message: string, retry: boolean) => {
      drop();
      mine.classList.add("failed");
      this.photos.get(mine)?.error(message);
      this.showNotice(message, retry ? () => void this.send(text, mine, images) : undefined);
    };
    const body: Record<string, unknown> = { session_id: this.stored.id, message: text, stream: true };
    if (images) body.images = images;
    if (this.context) body.context = this.context;
    if (this.user) body.user = this.user;
    if (this.identity) body.identity = this.identity;
    try {
      const res = await fetch(`${this.base}/v1/chat`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Kefu-Site": this.site },
        body: JSON.stringify(body),
      });
      if (!res.ok || !res.body) {
        const err = ((await res.json().catch(() => ({}))) as ApiErrorBody).error || {};
        if (res.status === 429) failed(this.t.tooFast, true);
        else if (err.reply) failed(err.reply, true); // store_unavailable: the shop's own words
        else if (images && photoError(this.t, err.type)) failed(photoError(this.t, err.type)!, false);
        else if (err.type === "message_too_long") failed(this.t.tooLong, false);
        else if (res.status >= 500) failed(this.t.unreachable, true);
        else failed(this.t.failed, true);
        return;
      }
      let streamed = "";
      // Set from the event callback: read through an object, not narrowed away.
      const got: { done: Done | null; error: ApiErrorBody["error"] | null } = { done: null, error: null };
      await readEvents(res.body, ({ event, data }) => {
        let parsed: Record<string, unknown> = {};
        try {
          parsed = JSON.parse(data) as Record<string, unknown>;
        } catch {
          return;
        }
        if (event === "delta") {
          streamed += String(parsed.text ?? "");
          const shown = answer ?? this.add("kefu", "");
          shown.box.classList.add("typing");
          shown.set(streamed);
          answer = shown;
        } else if (event === "retract") {
          // A person took the conversation over while the model wrote: withdrawn.
          streamed = "";
          drop();
        } else if (event === "done") {
          got.done = parsed as Done;
        } else if (event === "error") {
          got.error = (parsed as ApiErrorBody).error || {};
        }
      });
      if (got.error || !got.done) {
        failed(got.error?.reply || this.t.unreachable, true);
        return;
      }
      this.finish(got.done, answer);
    } catch {
      failed(this.t.unreachable, true);
    } finally {
      this.setBusy(false);
    }
  }

  /** The turn's `done`: its reply is what counts, whatever was streamed. */
  private finish(done: Done, answer: ReturnType<Widget["add"]> | null): void {
    if (done.reply && !done.dropped) {
      answer = answer || this.add("kefu", "");
      answer.box.classList.remove("typing");
      answer.set(done.reply);
    } else {
      answer?.box.remove();
    }
    if (done.session_token) this.stored.token = done.session_token;
    this.stored.turns += 1;
    this.save();
    for (const choice of done.choices || []) {
      const b = el("button", undefined, choice);
      b.type = "button";
      b.addEventListener("click", () => {
        if (this.busy) return;
        void this.send(choice, this.add("customer", choice).box);
      });
      this.choices.append(b);
    }
    if (done.handoff) this.showStatus(this.t.handoff);
    this.listen();
    const goodbye = done.source === "context" && (done.trace || []).some((s) => /goodbye/.test(s.detail));
    if (goodbye && !this.stored.rated) this.askRating(this.t.rateAsk);
  }

  /** Draws the kept conversation again (after a reload), then listens for agents. */
  private async restore(): Promise<void> {
    try {
      const res = await fetch(this.url("history", { token: this.stored.token }));
      if (res.status === 404) {
        // Gone (expired, or another kefu): a new conversation.
        this.stored = { id: newSessionId(), token: "", turns: 0, rated: false };
        this.save();
        return;
      }
      if (!res.ok) return;
      const h = (await res.json()) as {
        messages: { seq: number; role: Role; text: string; images?: number }[];
        state: string;
        resolved: boolean;
        rated: boolean;
      };
      for (const m of h.messages) {
        this.seen.add(m.seq);
        this.lastSeq = Math.max(this.lastSeq, m.seq);
        this.add(m.role, m.images ? [this.t.photoKept, m.text].filter(Boolean).join(" ") : m.text);
      }
      this.stored.rated = this.stored.rated || h.rated;
      this.save();
      this.onState(h.state, null);
      this.listen();
    } catch {
      // kefu unreachable now: the next message says so.
    }
  }

  /** The live channel: agents' messages and the conversation's state. */
  private listen(): void {
    if (this.events || !this.stored.token || typeof EventSource === "undefined") return;
    const source = new EventSource(this.url("events", { token: this.stored.token, after: String(this.lastSeq) }));
    this.events = source;
    source.addEventListener("open", () => {
      this.reconnectDelay = 2000;
    });
    source.addEventListener("message", (ev) => {
      let m: { seq: number; role: string; text: string };
      try {
        m = JSON.parse((ev as MessageEvent<string>).data);
      } catch {
        return;
      }
      if (this.seen.has(m.seq)) return; // each message once
      this.seen.add(m.seq);
      this.lastSeq = Math.max(this.lastSeq, m.seq);
      this.add(m.role === "agent" ? "agent" : "kefu", m.text);
      if (this.panel.hidden) this.dot.hidden = false;
    });
    source.addEventListener("state", (ev) => {
      try {
        const s = JSON.parse((ev as MessageEvent<string>).data) as { state: string; place?: { position?: number } };
        this.onState(s.state, s.place?.position ?? null);
      } catch {
        // not a state event
      }
    });
    source.addEventListener("error", () => {
      // The browser reconnects by itself after a dropped connection; a refusal (404,
      // 429) closes the source: open it again later, from the last message seen.
      if (source.readyState !== EventSource.CLOSED) return;
      this.events = null;
      const delay = this.reconnectDelay;
      this.reconnectDelay = Math.min(delay * 2, 60_000);
      setTimeout(() => this.listen(), delay);
    });
  }

  private onState(state: string, position: number | null): void {
    if (state === "waiting") this.showStatus(this.t.waiting(position ? position - 1 : 0));
    else if (state === "agent") this.showStatus(this.t.withAgent);
    else if (state === "resolved") {
      this.showStatus(this.t.resolved);
      if (!this.stored.rated) this.askRating(this.t.rateAsk);
    } else this.showStatus("");
  }

  // ---- Photos: the camera button, the upload, the photo's bubble ----

  /** The camera button and its file input (`accept="image/*"`: phones offer the camera). */
  private photoControls(): HTMLElement[] {
    const file = el("input");
    file.type = "file";
    file.accept = "image/*";
    file.hidden = true;
    file.tabIndex = -1;
    const button = el("button", "photo");
    button.type = "button";
    button.title = this.t.photo;
    button.setAttribute("aria-label", this.t.photo);
    button.innerHTML = CAMERA; // a constant
    button.addEventListener("click", () => {
      if (!this.busy) file.click();
    });
    file.addEventListener("change", () => {
      const chosen = file.files?.[0];
      file.value = ""; // the same photo again is a new choice
      if (chosen) void this.sendPhoto(chosen);
    });
    this.photoButton = button;
    return [button, file];
  }

  /** The customer's bubble for a photo: its thumbnail at once, an error line under it. */
  private addPhoto(file: File): PhotoBubble {
    const box = el("div", "msg customer");
    const frame = el("div", "photo");
    const img = el("img");
    img.alt = this.t.myPhoto;
    img.src = URL.createObjectURL(file);
    frame.append(img);
    const err = el("div", "err");
    err.setAttribute("role", "alert");
    err.hidden = true;
    box.append(el("span", "who", this.t.me), frame, err);
    img.addEventListener("load", () => this.scroll());
    // Not a picture the browser can draw (a refused file, a format it lacks): a mark.
    img.addEventListener("error", () => frame.replaceWith(el("div", "text", this.t.photoKept)), { once: true });
    this.log.append(box);
    this.scroll();
    const bubble: PhotoBubble = {
      box,
      error: (text, retry) => {
        box.classList.toggle("failed", !!text);
        err.replaceChildren(el("span", undefined, text));
        if (retry) {
          const again = el("button", undefined, this.t.retry);
          again.type = "button";
          again.addEventListener("click", retry);
          err.append(again);
        }
        err.hidden = !text;
        this.scroll();
      },
    };
    this.photos.set(box, bubble);
    return bubble;
  }

  /** One photo: checked here (size, a picture at all), drawn, uploaded, then its turn. */
  private async sendPhoto(file: File, shown?: PhotoBubble): Promise<void> {
    if (this.busy) return;
    const bubble = shown ?? this.addPhoto(file);
    bubble.error("");
    this.notice.hidden = true;
    if (file.size > MAX_PHOTO_BYTES) return bubble.error(this.t.photoTooLarge);
    if (file.type && !file.type.startsWith("image/")) return bubble.error(this.t.photoType);
    this.setBusy(true);
    let image: PhotoInput;
    try {
      image = await this.upload(file);
    } catch (e) {
      this.setBusy(false);
      const words = e instanceof Error && e.name === "photo" ? e.message : this.t.unreachable;
      const retry = e instanceof Error && e.name === "photo" && !e.cause ? undefined : () => void this.sendPhoto(file, bubble);
      return bubble.error(words, retry);
    }
    this.setBusy(false);
    await this.send("", bubble.box, [image]);
  }

  /**
   * The photo's bytes to kefu: `POST /v1/images` (201 `{id}`), with the conversation's
   * token once it has one (a new conversation's first photo needs none: its message
   * starts it). A refusal throws an Error named `photo` in the customer's words (`cause`
   * set when trying again may help).
   */
  private async upload(file: File): Promise<PhotoInput> {
    const headers: Record<string, string> = { "Content-Type": file.type || "application/octet-stream", "X-Kefu-Site": this.site };
    if (this.stored.token) headers["X-Kefu-Session-Token"] = this.stored.token;
    const q = new URLSearchParams({ session_id: this.stored.id, site: this.site });
    const res = await fetch(`${this.base}/v1/images?${q}`, { method: "POST", headers, body: file });
    const answer = (await res.json().catch(() => ({}))) as ApiErrorBody & { id?: string };
    if (res.ok && answer.id) return { id: answer.id };
    const error = new Error(
      res.status === 429 ? this.t.tooFast : photoError(this.t, answer.error?.type) || (res.status >= 500 ? this.t.unreachable : this.t.photoFailed),
    );
    error.name = "photo";
    if (res.status === 429 || res.status >= 500) error.cause = res.status;
    throw error;
  }

  /** The 1-5 rating, with an optional comment, to POST /v1/sessions/{id}/feedback. */
  private askRating(question: string): void {
    if (!this.stored.token) return;
    let score = 0;
    const stars = el("div", "stars");
    stars.setAttribute("role", "radiogroup");
    const submit = el("button", "primary", this.t.submit);
    submit.type = "button";
    submit.disabled = true;
    const buttons: HTMLButtonElement[] = [];
    for (let n = 1; n <= 5; n++) {
      const b = el("button", undefined, "★");
      b.type = "button";
      b.setAttribute("role", "radio");
      b.setAttribute("aria-label", this.t.star(n));
      b.addEventListener("click", () => {
        score = n;
        buttons.forEach((x, i) => {
          x.classList.toggle("on", i < n);
          x.setAttribute("aria-checked", String(i === n - 1));
        });
        submit.disabled = false;
      });
      buttons.push(b);
      stars.append(b);
    }
    const comment = el("textarea");
    comment.maxLength = 500;
    comment.placeholder = this.t.comment;
    comment.setAttribute("aria-label", this.t.comment);
    const skip = el("button", "plain", this.t.skip);
    skip.type = "button";
    skip.addEventListener("click", () => {
      this.rate.hidden = true;
    });
    const acts = el("div", "acts");
    acts.append(skip, submit);
    submit.addEventListener("click", () => void this.rateWith(score, comment.value.trim(), submit));
    this.rate.replaceChildren(el("div", "ask", question), stars, comment, acts);
    this.rate.hidden = false;
    this.scroll();
  }

  private async rateWith(score: number, comment: string, submit: HTMLButtonElement): Promise<void> {
    submit.disabled = true;
    try {
      const res = await fetch(this.url("feedback").replace(/\?.*$/, ""), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Kefu-Site": this.site },
        body: JSON.stringify({ score, comment: comment || undefined, session_token: this.stored.token }),
      });
      const err = res.ok ? null : ((await res.json().catch(() => ({}))) as ApiErrorBody).error || {};
      if (res.ok || /already/.test(err?.type || "")) {
        this.stored.rated = true;
        this.save();
        this.rate.replaceChildren(el("div", "done", res.ok ? this.t.thanks : this.t.rated));
        return;
      }
      this.showNotice(res.status === 429 ? this.t.tooFast : this.t.failed);
    } catch {
      this.showNotice(this.t.unreachable);
    }
    submit.disabled = false;
  }
}

/** The customer's words for a refused photo (the server's error `type`), if it is one. */
function photoError(t: Strings, type?: string): string | null {
  switch (type) {
    case "image_too_large":
      return t.photoTooLarge;
    case "image_too_large_pixels":
      return t.photoPixels;
    case "unsupported_image":
      return t.photoType;
    case "bad_image":
      return t.photoBad;
    case "too_many_images":
    case "too_many_images_today":
      return t.photoTooMany;
    default:
      return null;
  }
}

/** `context.product` from `data-product` (the id) and `data-product-NAME` attributes. */
function productContext(data: DOMStringMap): Record<string, unknown> | null {
  if (!data.product) return null;
  const product: Record<string, string> = { id: data.product };
  for (const [key, value] of Object.entries(data)) {
    const m = /^product([A-Z][A-Za-z0-9]*)$/.exec(key);
    if (m && value !== undefined) {
      // data-product-name → productName → name
      const name = m[1].replace(/[A-Z]/g, (c, i: number) => (i ? "_" : "") + c.toLowerCase());
      product[name] = value;
    }
  }
  return { product };
}

function start(): void {
  const script = ownScript();
  if (!script || !script.dataset.site) {
    console.warn("kefu widget: the script tag needs data-site (the site's key in kefu's channels file)");
    return;
  }
  const go = () => new Widget(script);
  if (document.body) go();
  else document.addEventListener("DOMContentLoaded", go, { once: true });
}

start();
