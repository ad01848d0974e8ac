// The rule editor page (/console/editor?path=..&line=..): the draft's file tree, a CodeMirror
// editor for the chosen file (save with version and conflict handling, diagnostics as you
// type, completion, go to definition), the problems list under it, and the test chat
// beside it (src/chat/). The shell lazy-loads this module, so CodeMirror stays out of the
// first page.
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { EditorView } from "@codemirror/view";
import type { EditorState, Text } from "@codemirror/state";
import { api, ApiError } from "../api";
import { t } from "../i18n";
import { fileState, jumpTo, type EditorHooks } from "./cm";
import { draftPath, type CheckAnswer, type CheckDiagnostic, type Draft, type DraftFile, type FileBody, type Location, type Symbols } from "./types";
import { ChatPanel } from "../chat/chat";
import "./strings";
import "./editor.css";

const KIND_ORDER: DraftFile["kind"][] = ["rules", "kb", "data", "words", "tests", "other"];

interface Current {
  path: string;
  version: string;
  /** The text as last loaded or saved (the buffer is dirty when it differs). */
  saved: Text;
}

interface Conflict {
  mine: string;
  current: { text: string; version: string };
  diff: string;
}

/** Human-sized byte count. */
function size(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Copies text to the clipboard (falls back to a hidden textarea where the API is missing). */
export async function copyText(text: string) {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
  }
}

function message(e: unknown): string {
  return e instanceof ApiError ? `${e.message} (${e.type})` : String(e);
}

