// The publish page: what the draft changes against live (GET /admin/diff?a=live&b=draft),
// the tests in short, the what-if replay of the recent log (POST /admin/replay
// {"draft": true}), a message and "publish" / "canary N%" (POST /admin/publish), and the
// versions list (GET /admin/versions) with per-version figures from the report, promote
// and rollback behind a confirmation that says what will happen.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { addStrings, t } from "../i18n";
import { href } from "../router";
import { Confirm, ErrorBox, Loading, UnifiedDiff, diffStat, pct, when } from "../ui";
import { TestsCompact } from "./tests";

addStrings({
  "pub.title": { zh: "发布", en: "Publish" },
  "pub.changes": { zh: "草稿与线上版本的差异", en: "The draft against live" },
  "pub.no_changes": { zh: "草稿与线上版本相同，没有要发布的改动。", en: "The draft is the same as live: nothing to publish." },
  "pub.files": { zh: "{n} 个文件", en: "{n} files" },
  "pub.added": { zh: "新增", en: "added" },
  "pub.removed": { zh: "删除", en: "removed" },
  "pub.changed": { zh: "修改", en: "changed" },
  "pub.tests": { zh: "测试结果", en: "Tests" },
  "pub.replay": { zh: "用最近的对话回放（what-if）", en: "What-if replay of recent conversations" },
  "pub.replay_run": { zh: "运行回放", en: "Run the replay" },
  "pub.replay_running": { zh: "回放中…", en: "Replaying…" },
  "pub.replay_summary": { zh: "{turns} 轮对话（{sessions} 个会话）：{changed} 轮回答会变，{unchanged} 轮不变", en: "{turns} turns ({sessions} sessions): {changed} would change, {unchanged} would not" },
  "pub.replay_handoffs": { zh: "转人工 +{added} / −{removed}", en: "handoffs +{added} / −{removed}" },
  "pub.replay_model": { zh: "{n} 轮会交给模型（未生成）", en: "{n} turns go to the model (not generated)" },
  "pub.replay_needs": { zh: "回放需要「编辑」或更高的角色。", en: "The replay needs the editor role or above." },
  "pub.replay_none": { zh: "回放中没有回答发生变化。", en: "No answer changed in the replay." },
  "pub.replay_no_log": { zh: "服务器没有对话日志，无法回放。", en: "The server keeps no conversation log: nothing to replay." },
  "pub.replay_turns": { zh: "{n} 轮", en: "{n} turns" },
  "pub.before": { zh: "之前", en: "Before" },
  "pub.after": { zh: "之后", en: "After" },
  "pub.kind.answer": { zh: "回答来源", en: "answer" },
  "pub.kind.handoff": { zh: "转人工", en: "handoff" },
  "pub.kind.reply": { zh: "回复文字", en: "reply" },
  "pub.message": { zh: "发布说明（为什么改）", en: "Message (why)" },
  "pub.message_ph": { zh: "例如：双十一满减话术", en: "e.g. holiday discount wording" },
  "pub.publish": { zh: "发布", en: "Publish" },
  "pub.canary": { zh: "灰度发布 {n}%", en: "Canary {n}%" },
  "pub.percent": { zh: "灰度比例", en: "Canary percent" },
  "pub.publishing": { zh: "发布中…", en: "Publishing…" },
  "pub.need_message": { zh: "请写一句发布说明。", en: "Write a message first." },
  "pub.published": { zh: "已发布版本 {id}。", en: "Published version {id}." },
  "pub.published_canary": { zh: "版本 {id} 已开始灰度，{n}% 的会话使用它。", en: "Version {id} is now a canary on {n}% of conversations." },
  "pub.tests_failed": { zh: "测试没通过（{failed} 失败，{passed} 通过），什么都没有发布。", en: "The tests failed ({failed} failed, {passed} passed): nothing was published." },
  "pub.force": { zh: "仍然发布（版本上会记录“强制”）", en: "Publish anyway (the version records it was forced)" },
  "pub.conflict": { zh: "草稿是基于版本 {parent} 编辑的，但线上已经是版本 {live}。", en: "The draft was edited from version {parent}, but version {live} is live now." },
  "pub.conflict_how": { zh: "先把版本 {parent} 到 {live} 之间别人发布的改动合进草稿（在编辑器里补上），再发布。", en: "Bring what was published between versions {parent} and {live} into the draft (in the editor), then publish again." },
  "pub.rebase": { zh: "这些改动已合进草稿：基于版本 {live} 发布", en: "These changes are in the draft: publish over version {live}" },
  "pub.conflict_show": { zh: "查看版本 {parent} → {live} 的改动", en: "Show the changes {parent} → {live}" },
  "pub.canary_running": { zh: "已有灰度版本 {id} 在运行：先全量发布或停止它。", en: "Version {id} is running as a canary: promote or stop it first." },
  "pub.invalid": { zh: "规则有错误，什么都没有发布：", en: "The rules have errors; nothing was published:" },
  "pub.cannot": { zh: "你的角色不能发布；发布者或管理员可以。", en: "Your role cannot publish; a publisher or admin can." },
  "pub.confirm_publish": { zh: "确认发布", en: "Publish?" },
  "pub.confirm_publish_body": { zh: "草稿将成为新的线上版本，所有顾客立刻使用它。说明：“{message}”", en: "The draft becomes the new live version and every customer gets it now. Message: “{message}”" },
  "pub.confirm_canary_body": { zh: "草稿将作为灰度版本发布，{n}% 的会话使用它，其余仍用线上版本。说明：“{message}”", en: "The draft is published as a canary: {n}% of conversations get it, the rest stay on live. Message: “{message}”" },
  "pub.versions": { zh: "版本", en: "Versions" },
  "pub.no_versions": { zh: "还没有发布过版本。", en: "Nothing has been published yet." },
  "pub.live": { zh: "线上", en: "live" },
  "pub.canary_mark": { zh: "灰度 {n}%", en: "canary {n}%" },
  "pub.forced": { zh: "强制", en: "forced" },
  "pub.rollback_of": { zh: "回滚到 {id}", en: "rollback of {id}" },
  "pub.v_tests": { zh: "测试 {passed}/{total}", en: "tests {passed}/{total}" },
  "pub.v_figures": { zh: "{turns} 轮 · 规则 {rules} · FAQ {faq} · 模型 {model} · 转人工 {handoffs}", en: "{turns} turns · rules {rules} · FAQ {faq} · model {model} · handoffs {handoffs}" },
  "pub.v_feedback": { zh: "满意度 {mean}", en: "satisfaction {mean}" },
  "pub.promote": { zh: "全量发布", en: "Promote" },
  "pub.stop_canary": { zh: "停止灰度", en: "Stop the canary" },
  "pub.rollback": { zh: "回滚到此版本", en: "Roll back to this" },
  "pub.confirm_promote": { zh: "全量发布版本 {id}？", en: "Promote version {id}?" },
  "pub.confirm_promote_body": { zh: "灰度版本 {id} 将成为线上版本，所有顾客都使用它（现在是 {n}%）。", en: "Canary version {id} becomes live for every customer (now {n}%)." },
  "pub.confirm_stop": { zh: "停止灰度版本 {id}？", en: "Stop canary version {id}?" },
  "pub.confirm_stop_body": { zh: "所有会话回到线上版本 {live}。版本 {id} 保留在列表里，之后还能再发布。", en: "Every conversation goes back to live version {live}. Version {id} stays in the list." },
  "pub.confirm_rollback": { zh: "回滚到版本 {id}？", en: "Roll back to version {id}?" },
  "pub.confirm_rollback_body": { zh: "版本 {id} 的内容将作为一个新版本重新发布并立即上线，替换当前线上版本 {live}。草稿不会改变。", en: "Version {id}'s content is published again as a new version and goes live at once, replacing live version {live}. The draft is not changed." },
  "pub.done_promote": { zh: "版本 {id} 已全量上线。", en: "Version {id} is live." },
  "pub.done_stop": { zh: "灰度版本 {id} 已停止。", en: "Canary version {id} stopped." },
  "pub.done_rollback": { zh: "已回滚：新版本 {id} 上线。", en: "Rolled back: new version {id} is live." },
  "pub.notes": { zh: "记录", en: "Notes" },
  "pub.no_store": { zh: "这台服务器没有版本库。", en: "This server has no version store." },
});

