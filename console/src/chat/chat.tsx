// The test chat beside the rule editor: the editor picks who the customer is (segment, VIP,
// orders, the order and product pages they came from, the clock for promotions), talks as
// that customer to an engine built from the draft (POST /admin/draft/chat), sees each answer
// with its trace (links jump the editor to the rule, flow step or FAQ that answered), resets
// the conversation, and saves it as a test case.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { t } from "../i18n";
import type { DraftFile, Location } from "../editor/types";
import { Linked, TraceView } from "./trace";
import { SaveTestDialog, type SavedTurn } from "./save-test";
import { asOfRfc3339, contextMap, userMap, type ChatAnswer, type Customer, type Segment } from "./types";
import "./strings";

interface Message {
  say: string;
  answer?: ChatAnswer;
  error?: string;
}

const SEGMENTS: Segment[] = ["new", "regular", "vip", "churn_risk"];

export function ChatPanel(props: {
  files: DraftFile[];
  /** Whether the user may save a test (the `edit` permission). */
  canSave: boolean;
  onJump: (loc: Location) => void;
  onSaved: (path: string) => void;
}) {
  const [customer, setCustomer] = useState<Customer>({ segment: "regular", orders: 2, order: "", product: "", asOf: "" });
  const [messages, setMessages] = useState<Message[]>([]);
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [saving, setSaving] = useState(false);
  const session = useRef<string | undefined>(undefined);
  const resetNext = useRef(false);
  const log = useRef<HTMLDivElement>(null);

  useEffect(() => {
    log.current?.scrollTo({ top: log.current.scrollHeight });
  }, [messages]);

  const patch = (p: Partial<Customer>) => setCustomer({ ...customer, ...p });

  const send = async (e?: Event) => {
    e?.preventDefault();
    const say = text.trim();
    if (!say || busy) return;
    setText("");
    setBusy(true);
    const idx = messages.length;
    setMessages((m) => [...m, { say }]);
    try {
      const body: Record<string, unknown> = { message: say, user: userMap(customer) };
      if (session.current) body.session_id = session.current;
      const ctx = contextMap(customer);
      if (ctx) body.context = ctx;
      const asOf = asOfRfc3339(customer.asOf);
      if (asOf) body.as_of = asOf;
      if (resetNext.current) body.reset = true;
      const answer = await api<ChatAnswer>("POST", "/admin/draft/chat", body);
      resetNext.current = false;
      session.current = answer.session_id;
      setMessages((m) => m.map((x, i) => (i === idx ? { ...x, answer } : x)));
    } catch (err) {
      let msg = String(err);
      if (err instanceof ApiError) {
        msg = err.type === "rules_invalid" ? t("kc.invalid") : `${err.message} (${err.type})`;
        const diags = (err.details as any).diagnostics;
        if (Array.isArray(diags) && diags.length)
          msg +=
            "\n" +
            diags
              .slice(0, 5)
              .map((d: any) => d.location ?? (d.file ? `${d.file}:${d.line}:${d.col}` : "") + " " + (d.message ?? ""))
              .join("\n");
      }
      setMessages((m) => m.map((x, i) => (i === idx ? { ...x, error: msg } : x)));
    } finally {
      setBusy(false);
    }
  };

  const reset = () => {
    setMessages([]);
    if (session.current) resetNext.current = true;
  };

  const answered: SavedTurn[] = messages.filter((m) => m.answer).map((m) => ({ say: m.say, answer: m.answer! }));

  return (
    <section class="kc" aria-label={t("kc.title")}>
      <header class="kc-head">
        <strong>{t("kc.title")}</strong>
        <span class="ked-spacer" />
        <button type="button" onClick={reset} disabled={!messages.length}>
          {t("kc.reset")}
        </button>
        {props.canSave && (
          <button type="button" onClick={() => setSaving(true)} disabled={!answered.length}>
            {t("kc.saveTest")}
          </button>
        )}
      </header>
      <details class="kc-who" open>
        <summary>
          {t("kc.customer")}: {t("kc.seg." + customer.segment)} · {t("kc.ordersN", { n: customer.orders })}
          {customer.order && ` · ${t("kc.order")} ${customer.order}`}
          {customer.product && ` · ${t("kc.product")} ${customer.product}`}
          {customer.asOf && ` · ${customer.asOf.replace("T", " ")}`}
        </summary>
        <div class="kc-form">
          <label>
            {t("kc.segment")}
            <select
              value={customer.segment}
              onChange={(e) => {
                const s = (e.target as HTMLSelectElement).value as Segment;
                patch({ segment: s, orders: s === "new" ? 0 : customer.orders === 0 ? 2 : customer.orders });
              }}
            >
              {SEGMENTS.map((s) => (
                <option value={s}>{t("kc.seg." + s)}</option>
              ))}
            </select>
          </label>
          <label class="kc-check">
            <input
              type="checkbox"
              checked={customer.segment === "vip"}
              onChange={(e) => patch({ segment: (e.target as HTMLInputElement).checked ? "vip" : "regular" })}
            />
            VIP
          </label>
          <label>
            {t("kc.orders")}
            <input
              type="number"
              min={0}
              value={customer.orders}
              onInput={(e) => patch({ orders: Math.max(0, Number((e.target as HTMLInputElement).value) || 0) })}
            />
          </label>
          <label>
            {t("kc.order")}
            <input value={customer.order} placeholder="202611100005" onInput={(e) => patch({ order: (e.target as HTMLInputElement).value })} />
          </label>
          <label>
            {t("kc.product")}
            <input value={customer.product} placeholder="T04" onInput={(e) => patch({ product: (e.target as HTMLInputElement).value })} />
          </label>
          <label>
            {t("kc.asOf")}
            <input type="datetime-local" value={customer.asOf} onInput={(e) => patch({ asOf: (e.target as HTMLInputElement).value })} />
          </label>
        </div>
      </details>
      <div class="kc-log" ref={log}>
        {messages.length === 0 && <p class="kc-muted kc-empty">{t("kc.empty")}</p>}
        {messages.map((m, i) => (
          <div class="kc-turn">
            <div class="kc-bubble kc-me">{m.say}</div>
            {m.answer && (
              <>
                <div class={"kc-bubble kc-bot" + (m.answer.turn.handoff ? " kc-handoff" : "")}>
                  {m.answer.turn.reply || <span class="kc-muted">{t("kc.noReply")}</span>}
                </div>
                <TraceView answer={m.answer} files={props.files} onJump={props.onJump} open={i === messages.length - 1} />
              </>
            )}
            {m.error && (
              <div class="kc-bubble kc-err">
                <Linked text={m.error} files={props.files} onJump={props.onJump} />
              </div>
            )}
          </div>
        ))}
        {busy && <div class="kc-muted kc-typing">…</div>}
      </div>
      <form class="kc-input" onSubmit={send}>
        <input
          value={text}
          onInput={(e) => setText((e.target as HTMLInputElement).value)}
          placeholder={t("kc.placeholder")}
          aria-label={t("kc.placeholder")}
        />
        <button type="submit" class="ked-primary" disabled={busy || !text.trim()}>
          {t("kc.send")}
        </button>
      </form>
      {saving && (
        <SaveTestDialog
          turns={answered}
          user={userMap(customer)}
          context={contextMap(customer)}
          asOf={asOfRfc3339(customer.asOf)}
          onClose={() => setSaving(false)}
          onSaved={props.onSaved}
        />
      )}
    </section>
  );
}
