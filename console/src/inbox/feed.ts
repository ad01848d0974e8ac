// The inbox's live state: one EventSource on /admin/inbox/stream per open page. The
// `snapshot` event replaces everything (it comes first, and again after each reconnect, so
// nothing missed while the connection was down is kept stale); `conversation` and
// `removed` update the list; `message`, `turn` and `note` are passed on to the open
// conversation. Listeners are told at most every 40 ms, so a burst of updates (a busy shop
// pushes hundreds a second) costs one render.
import type { AgentInfo, BotTurn, ConvState, Group, InboxList, Message, Note, Summary } from "./types";

export type FeedStatus = "connecting" | "live" | "retrying";

/** What the stream says about one conversation, for its open pane. */
export type ConvEvent =
  | { type: "message"; message: Message }
  | { type: "turn"; turn: BotTurn }
  | { type: "note"; note: Note }
  | { type: "conversation"; summary: Summary }
  | { type: "removed" };

const STREAM = "/admin/inbox/stream";
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export class Feed {
  convs = new Map<string, Summary>();
  counts: Record<ConvState, number> = { waiting: 0, agent: 0, bot: 0, resolved: 0 };
  groups: Group[] = [];
  agents: AgentInfo[] = [];
  me = "";
  status: FeedStatus = "connecting";
  /** Whether a snapshot has arrived (the list is known). */
  ready = false;
  /** The server's clock minus ours, in ms, estimated from the snapshot's waiting times. */
  skew = 0;
  /** Bumped on every change, so a render can tell the list changed. */
  version = 0;

  private source: EventSource | null = null;
  private listeners = new Set<() => void>();
  private convListeners = new Map<string, Set<(e: ConvEvent) => void>>();
  private pending: ReturnType<typeof setTimeout> | null = null;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private backoff = RETRY_MIN_MS;
  private closed = false;
  /** Called when the stream fails repeatedly: the shell checks whether the session ended. */
  onTrouble: () => void = () => {};

  constructor(private readonly url = STREAM) {}

  /** Opens the stream (again). */
  open() {
    this.closed = false;
    this.source?.close();
    const es = new EventSource(this.url, { withCredentials: true });
    this.source = es;
    es.onopen = () => {
      this.backoff = RETRY_MIN_MS;
      this.setStatus("live");
    };
    es.onerror = () => {
      if (this.closed) return;
      // The browser reconnects by itself after a dropped connection (readyState
      // CONNECTING); an HTTP error closes the source for good, so retry here, slower
      // each time, and let the shell check whether the sign-in is still valid.
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        this.setStatus("retrying");
        this.onTrouble();
        this.retry = setTimeout(() => this.open(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, RETRY_MAX_MS);
      } else this.setStatus("retrying");
    };
    const on = (name: string, f: (data: any) => void) =>
      es.addEventListener(name, (ev) => {
        let data: any;
        try {
          data = JSON.parse((ev as MessageEvent).data);
        } catch {
          return; // a malformed event is skipped, not fatal
        }
        if (this.source === es) f(data);
      });
    on("snapshot", (d: InboxList) => this.snapshot(d));
    on("conversation", (s: Summary) => this.upsert(s));
    on("removed", (d: { session: string }) => this.remove(d.session));
    on("message", (d: Message & { session: string }) =>
      this.tell(d.session, { type: "message", message: { seq: d.seq, role: d.role, text: d.text, at: d.at } }),
    );
    on("turn", (d: { session: string; turn: BotTurn }) => this.tell(d.session, { type: "turn", turn: d.turn }));
    on("note", (d: { session: string; note?: Note } & Partial<Note>) =>
      this.tell(d.session, { type: "note", note: d.note ?? { agent: d.agent, text: d.text ?? "", at: d.at ?? Date.now() } }),
    );
  }

  /** Closes the stream for good (the page is left). */
  close() {
    this.closed = true;
    this.source?.close();
    this.source = null;
    if (this.retry) clearTimeout(this.retry);
    if (this.pending) clearTimeout(this.pending);
  }

  /** Listens to changes of the list; returns the unsubscribe. */
  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  /** Listens to one conversation's events; returns the unsubscribe. */
  watch(id: string, f: (e: ConvEvent) => void): () => void {
    let set = this.convListeners.get(id);
    if (!set) this.convListeners.set(id, (set = new Set()));
    set.add(f);
    return () => {
      set!.delete(f);
      if (!set!.size) this.convListeners.delete(id);
    };
  }

  /** The server's time now, by our clock corrected with the estimated skew. */
  now(): number {
    return Date.now() + this.skew;
  }

  /** Applies a summary the page learned otherwise (an action's answer, a detail load). */
  upsert(s: Summary) {
    if (!s || typeof s.id !== "string") return;
    const old = this.convs.get(s.id);
    if (old) this.counts[old.state] = Math.max(0, (this.counts[old.state] ?? 0) - 1);
    this.counts[s.state] = (this.counts[s.state] ?? 0) + 1;
    this.convs.set(s.id, s);
    this.tell(s.id, { type: "conversation", summary: s });
    this.changed();
  }

  private snapshot(d: InboxList) {
    this.convs = new Map((d.conversations ?? []).map((c) => [c.id, c]));
    const local: Record<ConvState, number> = { waiting: 0, agent: 0, bot: 0, resolved: 0 };
    for (const c of this.convs.values()) local[c.state] = (local[c.state] ?? 0) + 1;
    // The server counts every conversation it holds; the snapshot lists the most recent.
    this.counts = { ...local };
    for (const k of Object.keys(local) as ConvState[]) this.counts[k] = Math.max(local[k], d.counts?.[k] ?? 0);
    this.groups = d.groups ?? [];
    this.agents = d.agents ?? [];
    this.me = d.me ?? this.me;
    const sample = [...this.convs.values()].find((c) => c.state === "waiting" && c.since && typeof c.waiting_ms === "number");
    if (sample) this.skew = Math.max(-3_600_000, Math.min(3_600_000, sample.since! + sample.waiting_ms! - Date.now()));
    this.ready = true;
    this.setStatus("live");
    for (const [id, set] of this.convListeners) {
      const s = this.convs.get(id);
      if (s) for (const f of set) f({ type: "conversation", summary: s });
    }
    this.changed();
  }

  private remove(id: string) {
    const old = this.convs.get(id);
    if (!old) return;
    this.counts[old.state] = Math.max(0, (this.counts[old.state] ?? 0) - 1);
    this.convs.delete(id);
    this.tell(id, { type: "removed" });
    this.changed();
  }

  private tell(id: string, e: ConvEvent) {
    const set = this.convListeners.get(id);
    if (set) for (const f of set) f(e);
  }

  private setStatus(s: FeedStatus) {
    if (this.status === s) return;
    this.status = s;
    this.changed();
  }

  private changed() {
    this.version++;
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      for (const f of this.listeners) f();
    }, 40);
  }
}