interface Version {
  id: number;
  rules: string;
  parent: number | null;
  author: string;
  message: string;
  time: string;
  forced?: boolean;
  tests?: { passed: number; failed: number };
  rollback_of?: number | null;
  notes?: { time: string; kind: string; text: string; figures?: unknown }[];
}

interface Versions {
  live: number | null;
  canary: { version: number; percent: number; since?: string } | null;
  versions: Version[];
}

function Section(props: { title: string; children: ComponentChildren; extra?: ComponentChildren }) {
  return (
    <div class="card">
      <div class="card-head">
        <h2>{props.title}</h2>
        {props.extra}
      </div>
      {props.children}
    </div>
  );
}

function DraftDiff() {
  const [data, setData] = useState<{ files: { path: string; change: string; diff: string }[] } | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api("GET", "/admin/diff?a=live&b=draft").then(setData, setError);
  }, []);
  if (error) return <ErrorBox error={error} />;
  if (!data) return <Loading />;
  if (!data.files.length) return <p class="muted">{t("pub.no_changes")}</p>;
  return (
    <div>
      <p class="muted small">{t("pub.files", { n: data.files.length })}</p>
      {data.files.map((f) => {
        const s = diffStat(f.diff);
        return (
          <details class="file-diff" open={data.files.length <= 6}>
            <summary>
              <span class={"badge ch-" + f.change}>{t("pub." + f.change)}</span>
              <a href={href("/editor", { path: f.path })}>{f.path}</a>
              <span class="d-add-t">+{s.add}</span>
              <span class="d-del-t">−{s.del}</span>
            </summary>
            <UnifiedDiff text={f.diff} />
          </details>
        );
      })}
    </div>
  );
}

