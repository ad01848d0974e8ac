//! `kefu kb import` and `kefu kb export` through the binary, on a copy of the demo shop's
//! rules: a CSV and an XLSX imported (the XLSX built here with rust_xlsxwriter), bad
//! cells reported at their sheet, row and column with nothing written, a dry run, a
//! table the file name cannot tell, and export → import leaving the file as it was.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

/// A copy of `rules/` of its own, removed when the test ends.
fn shop() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("kefu-test-kb-cli-").tempdir().unwrap();
    support::copy_dir(&support::root().join("rules"), dir.path());
    dir
}

fn kefu(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn faq(rules: &Path) -> String {
    std::fs::read_to_string(rules.join("kb/faq.yaml")).unwrap()
}

#[test]
fn a_csv_replaces_the_faq_and_says_what_changed() {
    let shop = shop();
    let rules = shop.path().to_path_buf();
    let before = faq(&rules);
    let csv = shop.path().join("faq.csv");
    std::fs::write(
        &csv,
        "条目名,标准问法,其他问法,回复\n\
         洗涤保养,衣服怎么洗？,怎么洗|能机洗吗,冷水手洗，不要暴晒。\n\
         发票抬头,发票抬头能改吗？,,可以，在订单详情里改。\n",
    )
    .unwrap();
    let out = kefu(&["kb", "import", path(&csv), "--rules", path(&rules)]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("2 rows read for the faq table: 1 added, 1 changed,"),
        "{stdout}"
    );
    assert!(stdout.contains("added: 发票抬头"), "{stdout}");
    assert!(stdout.contains("changed: 洗涤保养"), "{stdout}");
    let after = faq(&rules);
    assert_ne!(after, before);
    // The leading comment block is kept; the rows are the file's.
    let comment: Vec<&str> = before.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(after.starts_with(&comment.join("\n")), "{after}");
    let rows = kefu::kb::table::Table::Faq.rows(&after).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["answer"], "可以，在订单详情里改。");
    assert_eq!(rows[0]["variants"], serde_json::json!(["怎么洗", "能机洗吗"]));
    // The rules still build with it.
    let compiled = kefu::dsl::load_dir(&rules);
    assert!(compiled.rules.is_some(), "{}", compiled.report.render_all(false));
}