/** The rule editor page. */
export function EditorPage(props: { path?: string; line?: number }) {
  const [draft, setDraft] = useState<Draft | null>(null);
  const [current, setCurrent] = useState<Current | null>(null);
  const [dirty, setDirty] = useState(false);
  const [saving, setSaving] = useState(false);
  const [flash, setFlash] = useState("");
  const [error, setError] = useState("");
  const [check, setCheck] = useState<CheckAnswer | null>(null);
  const [checking, setChecking] = useState(false);
  const [conflict, setConflict] = useState<Conflict | null>(null);
  const [keptMine, setKeptMine] = useState<string | null>(null);
  const [drawer, setDrawer] = useState(false);
  // viewers read; editors, publishers and admins write (the server checks it too)
  const [canEdit, setCanEdit] = useState(true);

  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const cur = useRef<Current | null>(null);
  const dirtyRef = useRef(false);
  const symbols = useRef<Symbols>({});
  const draftRef = useRef<Draft | null>(null);
  const checkSeq = useRef(0);
  const saveRef = useRef<() => void>(() => {});
  const gotoRef = useRef<(loc: Location) => void>(() => {});
  const canEditRef = useRef(true);

  cur.current = current;
  dirtyRef.current = dirty;
  draftRef.current = draft;
  canEditRef.current = canEdit;

  const hooks = useMemo<EditorHooks>(
    () => ({
      path: () => cur.current?.path ?? "",
      check: async (path, text) => {
        const seq = ++checkSeq.current;
        setChecking(true);
        try {
          const answer = await api<CheckAnswer>("POST", "/admin/draft/check", { overlay: { path, text } });
          // the draft's own paths, should the server name files with its directory
          const files = draftRef.current?.files ?? [];
          const local = (f: string) => draftPath(files, f) ?? f;
          for (const d of answer.diagnostics ?? []) d.file = local(d.file);
          for (const list of Object.values(answer.symbols ?? {})) for (const sym of list ?? []) sym.file = local(sym.file);
          if (seq === checkSeq.current) {
            symbols.current = answer.symbols ?? {};
            setCheck(answer);
          }
          return answer;
        } catch (e) {
          if (seq === checkSeq.current) setError(t("ed.error", { m: message(e) }));
          return null;
        } finally {
          if (seq === checkSeq.current) setChecking(false);
        }
      },
      symbols: () => symbols.current,
      canEdit: () => canEditRef.current,
      save: () => saveRef.current(),
      goto: (loc) => gotoRef.current(loc),
      changed: (state: EditorState) => {
        const c = cur.current;
        const d = !!c && !state.doc.eq(c.saved);
        if (d !== dirtyRef.current) setDirty(d);
        // the linter checks the buffer after its pause; until then the counts are stale
        setChecking(true);
      },
    }),
    [],
  );

  const loadDraft = useCallback(async () => {
    try {
      const d = await api<Draft>("GET", "/admin/draft");
      setDraft(d);
      return d;
    } catch (e) {
      setError(t("ed.error", { m: message(e) }));
      return null;
    }
  }, []);

  /** Shows `text` as the file `path` at `version`. */
  const show = useCallback(
    (path: string, text: string, version: string) => {
      const v = view.current;
      if (!v) return;
      const state = fileState(path, text, hooks);
      v.setState(state);
      const c = { path, version, saved: state.doc };
      cur.current = c;
      setCurrent(c);
      setDirty(false);
    },
    [hooks],
  );

  const openFile = useCallback(
    async (path: string, line?: number, col?: number) => {
      const files = draftRef.current?.files ?? [];
      const p = draftPath(files, path) ?? path;
      setDrawer(false);
      if (cur.current?.path === p) {
        if (line && view.current) jumpTo(view.current, line, col);
        return;
      }
      if (dirtyRef.current && !confirm(t("ed.discard"))) return;
      try {
        const body = await api<FileBody>("GET", "/admin/draft/file?path=" + encodeURIComponent(p));
        setConflict(null);
        setKeptMine(null);
        show(body.path, body.text, body.version);
        if (line && view.current) jumpTo(view.current, line, col);
        const url = new URL(location.href);
        url.searchParams.set("path", body.path);
        if (line) url.searchParams.set("line", String(line));
        else url.searchParams.delete("line");
        history.replaceState(history.state, "", url);
      } catch (e) {
        setError(e instanceof ApiError && e.status === 404 ? t("ed.notFound", { p }) : t("ed.error", { m: message(e) }));
      }
    },
    [show],
  );
  gotoRef.current = (loc) => void openFile(loc.file, loc.line, loc.col);

  const save = useCallback(
    async (overVersion?: string) => {
      const c = cur.current;
      const v = view.current;
      if (!c || !v || saving) return;
      const text = v.state.doc.toString();
      setSaving(true);
      setError("");
      try {
        const r = await api<{ path: string; version: string }>("PUT", "/admin/draft/file?path=" + encodeURIComponent(c.path), {
          text,
          version: overVersion ?? c.version,
        });
        const next = { path: c.path, version: r.version, saved: v.state.doc };
        cur.current = next;
        setCurrent(next);
        setDirty(!v.state.doc.eq(next.saved));
        setConflict(null);
        setFlash(t("ed.saved"));
        setTimeout(() => setFlash(""), 2000);
        void loadDraft();
      } catch (e) {
        if (e instanceof ApiError && e.status === 409) {
          const d = e.details as any;
          const currentBody = d.current ?? (d.details && d.details.current);
          setConflict({ mine: text, current: currentBody ?? { text: "", version: "" }, diff: d.diff ?? "" });
        } else setError(t("ed.error", { m: message(e) }));
      } finally {
        setSaving(false);
      }
    },
    [saving, loadDraft],
  );
  saveRef.current = () => void save();

  // the editor view, made once
  useEffect(() => {
    if (!host.current) return;
    const v = new EditorView({ parent: host.current, state: fileState("", "", hooks) });
    view.current = v;
    return () => v.destroy();
  }, [hooks]);

  // the draft, then the file the address names (or the first rules file)
  useEffect(() => {
    void (async () => {
      if (!draftRef.current) {
        // who is signed in: without `edit` the page is read-only (an admin token or a
        // server without users answers otherwise or not at all: then the server decides)
        try {
          const me = await api<{ can?: string[] }>("GET", "/console/api/me");
          if (Array.isArray(me.can) && !me.can.includes("edit")) {
            canEditRef.current = false;
            setCanEdit(false);
          }
        } catch {
          /* no sign-in on this server */
        }
      }
      const d = draftRef.current ?? (await loadDraft());
      if (!d) return;
      const first = props.path ?? d.files.find((f) => f.kind === "rules")?.path ?? d.files[0]?.path;
      if (first) await openFile(first, props.line);
    })();
  }, [props.path, props.line]);

  // warn before leaving with unsaved changes: closing the tab, or a link out of the page
  useEffect(() => {
    const before = (e: BeforeUnloadEvent) => {
      if (!dirtyRef.current) return;
      e.preventDefault();
      e.returnValue = "";
    };
    const click = (e: MouseEvent) => {
      if (!dirtyRef.current || e.defaultPrevented) return;
      const a = (e.target as Element | null)?.closest?.("a[href]") as HTMLAnchorElement | null;
      if (!a || a.target === "_blank" || a.closest(".ked")) return;
      if (!confirm(t("ed.leave"))) {
        e.preventDefault();
        e.stopPropagation();
      }
    };
    addEventListener("beforeunload", before);
    document.addEventListener("click", click, true);
    return () => {
      removeEventListener("beforeunload", before);
      document.removeEventListener("click", click, true);
    };
  }, []);

  const groups = useMemo(() => {
    const by = new Map<string, DraftFile[]>();
    for (const f of draft?.files ?? []) {
      const k = KIND_ORDER.includes(f.kind) ? f.kind : "other";
      if (!by.has(k)) by.set(k, []);
      by.get(k)!.push(f);
    }
    for (const list of by.values()) list.sort((a, b) => a.path.localeCompare(b.path));
    return KIND_ORDER.filter((k) => by.has(k)).map((k) => [k, by.get(k)!] as const);
  }, [draft]);

  const diags = check?.diagnostics ?? [];
  const here = diags.filter((d) => d.file === current?.path);
  const elsewhere = diags.filter((d) => d.file !== current?.path);

  const reloadTheirs = () => {
    if (!conflict || !current) return;
    setKeptMine(conflict.mine);
    show(current.path, conflict.current.text, conflict.current.version);
    setConflict(null);
  };

  const problem = (d: CheckDiagnostic, i: number) => (
    <li key={i} class={"ked-prob ked-p-" + d.severity}>
      <button type="button" onClick={() => void openFile(d.file, d.line, d.col)}>
        <span class="ked-sev">{d.severity === "error" ? "✖" : "▲"}</span>
        <span class="ked-loc">
          {d.file}:{d.line}:{d.col}
        </span>
        <span class="ked-msg">{d.message}</span>
        {d.help && <span class="ked-help">help: {d.help}</span>}
        {(d.notes ?? []).map((n) => (
          <span class="ked-note">note: {n}</span>
        ))}
      </button>
    </li>
  );

  return (
    <div class="ked">
      <aside class={"ked-tree" + (drawer ? " open" : "")} aria-label={t("ed.files")}>
        <div class="ked-tree-head">
          <strong>{t("ed.files")}</strong>
          {draft?.base && <span class="ked-muted">{t("ed.base", { v: String(draft.base) })}</span>}
          <button type="button" class="ked-drawer-close" onClick={() => setDrawer(false)} aria-label={t("ed.close")}>
            ×
          </button>
        </div>
        {groups.map(([kind, files]) => (
          <details open={kind !== "tests" || current?.path.startsWith("tests/")} key={kind}>
            <summary>
              {t("ed.kind." + kind)} <span class="ked-muted">{files.length}</span>
            </summary>
            <ul>
              {files.map((f) => (
                <li key={f.path}>
                  <button
                    type="button"
                    class={"ked-file" + (f.path === current?.path ? " on" : "")}
                    onClick={() => void openFile(f.path)}
                    title={f.path}
                  >
                    <span class="ked-fname">
                      {f.path === current?.path && dirty ? "● " : ""}
                      {/* the group already says the folder */}
                      {f.path.replace(/^(tests|kb|data|safety)\//, "")}
                    </span>
                    <span class="ked-size">{size(f.size)}</span>
                  </button>
                </li>
              ))}
            </ul>
          </details>
        ))}
      </aside>
      {drawer && <div class="ked-backdrop" onClick={() => setDrawer(false)} />}

      <section class="ked-main">
        <header class="ked-bar">
          <button type="button" class="ked-drawer-btn" onClick={() => setDrawer(true)}>
            ☰ {t("ed.files")}
          </button>
          <span class="ked-path" title={current?.path}>
            {current ? current.path : t("ed.loading")}
          </span>
          {dirty && <span class="ked-dirty">● {t("ed.unsaved")}</span>}
          {!canEdit && <span class="ked-muted">{t("ed.readOnly")}</span>}
          {flash && <span class="ked-flash">{flash}</span>}
          <span class="ked-spacer" />
          <span class={"ked-counts" + (check && check.errors ? " bad" : "")}>
            {checking ? t("ed.checking") : check ? t("ed.counts", { e: check.errors, w: check.warnings }) : ""}
          </span>
          {canEdit && (
            <button type="button" class="ked-primary" disabled={!current || saving || !dirty} onClick={() => void save()}>
              {saving ? t("ed.saving") : t("ed.save")}
            </button>
          )}
        </header>
        {error && (
          <div class="ked-error" role="alert">
            {error}
            <button type="button" onClick={() => setError("")}>
              ×
            </button>
          </div>
        )}
        {conflict && (
          <div class="ked-conflict" role="alert">
            <p>{t("ed.conflict")}</p>
            <pre class="ked-diff">
              {conflict.diff.split("\n").map((l) => (
                <div class={l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : ""}>{l || " "}</div>
              ))}
            </pre>
            <div class="ked-actions">
              <button type="button" onClick={reloadTheirs}>
                {t("ed.reloadTheirs")}
              </button>
              <button type="button" onClick={() => void copyText(conflict.current.text).then(() => setFlash(t("ed.copied")))}>
                {t("ed.copyTheirs")}
              </button>
              <button type="button" class="ked-danger" onClick={() => void save(conflict.current.version)}>
                {t("ed.keepMine")}
              </button>
              <button type="button" onClick={() => setConflict(null)}>
                {t("ed.close")}
              </button>
            </div>
          </div>
        )}
        {keptMine !== null && (
          <div class="ked-kept">
            <div class="ked-actions">
              <span>{t("ed.yourText")}</span>
              <button type="button" onClick={() => void copyText(keptMine).then(() => setFlash(t("ed.copied")))}>
                {t("ed.copyMine")}
              </button>
              <button type="button" onClick={() => setKeptMine(null)}>
                {t("ed.close")}
              </button>
            </div>
            <textarea readOnly value={keptMine} rows={6} />
          </div>
        )}
        <div class="ked-cm" ref={host} />
        <div class="ked-hint">{t("ed.hint")}</div>
        <section class="ked-problems" aria-label={t("ed.problems")}>
          <h3>
            {t("ed.problems")} <span class="ked-muted">{diags.length}</span>
          </h3>
          {diags.length === 0 ? (
            <p class="ked-muted">{check ? t("ed.noProblems") : ""}</p>
          ) : (
            <ul>
              {here.map(problem)}
              {elsewhere.length > 0 && <li class="ked-sub">{t("ed.otherFiles")}</li>}
              {elsewhere.map(problem)}
            </ul>
          )}
        </section>
      </section>

      <ChatPanel
        canSave={canEdit}
        files={draft?.files ?? []}
        onJump={(loc) => void openFile(loc.file, loc.line, loc.col)}
        onSaved={async (path) => {
          await loadDraft();
          await openFile(path);
        }}
      />
    </div>
  );
}
