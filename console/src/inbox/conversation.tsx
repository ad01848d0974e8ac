// One conversation in the inbox: the transcript (customer, bot and agent bubbles, each bot
// answer's trace folded under it), the actions (take over, release, resolve), the reply
// box with canned replies and the rules' suggestion, and the customer's profile, context
// and the agents' notes. Loaded from GET /admin/inbox/{id}, then kept current by the
// inbox stream's events for this conversation (feed.ts). Every write goes through `api`
// (the CSRF header) to the session routes; the server names the agent from the sign-in.
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { t } from "../i18n";
import { Confirm, ErrorBox, Loading, show } from "../ui";
import type { ConvEvent, Feed } from "./feed";
import { clock, duration, kindName } from "./format";
import { Photos } from "./photos";
import type { BotTurn, Canned, Detail, Message, Suggestion } from "./types";

const enc = encodeURIComponent;

type Dialog = { kind: "force"; agent: string } | { kind: "release" } | { kind: "resolve" } | null;

/** `d` with one stream event applied (messages and turns once each, by seq). */
function apply(d: Detail, e: ConvEvent): Detail {
  switch (e.type) {
    case "message":
      if (d.messages.some((m) => m.seq === e.message.seq)) return d;
      return { ...d, messages: [...d.messages, e.message].sort((a, b) => a.seq - b.seq) };
    case "turn":
      if (d.turns.some((x) => x.seq === e.turn.seq)) return d;
      return { ...d, turns: [...d.turns, e.turn] };
    case "note":
      if (d.notes.some((n) => n.at === e.note.at && n.text === e.note.text)) return d;
      return { ...d, notes: [...d.notes, e.note] };
    case "conversation":
      return { ...d, summary: e.summary };
    default:
      return d;
  }
}