function outcome(o: any): string {
  if (!o) return "—";
  const what = [o.rule && `rule ${o.rule}`, o.promotion && `promotion ${o.promotion}`, o.flow && `flow ${o.flow}${o.step ? " · " + o.step : ""}`, o.faq && `faq ${o.faq}`].filter(Boolean).join(", ");
  const head = what || o.source + (o.not_generated ? " (not generated)" : "");
  return `${head}${o.handoff ? ` → ${t("pub.kind.handoff")} (${o.handoff})` : ""}`;
}

function Replay(props: { can: string[] }) {
  const [data, setData] = useState<any>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const allowed = props.can.includes("edit");
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      setData(await api("POST", "/admin/replay", { draft: true }));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    if (allowed) run();
  }, []);
  if (!allowed) return <p class="muted">{t("pub.replay_needs")}</p>;
  const noLog = error instanceof ApiError && (error.type === "no_conversation_log" || error.type === "no_log");
  return (
    <div>
      <div class="summary">
        <button type="button" disabled={busy} onClick={run}>
          {busy ? t("pub.replay_running") : t("pub.replay_run")}
        </button>
      </div>
      {noLog ? <p class="muted">{t("pub.replay_no_log")}</p> : <ErrorBox error={error} />}
      {busy && !data ? <Loading /> : null}
      {data ? (
        <>
          <p>
            {t("pub.replay_summary", { turns: data.turns, sessions: data.sessions, changed: data.changed, unchanged: data.unchanged })}
            {" · "}
            {t("pub.replay_handoffs", { added: data.handoffs_added ?? 0, removed: data.handoffs_removed ?? 0 })}
            {data.model_turns ? " · " + t("pub.replay_model", { n: data.model_turns }) : ""}
          </p>
          {(data.groups ?? []).length === 0 ? <p class="muted">{t("pub.replay_none")}</p> : null}
          {(data.groups ?? []).map((g: any) => (
            <details class="group">
              <summary>
                <span class={"badge k-" + g.kind}>{t("pub.kind." + g.kind)}</span>
                <span class="group-change">{g.change}</span>
                <span class="pill">{t("pub.replay_turns", { n: g.count })}</span>
              </summary>
              {(g.examples ?? []).map((ex: any) => (
                <div class="example">
                  <div class="muted small">
                    {ex.session} · #{ex.turn} · {when(ex.time)}
                  </div>
                  <div class="ex-msg">
                    <q>{ex.message}</q>
                  </div>
                  <div class="ex-cmp">
                    <div class="ex-before">
                      <span class="vd-label">{t("pub.before")}</span>
                      <div class="small">{outcome(ex.before)}</div>
                      {ex.before?.reply ? <div class="reply">{ex.before.reply}</div> : null}
                    </div>
                    <div class="ex-after">
                      <span class="vd-label">{t("pub.after")}</span>
                      <div class="small">{outcome(ex.after)}</div>
                      {ex.after?.reply ? <div class="reply">{ex.after.reply}</div> : null}
                    </div>
                  </div>
                </div>
              ))}
            </details>
          ))}
        </>
      ) : null}
    </div>
  );
}

