//! `kefu kb import` and `kefu kb export`: the FAQ and product lists to and from
//! spreadsheets (`kb::table`).
//!
//! An import replaces the table's list in the rules directory's YAML file with the
//! spreadsheet's rows, all or nothing: every bad cell is reported at its sheet, row and
//! column, the new file must read back without errors (`Table::reads_back`: an entry
//! about an unknown product, say), and only then is it written, atomically, and only if
//! no one changed the file meanwhile. It keeps the file's leading comment block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use kefu::kb::table::{CellError, Format, Table};
use kefu::versions::draft;
use serde_json::{Map, Value};

/// The largest spreadsheet an import reads, as for any file of the rules directory.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The knowledge base's commands.
#[derive(clap::Subcommand)]
pub enum KbCommand {
    /// Replace a table of the knowledge base (FAQ or products) with a spreadsheet's rows:
    /// every bad cell reported, nothing written unless all are good.
    Import {
        /// The spreadsheet (.xlsx or .csv; the first row holds the headings).
        file: PathBuf,
        /// The table: `faq` or `products` (default: from the file's name, `faq*` or
        /// `products*`).
        #[arg(long, value_parser = ["faq", "products"])]
        table: Option<String>,
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Check the file and show what would change, without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a table of the knowledge base as a spreadsheet.
    Export {
        /// The table: `faq` or `products` (default: from the output's name).
        #[arg(long, value_parser = ["faq", "products"])]
        table: Option<String>,
        /// The rules directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// The spreadsheet to write (.xlsx or .csv, by its extension).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Runs a `kefu kb` command.
pub fn run(command: KbCommand) -> Result<ExitCode> {
    match command {
        KbCommand::Import {
            file,
            table,
            rules,
            dry_run,
        } => import(&file, table.as_deref(), &rules, dry_run),
        KbCommand::Export { table, rules, output } => export(table.as_deref(), &rules, &output),
    }
}

/// The table named, else the one the file's name starts with.
fn table_of(given: Option<&str>, file: &Path) -> Result<Table> {
    if let Some(name) = given {
        return Table::of(name).with_context(|| format!("no table `{name}`: faq or products"));
    }
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_lowercase();
    if name.starts_with("faq") {
        Ok(Table::Faq)
    } else if name.starts_with("products") {
        Ok(Table::Products)
    } else {
        bail!(
            "cannot tell the table from the file name `{}`: give --table faq or --table products",
            file.display()
        )
    }
}

/// The format of a file, by its extension.
fn format_of(file: &Path) -> Result<Format> {
    file.extension()
        .and_then(|e| e.to_str())
        .and_then(Format::of)
        .with_context(|| format!("`{}` is neither .xlsx nor .csv", file.display()))
}

/// `FILE: sheet S, row R, column C: message` (the parts the error has).
fn cell_error(file: &Path, error: &CellError) -> String {
    let mut place = Vec::new();
    if let Some(sheet) = &error.sheet {
        place.push(format!("sheet {sheet}"));
    }
    if let Some(row) = error.row {
        place.push(format!("row {row}"));
    }
    if let Some(letter) = &error.column_letter {
        place.push(format!("column {letter}"));
    }
    let mut line = file.display().to_string();
    if !place.is_empty() {
        line.push_str(": ");
        line.push_str(&place.join(", "));
    }
    format!("{line}: {}", error.message)
}

/// The table's file in `rules` and its version (`None` when there is no such file).
fn current(rules: &Path, table: Table) -> Result<(String, Option<String>)> {
    match draft::read_file(rules, table.file()) {
        Ok((text, version)) => Ok((text, Some(version))),
        Err(draft::EditError::NotFound(_)) => Ok((String::new(), None)),
        Err(e) => Err(e).with_context(|| format!("reading {} in {}", table.file(), rules.display())),
    }
}

fn import(file: &Path, table: Option<&str>, rules: &Path, dry_run: bool) -> Result<ExitCode> {
    let table = table_of(table, file)?;
    let format = format_of(file)?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!("{} is larger than 16 MiB", file.display());
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = match table.import(&bytes, format) {
        Ok(rows) => rows,
        Err(errors) => {
            for error in &errors {
                eprintln!("{}", cell_error(file, error));
            }
            eprintln!(
                "{} error{}: nothing imported, {} unchanged",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                table.file()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let (text, version) = current(rules, table)?;
    let before = table
        .rows(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("the current {} does not read", table.file()))?;
    let after = table.to_yaml(&text, &rows).map_err(anyhow::Error::msg)?;
    if let Err(errors) = table.reads_back(rules, &after) {
        for error in &errors {
            eprintln!("{}: {}", file.display(), error.message);
        }
        eprintln!(
            "the imported rows do not build the knowledge base: nothing imported, {} unchanged",
            table.file()
        );
        return Ok(ExitCode::FAILURE);
    }
    let changes = Changes::between(&before, &rows);
    print!("{}", changes.describe(table, rows.len()));
    // The same rows in the same order: the file is left as it is, not reformatted.
    if before == rows || after == text {
        println!("no row changed: {} left as it is", table.file());
    } else if dry_run {
        println!("dry run: {} not written", table.file());
    } else {
        draft::write_file(rules, table.file(), &after, version.as_deref())
            .with_context(|| format!("writing {} in {}", table.file(), rules.display()))?;
        println!(
            "wrote {}: run `kefu check` and `kefu test`, then publish",
            rules.join(table.file()).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows added, changed and removed, by id.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
}

impl Changes {
    fn between(before: &[Map<String, Value>], after: &[Map<String, Value>]) -> Changes {
        let id = |row: &Map<String, Value>| row.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let old: BTreeMap<String, &Map<String, Value>> = before.iter().map(|r| (id(r), r)).collect();
        let mut changes = Changes::default();
        for row in after {
            let key = id(row);
            match old.get(&key) {
                None => changes.added.push(key),
                Some(was) if *was != row => changes.changed.push(key),
                Some(_) => {}
            }
        }
        let new: std::collections::BTreeSet<String> = after.iter().map(id).collect();
        changes.removed = before.iter().map(id).filter(|k| !new.contains(k)).collect();
        changes
    }

    fn describe(&self, table: Table, rows: usize) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{} rows read for the {} table: {} added, {} changed, {} removed\n",
            rows,
            table.name(),
            self.added.len(),
            self.changed.len(),
            self.removed.len()
        );
        for (what, ids) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !ids.is_empty() {
                let _ = writeln!(out, "  {what}: {}", ids.join(", "));
            }
        }
        out
    }
}

fn export(table: Option<&str>, rules: &Path, output: &Path) -> Result<ExitCode> {
    let table = table_of(table, output)?;
    let format = format_of(output)?;
    let (text, version) = current(rules, table)?;
    if version.is_none() {
        bail!("no {} in {}", table.file(), rules.display());
    }
    let rows = table.rows(&text).map_err(anyhow::Error::msg)?;
    let bytes = table.export(&rows, format).map_err(anyhow::Error::msg)?;
    std::fs::write(output, bytes).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "wrote {} rows of the {} table to {}",
        rows.len(),
        table.name(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_told_by_id() {
        let row = |id: &str, answer: &str| {
            let mut row = Map::new();
            row.insert("id".into(), id.into());
            row.insert("answer".into(), answer.into());
            row
        };
        let before = [row("a", "1"), row("b", "2"), row("c", "3")];
        let after = [row("a", "1"), row("b", "二"), row("d", "4")];
        let changes = Changes::between(&before, &after);
        assert_eq!(
            changes,
            Changes {
                added: vec!["d".into()],
                changed: vec!["b".into()],
                removed: vec!["c".into()],
            }
        );
    }

    #[test]
    fn the_table_comes_from_the_file_name_or_the_flag() {
        assert_eq!(table_of(None, Path::new("x/FAQ-2026.xlsx")).unwrap(), Table::Faq);
        assert_eq!(table_of(None, Path::new("products.csv")).unwrap(), Table::Products);
        assert_eq!(table_of(Some("faq"), Path::new("list.csv")).unwrap(), Table::Faq);
        let error = table_of(None, Path::new("list.csv")).unwrap_err().to_string();
        assert!(error.contains("--table"), "{error}");
    }
}
