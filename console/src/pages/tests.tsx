// The tests page: runs the draft's conversation tests (POST /admin/draft/tests, the same
// runner as `kefu test`) and shows the summary, each failing case as expected-vs-actual
// with the differing characters marked, the coverage and the never-exercised rules as
// links into the editor. `TestsCompact` is the publish page's short form of the same call.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { addStrings, t } from "../i18n";
import { href } from "../router";
import { ErrorBox, Loading, ValueDiff } from "../ui";

addStrings({
  "tests.title": { zh: "对话测试", en: "Conversation tests" },
  "tests.run": { zh: "运行测试", en: "Run the tests" },
  "tests.running": { zh: "运行中…", en: "Running…" },
  "tests.passed": { zh: "通过 {n}", en: "{n} passed" },
  "tests.failed": { zh: "失败 {n}", en: "{n} failed" },
  "tests.all_ok": { zh: "全部通过", en: "All passed" },
  "tests.failing": { zh: "失败的用例", en: "Failing cases" },
  "tests.turn": { zh: "第 {n} 轮", en: "Turn {n}" },
  "tests.say": { zh: "顾客说", en: "Customer says" },
  "tests.field": { zh: "检查项", en: "Checked" },
  "tests.expected": { zh: "期望", en: "Expected" },
  "tests.actual": { zh: "实际", en: "Actual" },
  "tests.coverage": { zh: "覆盖率", en: "Coverage" },
  "tests.covered": { zh: "{covered} / {total} 条被测试用到", en: "{covered} of {total} exercised by a test" },
  "tests.never": { zh: "从未被测试用到的规则", en: "Never exercised by a test" },
  "tests.never_none": { zh: "每条规则都被测试用到了。", en: "Every rule is exercised by a test." },
  "tests.passing": { zh: "通过的用例（{n}）", en: "Passing cases ({n})" },
  "tests.output": { zh: "kefu test 的原始输出", en: "What kefu test prints" },
  "tests.open": { zh: "在编辑器中打开", en: "Open in the editor" },
  "tests.kb": { zh: "知识库检查", en: "Knowledge-base checks" },
  "tests.see_all": { zh: "查看详情", en: "Details" },
  "tests.none": { zh: "草稿里没有对话测试（rules/tests/*.yaml）。", en: "The draft has no conversation tests (rules/tests/*.yaml)." },
});

export interface Failure {
  turn: number;
  say?: string;
  field?: string;
  expected?: unknown;
  actual?: unknown;
  message?: string;
}

export interface TestsResult {
  passed: number;
  failed: number;
  cases: { file: string; name: string; ok: boolean; failures: Failure[] }[];
  kb?: any;
  coverage?: { percent: number; covered: number; total: number; never: { kind: string; name: string; file: string; line: number }[] };
  rendered?: string;
}

/** Runs the tests once on mount; `run` runs them again. */
export function useTests() {
  const [result, setResult] = useState<TestsResult | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      setResult(await api<TestsResult>("POST", "/admin/draft/tests", {}));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    run();
  }, []);
  return { result, error, busy, run };
}

function Summary(props: { r: TestsResult }) {
  const { r } = props;
  return (
    <div class="summary">
      <span class={"pill " + (r.failed ? "bad" : "good")}>{r.failed ? t("tests.failed", { n: r.failed }) : t("tests.all_ok")}</span>
      <span class="pill">{t("tests.passed", { n: r.passed })}</span>
      {r.coverage ? (
        <span class="pill">
          {t("tests.coverage")} {Math.round(r.coverage.percent)}%
        </span>
      ) : null}
    </div>
  );
}

function FailureView(props: { f: Failure }) {
  const f = props.f;
  return (
    <div class="failure">
      <div class="failure-head">
        <span class="badge">{t("tests.turn", { n: f.turn + 1 })}</span>
        {f.say ? (
          <span>
            {t("tests.say")}：<q>{f.say}</q>
          </span>
        ) : null}
        {f.field ? (
          <span class="muted">
            {t("tests.field")}：<code>{f.field}</code>
          </span>
        ) : null}
      </div>
      {f.expected !== undefined || f.actual !== undefined ? <ValueDiff expected={f.expected} actual={f.actual} labels={[t("tests.expected"), t("tests.actual")]} /> : null}
      {f.message ? <p class="muted small pre">{f.message}</p> : null}
    </div>
  );
}