/** What was published between two versions (a conflict's rebase), on demand. */
function LiveChanges(props: { from: number; to: number }) {
  const [data, setData] = useState<{ files: { path: string; diff: string }[] } | null>(null);
  const [error, setError] = useState<unknown>(null);
  if (!data && !error)
    return (
      <button type="button" onClick={() => api("GET", `/admin/diff?from=${props.from}&to=${props.to}`).then(setData, setError)}>
        {t("pub.conflict_show", { parent: props.from, live: props.to })}
      </button>
    );
  if (error) return <ErrorBox error={error} />;
  return (
    <div class="live-changes">
      {data!.files.map((f) => (
        <div>
          <code>{f.path}</code>
          <UnifiedDiff text={f.diff} />
        </div>
      ))}
    </div>
  );
}

type Pending = { title: string; body: string; confirm: string; danger?: boolean; run: () => Promise<string> };

function PublishForm(props: { onPublished: () => void }) {
  const [message, setMessage] = useState("");
  const [percent, setPercent] = useState(10);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState("");
  const [pending, setPending] = useState<Pending | null>(null);
  const [busy, setBusy] = useState(false);
  const [lastCanary, setLastCanary] = useState<number | null>(null);

  /** Publishes the draft; `parent`: the live version the editor has brought into the
   * draft after a conflict (as `kefu publish --parent` does). */
  const publish = (canary: number | null, force = false, parent: number | null = null) => {
    if (!message.trim()) {
      setError(new Error(t("pub.need_message")));
      return;
    }
    setError(null);
    setLastCanary(canary);
    setPending({
      title: canary ? t("pub.canary", { n: canary }) : t("pub.confirm_publish"),
      body: canary ? t("pub.confirm_canary_body", { n: canary, message }) : t("pub.confirm_publish_body", { message }),
      confirm: canary ? t("pub.canary", { n: canary }) : t("pub.publish"),
      run: async () => {
        const body: Record<string, unknown> = { draft: true, message };
        if (canary) body.canary = canary;
        if (force) body.force = true;
        if (parent !== null) body.parent = parent;
        const r = await api<any>("POST", "/admin/publish", body);
        const id = r?.version?.id ?? "?";
        setMessage("");
        return canary ? t("pub.published_canary", { id, n: canary }) : t("pub.published", { id });
      },
    });
  };

  const confirm = async () => {
    if (!pending) return;
    setBusy(true);
    try {
      setDone(await pending.run());
      setError(null);
      props.onPublished();
    } catch (e) {
      setError(e);
      setDone("");
    } finally {
      setBusy(false);
      setPending(null);
    }
  };

  let explained: ComponentChildren = null;
  if (error instanceof ApiError) {
    const d = error.details as any;
    if (error.type === "tests_failed")
      explained = (
        <ErrorBox error={error}>
          <div>
            <p>{t("pub.tests_failed", { failed: d.failed ?? "?", passed: d.passed ?? "?" })}</p>
            {Array.isArray(d.failures) ? (
              <ul class="small">
                {d.failures.map((f: string) => (
                  <li class="pre">{f}</li>
                ))}
              </ul>
            ) : null}
            <button type="button" class="danger" onClick={() => publish(lastCanary, true)}>
              {t("pub.force")}
            </button>
          </div>
        </ErrorBox>
      );
    else if (error.type === "conflict")
      explained = (
        <ErrorBox error={error}>
          <p>{t("pub.conflict", { parent: d.parent ?? "?", live: d.live ?? "?" })}</p>
          <p>{t("pub.conflict_how", { parent: d.parent ?? "?", live: d.live ?? "?" })}</p>
          {typeof d.parent === "number" && typeof d.live === "number" ? (
            <>
              <LiveChanges from={d.parent} to={d.live} />
              <button type="button" onClick={() => publish(lastCanary, false, d.live)}>
                {t("pub.rebase", { live: d.live })}
              </button>
            </>
          ) : null}
        </ErrorBox>
      );
    else if (error.type === "canary_running")
      explained = (
        <ErrorBox error={error}>
          <p>{t("pub.canary_running", { id: d.canary?.version ?? d.canary ?? "?" })}</p>
        </ErrorBox>
      );
    else if (error.type === "rules_invalid")
      explained = (
        <ErrorBox error={error}>
          <p>{t("pub.invalid")}</p>
          {d.report ? <pre class="output">{d.report}</pre> : null}
        </ErrorBox>
      );
  }

  return (
    <div class="publish-form">
      <label>
        {t("pub.message")}
        <textarea rows={2} value={message} placeholder={t("pub.message_ph")} onInput={(e) => setMessage(e.currentTarget.value)} />
      </label>
      <div class="publish-actions">
        <button type="button" class="primary" onClick={() => publish(null)}>
          {t("pub.publish")}
        </button>
        <span class="canary-group">
          <label class="inline">
            <span class="sr">{t("pub.percent")}</span>
            <input type="number" min={1} max={99} value={percent} aria-label={t("pub.percent")} onInput={(e) => setPercent(Math.max(1, Math.min(99, Number(e.currentTarget.value) || 1)))} />
            %
          </label>
          <button type="button" onClick={() => publish(percent)}>
            {t("pub.canary", { n: percent })}
          </button>
        </span>
      </div>
      {done ? <div class="ok-box">{done}</div> : null}
      {explained ?? <ErrorBox error={error} />}
      {pending ? <Confirm title={pending.title} body={pending.body} confirm={pending.confirm} danger={pending.danger} busy={busy} onConfirm={confirm} onCancel={() => setPending(null)} /> : null}
    </div>
  );
}

