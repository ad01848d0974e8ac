// The knowledge-base tables (FAQ, products) as an editable grid: GET
// /admin/draft/table/faq|products, edit cells (a list is one item a line, or comma
// separated; a map such as `stock` is `key: value` a line), save with the version it was
// read at (PUT; a 409 says someone else saved first, a 422 lists bad cells), import a
// CSV/XLSX file as a preview (POST .../import) to check and then save, export links.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { addStrings, currentLang, t } from "../i18n";
import { href } from "../router";
import { ErrorBox, Loading, UnifiedDiff } from "../ui";

addStrings({
  "tab.title": { zh: "知识库表格", en: "Knowledge-base tables" },
  "tab.faq": { zh: "常见问题 FAQ", en: "FAQ" },
  "tab.products": { zh: "商品", en: "Products" },
  "tab.save": { zh: "保存", en: "Save" },
  "tab.saving": { zh: "保存中…", en: "Saving…" },
  "tab.saved": { zh: "已保存（版本 {v}）。", en: "Saved (version {v})." },
  "tab.add": { zh: "添加一行", en: "Add a row" },
  "tab.delete": { zh: "删除这一行", en: "Delete this row" },
  "tab.import": { zh: "导入 CSV / XLSX", en: "Import CSV / XLSX" },
  "tab.importing": { zh: "读取中…", en: "Reading…" },
  "tab.export_csv": { zh: "导出 CSV", en: "Export CSV" },
  "tab.export_xlsx": { zh: "导出 XLSX", en: "Export XLSX" },
  "tab.preview": { zh: "预览：从 {file} 读入 {n} 行，还没有保存。检查无误后点“保存”，或点“放弃”。", en: "Preview: {n} rows read from {file}, not saved yet. Check them, then Save, or Discard." },
  "tab.discard": { zh: "放弃", en: "Discard" },
  "tab.unsaved": { zh: "有未保存的修改", en: "Unsaved changes" },
  "tab.import_errors": { zh: "文件 {file} 有问题，没有导入：", en: "{file} has problems; nothing was imported:" },
  "tab.invalid": { zh: "有些单元格不对，没有保存：", en: "Some cells are wrong; nothing was saved:" },
  "tab.where": { zh: "位置", en: "Where" },
  "tab.column": { zh: "列", en: "Column" },
  "tab.problem": { zh: "问题", en: "Problem" },
  "tab.row": { zh: "第 {n} 行", en: "row {n}" },
  "tab.conflict": { zh: "别人在你之后保存了这个表格（{file}），你的修改没有写入。", en: "Someone saved this table ({file}) after you opened it; your changes were not written." },
  "tab.conflict_how": { zh: "点“载入最新版本”查看他们的内容（你的修改会丢弃），或先导出/复制你的修改。", en: "Load the latest version to see theirs (your edits are dropped), or copy your edits first." },
  "tab.what_changed": { zh: "对方改了什么（从你的内容到现在的文件）", en: "What changed (from your text to the current file)" },
  "tab.reload": { zh: "载入最新版本", en: "Load the latest version" },
  "tab.hint": { zh: "列表每行一项（也可以用英文逗号分隔）；库存等键值每行写“键: 数量”。", en: "Lists: one item a line (or comma separated); maps such as stock: “key: number” a line." },
  "tab.readonly": { zh: "你的角色只能查看表格。", en: "Your role can only view the tables." },
  "tab.rows": { zh: "{n} 行", en: "{n} rows" },
  "tab.empty": { zh: "表格是空的。", en: "The table is empty." },
});

interface Column {
  key: string;
  label_zh: string;
  label_en: string;
  list: boolean;
}

interface Table {
  file: string;
  version: string | null;
  columns: Column[];
  rows: Record<string, unknown>[];
}

type Kind = "list" | "map" | "number" | "bool" | "text";

function kindOf(col: Column, rows: Record<string, unknown>[]): Kind {
  if (col.list) return "list";
  const vals = rows.map((r) => r[col.key]).filter((v) => v !== null && v !== undefined);
  if (vals.some((v) => typeof v === "object" && !Array.isArray(v))) return "map";
  if (vals.some((v) => Array.isArray(v))) return "list";
  if (vals.length && vals.every((v) => typeof v === "number")) return "number";
  if (vals.length && vals.every((v) => typeof v === "boolean")) return "bool";
  return "text";
}

