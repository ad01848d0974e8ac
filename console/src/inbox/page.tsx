// The agent inbox (/console/inbox): the live list of conversations by state (waiting
// first), filters and search on the left, the chosen conversation on the right. The list
// is pushed by /admin/inbox/stream (feed.ts); the conversation pane is in conversation.tsx.
// On a phone the two are separate screens: the list, then the conversation with a back
// button (the chosen conversation is the URL's `?c=`, so the browser's back works too).
// This module is its own chunk, loaded when the page is first opened.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { ErrorBox } from "../ui";
import { t } from "../i18n";
import { href, navigate, useLocation } from "../router";
import { Feed } from "./feed";
import { Conversation } from "./conversation";
import { clock, duration, kindName } from "./format";
import { STATES, type ConvState, type Summary } from "./types";
import "./strings";
import "./inbox.css";

/** How many rows a tab shows before "show more" (the DOM stays small with 1,000 live). */
const PAGE_ROWS = 150;

/** Re-renders whenever the feed changes. */
function useFeed(feed: Feed) {
  const [, set] = useState(0);
  useEffect(() => feed.subscribe(() => set(feed.version)), [feed]);
}

/** Re-renders every `ms` (the waiting times tick). */
function useTick(ms: number) {
  const [, set] = useState(0);
  useEffect(() => {
    const i = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(i);
  }, [ms]);
}

interface Filters {
  state: ConvState;
  angry: boolean;
  vip: boolean;
  mine: boolean;
  group: string;
  q: string;
}

function matches(c: Summary, f: Filters, me: string): boolean {
  if (c.state !== f.state) return false;
  if (f.angry && !c.angry) return false;
  if (f.vip && !c.vip) return false;
  if (f.mine && c.agent !== me) return false;
  if (f.group && c.group !== f.group) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    const hay = [c.id, c.last_text, c.reason, c.group, c.agent].filter(Boolean).join(" ").toLowerCase();
    if (!hay.includes(q)) return false;
  }
  return true;
}

/** Waiting: longest wait first. Others: the latest activity first (mine first when with an agent). */
function order(state: ConvState, me: string) {
  return (a: Summary, b: Summary) => {
    if (state === "waiting") return (a.since ?? 0) - (b.since ?? 0) || a.id.localeCompare(b.id);
    if (state === "agent") {
      const am = a.agent === me ? 0 : 1;
      const bm = b.agent === me ? 0 : 1;
      if (am !== bm) return am - bm;
    }
    return (b.last_at ?? 0) - (a.last_at ?? 0) || a.id.localeCompare(b.id);
  };
}

