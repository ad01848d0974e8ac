// Small pieces every page uses: the error box (a 403 `forbidden` says which role is
// needed), the loading line, the confirmation dialog, a coloured unified diff and an
// inline character diff of two values (for test failures).
import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { ApiError } from "./api";
import { addStrings, t } from "./i18n";

addStrings({
  "ui.loading": { zh: "加载中…", en: "Loading…" },
  "ui.cancel": { zh: "取消", en: "Cancel" },
  "ui.forbidden": { zh: "没有权限：这一步需要「{needs}」角色。服务器拒绝了请求。", en: "Not allowed: this needs the “{needs}” role. The server refused the request." },
  "ui.forbidden_any": { zh: "没有权限：服务器拒绝了请求。", en: "Not allowed: the server refused the request." },
  "ui.error": { zh: "出错了", en: "Something went wrong" },
  "ui.network": { zh: "无法连接服务器：{message}", en: "Cannot reach the server: {message}" },
  "ui.diff_empty": { zh: "（没有改动）", en: "(no changes)" },
  "role.viewer": { zh: "查看者", en: "viewer" },
  "role.editor": { zh: "编辑", en: "editor" },
  "role.publisher": { zh: "发布者", en: "publisher" },
  "role.agent": { zh: "客服", en: "agent" },
  "role.admin": { zh: "管理员", en: "admin" },
});

/** A role's name in the chosen language. */
export function roleName(role: string): string {
  const k = "role." + role;
  const s = t(k);
  return s === k ? role : s;
}

/** Shows what went wrong; a 403 names the role that would be allowed. */
export function ErrorBox(props: { error: unknown; children?: ComponentChildren }) {
  const e = props.error;
  if (!e) return null;
  let text: string;
  let forbidden = false;
  if (e instanceof ApiError) {
    if (e.status === 403 && e.type === "forbidden") {
      forbidden = true;
      const needs = e.details.needs;
      text = needs ? t("ui.forbidden", { needs: roleName(String(needs)) }) : t("ui.forbidden_any");
    } else text = e.message;
  } else if (e instanceof TypeError) text = t("ui.network", { message: e.message });
  else text = String((e as any)?.message ?? e);
  return (
    <div class={"error-box" + (forbidden ? " forbidden" : "")} role="alert">
      <strong>
        {forbidden ? (
          <svg class="lock" viewBox="0 0 16 16" aria-hidden="true">
            <path d="M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z" />
          </svg>
        ) : null}
        {forbidden ? "403" : e instanceof ApiError ? `${e.status} ${e.type}` : t("ui.error")}
      </strong>
      <span class="error-text">{text}</span>
      {props.children}
    </div>
  );
}

/** A quiet line while something loads. */
export function Loading() {
  return <p class="muted loading">{t("ui.loading")}</p>;
}

/** A modal asking to confirm; `body` says exactly what will happen. */
export function Confirm(props: {
  title: string;
  body: ComponentChildren;
  confirm: string;
  danger?: boolean;
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ok = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    ok.current?.focus();
    const esc = (e: KeyboardEvent) => e.key === "Escape" && props.onCancel();
    addEventListener("keydown", esc);
    return () => removeEventListener("keydown", esc);
  }, []);
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onCancel()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-label={props.title}>
        <h2>{props.title}</h2>
        <div class="dialog-body">{props.body}</div>
        <div class="actions">
          <button type="button" onClick={props.onCancel}>{t("ui.cancel")}</button>
          <button type="button" ref={ok} class={props.danger ? "danger" : "primary"} disabled={props.busy} onClick={props.onConfirm}>
            {props.confirm}
          </button>
        </div>
      </div>
    </div>
  );
}

/** A unified diff, one coloured line per line of text. */
export function UnifiedDiff(props: { text: string }) {
  const lines = props.text.replace(/\n$/, "").split("\n");
  if (!props.text.trim()) return <p class="muted">{t("ui.diff_empty")}</p>;
  return (
    <pre class="diff">
      {lines.map((l) => {
        const cls = l.startsWith("+++") || l.startsWith("---") ? "d-file" : l.startsWith("@@") ? "d-hunk" : l.startsWith("+") ? "d-add" : l.startsWith("-") ? "d-del" : "";
        return <div class={cls}>{l || " "}</div>;
      })}
    </pre>
  );
}

/** Counts of added and removed lines in a unified diff. */
export function diffStat(text: string): { add: number; del: number } {
  let add = 0;
  let del = 0;
  for (const l of text.split("\n")) {
    if (l.startsWith("+++") || l.startsWith("---")) continue;
    if (l.startsWith("+")) add++;
    else if (l.startsWith("-")) del++;
  }
  return { add, del };
}

/** A value as people read it: strings as they are, anything else as JSON. */
export function show(v: unknown): string {
  if (v === undefined) return "—";
  if (typeof v === "string") return v;
  return JSON.stringify(v, null, 1).replace(/\n\s*/g, " ");
}

type Seg = { same: boolean; text: string };

/** Character segments of `a` against `b` (a longest-common-subsequence diff); long
 * values are compared whole so a big failure cannot stall the page. */
export function charDiff(a: string, b: string): { a: Seg[]; b: Seg[] } {
  const x = [...a];
  const y = [...b];
  if (x.length * y.length > 250_000) return { a: [{ same: false, text: a }], b: [{ same: false, text: b }] };
  const n = x.length;
  const m = y.length;
  const L: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const sa: Seg[] = [];
  const sb: Seg[] = [];
  const push = (s: Seg[], same: boolean, c: string) => {
    const last = s[s.length - 1];
    if (last && last.same === same) last.text += c;
    else s.push({ same, text: c });
  };
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      push(sa, true, x[i++]);
      push(sb, true, y[j++]);
    } else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) push(sb, false, y[j++]);
    else push(sa, false, x[i++]);
  }
  return { a: sa, b: sb };
}

/** Expected against actual, the differing characters highlighted. */
export function ValueDiff(props: { expected: unknown; actual: unknown; labels: [string, string] }) {
  const d = charDiff(show(props.expected), show(props.actual));
  const render = (segs: Seg[], cls: string) => segs.map((s) => (s.same ? s.text : <mark class={cls}>{s.text}</mark>));
  return (
    <div class="value-diff">
      <div class="vd-row vd-exp">
        <span class="vd-label">{props.labels[0]}</span>
        <code>{render(d.a, "m-del")}</code>
      </div>
      <div class="vd-row vd-act">
        <span class="vd-label">{props.labels[1]}</span>
        <code>{render(d.b, "m-add")}</code>
      </div>
    </div>
  );
}

/** A percent from a 0..1 share, or a dash. */
export function pct(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || Number.isNaN(x) ? "—" : (x * 100).toFixed(digits) + "%";
}

/** A time in the viewer's locale, short. */
export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(document.documentElement.lang || undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}
