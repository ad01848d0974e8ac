// The shapes of the draft routes' JSON the editor and the test chat read (contract22.md:
// GET /admin/draft, /admin/draft/file, POST /admin/draft/check, /admin/draft/chat), and
// the small helpers that turn the server's positions into editor offsets.
import type { Text } from "@codemirror/state";

export interface DraftFile {
  path: string;
  kind: "rules" | "kb" | "data" | "words" | "tests" | "other";
  size: number;
  version: string;
}

export interface Draft {
  dir: string;
  base: number | null;
  live: number | null;
  files: DraftFile[];
}

export interface FileBody {
  path: string;
  text: string;
  version: string;
}

export interface CheckDiagnostic {
  severity: "error" | "warning";
  code?: string;
  message: string;
  file: string;
  line: number;
  col: number;
  end_line?: number;
  end_col?: number;
  help?: string | null;
  notes?: string[];
}

export interface SymbolEntry {
  name: string;
  file: string;
  line: number;
  col: number;
  flow?: string;
}

export type SymbolKind = "intents" | "entities" | "slots" | "flows" | "rules" | "promotions" | "policies" | "styles" | "queues";
export const SYMBOL_KINDS: SymbolKind[] = ["intents", "entities", "slots", "flows", "rules", "promotions", "policies", "styles", "queues"];
export type Symbols = Partial<Record<SymbolKind, SymbolEntry[]>>;

export interface CheckAnswer {
  ok: boolean;
  errors: number;
  warnings: number;
  diagnostics: CheckDiagnostic[];
  rendered: string;
  symbols: Symbols;
}

/** A place in a draft file, 1-based line and column (columns count characters). */
export interface Location {
  file: string;
  line: number;
  col?: number;
}

/**
 * The document offset of 1-based `line`:`col`, where `col` counts Unicode scalar values
 * (as kefu's diagnostics do) and CodeMirror counts UTF-16 code units: a CJK character is
 * one unit, an emoji two. Out-of-range positions are clamped into the document.
 */
export function offsetOf(doc: Text, line: number, col = 1): number {
  const l = doc.line(Math.min(Math.max(1, line), doc.lines));
  let units = 0;
  let chars = 1;
  for (const ch of l.text) {
    if (chars >= col) break;
    units += ch.length;
    chars++;
  }
  return l.from + units;
}

/**
 * Finds the draft file a path from the server names: the same path, or a draft path it
 * ends with (traces may name files as `rules/aftersale.kefu`, with the rules directory).
 */
export function draftPath(files: DraftFile[], path: string): string | null {
  const p = path.replace(/\\/g, "/");
  if (files.some((f) => f.path === p)) return p;
  const hit = files
    .filter((f) => p.endsWith("/" + f.path))
    .sort((a, b) => b.path.length - a.path.length)[0];
  return hit ? hit.path : null;
}