export function InboxPage(props: { user: string; can: string[] }) {
  const feed = useMemo(() => new Feed(), []);
  const [refused, setRefused] = useState<unknown>(null);
  useEffect(() => {
    // An EventSource does not say why it failed. The list route does: a 401 (the sign-in
    // ended) makes the shell show the sign-in page; a 403 (a role without `agent`) is
    // shown here and the stream is given up.
    feed.onTrouble = () =>
      void api("GET", "/admin/inbox?limit=1").catch((e) => {
        if (e instanceof ApiError && e.status === 403) {
          feed.close();
          setRefused(e);
        }
      });
    feed.open();
    return () => feed.close();
  }, [feed]);
  useFeed(feed);
  useTick(1000);
  const loc = useLocation();
  const selected = loc.query.get("c") ?? "";
  const me = feed.me || props.user;
  const [f, setF] = useState<Filters>({ state: "waiting", angry: false, vip: false, mine: false, group: "", q: "" });
  const [shown, setShown] = useState(PAGE_ROWS);
  const set = (patch: Partial<Filters>) => {
    setF({ ...f, ...patch });
    setShown(PAGE_ROWS);
  };

  const rows = useMemo(
    () => [...feed.convs.values()].filter((c) => matches(c, f, me)).sort(order(f.state, me)),
    [feed.version, f, me],
  );
  const open = (id: string) => navigate(href("/inbox", { c: id }));
  if (refused)
    return (
      <section>
        <h1>{t("ib.title")}</h1>
        <ErrorBox error={refused} />
      </section>
    );
  const online = feed.agents.filter((a) => a.online).length;

  return (
    <section class={"inbox" + (selected ? " has-conv" : "")}>
      <div class="ib-list" aria-label={t("ib.title")}>
        <div class="ib-head">
          <h1>{t("ib.title")}</h1>
          <span class="spacer" />
          <span class={"ib-status ib-" + feed.status} data-testid="inbox-status" role="status">
            <span class="dot" />
            {feed.status === "live" ? t("ib.live") : feed.status === "connecting" ? t("ib.connecting") : t("ib.retrying")}
          </span>
        </div>
        <div class="ib-tabs" role="tablist">
          {STATES.map((s) => (
            <button
              type="button"
              role="tab"
              aria-selected={f.state === s}
              class={"ib-tab" + (f.state === s ? " active" : "") + (s === "waiting" && feed.counts.waiting ? " hot" : "")}
              data-testid={"inbox-tab-" + s}
              onClick={() => set({ state: s })}
            >
              {t("ib.state." + s)}
              <span class="ib-count">{feed.counts[s] ?? 0}</span>
            </button>
          ))}
        </div>
        <div class="ib-filters">
          <input type="search" placeholder={t("ib.search")} aria-label={t("ib.search")} value={f.q} onInput={(e) => set({ q: (e.target as HTMLInputElement).value })} />
          <div class="ib-chips">
            {(["angry", "vip", "mine"] as const).map((k) => (
              <button type="button" class={"chip" + (f[k] ? " on" : "")} aria-pressed={f[k]} onClick={() => set({ [k]: !f[k] })}>
                {t("ib." + k)}
              </button>
            ))}
            {feed.groups.length ? (
              <select aria-label={t("ib.all_groups")} value={f.group} onChange={(e) => set({ group: (e.target as HTMLSelectElement).value })}>
                <option value="">{t("ib.all_groups")}</option>
                {feed.groups.map((g) => {
                  const label = g.label || g.name;
                  return (
                    <option value={g.name}>
                      {g.open === false ? t("ib.group_closed", { label }) : label}
                      {g.waiting ? ` · ${g.waiting}` : ""}
                    </option>
                  );
                })}
              </select>
            ) : null}
          </div>
          {feed.agents.length ? <div class="muted small">{t("ib.agents_online", { n: online })}</div> : null}
        </div>
        <ul class="ib-rows" data-testid="inbox-list">
          {rows.slice(0, shown).map((c) => (
            <Row c={c} me={me} now={feed.now()} active={c.id === selected} onOpen={() => open(c.id)} />
          ))}
        </ul>
        {rows.length > shown ? (
          <button type="button" class="ib-more" onClick={() => setShown(shown + PAGE_ROWS)}>
            {t("ib.more", { n: Math.min(PAGE_ROWS, rows.length - shown) })}
          </button>
        ) : null}
        {feed.ready && !rows.length ? <p class="muted ib-empty">{feed.counts[f.state] ? t("ib.empty_filtered") : t("ib.empty")}</p> : null}
      </div>
      <div class="ib-conv">
        {selected ? (
          <Conversation key={selected} id={selected} feed={feed} me={me} can={props.can} onBack={() => navigate(href("/inbox"))} />
        ) : (
          <div class="ib-pick muted">{t("ib.pick")}</div>
        )}
      </div>
    </section>
  );
}

function Row(props: { c: Summary; me: string; now: number; active: boolean; onOpen: () => void }) {
  const c = props.c;
  const waiting = c.state === "waiting" && c.since ? props.now - c.since : null;
  return (
    <li>
      <a
        href={href("/inbox", { c: c.id })}
        class={"ib-row" + (props.active ? " active" : "") + (c.angry ? " angry" : "")}
        aria-current={props.active ? "true" : undefined}
        data-testid="inbox-row"
        data-id={c.id}
        onClick={(e) => {
          e.preventDefault();
          props.onOpen();
        }}
      >
        <div class="ib-row-top">
          <span class="ib-id">{c.id}</span>
          {c.vip ? <span class="badge vip">VIP</span> : null}
          {c.angry || c.emotion === "angry" ? (
            <span class="emo angry" title={t("ib.angry")}>
              {t("ib.angry")}
            </span>
          ) : null}
          <span class="spacer" />
          {waiting !== null ? (
            <span class={"ib-wait" + (waiting > 180_000 ? " late" : "")} data-testid="inbox-waiting">
              {duration(waiting)}
            </span>
          ) : c.last_at ? (
            <span class="muted small">{clock(c.last_at)}</span>
          ) : null}
        </div>
        {c.reason || c.kind || c.group || (c.state === "agent" && c.agent) ? (
          <div class="ib-row-mid">
            {c.kind ? <span class={"badge kind k-" + c.kind}>{kindName(c.kind)}</span> : null}
            {c.reason ? <span class="ib-reason">{c.reason}</span> : null}
            {c.group ? <span class="badge grp">{c.group}</span> : null}
            {c.state === "agent" && c.agent ? <span class="muted small">{c.agent === props.me ? t("ib.held_by_me") : t("ib.held_by", { agent: c.agent })}</span> : null}
          </div>
        ) : null}
        <div class="ib-preview">
          {c.last_role && c.last_role !== "user" ? <span class="muted">{t("ib.said", { who: t("ib.role." + c.last_role) })}</span> : null}
          {c.last_images ? <span class="ib-photo-mark">{t("ib.photos_n", { n: c.last_images })}</span> : null}
          {c.last_text ?? ""}
          {c.unread ? <span class="ib-unread">{c.unread}</span> : null}
        </div>
      </a>
    </li>
  );
}
