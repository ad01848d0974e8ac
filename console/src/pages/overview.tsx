// The overview: today's figures from GET /admin/report (the same data as `kefu report`):
// cards for turns, answers by source, handoff rate, satisfaction and latency, and two
// charts from `hourly` (answers by source per hour, latency per hour), and the agents'
// figures from the report's `agents` (per agent and per queue: first response, handling
// and waiting times, satisfaction) with how many conversations wait or are with an agent
// now (GET /admin/inbox, for roles with the `agent` permission).
import { useEffect, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { api, ApiError } from "../api";
import { Legend, Lines, StackedBars } from "../charts";
import { addStrings, t } from "../i18n";
import { href } from "../router";
import { ErrorBox, Loading, pct } from "../ui";

addStrings({
  "ov.title": { zh: "今日概览", en: "Today" },
  "ov.turns": { zh: "对话轮次", en: "Turns" },
  "ov.sessions": { zh: "{n} 个会话", en: "{n} sessions" },
  "ov.rule": { zh: "规则回答", en: "Answered by rules" },
  "ov.faq": { zh: "FAQ 回答", en: "Answered by FAQ" },
  "ov.model": { zh: "模型回答", en: "Answered by the model" },
  "ov.handoff": { zh: "转人工", en: "Handoffs" },
  "ov.other": { zh: "其他", en: "Other" },
  "ov.handoff_rate": { zh: "转人工率", en: "Handoff rate" },
  "ov.handoff_of": { zh: "{n} / {of} 个会话", en: "{n} of {of} sessions" },
  "ov.satisfaction": { zh: "满意度", en: "Satisfaction" },
  "ov.sat_detail": { zh: "{n} 个评分，4-5 分占 {share}", en: "{n} scores, {share} gave 4–5" },
  "ov.no_scores": { zh: "还没有评分", en: "No scores yet" },
  "ov.latency": { zh: "响应时间", en: "Latency" },
  "ov.latency_detail": { zh: "中位数 / {p}", en: "median / {p}" },
  "ov.share": { zh: "占 {share}", en: "{share} of turns" },
  "ov.by_hour": { zh: "每小时回答来源", en: "Answers by source per hour" },
  "ov.latency_hour": { zh: "每小时响应时间（毫秒）", en: "Latency per hour (ms)" },
  "ov.no_log": { zh: "这台服务器不保存对话日志，没有可统计的数据。用 kefu serve --conversation-log DIR 启动即可。", en: "This server keeps no conversation log, so there is nothing to count. Start it with kefu serve --conversation-log DIR." },
  "ov.empty": { zh: "今天还没有对话。", en: "No conversations today yet." },
  "ov.range": { zh: "{from} 至 {to}", en: "{from} to {to}" },
  "ov.refresh": { zh: "刷新", en: "Refresh" },
  "ov.agents": { zh: "人工客服", en: "Agents" },
  "ov.by_agent": { zh: "按客服", en: "By agent" },
  "ov.by_group": { zh: "按队列", en: "By queue" },
  "ov.agent": { zh: "客服", en: "Agent" },
  "ov.group": { zh: "队列", en: "Queue" },
  "ov.conversations": { zh: "会话", en: "Conversations" },
  "ov.frt": { zh: "首次响应", en: "First response" },
  "ov.handling": { zh: "处理时长", en: "Handling" },
  "ov.waiting_time": { zh: "排队等待", en: "Waiting" },
  "ov.p50_p90": { zh: "p50 / p90", en: "p50 / p90" },
  "ov.waiting_now": { zh: "正在等待", en: "Waiting now" },
  "ov.with_agent_now": { zh: "正在接待", en: "With an agent now" },
  "ov.open_inbox": { zh: "打开坐席工作台", en: "Open the inbox" },
  "ov.no_agents": { zh: "今天还没有人工接待的会话。", en: "No conversation was served by an agent today." },
});

interface Hour {
  hour: string;
  turns: number;
  rule: number;
  faq: number;
  model: number;
  handoff: number;
  other: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

interface ReportResponse {
  report: any;
  /** The period asked for (default: today in the shop's zone). */
  since?: string;
  until?: string;
  hourly?: Hour[];
  satisfaction?: any;
  /** The agents section of `kefu report`: per agent and per queue. */
  agents?: any;
}

/** One row of the agents section, read loosely: `name`/`agent`/`group`, and each time as
 * `{p50, p90}` under `first_response_ms`, `handling_ms`, `waiting_ms` (or in seconds). */
interface AgentRow {
  name: string;
  conversations: number | null;
  frt: [number | null, number | null];
  handling: [number | null, number | null];
  waiting: [number | null, number | null];
  satisfaction: number | null;
  scores: number | null;
}

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** A report row (`kefu report`'s `agents.by_agent` / `by_group`): times in seconds. */
interface ReportRow {
  name: string;
  conversations: number;
  first_response: Spread;
  handling: Spread;
  waiting: Spread;
  scores: number;
  satisfaction: number | null;
}
interface Spread {
  p50: number | null;
  p90: number | null;
}

/** p50 and p90 in ms. */
const ms = (s: Spread | undefined): [number | null, number | null] => [
  num(s?.p50) === null ? null : s!.p50! * 1000,
  num(s?.p90) === null ? null : s!.p90! * 1000,
];

function agentRows(list: ReportRow[] | undefined): AgentRow[] {
  return (list ?? []).map((r) => ({
    name: r.name,
    conversations: num(r.conversations),
    frt: ms(r.first_response),
    handling: ms(r.handling),
    waiting: ms(r.waiting),
    satisfaction: num(r.satisfaction),
    scores: num(r.scores),
  }));
}

/** A duration for the tables: 850 ms, 42 s, 3.5 min. */
function dur(ms: number | null): string {
  if (ms === null) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 90_000) return Math.round(ms / 1000) + " s";
  if (ms < 5_400_000) return (ms / 60_000).toFixed(1) + " min";
  return (ms / 3_600_000).toFixed(1) + " h";
}

function AgentTable(props: { rows: AgentRow[]; first: string }) {
  const pair = (p: [number | null, number | null]) => `${dur(p[0])} / ${dur(p[1])}`;
  return (
    <div class="table-scroll">
      <table class="figures">
        <thead>
          <tr>
            <th>{props.first}</th>
            <th class="n">{t("ov.conversations")}</th>
            <th class="n">{t("ov.frt")} <span class="muted small">{t("ov.p50_p90")}</span></th>
            <th class="n">{t("ov.handling")} <span class="muted small">{t("ov.p50_p90")}</span></th>
            <th class="n">{t("ov.waiting_time")} <span class="muted small">{t("ov.p50_p90")}</span></th>
            <th class="n">{t("ov.satisfaction")}</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr>
              <td>{r.name}</td>
              <td class="n">{r.conversations ?? "—"}</td>
              <td class="n">{pair(r.frt)}</td>
              <td class="n">{pair(r.handling)}</td>
              <td class="n">{pair(r.waiting)}</td>
              <td class="n">{r.satisfaction === null ? "—" : r.satisfaction.toFixed(2) + (r.scores ? ` (${r.scores})` : "")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The agents' panel: live counts (when the role may read the inbox) and the report's figures. */
function AgentsPanel(props: { agents: any; can: string[] }) {
  const [counts, setCounts] = useState<{ waiting?: number; agent?: number } | null>(null);
  useEffect(() => {
    if (!props.can.includes("agent")) return;
    api<{ counts?: { waiting?: number; agent?: number } }>("GET", "/admin/inbox?limit=1").then((r) => setCounts(r.counts ?? null), () => setCounts(null));
  }, []);
  const a = props.agents;
  const byAgent = agentRows(a?.by_agent);
  const byGroup = agentRows(a?.by_group);
  if (!counts && !byAgent.length && !byGroup.length && a === undefined) return null;
  const head: ComponentChildren = (
    <div class="card-head">
      <h2>{t("ov.agents")}</h2>
      <span class="spacer" />
      {props.can.includes("agent") ? <a href={href("/inbox")}>{t("ov.open_inbox")}</a> : null}
    </div>
  );
  return (
    <div class="card agents-card" data-testid="overview-agents">
      {head}
      {counts ? (
        <div class="cards agents-now">
          <Card label={t("ov.waiting_now")} value={String(counts.waiting ?? 0)} cls="c-waiting" />
          <Card label={t("ov.with_agent_now")} value={String(counts.agent ?? 0)} cls="c-agent" />
        </div>
      ) : null}
      {byAgent.length ? (
        <>
          <h3>{t("ov.by_agent")}</h3>
          <AgentTable rows={byAgent} first={t("ov.agent")} />
        </>
      ) : null}
      {byGroup.length ? (
        <>
          <h3>{t("ov.by_group")}</h3>
          <AgentTable rows={byGroup} first={t("ov.group")} />
        </>
      ) : null}
      {!byAgent.length && !byGroup.length ? <p class="muted small">{t("ov.no_agents")}</p> : null}
    </div>
  );
}

/** A time as the shop's clock showed it (the report's times carry the shop's offset). */
function wall(iso: string): string {
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(iso) ? iso.slice(0, 16).replace("T", " ") : iso;
}

const RULEISH = ["rule", "flow", "promotion", "context"];

function Card(props: { label: string; value: string; detail?: string; cls?: string }) {
  return (
    <div class={"card stat " + (props.cls ?? "")}>
      <div class="stat-label">{props.label}</div>
      <div class="stat-value">{props.value}</div>
      {props.detail ? <div class="stat-detail">{props.detail}</div> : null}
    </div>
  );
}

export function Overview(props: { can?: string[] }) {
  const can = props.can ?? [];
  const [data, setData] = useState<ReportResponse | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = () => {
    setError(null);
    api<ReportResponse>("GET", "/admin/report").then(setData, setError);
  };
  useEffect(load, []);

  if (error instanceof ApiError && error.type === "no_log")
    return (
      <section>
        <div class="page-head">
          <h1>{t("ov.title")}</h1>
        </div>
        <div class="empty">{t("ov.no_log")}</div>
      </section>
    );
  if (error) return <ErrorBox error={error} />;
  if (!data) return <Loading />;

  const r = data.report ?? {};
  const hourly = data.hourly ?? [];
  const turns: number = r.turns ?? 0;
  const header = (
    <div class="page-head">
      <h1>{t("ov.title")}</h1>
      {data.since ? <span class="muted small">{t("ov.range", { from: wall(data.since), to: wall(data.until ?? "") })}</span> : null}
      <span class="spacer" />
      <button type="button" onClick={load}>{t("ov.refresh")}</button>
    </div>
  );
  if (!turns)
    return (
      <section>
        {header}
        <div class="empty">{t("ov.empty")}</div>
      </section>
    );

  const sources: { name: string; count: number }[] = r.sources ?? [];
  const bySource = (names: string[]) => sources.filter((s) => names.includes(s.name)).reduce((a, s) => a + s.count, 0);
  const sum = (k: keyof Hour) => hourly.reduce((a, h) => a + (Number(h[k]) || 0), 0);
  const counts = hourly.length
    ? { rule: sum("rule"), faq: sum("faq"), model: sum("model") }
    : { rule: bySource(RULEISH), faq: bySource(["faq"]), model: bySource(["llm", "cache"]) };
  const share = (n: number) => t("ov.share", { share: pct(turns ? n / turns : null) });

  const handoffs = r.handoffs?.sessions ?? {};
  const sat = data.satisfaction ?? r.satisfaction ?? {};
  const lat = (r.latency_ms ?? []).find((l: any) => l.source === "all") ?? {};
  const tailKey = lat.p95 !== undefined ? "p95" : "p99";
  const ms = (v: unknown) => (typeof v === "number" ? Math.round(v) + " ms" : "—");

  const labels = hourly.map((h) => (h.hour.length >= 13 ? h.hour.slice(11, 13) : h.hour));
  const series = [
    { name: t("ov.rule"), cls: "s-rule", values: hourly.map((h) => h.rule) },
    { name: t("ov.faq"), cls: "s-faq", values: hourly.map((h) => h.faq) },
    { name: t("ov.model"), cls: "s-model", values: hourly.map((h) => h.model) },
    { name: t("ov.handoff"), cls: "s-handoff", values: hourly.map((h) => h.handoff) },
    { name: t("ov.other"), cls: "s-other", values: hourly.map((h) => h.other) },
  ];
  const latSeries = [
    { name: "p50", cls: "s-p50", values: hourly.map((h) => (h.turns ? h.p50_ms : null)) },
    { name: "p95", cls: "s-p95", values: hourly.map((h) => (h.turns ? h.p95_ms : null)) },
  ];

  return (
    <section>
      {header}
      <div class="cards">
        <Card label={t("ov.turns")} value={String(turns)} detail={t("ov.sessions", { n: r.sessions ?? 0 })} />
        <Card label={t("ov.rule")} value={String(counts.rule)} detail={share(counts.rule)} cls="c-rule" />
        <Card label={t("ov.faq")} value={String(counts.faq)} detail={share(counts.faq)} cls="c-faq" />
        <Card label={t("ov.model")} value={String(counts.model)} detail={share(counts.model)} cls="c-model" />
        <Card label={t("ov.handoff_rate")} value={pct(handoffs.rate)} detail={t("ov.handoff_of", { n: handoffs.count ?? 0, of: handoffs.of ?? 0 })} />
        <Card
          label={t("ov.satisfaction")}
          value={typeof sat.mean === "number" ? sat.mean.toFixed(2) + " / 5" : "—"}
          detail={sat.scores ? t("ov.sat_detail", { n: sat.scores, share: pct(sat.share_4_or_5) }) : t("ov.no_scores")}
        />
        <Card label={t("ov.latency")} value={`${ms(lat.p50)} / ${ms(lat[tailKey])}`} detail={t("ov.latency_detail", { p: tailKey })} />
      </div>
      {hourly.length ? (
        <div class="charts">
          <div class="card">
            <h2>{t("ov.by_hour")}</h2>
            <StackedBars labels={labels} series={series} title={t("ov.by_hour")} />
            <Legend series={series} />
          </div>
          <div class="card">
            <h2>{t("ov.latency_hour")}</h2>
            <Lines labels={labels} series={latSeries} title={t("ov.latency_hour")} />
            <Legend series={latSeries} />
          </div>
        </div>
      ) : null}
      <AgentsPanel agents={data.agents ?? r.agents} can={can} />
    </section>
  );
}
