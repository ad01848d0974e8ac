// Unanswered questions (未解决的问题): what customers asked that the rules did not answer
// well, from GET /admin/mine (the same mining as `kefu mine` over this node's conversation
// log): the period's figures, then the clusters most costly first — how many
// conversations each cost, its trend week on week, typical messages, the nearest intent
// and FAQ entry with their scores, and the suggestion in words. An editor (`edit`) may
// accept a cluster as a draft (POST /admin/mine/accept), switching the action first if
// the suggestion is not the right one; the page then shows the diff it wrote, with links
// to the file in the editor and to Publish. Nothing here goes live: publishing does.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { addStrings, t } from "../i18n";
import { href } from "../router";
import { ErrorBox, Loading, UnifiedDiff, diffStat, pct } from "../ui";

addStrings({
  "mine.title": { zh: "未解决的问题", en: "Unanswered questions" },
  "mine.intro": {
    zh: "顾客问了、规则没答好的消息（兜底回复、模型答案被拦下、转人工、没有把握的意图、差评前的消息），按同一个问题归成一组，最费会话的在前。",
    en: "Customer messages the rules did not answer well (fallback replies, withheld model answers, handoffs, unsure intents, messages before a bad rating), grouped by question, the costliest first.",
  },
  "mine.period": { zh: "时间段", en: "Period" },
  "mine.last_days": { zh: "最近 {n} 天", en: "Last {n} days" },
  "mine.custom": { zh: "自定义", en: "Custom" },
  "mine.from": { zh: "从", en: "From" },
  "mine.to": { zh: "到", en: "To" },
  "mine.apply": { zh: "查看", en: "Show" },
  "mine.refresh": { zh: "刷新", en: "Refresh" },
  "mine.range": { zh: "{from} 至 {to}", en: "{from} to {to}" },
  "mine.turns": { zh: "顾客消息", en: "Customer turns" },
  "mine.misses": { zh: "没答好的消息", en: "Not answered well" },
  "mine.miss_share": { zh: "占 {share}", en: "{share} of turns" },
  "mine.conversations": { zh: "涉及会话", en: "Conversations affected" },
  "mine.clusters": { zh: "问题组", en: "Question groups" },
  "mine.unclustered": { zh: "另有 {n} 条零散消息", en: "{n} more messages in no group" },
  "mine.nearest_draft": { zh: "最接近的意图和 FAQ 按草稿规则查找。", en: "Nearest intents and FAQ entries are looked up in the draft rules." },
  "mine.nearest_live": { zh: "草稿现在无法构建，最接近的意图和 FAQ 按线上规则查找。", en: "The draft does not build now, so nearest intents and FAQ entries are looked up in the live rules." },
  "mine.no_log": {
    zh: "这台服务器不保存对话日志，没有可挖掘的消息。用 kefu serve --conversation-log DIR 启动即可。",
    en: "This server keeps no conversation log, so there is nothing to mine. Start it with kefu serve --conversation-log DIR.",
  },
  "mine.none": { zh: "这段时间里规则都答上来了：没有未解决的问题。", en: "The rules answered everything in this period: no unanswered questions." },
  "mine.no_groups": {
    zh: "这段时间有 {n} 条没答好的消息，但没有哪个问题在两个以上的会话里出现过。",
    en: "{n} messages were not answered well in this period, but no question came up in more than one conversation.",
  },
  "mine.busy": { zh: "另一个请求正在挖掘对话日志，请几秒后再试。", en: "Another request is mining the conversation log; try again in a few seconds." },
  "mine.retry": { zh: "重试", en: "Try again" },
  "mine.n_conv": { zh: "{n} 个会话", en: "{n} conversations" },
  "mine.n_msgs": { zh: "{n} 条消息", en: "{n} messages" },
  "mine.trend": { zh: "本周 {a} · 上周 {b}", en: "this week {a} · last week {b}" },
  "mine.trend_up": { zh: "在增加", en: "growing" },
  "mine.trend_down": { zh: "在减少", en: "shrinking" },
  "mine.trend_flat": { zh: "持平", en: "steady" },
  "mine.examples": { zh: "典型说法", en: "Typical messages" },
  "mine.nearest_intent": { zh: "最接近的意图", en: "Nearest intent" },
  "mine.nearest_faq": { zh: "最接近的 FAQ", en: "Nearest FAQ entry" },
  "mine.none_near": { zh: "没有", en: "none" },
  "mine.suggest": { zh: "建议", en: "Suggestion" },
  "mine.act.add_examples": { zh: "把这些说法加为意图「{x}」的例句", en: "Add these messages as examples of the intent “{x}”" },
  "mine.act.add_variants": { zh: "把这些说法加为 FAQ「{x}」的相似问法", en: "Add these messages as variants of the FAQ entry “{x}”" },
  "mine.act.new_faq": { zh: "新建 FAQ「{x}」，答案由你来写", en: "Draft a new FAQ entry “{x}”; you write the answer" },
  "mine.act.new_intent": { zh: "新建意图「{x}」和一条回答它的规则，回复由你来写", en: "Draft a new intent “{x}” and a rule answering it; you write the reply" },
  "mine.reason.fallback": { zh: "兜底回复", en: "fallback" },
  "mine.reason.withheld": { zh: "模型答案被拦下", en: "answer withheld" },
  "mine.reason.handoff": { zh: "转人工", en: "handoff" },
  "mine.reason.low_intent": { zh: "意图没把握", en: "unsure intent" },
  "mine.reason.bad_rating": { zh: "差评", en: "bad rating" },
  "mine.accept": { zh: "采纳为草稿", en: "Accept as draft" },
  "mine.accept_title": { zh: "写入草稿", en: "Write into the draft" },
  "mine.choose": { zh: "怎么处理这组问题", en: "What to do with this group" },
  "mine.opt.suggested": { zh: "（建议）", en: " (suggested)" },
  "mine.id": { zh: "FAQ 编号", en: "FAQ entry id" },
  "mine.intent_name": { zh: "意图名", en: "Intent name" },
  "mine.messages": { zh: "写入的说法（{n}/{of}）", en: "Messages to write ({n} of {of})" },
  "mine.write": { zh: "写入草稿", en: "Write the draft" },
  "mine.writing": { zh: "正在写入…", en: "Writing…" },
  "mine.cancel": { zh: "取消", en: "Cancel" },
  "mine.pick_one": { zh: "至少选一条说法。", en: "Pick at least one message." },
  "mine.need_name": { zh: "写一个名字。", en: "Give it a name." },
  "mine.written": { zh: "已写入草稿，还没有上线。", en: "Written into the draft; nothing is live yet." },
  "mine.next": {
    zh: "下一步：在编辑器里看一眼（新 FAQ 要写答案、新规则要写回复，否则检查不通过），跑测试，然后到「发布」页看回放并发布。",
    en: "Next: look at it in the editor (a new FAQ entry needs its answer, a new rule its reply, or the check fails), run the tests, then replay and publish on the Publish page.",
  },
  "mine.open_editor": { zh: "在编辑器中打开", en: "Open in the editor" },
  "mine.open_table": { zh: "在知识库表格中打开", en: "Open in the tables" },
  "mine.to_publish": { zh: "去发布", en: "Go to Publish" },
  "mine.created": { zh: "新建", en: "new" },
  "mine.changed": { zh: "修改", en: "changed" },
  "mine.accepted": { zh: "已采纳", en: "Accepted" },
  "mine.invalid": { zh: "这个建议写不进草稿：{message}", en: "This suggestion cannot be written: {message}" },
  "mine.conflict": {
    zh: "写入时文件被别人改了，什么都没写。刷新后再试一次。",
    en: "A file changed while it was being written; nothing was written. Refresh and try again.",
  },
});