export function Conversation(props: { id: string; feed: Feed; me: string; can: string[]; onBack: () => void }) {
  const { id, feed, me } = props;
  const [detail, setDetail] = useState<Detail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState("");
  const [dialog, setDialog] = useState<Dialog>(null);
  const [side, setSide] = useState(false); // phone: the details screen instead of the chat
  const early = useRef<ConvEvent[] | null>([]);

  const load = () =>
    api<Detail>("GET", `/admin/inbox/${enc(id)}`).then(
      (d) => {
        let next: Detail = { ...d, messages: d.messages ?? [], turns: d.turns ?? [], notes: d.notes ?? [] };
        // Events that arrived while this was loading may be newer than what it read.
        for (const e of early.current ?? []) next = apply(next, e);
        early.current = null;
        setDetail(next);
        setError(null);
      },
      (e) => setError(e),
    );

  useEffect(() => {
    early.current = [];
    load();
    return feed.watch(id, (e) => {
      if (early.current) early.current.push(e);
      else setDetail((d) => (d ? apply(d, e) : d));
    });
  }, [id]);

  /** Runs a write; reloads the conversation after it (the stream says so too, later). */
  const act = async (name: string, f: () => Promise<unknown>) => {
    setBusy(name);
    setActionError(null);
    try {
      await f();
      early.current = [];
      await load();
    } catch (e) {
      if (e instanceof ApiError && e.type === "held_by_other") setDialog({ kind: "force", agent: String(e.details.agent ?? "") });
      else setActionError(e);
    } finally {
      setBusy("");
    }
  };
  const takeover = (force = false) => act("takeover", () => api("POST", `/v1/sessions/${enc(id)}/takeover`, force ? { force: true } : {}));

  if (error instanceof ApiError && error.status === 404)
    return (
      <div class="ib-pane">
        <PaneBar onBack={props.onBack} id={id} />
        <p class="muted ib-pick">{t("ib.not_found")}</p>
      </div>
    );
  if (error)
    return (
      <div class="ib-pane">
        <PaneBar onBack={props.onBack} id={id} />
        <ErrorBox error={error} />
      </div>
    );
  if (!detail)
    return (
      <div class="ib-pane">
        <PaneBar onBack={props.onBack} id={id} />
        <Loading />
      </div>
    );

  const s = feed.convs.get(id) ?? detail.summary;
  const mine = s.state === "agent" && s.agent === me;
  const other = s.state === "agent" && s.agent && s.agent !== me ? s.agent : "";
  const canReply = s.state === "waiting" || (s.state === "agent" && !other);
  const paused = detail.takeover?.paused_flow?.name ?? "";

  return (
    <div class={"ib-pane" + (side ? " show-side" : "")} data-testid="inbox-conversation" data-state={s.state}>
      <PaneBar onBack={props.onBack} id={id}>
        <StateBadges s={s} me={me} now={feed.now()} />
        <span class="spacer" />
        <div class="ib-actions">
          {!mine ? (
            <button type="button" class="primary" data-testid="inbox-takeover" disabled={!!busy} onClick={() => takeover(false)}>
              {t("ib.takeover")}
            </button>
          ) : null}
          {mine || (s.state === "waiting" && !other) ? (
            <button type="button" data-testid="inbox-release" disabled={!!busy} onClick={() => setDialog({ kind: "release" })}>
              {t("ib.release")}
            </button>
          ) : null}
          {s.state !== "resolved" && s.state !== "bot" && !other ? (
            <button type="button" data-testid="inbox-resolve" disabled={!!busy} onClick={() => setDialog({ kind: "resolve" })}>
              {t("ib.resolve")}
            </button>
          ) : null}
          <button type="button" class="ib-side-toggle" aria-pressed={side} onClick={() => setSide(!side)}>
            {side ? t("ib.chat") : t("ib.details")}
          </button>
        </div>
      </PaneBar>
      {actionError ? <ErrorBox error={actionError} /> : null}
      <div class="ib-body">
        <div class="ib-main">
          <Transcript messages={detail.messages} turns={detail.turns} />
          {canReply ? (
            <Composer id={id} group={s.group ?? ""} busy={busy} act={act} />
          ) : (
            <div class="ib-hint" data-testid="inbox-hint">
              {other ? t("ib.other_hint", { agent: other }) : s.state === "resolved" ? t("ib.closed_hint") : t("ib.take_first")}
              {other ? (
                <button type="button" disabled={!!busy} onClick={() => setDialog({ kind: "force", agent: other })}>
                  {t("ib.force")}
                </button>
              ) : null}
            </div>
          )}
        </div>
        <SidePanel detail={detail} id={id} act={act} busy={busy} />
      </div>
      {dialog?.kind === "force" ? (
        <Confirm
          title={t("ib.force_title")}
          body={t("ib.force_body", { agent: dialog.agent || "?" })}
          confirm={t("ib.force")}
          danger
          busy={!!busy}
          onCancel={() => setDialog(null)}
          onConfirm={() => {
            setDialog(null);
            takeover(true);
          }}
        />
      ) : null}
      {dialog?.kind === "release" ? (
        <ReleaseDialog
          flow={paused}
          onCancel={() => setDialog(null)}
          onRelease={(resume) => {
            setDialog(null);
            act("release", () => api("POST", `/v1/sessions/${enc(id)}/release`, { flow: resume ? "resume" : "cancel" }));
          }}
        />
      ) : null}
      {dialog?.kind === "resolve" ? (
        <ResolveDialog
          onCancel={() => setDialog(null)}
          onResolve={(outcome) => {
            setDialog(null);
            act("resolve", () => api("POST", `/v1/sessions/${enc(id)}/resolve`, { outcome }));
          }}
        />
      ) : null}
    </div>
  );
}

function PaneBar(props: { id: string; onBack: () => void; children?: ComponentChildren }) {
  return (
    <div class="ib-bar">
      <button type="button" class="ib-back" aria-label={t("ib.back")} data-testid="inbox-back" onClick={props.onBack}>
        ‹ {t("ib.back")}
      </button>
      <h2 class="ib-conv-id">{props.id}</h2>
      {props.children}
    </div>
  );
}

function StateBadges(props: { s: Detail["summary"]; me: string; now: number }) {
  const s = props.s;
  return (
    <span class="ib-badges">
      <span class={"pill st-" + s.state} data-testid="inbox-state">
        {t("ib.state." + s.state)}
        {s.state === "waiting" && s.since ? " · " + duration(props.now - s.since) : ""}
        {s.state === "agent" && s.agent ? " · " + (s.agent === props.me ? t("ib.me") : s.agent) : ""}
      </span>
      {s.kind ? <span class={"badge kind k-" + s.kind}>{kindName(s.kind)}</span> : null}
      {s.reason ? <span class="ib-reason">{s.reason}</span> : null}
      {s.group ? <span class="badge grp">{s.group}</span> : null}
      {s.vip ? <span class="badge vip">VIP</span> : null}
      {s.angry ? <span class="emo angry">{t("ib.angry")}</span> : null}
    </span>
  );
}

