// The CodeMirror 6 set-up of the rule editor: the language per file type, diagnostics from
// the server's check as you type (debounced by @codemirror/lint), completion of declared
// names from the check's symbols, go to definition (F12, Ctrl/Cmd-click) and Ctrl/Cmd-S.
// The page (page.tsx) owns the state; this file only builds the editor's extensions.
import { EditorState, type Extension } from "@codemirror/state";
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
  highlightSpecialChars,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { searchKeymap, highlightSelectionMatches } from "@codemirror/search";
import { autocompletion, completionKeymap, closeBrackets, type CompletionContext, type Completion } from "@codemirror/autocomplete";
import { linter, lintGutter, lintKeymap, type Diagnostic } from "@codemirror/lint";
import { StreamLanguage, bracketMatching, syntaxHighlighting, defaultHighlightStyle, syntaxTree } from "@codemirror/language";
import { yaml } from "@codemirror/legacy-modes/mode/yaml";
import { kefuLanguage, kefuHighlight } from "./kefu-lang";
import { offsetOf, SYMBOL_KINDS, type CheckAnswer, type Location, type SymbolKind, type Symbols } from "./types";
import { t } from "../i18n";

/** What the editor asks of the page. */
export interface EditorHooks {
  /** The path of the file being edited. */
  path: () => string;
  /** Runs the check with the buffer as an overlay (the page keeps the answer). */
  check: (path: string, text: string) => Promise<CheckAnswer | null>;
  /** The latest symbols, for completion and go to definition. */
  symbols: () => Symbols;
  /** Ctrl/Cmd-S. */
  save: () => void;
  /** Jump to a declaration (maybe in another file). */
  goto: (loc: Location) => void;
  /** The buffer changed. */
  changed: (state: EditorState) => void;
  /** Whether the signed-in user may change the draft (else the editor is read-only). */
  canEdit: () => boolean;
}

const yamlLanguage = StreamLanguage.define(yaml);

/** Characters of a name (and `.` for intent paths). */
const NAME_CHAR = /[\p{L}\p{M}\p{N}_.\-]/u;

const COMPLETION_TYPE: Record<SymbolKind, string> = {
  intents: "type",
  entities: "enum",
  slots: "variable",
  flows: "class",
  rules: "function",
  promotions: "constant",
  policies: "namespace",
  styles: "property",
  queues: "keyword",
};

/** The kind of a symbol, as the editor shows it. */
export function kindLabel(kind: SymbolKind): string {
  return t("ed.sym." + kind);
}

/** Diagnostic message with its help and notes, one per line (what the tooltip shows). */
function renderDiagnostic(message: string, help?: string | null, notes?: string[]) {
  return () => {
    const box = document.createElement("div");
    box.className = "ked-diag";
    const m = document.createElement("div");
    m.textContent = message;
    box.appendChild(m);
    if (help) {
      const h = document.createElement("div");
      h.className = "ked-diag-help";
      h.textContent = "help: " + help;
      box.appendChild(h);
    }
    for (const n of notes ?? []) {
      const d = document.createElement("div");
      d.className = "ked-diag-note";
      d.textContent = "note: " + n;
      box.appendChild(d);
    }
    return box;
  };
}

/** Converts the check's diagnostics for `path` into CodeMirror's. */
export function toCmDiagnostics(answer: CheckAnswer, path: string, state: EditorState): Diagnostic[] {
  const doc = state.doc;
  const out: Diagnostic[] = [];
  for (const d of answer.diagnostics) {
    if (d.file !== path) continue;
    const from = offsetOf(doc, d.line, d.col);
    let to = d.end_line ? offsetOf(doc, d.end_line, d.end_col ?? d.col) : from;
    if (to <= from) {
      // an empty range: mark the name (or the character) it starts at
      const line = doc.lineAt(from);
      let end = from;
      while (end < line.to && NAME_CHAR.test(doc.sliceString(end, end + 1))) end++;
      to = end > from ? end : Math.min(from + 1, line.to);
    }
    out.push({
      from,
      to: Math.max(to, from),
      severity: d.severity === "error" ? "error" : "warning",
      source: d.code ? "kefu check · " + d.code : "kefu check",
      message: [d.message, d.help ? "help: " + d.help : "", ...(d.notes ?? []).map((n) => "note: " + n)].filter(Boolean).join("\n"),
      renderMessage: renderDiagnostic(d.message, d.help, d.notes),
    });
  }
  return out;
}

/** The name (or dotted intent path) at `pos`, with the segment under `pos`. */
export function nameAt(state: EditorState, pos: number): { whole: string; part: string } | null {
  const line = state.doc.lineAt(pos);
  const text = line.text;
  const at = pos - line.from;
  let start = at;
  let end = at;
  while (start > 0 && NAME_CHAR.test(text[start - 1])) start--;
  while (end < text.length && NAME_CHAR.test(text[end])) end++;
  if (start === end) return null;
  const whole = text.slice(start, end).replace(/^\.+|\.+$/g, "");
  // the dot-separated segment the cursor is on
  let ps = at;
  let pe = at;
  while (ps > start && text[ps - 1] !== ".") ps--;
  while (pe < end && text[pe] !== ".") pe++;
  return { whole, part: text.slice(ps, pe) };
}