/** What a nearest neighbour is, as GET /admin/mine answers it. */
interface Nearest {
  kind: "intent" | "faq";
  name: string;
  score: number;
}

/** A suggested action (`data::mine::Action`). */
type Action =
  | { kind: "add_examples"; intent: string }
  | { kind: "add_variants"; faq: string }
  | { kind: "new_faq"; id: string }
  | { kind: "new_intent"; name: string };

/** One cluster (`data::mine::Cluster`). */
interface Cluster {
  rank: number;
  size: number;
  conversations: number;
  this_week: number;
  last_week: number;
  reasons: Record<string, number>;
  examples: string[];
  messages: string[];
  nearest_intent: Nearest | null;
  nearest_faq: Nearest | null;
  action: Action;
}

/** GET /admin/mine: `MineReport` with the period and where nearest neighbours came from. */
interface MineResponse {
  since?: string;
  until?: string;
  nearest_from?: "draft" | "live";
  turns: number;
  misses: number;
  conversations: number;
  clusters: Cluster[];
  unclustered: number;
}

/** POST /admin/mine/accept's answer (`accept::Drafted`). */
interface Drafted {
  files: { path: string; created: boolean; diff: string }[];
}

/** The words of an action. */
function actionWords(a: Action): string {
  switch (a.kind) {
    case "add_examples":
      return t("mine.act.add_examples", { x: a.intent });
    case "add_variants":
      return t("mine.act.add_variants", { x: a.faq });
    case "new_faq":
      return t("mine.act.new_faq", { x: a.id });
    case "new_intent":
      return t("mine.act.new_intent", { x: a.name });
  }
}