/** The messages as bubbles; a bot answer carries its turn's trace, folded. */
function Transcript(props: { messages: Message[]; turns: BotTurn[] }) {
  const box = useRef<HTMLDivElement>(null);
  const last = props.messages.length ? props.messages[props.messages.length - 1].seq : 0;
  // Follow new messages when the agent is at (or near) the bottom; leave them reading otherwise.
  const pinned = useRef(true);
  useEffect(() => {
    const el = box.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [last]);
  const bySeq = new Map(props.turns.map((x) => [x.seq, x]));
  const used = new Set<number>();
  let prevUser: Message | null = null;
  const items = props.messages.map((m) => {
    let turn: BotTurn | undefined;
    if (m.role === "user") prevUser = m;
    else if (m.role === "bot") {
      turn = bySeq.get(m.seq) ?? (prevUser ? bySeq.get(prevUser.seq) : undefined);
      if (turn && used.has(turn.seq)) turn = undefined;
      if (turn) used.add(turn.seq);
    }
    return (
      <div class={"bubble-row r-" + m.role} data-testid={"msg-" + m.role} data-seq={m.seq}>
        <div class="bubble">
          <div class="b-meta">
            {t("ib.role." + m.role)} · {clock(m.at)}
          </div>
          {m.text ? <div class="b-text">{m.text}</div> : null}
          {m.images?.length ? <Photos images={m.images} /> : null}
          {turn ? <TurnTrace turn={turn} /> : null}
        </div>
      </div>
    );
  });
  return (
    <div
      class="ib-transcript"
      ref={box}
      data-testid="inbox-transcript"
      onScroll={(e) => {
        const el = e.currentTarget as HTMLDivElement;
        pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
      }}
    >
      {items}
    </div>
  );
}

function TurnTrace(props: { turn: BotTurn }) {
  const x = props.turn;
  // The source badge says what kind of answer; this names which one.
  const by = x.rule ?? x.promotion ?? (x.flow ? `${x.flow}${x.step ? " · " + x.step : ""}` : x.faq) ?? "";
  return (
    <details class="ib-trace" data-testid="inbox-trace">
      <summary>
        <span class={"src src-" + (x.source ?? "")}>{x.source ?? "?"}</span>
        {by ? <span>{by}</span> : null}
        {x.intent ? (
          <span class="muted">
            {x.intent} · {t("ib.confidence", { c: (x.confidence ?? 0).toFixed(2) })}
          </span>
        ) : null}
      </summary>
      <ol class="ib-steps">
        {(x.trace ?? []).map((st) => (
          <li>
            <code>{st.stage}</code> {st.detail}
          </li>
        ))}
      </ol>
    </details>
  );
}

/** The reply box: Enter sends; canned replies and the rules' suggestion fill it. */
function Composer(props: { id: string; group: string; busy: string; act: (name: string, f: () => Promise<unknown>) => Promise<void> }) {
  const [text, setText] = useState("");
  const [note, setNote] = useState("");
  const [canned, setCanned] = useState(false);
  const box = useRef<HTMLTextAreaElement>(null);
  const send = async () => {
    const body = text.trim();
    if (!body || props.busy) return;
    let ok = false;
    await props.act("reply", async () => {
      await api("POST", `/v1/sessions/${enc(props.id)}/reply`, { text: body });
      ok = true;
    });
    if (ok) {
      setText("");
      setNote("");
    }
    box.current?.focus();
  };
  const suggest = () =>
    props.act("suggest", async () => {
      const sg = await api<Suggestion>("GET", `/admin/inbox/${enc(props.id)}/suggest`);
      if (!sg.reply) {
        setNote(t("ib.suggest_none"));
        return;
      }
      setText(sg.reply);
      const by = sg.rule ? `rule ${sg.rule}` : sg.faq ? `FAQ ${sg.faq}` : sg.flow ? `flow ${sg.flow}` : sg.source ?? "";
      setNote(t("ib.suggest_from", { by }) + (sg.model ? t("ib.suggest_model") : ""));
      box.current?.focus();
    });
  return (
    <div class="ib-composer">
      {canned ? (
        <CannedPopup
          group={props.group}
          onPick={(c) => {
            setText(text.trim() ? text.trimEnd() + "\n" + c.text : c.text);
            setCanned(false);
            box.current?.focus();
          }}
          onClose={() => setCanned(false)}
        />
      ) : null}
      {note ? <div class="muted small ib-note-line">{note}</div> : null}
      <textarea
        ref={box}
        rows={3}
        data-testid="inbox-reply"
        aria-label={t("ib.reply")}
        placeholder={t("ib.reply")}
        value={text}
        onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            void send();
          }
        }}
      />
      <div class="ib-compose-actions">
        <button type="button" aria-expanded={canned} data-testid="inbox-canned" onClick={() => setCanned(!canned)}>
          {t("ib.canned")}
        </button>
        <button type="button" data-testid="inbox-suggest" disabled={!!props.busy} onClick={suggest}>
          {t("ib.suggest")}
        </button>
        <span class="spacer" />
        <button type="button" class="primary" data-testid="inbox-send" disabled={!!props.busy || !text.trim()} onClick={() => void send()}>
          {t("ib.send")}
        </button>
      </div>
    </div>
  );
}

