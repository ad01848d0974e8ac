// How one test-chat answer was decided, under its bubble: what answered (with a link that
// jumps the editor to it), the understanding (intent, confidence, runners-up, entities,
// emotion), slots, knowledge-base hits, the model prompt's parts, safety actions and every
// trace line, with each `file:line` in them a link into the editor.
import type { ComponentChildren } from "preact";
import { t } from "../i18n";
import { draftPath, type DraftFile, type Location } from "../editor/types";
import type { ChatAnswer } from "./types";

/** `aftersale.kefu:122` or `rules/kb/faq.yaml:3:5` inside a text. */
const LOCATION = /([\p{L}\p{N}_.\-\/]+\.(?:kefu|ya?ml)):(\d+)(?::(\d+))?/gu;

/** `text` with every file:line in it a link that jumps the editor there. */
export function Linked(props: { text: string; files: DraftFile[]; onJump: (loc: Location) => void }) {
  const out: ComponentChildren[] = [];
  let last = 0;
  for (const m of props.text.matchAll(LOCATION)) {
    const at = m.index ?? 0;
    if (at > last) out.push(props.text.slice(last, at));
    const file = draftPath(props.files, m[1]) ?? m[1];
    const loc = { file, line: Number(m[2]), col: m[3] ? Number(m[3]) : 1 };
    out.push(
      <a
        href="#"
        class="kc-loc"
        onClick={(e) => {
          e.preventDefault();
          props.onJump(loc);
        }}
      >
        {m[0]}
      </a>,
    );
    last = at + m[0].length;
  }
  if (last < props.text.length) out.push(props.text.slice(last));
  return <>{out}</>;
}

function pct(x: number) {
  return x.toFixed(2);
}

function value(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** What answered, in words: `flow 换货申请 · ask order_id`. */
export function answeredBy(a: ChatAnswer): string {
  const tr = a.turn;
  if (tr.rule) return `${t("kc.by.rule")} ${tr.rule}`;
  if (tr.promotion) return `${t("kc.by.promotion")} ${tr.promotion}`;
  if (tr.flow) return `${t("kc.by.flow")} ${tr.flow}${tr.step ? " · " + tr.step : ""}`;
  if (tr.faq) return `FAQ ${tr.faq}`;
  return "";
}

/** The trace card of one answer. */
export function TraceView(props: { answer: ChatAnswer; files: DraftFile[]; onJump: (loc: Location) => void; open: boolean }) {
  const a = props.answer;
  const u = a.understanding;
  const by = answeredBy(a);
  const loc = a.source_location;
  const slots = Object.entries(a.slots ?? {});
  return (
    <details class="kc-trace" open={props.open}>
      <summary>
        <span class={"kc-src kc-src-" + a.turn.source}>{a.turn.source}</span>
        {by && <span class="kc-by">{by}</span>}
        {u.intent && (
          <span class="kc-muted">
            {u.intent} {pct(u.confidence)}
          </span>
        )}
      </summary>
      <dl>
        {by && (
          <>
            <dt>{t("kc.answered")}</dt>
            <dd>
              {by}
              {loc && (
                <>
                  {" "}
                  <a
                    href="#"
                    class="kc-loc"
                    onClick={(e) => {
                      e.preventDefault();
                      props.onJump({ file: draftPath(props.files, loc.file) ?? loc.file, line: loc.line, col: loc.col });
                    }}
                  >
                    {loc.file}:{loc.line} ↗
                  </a>
                </>
              )}
            </dd>
          </>
        )}
        {a.turn.handoff && (
          <>
            <dt>{t("kc.handoff")}</dt>
            <dd>{a.turn.handoff.reason ?? "✓"}</dd>
          </>
        )}
        <dt>{t("kc.intent")}</dt>
        <dd>
          {u.intent ? (
            <>
              <b>{u.intent}</b> {pct(u.confidence)}
            </>
          ) : (
            <span class="kc-muted">{t("kc.none")}</span>
          )}
          {u.runners_up?.length > 0 && (
            <div class="kc-muted">
              {t("kc.runnersUp")}: {u.runners_up.map((r) => `${r.intent} ${pct(r.confidence)}`).join(" · ")}
            </div>
          )}
        </dd>
        {u.entities?.length > 0 && (
          <>
            <dt>{t("kc.entities")}</dt>
            <dd>
              {u.entities.map((e) => (
                <span class="kc-chip">
                  {e.name}={e.value}
                </span>
              ))}
            </dd>
          </>
        )}
        <dt>{t("kc.emotion")}</dt>
        <dd>{u.emotion}</dd>
        {slots.length > 0 && (
          <>
            <dt>{t("kc.slots")}</dt>
            <dd>
              {slots.map(([k, v]) => (
                <span class="kc-chip">
                  {k}={value(v)}
                </span>
              ))}
            </dd>
          </>
        )}
        {a.kb?.length > 0 && (
          <>
            <dt>{t("kc.kb")}</dt>
            <dd>
              <ul class="kc-list">
                {a.kb.map((k) => (
                  <li>
                    <span class="kc-muted">{k.kind}</span> {k.id} <span class="kc-score">{k.score.toFixed(3)}</span>
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
        {a.safety?.length > 0 && (
          <>
            <dt>{t("kc.safety")}</dt>
            <dd>
              <ul class="kc-list">
                {a.safety.map((s) => (
                  <li>{value(s)}</li>
                ))}
              </ul>
            </dd>
          </>
        )}
        {a.prompt && a.prompt.length > 0 && (
          <>
            <dt>{t("kc.prompt")}</dt>
            <dd>
              {a.prompt.map((p) => (
                <details class="kc-part">
                  <summary>{p.part}</summary>
                  <pre>{p.text}</pre>
                </details>
              ))}
            </dd>
          </>
        )}
      </dl>
      <ol class="kc-lines">
        {a.turn.trace.map((s) => (
          <li>
            <span class="kc-stage">{s.stage}</span> <Linked text={s.detail} files={props.files} onJump={props.onJump} />
          </li>
        ))}
      </ol>
      {a.turn.latency_ms !== undefined && <div class="kc-muted kc-small">{a.turn.latency_ms.toFixed(1)} ms</div>}
    </details>
  );
}
