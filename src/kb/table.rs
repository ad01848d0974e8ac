//! The knowledge base as tables: the FAQ (`kb/faq.yaml`) and the products
//! (`kb/products.yaml`) as rows of cells, for people who keep them in a spreadsheet.
//!
//! Rows are JSON objects keyed by [`Column::key`] (lists as arrays, `stock` as
//! `{"颜色": n}`). They come from the YAML file ([`Table::rows`]), from a client
//! ([`Table::check_rows`]) or from a CSV or XLSX file ([`Table::import`]); every bad cell
//! is reported with its row and column (1-based, the column as a letter too, as a
//! spreadsheet shows them), and rows with any bad cell are never half taken. Rows are
//! written back into the YAML keeping its leading comment block and its other lists
//! ([`Table::to_yaml`]), checked by the knowledge-base loader ([`Table::reads_back`]),
//! or exported as CSV (UTF-8 with a byte-order mark, which spreadsheet programs need to
//! read Chinese) or XLSX ([`Table::export`]).
//!
//! In a cell of text, list items are separated by `|` or line breaks, and stock as
//! `黑色:420|白色:0`. No HTTP and no draft here: the console's table routes and a
//! command line use the same functions.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Faq, Product};
use crate::diag::SourceMap;
use crate::diag::files::Overlay;

/// One of the knowledge base's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// `kb/faq.yaml`, its `faq:` list.
    Faq,
    /// `kb/products.yaml`, its `products:` list.
    Products,
}

/// What a column's cells hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Text.
    Text,
    /// Texts.
    List,
    /// A number of at least 0 (a price).
    Number,
    /// A whole number of at least 0.
    Integer,
    /// A date, `YYYY-MM-DD`.
    Date,
    /// Pieces in stock by colour.
    Stock,
}

/// One column of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    /// The field in the YAML file and the key in a row.
    pub key: &'static str,
    /// Its heading in Chinese (exported files use it).
    pub label_zh: &'static str,
    /// Its heading in English.
    pub label_en: &'static str,
    /// Whether a cell holds several texts.
    pub list: bool,
    /// What a cell holds.
    pub kind: CellKind,
    /// Whether every row needs it.
    pub required: bool,
}

const fn column(
    key: &'static str,
    label_zh: &'static str,
    label_en: &'static str,
    kind: CellKind,
    required: bool,
) -> Column {
    Column {
        key,
        label_zh,
        label_en,
        list: matches!(kind, CellKind::List),
        kind,
        required,
    }
}

const FAQ_COLUMNS: [Column; 5] = [
    column("id", "条目名", "ID", CellKind::Text, true),
    column("question", "标准问法", "Question", CellKind::Text, true),
    column("variants", "其他问法", "Variants", CellKind::List, false),
    column("answer", "回复", "Answer", CellKind::Text, true),
    column("products", "相关商品", "Products", CellKind::List, false),
];

const PRODUCT_COLUMNS: [Column; 15] = [
    column("id", "商品编号", "ID", CellKind::Text, true),
    column("name", "商品名", "Name", CellKind::Text, true),
    column("aliases", "别名", "Aliases", CellKind::List, false),
    column("category", "类目", "Category", CellKind::Text, true),
    column("price", "售价", "Price", CellKind::Number, true),
    column("listed", "上架日期", "Listed", CellKind::Date, false),
    column("sales", "销量", "Sales", CellKind::Integer, false),
    column("material", "面料", "Material", CellKind::Text, false),
    column("fit", "版型", "Fit", CellKind::Text, false),
    column("colors", "颜色", "Colors", CellKind::List, false),
    column("sizes", "尺码", "Sizes", CellKind::List, false),
    column("stock", "库存", "Stock", CellKind::Stock, false),
    column("care", "洗护", "Care", CellKind::Text, false),
    column("tags", "卖点", "Tags", CellKind::List, false),
    column("description", "介绍", "Description", CellKind::Text, false),
];

/// A spreadsheet file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values, UTF-8.
    Csv,
    /// Office Open XML workbook.
    Xlsx,
}