function CannedPopup(props: { group: string; onPick: (c: Canned) => void; onClose: () => void }) {
  const [q, setQ] = useState("");
  const [items, setItems] = useState<Canned[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  useEffect(() => {
    const timer = setTimeout(() => {
      const query = new URLSearchParams({ q, group: props.group });
      api<Canned[] | { canned?: Canned[]; replies?: Canned[] }>("GET", `/admin/canned?${query}`).then(
        (r) => {
          setItems(Array.isArray(r) ? r : (r.canned ?? r.replies ?? []));
          setError(null);
        },
        setError,
      );
    }, 150);
    return () => clearTimeout(timer);
  }, [q]);
  return (
    <div class="ib-canned" role="dialog" aria-label={t("ib.canned")} onKeyDown={(e) => e.key === "Escape" && props.onClose()}>
      <input ref={input} type="search" placeholder={t("ib.canned_search")} aria-label={t("ib.canned_search")} value={q} onInput={(e) => setQ((e.target as HTMLInputElement).value)} />
      {error ? <ErrorBox error={error} /> : null}
      <ul>
        {(items ?? []).map((c) => (
          <li>
            <button type="button" class="ib-canned-item" onClick={() => props.onPick(c)}>
              <strong>{c.title}</strong>
              <span>{c.text}</span>
            </button>
          </li>
        ))}
      </ul>
      {items && !items.length ? <p class="muted small">{t("ib.canned_none")}</p> : null}
    </div>
  );
}

/** The customer's profile, the turn's context, the flow and the notes. */
function SidePanel(props: { detail: Detail; id: string; busy: string; act: (name: string, f: () => Promise<unknown>) => Promise<void> }) {
  const d = props.detail;
  const profile = d.profile ?? {};
  const context = d.context ?? {};
  const [note, setNote] = useState("");
  const order = (context as any).order;
  const product = (context as any).product;
  const vip = profile.vip === true || profile.segment === "vip" || d.summary.vip;
  const facts: [string, ComponentChildren][] = [
    [t("ib.segment"), show(profile.segment ?? d.summary.segment ?? undefined)],
    ["VIP", vip ? t("ib.yes") : t("ib.no")],
  ];
  if (order && typeof order === "object") facts.push([t("ib.order"), [order.id, order.status].filter(Boolean).join(" · ") || show(order)]);
  if (product && typeof product === "object") facts.push([t("ib.product"), [product.name, product.sku ?? product.id].filter(Boolean).join(" · ") || show(product)]);
  if (d.flow?.name) facts.push([t("ib.flow"), d.flow.name + (d.flow.awaiting ? ` · ${d.flow.awaiting}` : "")]);
  if (d.takeover?.paused_flow?.name) facts.push([t("ib.paused_flow"), d.takeover.paused_flow.name]);
  const all = [...Object.entries(profile).map(([k, v]) => ["user." + k, v]), ...Object.entries(context).map(([k, v]) => [k, v])];
  const add = async () => {
    const text = note.trim();
    if (!text) return;
    let ok = false;
    await props.act("note", async () => {
      await api("POST", `/v1/sessions/${enc(props.id)}/note`, { text });
      ok = true;
    });
    if (ok) setNote("");
  };
  return (
    <aside class="ib-side" data-testid="inbox-side">
      <h3>{t("ib.profile")}</h3>
      <dl class="ib-facts">
        {facts.map(([k, v]) => (
          <>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </>
        ))}
      </dl>
      {d.resolved?.outcome ? <p class="small">{t("ib.resolved_as", { outcome: d.resolved.outcome })}</p> : null}
      {d.feedback?.score ? <p class="small">{t("ib.feedback", { score: d.feedback.score })}</p> : null}
      {all.length ? (
        <details class="ib-all">
          <summary class="small">{t("ib.all_fields")}</summary>
          <dl class="ib-facts">
            {all.map(([k, v]) => (
              <>
                <dt>{String(k)}</dt>
                <dd>{show(v)}</dd>
              </>
            ))}
          </dl>
        </details>
      ) : null}
      <h3>{t("ib.notes")}</h3>
      {d.notes.length ? (
        <ul class="ib-notes" data-testid="inbox-notes">
          {d.notes.map((n) => (
            <li>
              <div class="muted small">
                {n.agent ?? "—"} · {clock(n.at)}
              </div>
              <div class="pre">{n.text}</div>
            </li>
          ))}
        </ul>
      ) : (
        <p class="muted small">{t("ib.no_notes")}</p>
      )}
      <textarea rows={2} data-testid="inbox-note" aria-label={t("ib.note_add")} placeholder={t("ib.note_hint")} value={note} onInput={(e) => setNote((e.target as HTMLTextAreaElement).value)} />
      <button type="button" data-testid="inbox-note-add" disabled={!!props.busy || !note.trim()} onClick={() => void add()}>
        {t("ib.note_add")}
      </button>
    </aside>
  );
}

function ReleaseDialog(props: { flow: string; onCancel: () => void; onRelease: (resume: boolean) => void }) {
  const [resume, setResume] = useState(true);
  return (
    <Confirm
      title={t("ib.release_title")}
      confirm={t("ib.release")}
      onCancel={props.onCancel}
      onConfirm={() => props.onRelease(!!props.flow && resume)}
      body={
        <div class="ib-choices">
          <p>{t("ib.release_body")}</p>
          {props.flow ? (
            <>
              <label class="inline">
                <input type="radio" name="flow" checked={resume} onChange={() => setResume(true)} />
                {t("ib.resume", { flow: props.flow })}
              </label>
              <label class="inline">
                <input type="radio" name="flow" checked={!resume} onChange={() => setResume(false)} />
                {t("ib.cancel_flow", { flow: props.flow })}
              </label>
            </>
          ) : null}
        </div>
      }
    />
  );
}

function ResolveDialog(props: { onCancel: () => void; onResolve: (outcome: string) => void }) {
  const presets = t("ib.outcomes").split("|");
  const [outcome, setOutcome] = useState(presets[0]);
  const trimmed = outcome.trim();
  const ok = [...trimmed].length >= 1 && [...trimmed].length <= 64;
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onCancel()}>
      <form
        class="dialog"
        role="dialog"
        aria-modal="true"
        aria-label={t("ib.resolve_title")}
        onSubmit={(e) => {
          e.preventDefault();
          if (ok) props.onResolve(trimmed);
        }}
        onKeyDown={(e) => e.key === "Escape" && props.onCancel()}
      >
        <h2>{t("ib.resolve_title")}</h2>
        <div class="dialog-body">
          <label>
            {t("ib.outcome")}
            <input data-testid="inbox-outcome" maxLength={64} value={outcome} autoFocus onInput={(e) => setOutcome((e.target as HTMLInputElement).value)} />
          </label>
          <div class="ib-chips ib-presets">
            {presets.map((p) => (
              <button type="button" class={"chip" + (p === outcome ? " on" : "")} onClick={() => setOutcome(p)}>
                {p}
              </button>
            ))}
          </div>
          <p class="muted small">{t("ib.outcome_hint")}</p>
        </div>
        <div class="actions">
          <button type="button" onClick={props.onCancel}>{t("ui.cancel")}</button>
          <button type="submit" class="primary" disabled={!ok}>
            {t("ib.resolve")}
          </button>
        </div>
      </form>
    </div>
  );
}