/** Where `name` is declared, by the check's symbols. */
export function findDeclaration(symbols: Symbols, name: { whole: string; part: string }, path: string): Location | null {
  const tries = [name.whole, name.whole.replace(/\.\*$/, ""), name.part];
  for (const n of tries) {
    if (!n) continue;
    const hits = SYMBOL_KINDS.flatMap((k) => (symbols[k] ?? []).filter((s) => s.name === n));
    if (hits.length) {
      const here = hits.find((h) => h.file === path) ?? hits[0];
      return { file: here.file, line: here.line, col: here.col };
    }
  }
  // an intent pattern over a parent that is not declared itself (`售后.*`): its first child
  const prefix = name.whole.replace(/\.\*$/, "") + ".";
  const child = (symbols.intents ?? []).find((s) => s.name.startsWith(prefix));
  return child ? { file: child.file, line: child.line, col: child.col } : null;
}

/** Completion of the declared names, each with its kind. */
function completeNames(hooks: EditorHooks) {
  return (ctx: CompletionContext) => {
    const word = ctx.matchBefore(/[\p{L}\p{M}\p{N}_.\-]+/u);
    if (!word && !ctx.explicit) return null;
    // typing Chinese text in a reply or a comment is not looking for a name (a template
    // hole is code: it completes); Ctrl-Space still asks anywhere
    const token = syntaxTree(ctx.state).resolveInner(ctx.pos, -1).name;
    if (!ctx.explicit && /^(string|comment)/.test(token)) return null;
    const symbols = hooks.symbols();
    const seen = new Set<string>();
    const options: Completion[] = [];
    for (const kind of SYMBOL_KINDS) {
      for (const s of symbols[kind] ?? []) {
        const key = kind + "\u0000" + s.name;
        if (seen.has(key)) continue;
        seen.add(key);
        options.push({
          label: s.name,
          type: COMPLETION_TYPE[kind],
          detail: kindLabel(kind) + (s.flow ? " · " + s.flow : ""),
          info: `${s.file}:${s.line}`,
          boost: kind === "intents" ? 1 : 0,
        });
      }
    }
    return { from: word ? word.from : ctx.pos, options, validFor: /^[\p{L}\p{M}\p{N}_.\-]*$/u };
  };
}

/** Go to the declaration of the name at `pos`; true when there is one. */
function gotoAt(view: EditorView, pos: number, hooks: EditorHooks): boolean {
  const name = nameAt(view.state, pos);
  if (!name) return false;
  const loc = findDeclaration(hooks.symbols(), name, hooks.path());
  if (!loc) return false;
  hooks.goto(loc);
  return true;
}

/** The extensions for a file at `path`. */
export function editorExtensions(path: string, hooks: EditorHooks): Extension[] {
  const lang = path.endsWith(".kefu")
    ? [kefuLanguage, kefuHighlight]
    : /\.ya?ml$/.test(path)
      ? [yamlLanguage]
      : [];
  return [
    EditorState.readOnly.of(!hooks.canEdit()),
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    drawSelection(),
    bracketMatching(),
    closeBrackets(),
    highlightActiveLine(),
    highlightSelectionMatches(),
    EditorView.lineWrapping,
    lang,
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    autocompletion({ override: [completeNames(hooks)] }),
    lintGutter(),
    linter(
      async (view) => {
        const answer = await hooks.check(path, view.state.doc.toString());
        return answer ? toCmDiagnostics(answer, path, view.state) : [];
      },
      { delay: 400 },
    ),
    keymap.of([
      {
        key: "Mod-s",
        preventDefault: true,
        run: () => {
          hooks.save();
          return true;
        },
      },
      { key: "F12", run: (view) => gotoAt(view, view.state.selection.main.head, hooks) },
      indentWithTab,
      ...completionKeymap,
      ...lintKeymap,
      ...searchKeymap,
      ...historyKeymap,
      ...defaultKeymap,
    ]),
    EditorView.domEventHandlers({
      mousedown(e, view) {
        if (!(e.ctrlKey || e.metaKey) || e.button !== 0) return false;
        const pos = view.posAtCoords({ x: e.clientX, y: e.clientY });
        if (pos == null) return false;
        if (gotoAt(view, pos, hooks)) {
          e.preventDefault();
          return true;
        }
        return false;
      },
    }),
    EditorView.updateListener.of((u) => {
      if (u.docChanged) hooks.changed(u.state);
    }),
    EditorView.theme({
      "&": { height: "100%", fontSize: "13.5px" },
      ".cm-scroller": { fontFamily: "ui-monospace, 'Noto Sans Mono CJK SC', 'Noto Sans Mono', monospace", lineHeight: "1.55" },
      ".cm-content": { paddingBottom: "40vh" },
    }),
  ];
}

/** A fresh editor state for a file. */
export function fileState(path: string, text: string, hooks: EditorHooks): EditorState {
  return EditorState.create({ doc: text, extensions: editorExtensions(path, hooks) });
}

/** Moves the cursor to `line`:`col` and scrolls it to the middle. */
export function jumpTo(view: EditorView, line: number, col = 1) {
  const pos = offsetOf(view.state.doc, line, col);
  view.dispatch({ selection: { anchor: pos }, effects: EditorView.scrollIntoView(pos, { y: "center" }) });
  view.focus();
}