function format(v: unknown, kind: Kind): string {
  if (v === null || v === undefined) return "";
  if (kind === "list" && Array.isArray(v)) return v.map(String).join("\n");
  if (kind === "map" && typeof v === "object") return Object.entries(v as object).map(([k, x]) => `${k}: ${x}`).join("\n");
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function parse(text: string, kind: Kind): unknown {
  const s = text.trim();
  if (kind === "list") return s ? s.split(/\n|,/).map((x) => x.trim()).filter(Boolean) : [];
  if (kind === "map") {
    const out: Record<string, unknown> = {};
    for (const line of s.split("\n")) {
      const m = /^(.*?)[:：]\s*(.*)$/.exec(line.trim());
      if (!m || !m[1].trim()) continue;
      const n = Number(m[2]);
      out[m[1].trim()] = m[2] !== "" && Number.isFinite(n) ? n : m[2];
    }
    return out;
  }
  if (s === "") return undefined;
  if (kind === "number") {
    const n = Number(s);
    return Number.isFinite(n) ? n : s;
  }
  if (kind === "bool") return s === "true" || s === "是" ? true : s === "false" || s === "否" ? false : s;
  return text;
}

/** A column letter as a spreadsheet shows it (1 → A, 27 → AA). */
function letter(n: number): string {
  let s = "";
  for (let x = n; x > 0; x = Math.floor((x - 1) / 26)) s = String.fromCharCode(65 + ((x - 1) % 26)) + s;
  return s;
}

/** Rows a cell of `text` needs, roughly (where CSS cannot size a textarea to its text). */
function rowsFor(text: string): number {
  const lines = text.split("\n").reduce((n, l) => n + Math.max(1, Math.ceil([...l].length / 18)), 0);
  return Math.min(6, Math.max(1, lines));
}

function RowErrors(props: { errors: any[]; columns: Column[]; label: (c: Column) => string }) {
  return (
    <table class="errors-table">
      <thead>
        <tr>
          <th>{t("tab.where")}</th>
          <th>{t("tab.column")}</th>
          <th>{t("tab.problem")}</th>
        </tr>
      </thead>
      <tbody>
        {props.errors.map((e) => {
          const col = typeof e.column === "number" ? letter(e.column) : e.column_letter ?? e.letter ?? e.column ?? "";
          const where = `${e.sheet ? e.sheet + "!" : ""}${typeof e.column === "number" || e.column_letter || e.letter ? col : ""}${e.row ?? ""}`;
          return (
            <tr>
              <td>
                <code>{where || t("tab.row", { n: e.row })}</code>
              </td>
              <td>{e.column_name ?? e.key ?? (typeof e.column === "number" && props.columns[e.column - 1] ? props.label(props.columns[e.column - 1]) : String(e.column ?? col))}</td>
              <td>{e.message}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

export function TablesPage(props: { table: "faq" | "products"; can: string[] }) {
  const base = `/admin/draft/table/${props.table}`;
  const canEdit = props.can.includes("edit");
  const [table, setTable] = useState<Table | null>(null);
  const [cells, setCells] = useState<string[][]>([]);
  const [origin, setOrigin] = useState<Record<string, unknown>[]>([]);
  const [kinds, setKinds] = useState<Kind[]>([]);
  const [dirty, setDirty] = useState(false);
  const [preview, setPreview] = useState<{ file: string; n: number } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [rowErrors, setRowErrors] = useState<{ title: string; errors: any[] } | null>(null);
  const [busy, setBusy] = useState("");
  const [saved, setSaved] = useState("");

  const fill = (tb: Table, rows: Record<string, unknown>[]) => {
    const ks = tb.columns.map((c) => kindOf(c, rows.length ? rows : tb.rows));
    setKinds(ks);
    setOrigin(rows);
    setCells(rows.map((r) => tb.columns.map((c, i) => format(r[c.key], ks[i]))));
  };

  const load = () => {
    setError(null);
    setRowErrors(null);
    setPreview(null);
    setDirty(false);
    api<Table>("GET", base).then((tb) => {
      setTable(tb);
      fill(tb, tb.rows);
    }, setError);
  };
  useEffect(load, [props.table]);

  const rows = (): Record<string, unknown>[] =>
    cells.map((line, r) => {
      const out: Record<string, unknown> = { ...(origin[r] ?? {}) };
      table!.columns.forEach((c, i) => {
        const v = parse(line[i], kinds[i]);
        if (v === undefined) delete out[c.key];
        else out[c.key] = v;
      });
      return out;
    });

  const edit = (r: number, c: number, v: string) => {
    const next = cells.map((line) => line.slice());
    next[r][c] = v;
    setCells(next);
    setDirty(true);
    setSaved("");
  };

  const save = async () => {
    if (!table) return;
    setBusy("save");
    setError(null);
    setRowErrors(null);
    try {
      const r = await api<{ version: string }>("PUT", base, { rows: rows(), version: table.version });
      setTable({ ...table, version: r.version });
      setDirty(false);
      setPreview(null);
      setSaved(t("tab.saved", { v: r.version }));
    } catch (e) {
      if (e instanceof ApiError && e.type === "invalid_rows") setRowErrors({ title: t("tab.invalid"), errors: (e.details.errors as any[]) ?? [] });
      else setError(e);
    } finally {
      setBusy("");
    }
  };

  const importFile = async (file: File) => {
    if (!table) return;
    setBusy("import");
    setError(null);
    setRowErrors(null);
    setSaved("");
    const xlsx = /\.xlsx$/i.test(file.name);
    const type = xlsx ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" : "text/csv";
    try {
      const r = await api<{ rows: Record<string, unknown>[]; count: number }>("POST", `${base}/import?format=${xlsx ? "xlsx" : "csv"}`, new Blob([await file.arrayBuffer()], { type }), { "content-type": type });
      fill(table, r.rows);
      setPreview({ file: file.name, n: r.count ?? r.rows.length });
      setDirty(true);
    } catch (e) {
      if (e instanceof ApiError && e.type === "invalid_rows") setRowErrors({ title: t("tab.import_errors", { file: file.name }), errors: (e.details.errors as any[]) ?? [] });
      else setError(e);
    } finally {
      setBusy("");
    }
  };

  // Text columns with long values (answers, descriptions) get the room.
  const long = kinds.map((k, c) => k === "text" && cells.some((line) => [...(line[c] ?? "")].length > 24));
  const label = (c: Column) => (currentLang() === "zh" ? c.label_zh : c.label_en) || c.key;
  const conflict = error instanceof ApiError && error.type === "conflict";

  return (
    <section class="tables">
      <div class="page-head">
        <h1>{t("tab.title")}</h1>
      </div>
      <div class="tabs" role="tablist">
        {(["faq", "products"] as const).map((k) => (
          <a role="tab" aria-selected={props.table === k} class={props.table === k ? "active" : ""} href={href("/tables/" + k)}>
            {t("tab." + k)}
          </a>
        ))}
      </div>
      {!table && !error ? <Loading /> : null}
      {conflict ? (
        <ErrorBox error={error}>
          <p>{t("tab.conflict", { file: table?.file ?? "" })}</p>
          <p>{t("tab.conflict_how")}</p>
          {typeof (error as ApiError).details.diff === "string" && (error as ApiError).details.diff ? (
            <details>
              <summary>{t("tab.what_changed")}</summary>
              <UnifiedDiff text={String((error as ApiError).details.diff)} />
            </details>
          ) : null}
          <button type="button" onClick={load}>
            {t("tab.reload")}
          </button>
        </ErrorBox>
      ) : (
        <ErrorBox error={error} />
      )}
      {table ? (
        <>
          <div class="toolbar">
            <code class="muted small">{table.file}</code>
            <span class="muted small">{t("tab.rows", { n: cells.length })}</span>
            {dirty ? <span class="pill warn">{t("tab.unsaved")}</span> : null}
            <span class="spacer" />
            {canEdit ? (
              <>
                <button type="button" class="primary" disabled={!dirty || busy !== ""} onClick={save}>
                  {busy === "save" ? t("tab.saving") : t("tab.save")}
                </button>
                <label class="button">
                  {busy === "import" ? t("tab.importing") : t("tab.import")}
                  <input
                    type="file"
                    accept=".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                    class="sr"
                    onChange={(e) => {
                      const f = e.currentTarget.files?.[0];
                      e.currentTarget.value = "";
                      if (f) importFile(f);
                    }}
                  />
                </label>
              </>
            ) : null}
            <a class="button" href={`${base}/export?format=csv`} download>
              {t("tab.export_csv")}
            </a>
            <a class="button" href={`${base}/export?format=xlsx`} download>
              {t("tab.export_xlsx")}
            </a>
          </div>
          {saved ? <div class="ok-box">{saved}</div> : null}
          {preview ? (
            <div class="warn-box">
              {t("tab.preview", { file: preview.file, n: preview.n })}{" "}
              <button type="button" onClick={load}>
                {t("tab.discard")}
              </button>
            </div>
          ) : null}
          {rowErrors ? (
            <div class="error-box" role="alert">
              <span class="error-text">{rowErrors.title}</span>
              <RowErrors errors={rowErrors.errors} columns={table.columns} label={label} />
            </div>
          ) : null}
          <p class="muted small">{canEdit ? t("tab.hint") : t("tab.readonly")}</p>
          {cells.length === 0 ? <div class="empty">{t("tab.empty")}</div> : null}
          <div class="grid-wrap">
            <table class="grid">
              <thead>
                <tr>
                  <th class="rownum">#</th>
                  {table.columns.map((c) => (
                    <th>{label(c)}</th>
                  ))}
                  {canEdit ? <th /> : null}
                </tr>
              </thead>
              <tbody>
                {cells.map((line, r) => (
                  <tr>
                    <td class="rownum">{r + 1}</td>
                    {line.map((v, c) => (
                      <td class={"k-" + kinds[c] + (long[c] ? " long" : "")}>
                        <textarea
                          aria-label={`${label(table.columns[c])} ${r + 1}`}
                          rows={rowsFor(v)}
                          value={v}
                          readOnly={!canEdit}
                          onInput={(e) => edit(r, c, e.currentTarget.value)}
                        />
                      </td>
                    ))}
                    {canEdit ? (
                      <td>
                        <button
                          type="button"
                          class="icon"
                          title={t("tab.delete")}
                          aria-label={t("tab.delete")}
                          onClick={() => {
                            setCells(cells.filter((_, i) => i !== r));
                            setOrigin(origin.filter((_, i) => i !== r));
                            setDirty(true);
                          }}
                        >
                          ×
                        </button>
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {canEdit ? (
            <button
              type="button"
              onClick={() => {
                setCells([...cells, table.columns.map(() => "")]);
                setOrigin([...origin, {}]);
                setDirty(true);
              }}
            >
              + {t("tab.add")}
            </button>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