/// The MIME type of XLSX.
const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

impl Format {
    /// `csv` or `xlsx`.
    pub fn of(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "xlsx" => Some(Format::Xlsx),
            _ => None,
        }
    }

    /// The format of a `Content-Type`.
    pub fn of_content_type(value: &str) -> Option<Format> {
        let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "text/csv" => Some(Format::Csv),
            XLSX_TYPE => Some(Format::Xlsx),
            _ => None,
        }
    }

    /// Its MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => XLSX_TYPE,
        }
    }

    /// Its file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }
}

/// A bad cell (or row, or file): where, as a spreadsheet shows it, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CellError {
    /// The sheet of an XLSX file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// 1-based row (of the file for an import, of the rows for rows sent as JSON).
    pub row: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// The column as a letter (`A`, `AB`).
    pub column_letter: Option<String>,
    /// The column's key, when the column is one of the table's.
    pub key: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

/// `1` → `A`, `27` → `AA`.
pub fn column_letter(mut n: usize) -> String {
    let mut out = Vec::new();
    while n > 0 {
        let d = (n - 1) % 26;
        out.push(b'A' + d as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

/// Where a cell is, for its errors.
#[derive(Clone, Debug, Default)]
struct Place {
    sheet: Option<String>,
    row: usize,
    column: usize,
}

impl Place {
    fn error(&self, key: Option<&'static str>, message: impl Into<String>) -> CellError {
        CellError {
            sheet: self.sheet.clone(),
            row: Some(self.row),
            column: (self.column > 0).then_some(self.column),
            column_letter: (self.column > 0).then(|| column_letter(self.column)),
            key,
            message: message.into(),
        }
    }
}

/// The items of a list cell written as text: split at `|` and line breaks, trimmed,
/// empty items dropped.
fn split_list(text: &str) -> Vec<Value> {
    text.split(['|', '\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_string()))
        .collect()
}

/// A number as JSON: whole numbers as integers, so `79` stays `79` in the YAML.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// The text of a JSON scalar a person may have typed as a number (an id `1001`).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A cell's value in its column's form, or what is wrong with it. `Null` for an empty
/// optional scalar; lists and stock are empty rather than null.
fn cell(column: &Column, value: &Value) -> Result<Value, String> {
    let blank = match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    };
    if blank {
        if column.required {
            return Err(format!("`{}` ({}) is required", column.key, column.label_zh));
        }
        return Ok(match column.kind {
            CellKind::List => Value::Array(Vec::new()),
            CellKind::Stock => Value::Object(Map::new()),
            CellKind::Integer => Value::from(0),
            _ => Value::Null,
        });
    }
    match column.kind {
        CellKind::Text => scalar_text(value)
            .map(|s| Value::String(s.trim().to_string()))
            .ok_or_else(|| "expected text".to_string()),
        CellKind::List => match value {
            Value::Array(items) => items
                .iter()
                .map(|item| match scalar_text(item) {
                    Some(s) if !s.trim().is_empty() => Ok(Value::String(s.trim().to_string())),
                    _ => Err("expected a list of non-empty texts".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => scalar_text(other)
                .map(|s| Value::Array(split_list(&s)))
                .ok_or_else(|| "expected texts separated by `|`".to_string()),
        },
        CellKind::Number => {
            let n = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() && n >= 0.0 => Ok(number(n)),
                _ => Err(format!("expected a number of at least 0, not {}", shown(value))),
            }
        }
        CellKind::Integer => {
            let n = match value {
                Value::Number(n) => n
                    .as_u64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            n.map(Value::from)
                .ok_or_else(|| format!("expected a whole number of at least 0, not {}", shown(value)))
        }
        CellKind::Date => {
            let text = scalar_text(value).unwrap_or_default();
            chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| format!("expected a date as 2026-03-01, not {}", shown(value)))
        }
        CellKind::Stock => {
            let pairs: Vec<(String, Value)> = match value {
                Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Value::String(s) => {
                    let mut pairs = Vec::new();
                    for item in s.split(['|', '\n', '\r']).map(str::trim).filter(|i| !i.is_empty()) {
                        let Some((colour, n)) = item.split_once([':', '：']) else {
                            return Err(format!("expected colour:pieces as 黑色:420|白色:0, not `{item}`"));
                        };
                        pairs.push((colour.trim().to_string(), Value::String(n.trim().to_string())));
                    }
                    pairs
                }
                _ => return Err("expected stock as 黑色:420|白色:0".into()),
            };
            let mut out = Map::new();
            for (colour, n) in pairs {
                let pieces = match &n {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse::<u64>().ok(),
                    _ => None,
                }
                .filter(|&p| p <= u64::from(u32::MAX));
                let Some(pieces) = pieces else {
                    return Err(format!(
                        "the stock of `{colour}` is not a whole number of pieces: {}",
                        shown(&n)
                    ));
                };
                if colour.is_empty() {
                    return Err("a stock entry without its colour".into());
                }
                if out.insert(colour.clone(), Value::from(pieces)).is_some() {
                    return Err(format!("the colour `{colour}` is given twice"));
                }
            }
            Ok(Value::Object(out))
        }
    }
}

/// A value as an error message quotes it.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => other.to_string(),
    }
}

/// A cell's value as text in a CSV file or a text cell: lists joined with `|`, stock as
/// `黑色:420|白色:0`.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join("|"),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}:{}", cell_text(v)))
            .collect::<Vec<_>>()
            .join("|"),
        other => other.to_string(),
    }
}

/// A row without its empty cells, as the YAML file and the loader's types take it.
fn pruned(row: &Map<String, Value>, columns: &[Column]) -> serde_yaml::Mapping {
    let mut out = serde_yaml::Mapping::new();
    for column in columns {
        let Some(value) = row.get(column.key) else { continue };
        let empty = match value {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Number(n) => column.kind == CellKind::Integer && n.as_u64() == Some(0),
            _ => false,
        };
        if !empty {
            let value = serde_yaml::to_value(value).expect("JSON values are YAML values");
            out.insert(serde_yaml::Value::String(column.key.into()), value);
        }
    }
    out
}

impl Table {
    /// `faq` or `products`.
    pub fn of(name: &str) -> Option<Table> {
        match name {
            "faq" => Some(Table::Faq),
            "products" => Some(Table::Products),
            _ => None,
        }
    }

    /// `faq` or `products`: the table's name and its list's key in the YAML file.
    pub fn name(self) -> &'static str {
        match self {
            Table::Faq => "faq",
            Table::Products => "products",
        }
    }

    /// The file that holds it, relative to the rules directory.
    pub fn file(self) -> &'static str {
        match self {
            Table::Faq => "kb/faq.yaml",
            Table::Products => "kb/products.yaml",
        }
    }

    /// Its columns, in order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Faq => &FAQ_COLUMNS,
            Table::Products => &PRODUCT_COLUMNS,
        }
    }

    /// The rows of the table's list in `yaml` (the file's text; empty: no rows), read as
    /// the knowledge-base loader reads them.
    pub fn rows(self, yaml: &str) -> Result<Vec<Map<String, Value>>, String> {
        let file = self.file();
        let document: serde_yaml::Value = if yaml.trim().is_empty() {
            serde_yaml::Value::Null
        } else {
            serde_yaml::from_str(yaml).map_err(|e| format!("{file} does not parse: {e}"))?
        };
        let list = document.get(self.name()).cloned().unwrap_or(serde_yaml::Value::Null);
        if list.is_null() {
            return Ok(Vec::new());
        }
        let entries: Vec<Value> = match self {
            Table::Faq => serde_yaml::from_value::<Vec<Faq>>(list)
                .map(|v| v.iter().map(|e| serde_json::to_value(e).expect("serializes")).collect()),
            Table::Products => serde_yaml::from_value::<Vec<Product>>(list)
                .map(|v| v.iter().map(|e| serde_json::to_value(e).expect("serializes")).collect()),
        }
        .map_err(|e| format!("{file}: the `{}` list does not read: {e}", self.name()))?;
        entries
            .iter()
            .map(|entry| {
                let mut row = Map::new();
                for column in self.columns() {
                    let value = entry.get(column.key).unwrap_or(&Value::Null);
                    let value = cell(column, value).map_err(|e| format!("{file}: {e}"))?;
                    row.insert(column.key.to_string(), value);
                }
                Ok(row)
            })
            .collect()
    }

    /// Rows a client sent, checked cell by cell: the rows in their columns' forms, or
    /// every bad cell (row = position in `rows`, 1-based).
    pub fn check_rows(self, rows: &[Value]) -> Result<Vec<Map<String, Value>>, Vec<CellError>> {
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let place = Place {
                sheet: None,
                row: i + 1,
                column: 0,
            };
            let Value::Object(fields) = row else {
                errors.push(place.error(None, "a row is an object of cells"));
                continue;
            };
            for key in fields.keys() {
                if !self.columns().iter().any(|c| c.key == key) {
                    errors.push(place.error(None, format!("no column `{key}` in the {} table", self.name())));
                }
            }
            let mut checked = Map::new();
            for (n, column) in self.columns().iter().enumerate() {
                let place = Place {
                    column: n + 1,
                    ..place.clone()
                };
                match cell(column, fields.get(column.key).unwrap_or(&Value::Null)) {
                    Ok(value) => {
                        checked.insert(column.key.to_string(), value);
                    }
                    Err(message) => errors.push(place.error(Some(column.key), message)),
                }
            }
            out.push((place, checked));
        }
        self.finish(out, errors)
    }

    /// The checks across rows (ids given twice), then the rows or every error.
    fn finish(
        self,
        rows: Vec<(Place, Map<String, Value>)>,
        mut errors: Vec<CellError>,
    ) -> Result<Vec<Map<String, Value>>, Vec<CellError>> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (place, row) in &rows {
            if let Some(Value::String(id)) = row.get("id") {
                let place = Place {
                    column: if place.sheet.is_some() || place.column > 0 {
                        place.column
                    } else {
                        1
                    },
                    ..place.clone()
                };
                if let Some(first) = seen.get(id) {
                    errors.push(place.error(Some("id"), format!("the id `{id}` is also in row {first}")));
                } else {
                    seen.insert(id.clone(), place.row);
                }
            }
        }
        if errors.is_empty() {
            Ok(rows.into_iter().map(|(_, row)| row).collect())
        } else {
            Err(errors)
        }
    }

    /// The YAML file `current` with the table's list replaced by `rows` (in their
    /// columns' forms, [`Table::check_rows`]): its leading comment block and other lists
    /// kept, entries separated by blank lines, empty cells left out.
    pub fn to_yaml(self, current: &str, rows: &[Map<String, Value>]) -> Result<String, String> {
        let comment: Vec<&str> = current
            .lines()
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            .collect();
        let comment = comment.join("\n");
        let comment = comment.trim_end();
        let mut document = if current.trim().is_empty() {
            serde_yaml::Mapping::new()
        } else {
            match serde_yaml::from_str::<serde_yaml::Value>(current) {
                Ok(serde_yaml::Value::Mapping(m)) => m,
                Ok(serde_yaml::Value::Null) => serde_yaml::Mapping::new(),
                Ok(_) => return Err(format!("{} does not hold lists by name", self.file())),
                Err(e) => return Err(format!("{} does not parse: {e}", self.file())),
            }
        };
        let list: Vec<serde_yaml::Value> = rows
            .iter()
            .map(|row| serde_yaml::Value::Mapping(pruned(row, self.columns())))
            .collect();
        document.insert(
            serde_yaml::Value::String(self.name().into()),
            serde_yaml::Value::Sequence(list),
        );
        let body = serde_yaml::to_string(&document).map_err(|e| e.to_string())?;
        let mut out = String::with_capacity(comment.len() + body.len() + rows.len());
        if !comment.is_empty() {
            out.push_str(comment);
            out.push_str("\n\n");
        }
        // A blank line before each entry after the first of a list, as people write them.
        let mut first = true;
        for line in body.lines() {
            if line.starts_with("- ") {
                if !first {
                    out.push('\n');
                }
                first = false;
            } else if !line.starts_with(' ') {
                first = true;
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }

    /// Whether the knowledge base of `root` reads without errors with `text` as this
    /// table's file (entries about unknown products, say); the errors otherwise, each
    /// `file:line:col: message`.
    pub fn reads_back(self, root: &Path, text: &str) -> Result<(), Vec<CellError>> {
        let mut overlay = Overlay::default();
        overlay.insert(self.file(), text.to_string());
        let mut report = crate::diag::Report {
            sources: SourceMap::default(),
            diagnostics: Vec::new(),
        };
        super::load(root, &overlay, &mut report.sources, &mut report.diagnostics);
        let errors: Vec<CellError> = report
            .errors()
            .map(|d| CellError {
                sheet: None,
                row: None,
                column: None,
                column_letter: None,
                key: None,
                message: format!("{}: {}", report.location(d.primary.span), d.message),
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The rows of a CSV or XLSX file: a heading row (each heading a column's key or one
    /// of its labels), then one row per entry (blank rows skipped). Every bad cell is
    /// reported; no rows unless all are good.
    pub fn import(self, bytes: &[u8], format: Format) -> Result<Vec<Map<String, Value>>, Vec<CellError>> {
        let (sheet, grid) = match format {
            Format::Csv => (None, csv_grid(bytes)?),
            Format::Xlsx => {
                let (name, grid) = xlsx_grid(bytes, self.name())?;
                (Some(name), grid)
            }
        };
        let place = |row: usize, column: usize| Place {
            sheet: sheet.clone(),
            row,
            column,
        };
        let mut lines = grid
            .into_iter()
            .filter(|(_, cells)| cells.iter().any(|(_, v)| !is_blank(v)));
        let Some((header_row, headers)) = lines.next() else {
            return Err(vec![place(1, 0).error(None, "the file has no heading row")]);
        };
        let mut errors = Vec::new();
        let mut at: Vec<(usize, &Column)> = Vec::new();
        for (n, heading) in &headers {
            let text = cell_text(heading);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match self.columns().iter().find(|c| {
                c.key.eq_ignore_ascii_case(text) || c.label_zh == text || c.label_en.eq_ignore_ascii_case(text)
            }) {
                Some(column) if at.iter().any(|(_, c)| c.key == column.key) => errors
                    .push(place(header_row, *n).error(Some(column.key), format!("the column `{text}` is given twice"))),
                Some(column) => at.push((*n, column)),
                None => errors.push(place(header_row, *n).error(
                    None,
                    format!(
                        "no column `{text}` in the {} table: the columns are {}",
                        self.name(),
                        self.columns().iter().map(|c| c.label_zh).collect::<Vec<_>>().join("、")
                    ),
                )),
            }
        }
        for column in self.columns().iter().filter(|c| c.required) {
            if !at.iter().any(|(_, c)| c.key == column.key) {
                errors.push(place(header_row, 0).error(
                    Some(column.key),
                    format!("the column `{}` ({}) is missing", column.label_zh, column.key),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut rows = Vec::new();
        for (row, cells) in lines {
            let mut checked = Map::new();
            for column in self.columns() {
                let position = at.iter().find(|(_, c)| c.key == column.key).map(|(n, _)| *n);
                let value = position
                    .and_then(|n| cells.iter().find(|(m, _)| *m == n))
                    .map_or(Value::Null, |(_, v)| v.clone());
                let value = match (&value, column.kind) {
                    // A spreadsheet's number in a text column (an id 1001) is its text.
                    (Value::Number(n), CellKind::Text | CellKind::List) => {
                        Value::String(number(n.as_f64().unwrap_or(0.0)).to_string())
                    }
                    _ => value,
                };
                match cell(column, &value) {
                    Ok(value) => {
                        checked.insert(column.key.to_string(), value);
                    }
                    Err(message) => errors.push(place(row, position.unwrap_or(0)).error(Some(column.key), message)),
                }
            }
            let id_column = at.iter().find(|(_, c)| c.key == "id").map_or(0, |(n, _)| *n);
            rows.push((place(row, id_column), checked));
        }
        self.finish(rows, errors)
    }

    /// `rows` as a CSV or XLSX file, headed by the columns' Chinese labels (which
    /// [`Table::import`] reads back).
    pub fn export(self, rows: &[Map<String, Value>], format: Format) -> Result<Vec<u8>, String> {
        match format {
            Format::Csv => {
                let mut out = "\u{feff}".as_bytes().to_vec();
                {
                    let mut writer = csv::Writer::from_writer(&mut out);
                    writer
                        .write_record(self.columns().iter().map(|c| c.label_zh))
                        .map_err(|e| e.to_string())?;
                    for row in rows {
                        writer
                            .write_record(
                                self.columns()
                                    .iter()
                                    .map(|c| cell_text(row.get(c.key).unwrap_or(&Value::Null))),
                            )
                            .map_err(|e| e.to_string())?;
                    }
                    writer.flush().map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Format::Xlsx => {
                use rust_xlsxwriter::{Format as CellFormat, Workbook};
                let mut book = Workbook::new();
                let sheet = book.add_worksheet();
                sheet.set_name(self.name()).map_err(|e| e.to_string())?;
                let bold = CellFormat::new().set_bold();
                for (n, column) in self.columns().iter().enumerate() {
                    let col = n as u16;
                    sheet
                        .write_string_with_format(0, col, column.label_zh, &bold)
                        .map_err(|e| e.to_string())?;
                    let width = if matches!(column.key, "answer" | "description" | "variants") {
                        48
                    } else {
                        16
                    };
                    sheet.set_column_width(col, width).map_err(|e| e.to_string())?;
                    for (r, row) in rows.iter().enumerate() {
                        let at = u32::try_from(r + 1).map_err(|e| e.to_string())?;
                        let value = row.get(column.key).unwrap_or(&Value::Null);
                        match value {
                            Value::Null => {}
                            Value::Number(x) => {
                                sheet
                                    .write_number(at, col, x.as_f64().unwrap_or(0.0))
                                    .map_err(|e| e.to_string())?;
                            }
                            other => {
                                let text = cell_text(other);
                                if !text.is_empty() {
                                    sheet.write_string(at, col, text).map_err(|e| e.to_string())?;
                                }
                            }
                        }
                    }
                }
                book.save_to_buffer().map_err(|e| e.to_string())
            }
        }
    }
}

/// Whether a cell is empty.
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The rows of a file: each its 1-based row number and its cells by 1-based column.
type Grid = Vec<(usize, Vec<(usize, Value)>)>;

/// The cells of a CSV file (UTF-8, a leading byte-order mark skipped).
fn csv_grid(bytes: &[u8]) -> Result<Grid, Vec<CellError>> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let fail = |row: usize, message: String| {
        vec![CellError {
            sheet: None,
            row: Some(row),
            column: None,
            column_letter: None,
            key: None,
            message,
        }]
    };
    if std::str::from_utf8(bytes).is_err() {
        return Err(fail(
            1,
            "the CSV file is not UTF-8 text: save it as “CSV UTF-8” (逗号分隔, UTF-8)".into(),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut grid = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let row = e.position().map_or(n + 1, |p| p.record() as usize + 1);
            fail(row, format!("the CSV file does not read here: {e}"))
        })?;
        grid.push((
            n + 1,
            record
                .iter()
                .enumerate()
                .map(|(c, text)| (c + 1, Value::String(text.to_string())))
                .collect(),
        ));
    }
    Ok(grid)
}

/// The cells of an XLSX file's sheet named `preferred`, else its first sheet, with the
/// sheet's name.
fn xlsx_grid(bytes: &[u8], preferred: &str) -> Result<(String, Grid), Vec<CellError>> {
    use calamine::{Data, Reader, Xlsx};
    let fail = |sheet: Option<String>, message: String| {
        vec![CellError {
            sheet,
            row: None,
            column: None,
            column_letter: None,
            key: None,
            message,
        }]
    };
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes))
        .map_err(|e| fail(None, format!("not an XLSX workbook: {e}")))?;
    let names = book.sheet_names();
    let name = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(preferred))
        .or_else(|| names.first())
        .cloned()
        .ok_or_else(|| fail(None, "the workbook has no sheets".into()))?;
    let range = book
        .worksheet_range(&name)
        .map_err(|e| fail(Some(name.clone()), format!("the sheet does not read: {e}")))?;
    let (top, left) = range.start().unwrap_or((0, 0));
    let mut grid = Vec::new();
    for (r, cells) in range.rows().enumerate() {
        let row = top as usize + r + 1;
        let mut out = Vec::new();
        for (c, data) in cells.iter().enumerate() {
            let column = left as usize + c + 1;
            let value = match data {
                Data::Empty => continue,
                Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Value::String(s.clone()),
                Data::Int(i) => Value::from(*i),
                Data::Float(f) => number(*f),
                Data::Bool(b) => Value::String(if *b { "TRUE" } else { "FALSE" }.into()),
                Data::DateTime(d) => {
                    let (y, m, day, ..) = d.to_ymd_hms_milli();
                    Value::String(format!("{y:04}-{m:02}-{day:02}"))
                }
                Data::Error(e) => {
                    return Err(vec![
                        Place {
                            sheet: Some(name.clone()),
                            row,
                            column,
                        }
                        .error(None, format!("the cell holds an error ({e})")),
                    ]);
                }
            };
            out.push((column, value));
        }
        grid.push((row, out));
    }
    Ok((name, grid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_as_a_spreadsheet_names_them() {
        assert_eq!(column_letter(1), "A");
        assert_eq!(column_letter(26), "Z");
        assert_eq!(column_letter(27), "AA");
        assert_eq!(column_letter(703), "AAA");
    }

    #[test]
    fn rows_are_written_back_with_the_comment_block_and_read_again() {
        let yaml = "# 常见问题\n#\n# 写法说明\n\nfaq:\n  - id: a\n    question: 问？\n    answer: 答。\n";
        let rows = Table::Faq.rows(yaml).unwrap();
        assert_eq!(rows[0]["variants"], Value::Array(vec![]));
        let mut more = rows.clone();
        let mut b = rows[0].clone();
        b.insert("id".into(), "b".into());
        b.insert("variants".into(), serde_json::json!(["一", "二"]));
        more.push(b);
        let text = Table::Faq.to_yaml(yaml, &more).unwrap();
        assert!(text.starts_with("# 常见问题\n#\n# 写法说明\n\nfaq:\n"), "{text}");
        assert!(!text.contains("products"), "empty cells left out: {text}");
        assert_eq!(Table::Faq.rows(&text).unwrap(), more);
    }

    #[test]
    fn bad_cells_are_reported_at_their_row_and_column() {
        let csv = "商品编号,商品名,类目,售价,库存\nT1,衫,T恤,79,黑色:3\nT2,裤,裤装,很贵,白色:x\n";
        let errors = Table::Products.import(csv.as_bytes(), Format::Csv).unwrap_err();
        let places: Vec<_> = errors.iter().map(|e| (e.row, e.column_letter.clone())).collect();
        assert_eq!(
            places,
            vec![(Some(3), Some("D".into())), (Some(3), Some("E".into()))],
            "{errors:?}"
        );
        let good = Table::Products
            .import(
                csv.lines().take(2).collect::<Vec<_>>().join("\n").as_bytes(),
                Format::Csv,
            )
            .unwrap();
        assert_eq!(good[0]["stock"], serde_json::json!({"黑色": 3}));
        assert_eq!(good[0]["price"], serde_json::json!(79));
    }
}