/** A short name made of a message's letters and digits (what a name may hold). */
function nameFrom(text: string, max: number): string {
  const chars = [...text].filter((c) => /[\p{L}\p{M}\p{N}_-]/u.test(c));
  return chars.slice(0, max).join("") || "问题";
}

/** A time as the shop's clock showed it (the server's times carry the shop's offset). */
function wall(iso: string): string {
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(iso) ? iso.slice(0, 10) : iso;
}

/** Local midnight of `day` (YYYY-MM-DD) as RFC 3339 with the browser's offset. */
function midnight(day: string): string {
  const d = new Date(day + "T00:00:00");
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const abs = Math.abs(off);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${day}T00:00:00${sign}${two(Math.floor(abs / 60))}:${two(abs % 60)}`;
}

/** YYYY-MM-DD of a date in the browser's zone. */
function ymd(d: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
}

/** `day` moved by `n` days. */
function addDays(day: string, n: number): string {
  const d = new Date(day + "T12:00:00");
  d.setDate(d.getDate() + n);
  return ymd(d);
}

/** The period chosen: one of the presets (days up to today) or two dates. */
type Period = { days: number } | { from: string; to: string };

/** The query of GET /admin/mine for a period (none for the server's default, 28 days). */
function periodQuery(p: Period): string {
  if ("days" in p) {
    if (p.days === 28) return "";
    const today = ymd(new Date());
    return `?since=${encodeURIComponent(midnight(addDays(today, 1 - p.days)))}&until=${encodeURIComponent(midnight(addDays(today, 1)))}`;
  }
  return `?since=${encodeURIComponent(midnight(p.from))}&until=${encodeURIComponent(midnight(addDays(p.to, 1)))}`;
}

const PRESETS = [7, 28, 90];

function PeriodPicker(props: { period: Period; onChange: (p: Period) => void }) {
  const custom = !("days" in props.period);
  const today = ymd(new Date());
  const [from, setFrom] = useState(custom ? (props.period as any).from : addDays(today, -27));
  const [to, setTo] = useState(custom ? (props.period as any).to : today);
  const [open, setOpen] = useState(custom);
  return (
    <div class="mine-period" role="group" aria-label={t("mine.period")}>
      <select
        aria-label={t("mine.period")}
        data-testid="mine-period"
        value={open ? "custom" : String((props.period as any).days)}
        onChange={(e) => {
          const v = (e.target as HTMLSelectElement).value;
          if (v === "custom") setOpen(true);
          else {
            setOpen(false);
            props.onChange({ days: Number(v) });
          }
        }}
      >
        {PRESETS.map((n) => (
          <option value={String(n)}>{t("mine.last_days", { n })}</option>
        ))}
        <option value="custom">{t("mine.custom")}</option>
      </select>
      {open ? (
        <form
          class="mine-dates"
          onSubmit={(e) => {
            e.preventDefault();
            if (from && to && from <= to) props.onChange({ from, to });
          }}
        >
          <label class="inline">
            {t("mine.from")} <input type="date" value={from} max={to} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
          </label>
          <label class="inline">
            {t("mine.to")} <input type="date" value={to} min={from} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit">{t("mine.apply")}</button>
        </form>
      ) : null}
    </div>
  );
}

function Stat(props: { label: string; value: string; detail?: string }) {
  return (
    <div class="card stat">
      <div class="stat-label">{props.label}</div>
      <div class="stat-value">{props.value}</div>
      {props.detail ? <div class="stat-detail">{props.detail}</div> : null}
    </div>
  );
}

function NearestLine(props: { label: string; n: Nearest | null }) {
  return (
    <div class="mine-near">
      <span class="muted">{props.label}</span>{" "}
      {props.n ? (
        <>
          <code>{props.n.name}</code> <span class="pill">{pct(props.n.score, 0)}</span>
        </>
      ) : (
        <span class="muted">{t("mine.none_near")}</span>
      )}
    </div>
  );
}

function Trend(props: { a: number; b: number }) {
  const { a, b } = props;
  const [arrow, cls, word] = a > b ? ["↑", "bad", t("mine.trend_up")] : a < b ? ["↓", "good", t("mine.trend_down")] : ["→", "", t("mine.trend_flat")];
  return (
    <span class={"pill " + cls} title={word}>
      <span aria-hidden="true">{arrow}</span> {t("mine.trend", { a, b })}
      <span class="sr">{word}</span>
    </span>
  );
}

/** The first added line with text of a unified diff's new file, for a link into the editor. */
function firstAddedLine(diff: string): number | undefined {
  let line = 0;
  for (const l of diff.split("\n")) {
    const h = /^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(l);
    if (h) {
      line = Number(h[1]);
      continue;
    }
    if (!line || l.startsWith("+++") || l.startsWith("---")) continue;
    // The first added line with text (a blank line often comes first, before the comment).
    if (l.startsWith("+") && l.slice(1).trim()) return line;
    if (!l.startsWith("-")) line++;
  }
  return undefined;
}

/** What was written: each file's diff, links to it and to Publish. */
function DraftedView(props: { drafted: Drafted }) {
  return (
    <div class="mine-drafted" data-testid="mine-drafted">
      <div class="ok-box" role="status">
        <strong>{t("mine.written")}</strong>
        <span>{t("mine.next")}</span>
      </div>
      {props.drafted.files.map((f) => {
        const s = diffStat(f.diff);
        const table = f.path === "kb/faq.yaml" ? "/tables/faq" : f.path === "data/products.yaml" ? "/tables/products" : null;
        return (
          <div class="file-diff">
            <div class="mine-file-head">
              <span class={"badge " + (f.created ? "ch-added" : "ch-changed")}>{f.created ? t("mine.created") : t("mine.changed")}</span>
              <code class="mine-path">{f.path}</code>
              <span class="d-add-t">+{s.add}</span>
              <span class="d-del-t">−{s.del}</span>
              <span class="spacer" />
              <a href={href("/editor", { path: f.path, line: firstAddedLine(f.diff) })} data-testid="mine-open-editor">{t("mine.open_editor")}</a>
              {table ? <a href={href(table)}>{t("mine.open_table")}</a> : null}
            </div>
            <UnifiedDiff text={f.diff} />
          </div>
        );
      })}
      <a class="button" href={href("/publish")} data-testid="mine-to-publish">{t("mine.to_publish")}</a>
    </div>
  );
}

/** The actions an editor may choose for a cluster: the suggested one first. */
function choices(c: Cluster): Action[] {
  const seed = nameFrom(c.examples[0] ?? c.messages[0] ?? "", 12);
  const out: Action[] = [c.action];
  const add = (a: Action) => {
    if (!out.some((o) => o.kind === a.kind)) out.push(a);
  };
  if (c.nearest_intent) add({ kind: "add_examples", intent: c.nearest_intent.name });
  if (c.nearest_faq) add({ kind: "add_variants", faq: c.nearest_faq.name });
  add({ kind: "new_faq", id: seed });
  add({ kind: "new_intent", name: "挖掘." + nameFrom(seed, 8) });
  return out;
}

/** The accept form: the action (switchable), its name for new items, the messages. */
function AcceptForm(props: { cluster: Cluster; onDone: (d: Drafted) => void; onCancel: () => void }) {
  const c = props.cluster;
  const options = choices(c);
  const [pick, setPick] = useState(0);
  const [names, setNames] = useState<string[]>(options.map((a) => (a.kind === "new_faq" ? a.id : a.kind === "new_intent" ? a.name : "")));
  const all = c.messages.length ? c.messages : c.examples;
  const [chosen, setChosen] = useState<boolean[]>(all.map(() => true));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const n = chosen.filter(Boolean).length;

  const action = (): Action => {
    const a = options[pick];
    const name = names[pick].trim();
    if (a.kind === "new_faq") return { kind: "new_faq", id: name };
    if (a.kind === "new_intent") return { kind: "new_intent", name };
    return a;
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    const a = action();
    if (!n) return setError(new Error(t("mine.pick_one")));
    if ((a.kind === "new_faq" && !a.id) || (a.kind === "new_intent" && !a.name)) return setError(new Error(t("mine.need_name")));
    setBusy(true);
    setError(null);
    try {
      const messages = all.filter((_, i) => chosen[i]);
      props.onDone(await api<Drafted>("POST", "/admin/mine/accept", { action: a, messages }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  let shown: unknown = error;
  if (error instanceof ApiError && error.status === 400 && error.type === "invalid") shown = new Error(t("mine.invalid", { message: error.message }));
  if (error instanceof ApiError && error.status === 409) shown = new Error(t("mine.conflict"));

  return (
    <form class="mine-accept" onSubmit={submit} data-testid="mine-accept-form" aria-label={t("mine.accept_title")}>
      <fieldset>
        <legend>{t("mine.choose")}</legend>
        {options.map((a, i) => (
          <div class="mine-option">
            <label class="inline">
              <input type="radio" name={`action-${c.rank}`} checked={pick === i} onChange={() => setPick(i)} />
              <span>
                {actionWords(i === pick && (a.kind === "new_faq" || a.kind === "new_intent") ? action() : a)}
                {i === 0 ? <span class="muted">{t("mine.opt.suggested")}</span> : null}
              </span>
            </label>
            {pick === i && (a.kind === "new_faq" || a.kind === "new_intent") ? (
              <label class="mine-name">
                {a.kind === "new_faq" ? t("mine.id") : t("mine.intent_name")}
                <input
                  type="text"
                  value={names[i]}
                  maxLength={64}
                  onInput={(e) => {
                    const next = names.slice();
                    next[i] = (e.target as HTMLInputElement).value;
                    setNames(next);
                  }}
                />
              </label>
            ) : null}
          </div>
        ))}
      </fieldset>
      <fieldset>
        <legend>{t("mine.messages", { n, of: all.length })}</legend>
        <ul class="mine-messages">
          {all.map((m, i) => (
            <li>
              <label class="inline">
                <input
                  type="checkbox"
                  checked={chosen[i]}
                  onChange={() => {
                    const next = chosen.slice();
                    next[i] = !next[i];
                    setChosen(next);
                  }}
                />
                <span class="mine-msg">{m}</span>
              </label>
            </li>
          ))}
        </ul>
      </fieldset>
      {shown ? <ErrorBox error={shown} /> : null}
      <div class="actions">
        <button type="button" onClick={props.onCancel}>{t("mine.cancel")}</button>
        <button type="submit" class="primary" disabled={busy} data-testid="mine-write">
          {busy ? t("mine.writing") : t("mine.write")}
        </button>
      </div>
    </form>
  );
}

function ClusterCard(props: { c: Cluster; canEdit: boolean }) {
  const c = props.c;
  const [open, setOpen] = useState(false);
  const [drafted, setDrafted] = useState<Drafted | null>(null);
  const reasons = Object.entries(c.reasons ?? {}).filter(([, n]) => n > 0);
  return (
    <article class="card mine-cluster" data-testid="mine-cluster" aria-labelledby={`cluster-${c.rank}`}>
      <div class="mine-head">
        <span class="mine-rank">#{c.rank}</span>
        <h2 id={`cluster-${c.rank}`} class="mine-headline">{c.examples[0] ?? c.messages[0] ?? ""}</h2>
      </div>
      <div class="summary">
        <span class="pill warn">{t("mine.n_conv", { n: c.conversations })}</span>
        <span class="pill">{t("mine.n_msgs", { n: c.size })}</span>
        <Trend a={c.this_week} b={c.last_week} />
        {reasons.map(([r, n]) => (
          <span class="badge">{t("mine.reason." + r)} {n}</span>
        ))}
      </div>
      {c.examples.length > 1 ? (
        <>
          <h3>{t("mine.examples")}</h3>
          <ul class="mine-examples">
            {c.examples.slice(1).map((e) => (
              <li class="mine-msg">{e}</li>
            ))}
          </ul>
        </>
      ) : null}
      <div class="mine-nearest">
        <NearestLine label={t("mine.nearest_intent")} n={c.nearest_intent} />
        <NearestLine label={t("mine.nearest_faq")} n={c.nearest_faq} />
      </div>
      <div class="mine-suggest">
        <span class="badge">{t("mine.suggest")}</span> <span data-testid="mine-suggestion">{actionWords(c.action)}</span>
      </div>
      {drafted ? (
        <DraftedView drafted={drafted} />
      ) : open ? (
        <AcceptForm cluster={c} onDone={setDrafted} onCancel={() => setOpen(false)} />
      ) : props.canEdit ? (
        <div class="actions mine-actions">
          <button type="button" class="primary" onClick={() => setOpen(true)} data-testid="mine-accept">{t("mine.accept")}</button>
        </div>
      ) : null}
    </article>
  );
}

export function MinePage(props: { can: string[] }) {
  const canEdit = props.can.includes("edit");
  const [period, setPeriod] = useState<Period>({ days: 28 });
  const [data, setData] = useState<MineResponse | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = (p: Period = period) => {
    setError(null);
    setData(null);
    api<MineResponse>("GET", "/admin/mine" + periodQuery(p)).then(setData, setError);
  };
  useEffect(() => load(), []);
  const choose = (p: Period) => {
    setPeriod(p);
    load(p);
  };

  const head = (
    <div class="page-head">
      <h1>{t("mine.title")}</h1>
      {data?.since ? <span class="muted small">{t("mine.range", { from: wall(data.since), to: wall(addDays(wall(data.until ?? data.since), -1)) })}</span> : null}
      <span class="spacer" />
      <PeriodPicker period={period} onChange={choose} />
      <button type="button" onClick={() => load()}>{t("mine.refresh")}</button>
    </div>
  );

  let body;
  if (error instanceof ApiError && error.type === "no_log") body = <div class="empty">{t("mine.no_log")}</div>;
  else if (error instanceof ApiError && error.status === 429)
    body = (
      <div class="warn-box" role="alert">
        {t("mine.busy")}{" "}
        <button type="button" onClick={() => load()}>{t("mine.retry")}</button>
      </div>
    );
  else if (error) body = <ErrorBox error={error} />;
  else if (!data) body = <Loading />;
  else
    body = (
      <>
        <div class="cards">
          <Stat label={t("mine.turns")} value={String(data.turns)} />
          <Stat label={t("mine.misses")} value={String(data.misses)} detail={t("mine.miss_share", { share: pct(data.turns ? data.misses / data.turns : null) })} />
          <Stat label={t("mine.conversations")} value={String(data.conversations)} />
          <Stat label={t("mine.clusters")} value={String(data.clusters.length)} detail={data.unclustered ? t("mine.unclustered", { n: data.unclustered }) : undefined} />
        </div>
        {data.clusters.length && data.nearest_from ? (
          <p class="muted small">{data.nearest_from === "draft" ? t("mine.nearest_draft") : t("mine.nearest_live")}</p>
        ) : null}
        {!data.misses ? (
          <div class="empty">{t("mine.none")}</div>
        ) : !data.clusters.length ? (
          <div class="empty">{t("mine.no_groups", { n: data.misses })}</div>
        ) : (
          <div class="mine-list">
            {data.clusters.map((c) => (
              <ClusterCard c={c} canEdit={canEdit} key={`${data.since}-${c.rank}`} />
            ))}
          </div>
        )}
      </>
    );

  return (
    <section class="mine-page">
      {head}
      <p class="muted small mine-intro">{t("mine.intro")}</p>
      {body}
    </section>
  );
}