function editorLink(file: string, line?: number) {
  return href("/editor", { path: file, line });
}

export function TestsPage() {
  const { result, error, busy, run } = useTests();
  const r = result;
  const failing = r?.cases.filter((c) => !c.ok) ?? [];
  const passing = r?.cases.filter((c) => c.ok) ?? [];
  const never = r?.coverage?.never ?? [];
  const kinds = [...new Set(never.map((n) => n.kind))];
  return (
    <section>
      <div class="page-head">
        <h1>{t("tests.title")}</h1>
        <span class="spacer" />
        <button type="button" class="primary" disabled={busy} onClick={run}>
          {busy ? t("tests.running") : t("tests.run")}
        </button>
      </div>
      <ErrorBox error={error} />
      {!r && busy ? <Loading /> : null}
      {r ? (
        <>
          <Summary r={r} />
          {r.cases.length === 0 ? <div class="empty">{t("tests.none")}</div> : null}
          {failing.length ? (
            <div class="card">
              <h2>{t("tests.failing")}</h2>
              {failing.map((c) => (
                <div class="case">
                  <h3>
                    <span class="x">✗</span> {c.name}{" "}
                    <a class="small" href={editorLink(c.file)}>
                      {c.file}
                    </a>
                  </h3>
                  {c.failures.map((f) => (
                    <FailureView f={f} />
                  ))}
                </div>
              ))}
            </div>
          ) : null}
          {r.coverage ? (
            <div class="card">
              <h2>{t("tests.coverage")}</h2>
              <div class="meter" role="meter" aria-valuenow={r.coverage.percent} aria-valuemin={0} aria-valuemax={100}>
                <div style={{ width: Math.min(100, Math.max(0, r.coverage.percent)) + "%" }} />
              </div>
              <p>
                <strong>{Math.round(r.coverage.percent)}%</strong> · {t("tests.covered", { covered: r.coverage.covered, total: r.coverage.total })}
              </p>
              <h3>{t("tests.never")}</h3>
              {never.length === 0 ? <p class="muted">{t("tests.never_none")}</p> : null}
              {kinds.map((k) => (
                <div class="never-group">
                  <div class="muted small">{k}</div>
                  <ul class="links">
                    {never
                      .filter((n) => n.kind === k)
                      .map((n) => (
                        <li>
                          <a href={editorLink(n.file, n.line)} title={t("tests.open")}>
                            {n.name}
                          </a>{" "}
                          <span class="muted small">
                            {n.file}:{n.line}
                          </span>
                        </li>
                      ))}
                  </ul>
                </div>
              ))}
            </div>
          ) : null}
          {passing.length ? (
            <details class="card">
              <summary>{t("tests.passing", { n: passing.length })}</summary>
              <ul class="links">
                {passing.map((c) => (
                  <li>
                    <span class="ok">✓</span> {c.name} <span class="muted small">{c.file}</span>
                  </li>
                ))}
              </ul>
            </details>
          ) : null}
          {r.rendered ? (
            <details class="card">
              <summary>{t("tests.output")}</summary>
              <pre class="output">{r.rendered}</pre>
            </details>
          ) : null}
        </>
      ) : null}
    </section>
  );
}

/** The publish page's short form: the counts and the failing cases' names. */
export function TestsCompact() {
  const { result: r, error, busy, run } = useTests();
  return (
    <div>
      <ErrorBox error={error} />
      {!r && busy ? <Loading /> : null}
      {r ? (
        <>
          <div class="summary">
            <Summary r={r} />
            <button type="button" disabled={busy} onClick={run}>
              {busy ? t("tests.running") : t("tests.run")}
            </button>
            <a href={href("/tests")}>{t("tests.see_all")}</a>
          </div>
          {r.cases.some((c) => !c.ok) ? (
            <ul class="links">
              {r.cases
                .filter((c) => !c.ok)
                .map((c) => (
                  <li>
                    <span class="x">✗</span> {c.name}{" "}
                    <span class="muted small">
                      {c.file} · {c.failures.map((f) => f.field ?? f.message).filter(Boolean).join(", ")}
                    </span>
                  </li>
                ))}
            </ul>
          ) : null}
        </>
      ) : null}
    </div>
  );
}