#[test]
fn an_xlsx_of_products_is_imported_and_a_dry_run_writes_nothing() {
    let shop = shop();
    let rules = shop.path();
    let before = std::fs::read_to_string(rules.join("kb/products.yaml")).unwrap();
    let mut rows = kefu::kb::table::Table::Products.rows(&before).unwrap();
    rows[0].insert("price".into(), serde_json::json!(66));
    // A workbook written as a person would: the headings in English, a sheet of their own.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("商品").unwrap();
    let columns = kefu::kb::table::Table::Products.columns();
    for (c, column) in columns.iter().enumerate() {
        sheet.write_string(0, c as u16, column.label_en).unwrap();
        for (r, row) in rows.iter().enumerate() {
            let at = (r + 1) as u32;
            match &row[column.key] {
                serde_json::Value::Null => {}
                serde_json::Value::Number(n) => {
                    sheet.write_number(at, c as u16, n.as_f64().unwrap()).unwrap();
                }
                serde_json::Value::String(s) => {
                    sheet.write_string(at, c as u16, s).unwrap();
                }
                serde_json::Value::Array(items) => {
                    let items: Vec<&str> = items.iter().map(|i| i.as_str().unwrap()).collect();
                    sheet.write_string(at, c as u16, items.join("|")).unwrap();
                }
                serde_json::Value::Object(stock) => {
                    let stock: Vec<String> = stock.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    sheet.write_string(at, c as u16, stock.join("|")).unwrap();
                }
                other => panic!("{other}"),
            }
        }
    }
    let xlsx = rules.join("products-new.xlsx");
    book.save(&xlsx).unwrap();
    let id = rows[0]["id"].as_str().unwrap().to_string();

    let dry = kefu(&["kb", "import", path(&xlsx), "--rules", path(rules), "--dry-run"]);
    let stdout = text(&dry.stdout);
    assert!(dry.status.success(), "{stdout}{}", text(&dry.stderr));
    assert!(
        stdout.contains(&format!("0 added, 1 changed, 0 removed\n  changed: {id}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("dry run"), "{stdout}");
    assert_eq!(std::fs::read_to_string(rules.join("kb/products.yaml")).unwrap(), before);

    let out = kefu(&["kb", "import", path(&xlsx), "--rules", path(rules)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = std::fs::read_to_string(rules.join("kb/products.yaml")).unwrap();
    let read = kefu::kb::table::Table::Products.rows(&after).unwrap();
    assert_eq!(read, rows, "every cell as the workbook had it");
}

#[test]
fn bad_cells_are_reported_at_sheet_row_and_column_and_nothing_is_written() {
    let shop = shop();
    let rules = shop.path();
    let before = std::fs::read_to_string(rules.join("kb/products.yaml")).unwrap();
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("products").unwrap();
    for (c, heading) in ["商品编号", "商品名", "类目", "售价", "库存"].iter().enumerate() {
        sheet.write_string(0, c as u16, *heading).unwrap();
    }
    for (c, cell) in ["T1", "短袖", "T恤", "79", "黑色:3"].iter().enumerate() {
        sheet.write_string(1, c as u16, *cell).unwrap();
    }
    for (c, cell) in ["T2", "长裤", "裤装", "很贵", "白色:x"].iter().enumerate() {
        sheet.write_string(2, c as u16, *cell).unwrap();
    }
    let xlsx = rules.join("products.xlsx");
    book.save(&xlsx).unwrap();
    let out = kefu(&["kb", "import", path(&xlsx), "--rules", path(rules)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{}: sheet products, row 3, column D: ", xlsx.display())),
        "{stderr}"
    );
    assert!(lines[1].contains(": sheet products, row 3, column E: "), "{stderr}");
    assert!(
        stderr.contains("2 errors: nothing imported, kb/products.yaml unchanged"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(rules.join("kb/products.yaml")).unwrap(), before);

    // Good cells that do not build the knowledge base (an FAQ entry about a product the
    // shop does not sell) are refused too.
    let faq_before = faq(rules);
    let csv = rules.join("faq.csv");
    std::fs::write(&csv, "条目名,标准问法,回复,相关商品\n新条目,问？,答。,NO-SUCH-ID\n").unwrap();
    let out = kefu(&["kb", "import", path(&csv), "--rules", path(rules)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kb/faq.yaml:"),
        "the place in the file it would write: {stderr}"
    );
    assert!(stderr.contains("nothing imported"), "{stderr}");
    assert_eq!(faq(rules), faq_before);
}

#[test]
fn a_file_name_that_names_no_table_asks_for_one() {
    let shop = shop();
    let rules = shop.path();
    let csv = rules.join("list.csv");
    std::fs::write(&csv, "条目名,标准问法,回复\na,问？,答。\n").unwrap();
    let out = kefu(&["kb", "import", path(&csv), "--rules", path(rules)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--table faq or --table products"),
        "{}",
        text(&out.stderr)
    );
    let out = kefu(&[
        "kb",
        "import",
        path(&csv),
        "--table",
        "faq",
        "--rules",
        path(rules),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn export_then_import_leaves_the_files_unchanged() {
    let shop = shop();
    let rules = shop.path();
    for (table, file) in [("faq", "kb/faq.yaml"), ("products", "kb/products.yaml")] {
        for extension in ["csv", "xlsx"] {
            let before = std::fs::read_to_string(rules.join(file)).unwrap();
            let out: PathBuf = rules.join(format!("{table}-export.{extension}"));
            let run = kefu(&["kb", "export", "--rules", path(rules), "-o", path(&out)]);
            assert!(run.status.success(), "{}", text(&run.stderr));
            assert!(text(&run.stdout).contains(&format!("of the {table} table")));
            let run = kefu(&["kb", "import", path(&out), "--rules", path(rules)]);
            let stdout = text(&run.stdout);
            assert!(
                run.status.success(),
                "{table}.{extension}: {stdout}{}",
                text(&run.stderr)
            );
            assert!(
                stdout.contains("0 added, 0 changed, 0 removed"),
                "{table}.{extension}: {stdout}"
            );
            assert!(stdout.contains("left as it is"), "{table}.{extension}: {stdout}");
            // Byte for byte: the hand-written file is not even reformatted.
            assert_eq!(
                std::fs::read_to_string(rules.join(file)).unwrap(),
                before,
                "{table}.{extension}"
            );
        }
    }
}
