// "保存为测试 / Save as test": turns the test chat's conversation into a test case under
// tests/ (POST /admin/draft/tests/save). Per turn the editor picks which expectations to
// keep (source, intent, the rule/promotion/flow step/FAQ that answered, texts the reply
// must contain); the customer (user, context, as_of) goes with it.
import { useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { t } from "../i18n";
import type { ChatAnswer } from "./types";

export interface SavedTurn {
  say: string;
  answer: ChatAnswer;
}

interface Keep {
  source: boolean;
  intent: boolean;
  by: boolean;
  contains: boolean;
  text: string;
}

/** A short, telling piece of the reply: its first clause, at most 20 characters. */
function salient(reply: string): string {
  const first = reply.split(/[。！？!?\n（(～~]/)[0] ?? "";
  return Array.from(first.trim()).slice(0, 20).join("");
}

/** The `expect` map of one turn, as rules/tests/*.yaml spell it. */
export function expectOf(a: ChatAnswer, k: Keep): Record<string, unknown> {
  const e: Record<string, unknown> = {};
  const tr = a.turn;
  if (k.source) e.source = tr.source;
  if (k.intent) e.intent = a.understanding.intent ?? "none";
  if (k.by) {
    if (tr.rule) e.rule = tr.rule;
    if (tr.promotion) e.promotion = tr.promotion;
    if (tr.flow) e.flow = tr.flow;
    if (tr.step) e.step = tr.step.replace(/@\d+$/, "");
    if (tr.faq) e.faq = tr.faq;
  }
  if (k.contains && k.text.trim()) e.reply_contains = [k.text.trim()];
  return e;
}

export function SaveTestDialog(props: {
  turns: SavedTurn[];
  user: Record<string, unknown>;
  context?: Record<string, unknown>;
  asOf?: string;
  onClose: () => void;
  onSaved: (path: string) => void;
}) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [keeps, setKeeps] = useState<Keep[]>(() =>
    props.turns.map((x) => ({ source: true, intent: false, by: true, contains: !!x.answer.turn.reply, text: salient(x.answer.turn.reply) })),
  );
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [written, setWritten] = useState("");

  const set = (i: number, patch: Partial<Keep>) => setKeeps(keeps.map((k, j) => (j === i ? { ...k, ...patch } : k)));

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!name.trim()) {
      setError(t("kc.needName"));
      return;
    }
    setBusy(true);
    setError("");
    try {
      const body: Record<string, unknown> = {
        name: name.trim(),
        user: props.user,
        turns: props.turns.map((x, i) => ({ say: x.say, expect: expectOf(x.answer, keeps[i]) })),
      };
      if (description.trim()) body.description = description.trim();
      if (props.context) body.context = props.context;
      if (props.asOf) body.as_of = props.asOf;
      const r = await api<{ path: string; version: string }>("POST", "/admin/draft/tests/save", body);
      setWritten(r.path);
      props.onSaved(r.path);
    } catch (err) {
      setError(err instanceof ApiError ? (err.status === 409 ? t("kc.exists") : `${err.message} (${err.type})`) : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="kc-modal" role="dialog" aria-modal="true" aria-label={t("kc.saveTest")}>
      <form class="kc-dialog" onSubmit={submit}>
        <h3>{t("kc.saveTest")}</h3>
        <label class="kc-field">
          {t("kc.testName")}
          <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder={t("kc.testNameHint")} autoFocus />
        </label>
        <label class="kc-field">
          {t("kc.description")}
          <input value={description} onInput={(e) => setDescription((e.target as HTMLInputElement).value)} />
        </label>
        <ol class="kc-save-turns">
          {props.turns.map((x, i) => {
            const k = keeps[i];
            const tr = x.answer.turn;
            const by = tr.rule ? "rule" : tr.promotion ? "promotion" : tr.flow ? "flow/step" : tr.faq ? "faq" : "";
            return (
              <li>
                <div class="kc-say">“{x.say}”</div>
                <label>
                  <input type="checkbox" checked={k.source} onChange={() => set(i, { source: !k.source })} /> source: {tr.source}
                </label>
                <label>
                  <input type="checkbox" checked={k.intent} onChange={() => set(i, { intent: !k.intent })} /> intent:{" "}
                  {x.answer.understanding.intent ?? "none"}
                </label>
                {by && (
                  <label>
                    <input type="checkbox" checked={k.by} onChange={() => set(i, { by: !k.by })} /> {by}:{" "}
                    {tr.rule ?? tr.promotion ?? (tr.flow ? tr.flow + (tr.step ? " · " + tr.step.replace(/@\d+$/, "") : "") : tr.faq)}
                  </label>
                )}
                <label class="kc-contains">
                  <input type="checkbox" checked={k.contains} onChange={() => set(i, { contains: !k.contains })} /> reply_contains
                  <input value={k.text} onInput={(e) => set(i, { text: (e.target as HTMLInputElement).value, contains: true })} />
                </label>
              </li>
            );
          })}
        </ol>
        {error && <div class="kc-error">{error}</div>}
        {written && <div class="kc-ok">{t("kc.written", { p: written })}</div>}
        <div class="kc-actions">
          <button type="button" onClick={props.onClose}>
            {written ? t("ed.close") : t("kc.cancel")}
          </button>
          {!written && (
            <button type="submit" class="ked-primary" disabled={busy}>
              {t("kc.saveTest")}
            </button>
          )}
        </div>
      </form>
    </div>
  );
}