function VersionsList(props: { can: string[]; reload: number; onChanged: () => void }) {
  const [data, setData] = useState<Versions | null>(null);
  const [figures, setFigures] = useState<Record<string, any>>({});
  const [error, setError] = useState<unknown>(null);
  const [pending, setPending] = useState<Pending | null>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState("");
  const canPublish = props.can.includes("publish");

  useEffect(() => {
    api<Versions>("GET", "/admin/versions").then(setData, setError);
    // Per-version figures come from the log's report, by rules hash (none without a log).
    api<any>("GET", "/admin/report").then(
      (r) => setFigures(Object.fromEntries((r?.report?.versions ?? []).map((v: any) => [v.version, v]))),
      () => setFigures({}),
    );
  }, [props.reload]);

  if (error instanceof ApiError && error.type === "no_version_store") return <p class="muted">{t("pub.no_store")}</p>;
  if (error) return <ErrorBox error={error} />;
  if (!data) return <Loading />;
  if (!data.versions.length) return <p class="muted">{t("pub.no_versions")}</p>;

  const live = data.live;
  const canary = data.canary;
  const act = (p: Pending) => setPending(p);
  /** A button labelled as its confirmation, which asks before it acts. */
  const confirmButton = (cls: string, p: Pending) => (
    <button type="button" class={cls} onClick={() => act(p)}>
      {p.confirm}
    </button>
  );
  const confirm = async () => {
    if (!pending) return;
    setBusy(true);
    try {
      setDone(await pending.run());
      setError(null);
      props.onChanged();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
      setPending(null);
    }
  };

  return (
    <div>
      {done ? <div class="ok-box">{done}</div> : null}
      <ol class="versions">
        {data.versions.map((v) => {
          const isLive = v.id === live;
          const isCanary = canary?.version === v.id;
          const f = figures[v.rules];
          return (
            <li class={"version" + (isLive ? " is-live" : "") + (isCanary ? " is-canary" : "")}>
              <div class="v-head">
                <strong class="v-id">#{v.id}</strong>
                {isLive ? <span class="badge live">{t("pub.live")}</span> : null}
                {isCanary ? <span class="badge canary">{t("pub.canary_mark", { n: canary!.percent })}</span> : null}
                {v.forced ? <span class="badge bad">{t("pub.forced")}</span> : null}
                {v.rollback_of ? <span class="badge">{t("pub.rollback_of", { id: v.rollback_of })}</span> : null}
                <span class="v-msg">{v.message}</span>
              </div>
              <div class="muted small">
                {v.author} · {when(v.time)} · <code>{v.rules.slice(0, 12)}</code>
                {v.tests ? " · " + t("pub.v_tests", { passed: v.tests.passed, total: v.tests.passed + v.tests.failed }) : ""}
              </div>
              {f ? (
                <div class="small v-fig">
                  {t("pub.v_figures", { turns: f.turns, rules: pct(f.rules), faq: pct(f.faq), model: pct(f.model), handoffs: pct(f.handoffs?.rate) })}
                  {typeof f.feedback_mean === "number" ? " · " + t("pub.v_feedback", { mean: f.feedback_mean.toFixed(2) }) : ""}
                </div>
              ) : null}
              {v.notes?.length ? (
                <details class="small">
                  <summary>{t("pub.notes")}</summary>
                  <ul>
                    {v.notes.map((n) => (
                      <li>
                        {when(n.time)} · {n.text}
                      </li>
                    ))}
                  </ul>
                </details>
              ) : null}
              {canPublish ? (
                <div class="v-actions">
                  {isCanary ? (
                    <>
                      {confirmButton("primary", {
                        title: t("pub.confirm_promote", { id: v.id }),
                        body: t("pub.confirm_promote_body", { id: v.id, n: canary!.percent }),
                        confirm: t("pub.promote"),
                        run: async () => {
                          const r = await api<any>("POST", "/admin/promote", {});
                          return t("pub.done_promote", { id: r?.live ?? v.id });
                        },
                      })}
                      {confirmButton("danger", {
                        title: t("pub.confirm_stop", { id: v.id }),
                        body: t("pub.confirm_stop_body", { id: v.id, live: live ?? "—" }),
                        confirm: t("pub.stop_canary"),
                        danger: true,
                        run: async () => {
                          const r = await api<any>("POST", "/admin/rollback", {});
                          return t("pub.done_stop", { id: r?.canary_stopped ?? v.id });
                        },
                      })}
                    </>
                  ) : null}
                  {!isLive && !isCanary
                    ? confirmButton("danger", {
                        title: t("pub.confirm_rollback", { id: v.id }),
                        body: t("pub.confirm_rollback_body", { id: v.id, live: live ?? "—" }),
                        confirm: t("pub.rollback"),
                        danger: true,
                        run: async () => {
                          const r = await api<any>("POST", "/admin/rollback", { version: v.id });
                          return t("pub.done_rollback", { id: r?.version?.id ?? "?" });
                        },
                      })
                    : null}
                </div>
              ) : null}
            </li>
          );
        })}
      </ol>
      {pending ? <Confirm title={pending.title} body={pending.body} confirm={pending.confirm} danger={pending.danger} busy={busy} onConfirm={confirm} onCancel={() => setPending(null)} /> : null}
    </div>
  );
}

export function PublishPage(props: { can: string[] }) {
  const [reload, setReload] = useState(0);
  const canPublish = props.can.includes("publish");
  return (
    <section class="publish">
      <div class="page-head">
        <h1>{t("pub.title")}</h1>
      </div>
      <Section title={t("pub.changes")}>
        <DraftDiff key={"d" + reload} />
      </Section>
      <Section title={t("pub.tests")}>
        <TestsCompact />
      </Section>
      <Section title={t("pub.replay")}>
        <Replay can={props.can} />
      </Section>
      <Section title={t("pub.publish")}>{canPublish ? <PublishForm onPublished={() => setReload(reload + 1)} /> : <p class="muted">{t("pub.cannot")}</p>}</Section>
      <Section title={t("pub.versions")}>
        <VersionsList can={props.can} reload={reload} onChanged={() => setReload(reload + 1)} />
      </Section>
    </section>
  );
}
