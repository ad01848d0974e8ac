//! The draft routes of the console (`/admin/draft…`, docs/api.md "Draft"), end to end on
//! a server over a temporary copy of rules/: files with versions and conflicts, refused
//! paths, the check with an unsaved buffer and the symbol index, and the FAQ and product
//! tables with CSV and XLSX.

mod support;

use std::path::PathBuf;

use kefu::server::ServeConfig;
use serde_json::{Value, json};
use support::http::TestServer;

/// A server over a fresh copy of rules/ (not watched: the tests edit the files).
fn server() -> (TestServer, tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let rules = temp.path().join("rules");
    support::copy_dir(&support::root().join("rules"), &rules);
    let mut config = ServeConfig::new(&rules);
    config.watch = false;
    (TestServer::start(config), temp, rules)
}

fn put(server: &TestServer, path: &str, body: &Value) -> support::http::Reply {
    server.send("PUT", path, &[("content-type", "application/json")], &body.to_string())
}

/// The 1-based line and character column of the first `needle` in `text`.
fn line_col(text: &str, needle: &str) -> (u64, u64) {
    let at = text.find(needle).unwrap_or_else(|| panic!("no `{needle}`"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line as u64, col as u64)
}

#[test]
fn draft_files_are_listed_read_and_written_and_a_stale_write_is_refused_with_a_diff() {
    let (server, _temp, rules) = server();
    let list = server.get("/admin/draft");
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    let files = list["files"].as_array().unwrap();
    let find = |path: &str| files.iter().find(|f| f["path"] == path).cloned();
    let aftersale = find("aftersale.kefu").expect("aftersale.kefu listed");
    assert_eq!(aftersale["kind"], "rules");
    assert_eq!(find("kb/faq.yaml").unwrap()["kind"], "kb");
    assert_eq!(find("safety/profanity.txt").unwrap()["kind"], "words");
    assert_eq!(find("tests/cancel_offer_yes.yaml").unwrap()["kind"], "tests");
    assert_eq!(aftersale["version"].as_str().unwrap().len(), 16);
    assert_eq!(aftersale["editable"], true);
    assert_eq!(find("tests/intents.jsonl").unwrap()["editable"], false);
    assert!(list["base"].is_null(), "{list}");

    let read = server.get("/admin/draft/file?path=aftersale.kefu");
    assert_eq!(read.status, 200, "{}", read.body);
    let read = read.json();
    assert_eq!(read["version"], aftersale["version"]);
    let original = read["text"].as_str().unwrap().to_string();
    let v0 = read["version"].as_str().unwrap().to_string();

    // Two editors opened version v0; the first saves.
    let first = format!("{original}\n# 第一位编辑的修改\n");
    let saved = put(
        &server,
        "/admin/draft/file?path=aftersale.kefu",
        &json!({ "text": first, "version": v0 }),
    );
    assert_eq!(saved.status, 200, "{}", saved.body);
    let v1 = saved.json()["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v0);

    // The second is refused with the first's text and a diff; the first's text stays.
    let second = format!("{original}\n# 第二位编辑的修改\n");
    let refused = put(
        &server,
        "/admin/draft/file?path=aftersale.kefu",
        &json!({ "text": second, "version": v0 }),
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.error_type(), "conflict");
    let error = &refused.json()["error"];
    assert_eq!(error["current"]["text"], first.as_str());
    assert_eq!(error["current"]["version"], v1.as_str());
    let diff = error["diff"].as_str().unwrap();
    assert!(
        diff.contains("-# 第二位编辑的修改") && diff.contains("+# 第一位编辑的修改"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(rules.join("aftersale.kefu")).unwrap(), first);

    // A new file: only when there is none yet.
    let new = json!({ "text": "问候\n", "version": null });
    assert_eq!(put(&server, "/admin/draft/file?path=safety/new.txt", &new).status, 200);
    let again = put(&server, "/admin/draft/file?path=safety/new.txt", &new);
    assert_eq!(again.status, 409, "{}", again.body);
    let version = again.json()["error"]["current"]["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Removed with its version; a stale version is refused.
    let stale = server.send(
        "DELETE",
        "/admin/draft/file?path=safety/new.txt&version=0000000000000000",
        &[],
        "",
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    let removed = server.send(
        "DELETE",
        &format!("/admin/draft/file?path=safety/new.txt&version={version}"),
        &[],
        "",
    );
    assert_eq!(removed.status, 204, "{}", removed.body);
    let gone = server.get("/admin/draft/file?path=safety/new.txt");
    assert_eq!((gone.status, gone.error_type()), (404, "no_such_file".to_string()));

    // No temporary file is left behind, and the method is checked.
    assert!(
        std::fs::read_dir(&rules)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-"))
    );
    let post = server.post("/admin/draft/file?path=aftersale.kefu", &json!({}));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, PUT, DELETE"));
}

#[test]
fn paths_outside_the_draft_or_of_other_kinds_are_refused() {
    let (server, temp, rules) = server();
    std::fs::write(temp.path().join("secret.txt"), "secret").unwrap();
    for path in [
        "..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        ".git%2Fconfig.txt",
        ".kefu-base",
        "kb%2F..%2F..%2Fsecret.txt",
        "shop.exe",
        "kb",
    ] {
        let read = server.get(&format!("/admin/draft/file?path={path}"));
        assert_eq!(
            (read.status, read.error_type()),
            (400, "bad_path".to_string()),
            "{path}: {}",
            read.body
        );
        let write = put(
            &server,
            &format!("/admin/draft/file?path={path}"),
            &json!({ "text": "x", "version": null }),
        );
        assert_eq!(write.status, 400, "{path}: {}", write.body);
    }
    assert_eq!(
        std::fs::read_to_string(temp.path().join("secret.txt")).unwrap(),
        "secret"
    );
    assert!(!rules.join("shop.exe").exists());
    let big = "甲".repeat(kefu::versions::draft::MAX_EDIT_BYTES / 3 + 1);
    let too_big = put(
        &server,
        "/admin/draft/file?path=big.txt",
        &json!({ "text": big, "version": null }),
    );
    assert_eq!(too_big.status, 413, "{}", too_big.body);
}

#[test]
fn a_check_with_an_unsaved_buffer_points_at_its_mistake_and_lists_the_declarations() {
    let (server, _temp, rules) = server();
    let clean = server.post("/admin/draft/check", &json!({}));
    assert_eq!(clean.status, 200, "{}", clean.body);
    let clean = clean.json();
    assert_eq!(clean["ok"], true, "{}", clean["rendered"]);
    assert!(
        clean["rendered"].as_str().unwrap().contains(": ok, version "),
        "{}",
        clean["rendered"]
    );

    // The declarations, with the place of each name.
    let intents_text = std::fs::read_to_string(rules.join("intents.kefu")).unwrap();
    let (line, col) = line_col(&intents_text, "售后.换货 {");
    let intent = clean["symbols"]["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "售后.换货")
        .cloned()
        .expect("售后.换货 declared");
    assert_eq!(intent["file"], "intents.kefu");
    assert_eq!(
        (intent["line"].as_u64().unwrap(), intent["col"].as_u64().unwrap()),
        (line, col)
    );
    let slots = clean["symbols"]["slots"].as_array().unwrap();
    assert!(
        slots.iter().any(|s| s["name"] == "order_id" && s["flow"] == "换货申请"),
        "{slots:?}"
    );
    let flows = clean["symbols"]["flows"].as_array().unwrap();
    assert!(
        flows
            .iter()
            .any(|s| s["name"] == "换货申请" && s["file"] == "aftersale.kefu")
    );

    // An unsaved buffer with an unknown intent: the error where it is, with the advice.
    let saved = std::fs::read_to_string(rules.join("aftersale.kefu")).unwrap();
    let text = saved.replacen("start on 售后.换货", "start on 售后.换或", 1);
    let (line, col) = line_col(&text, "售后.换或");
    let checked = server.post(
        "/admin/draft/check",
        &json!({ "overlay": { "path": "aftersale.kefu", "text": text } }),
    );
    assert_eq!(checked.status, 200, "{}", checked.body);
    let checked = checked.json();
    assert_eq!(checked["ok"], false);
    assert!(checked["errors"].as_u64().unwrap() >= 1);
    let diagnostics = checked["diagnostics"].as_array().unwrap();
    let error = diagnostics
        .iter()
        .find(|d| d["message"].as_str().unwrap().contains("售后.换或"))
        .unwrap_or_else(|| panic!("{diagnostics:?}"));
    assert_eq!(error["severity"], "error");
    assert_eq!(error["file"], "aftersale.kefu");
    assert_eq!(
        (error["line"].as_u64().unwrap(), error["col"].as_u64().unwrap()),
        (line, col)
    );
    assert_eq!(error["end_line"].as_u64().unwrap(), line);
    assert_eq!(
        error["end_col"].as_u64().unwrap(),
        col + "售后.换或".chars().count() as u64
    );
    assert!(
        error["help"].as_str().unwrap().contains("did you mean `售后.换货`"),
        "{error}"
    );
    // The rendered text is `kefu check`'s, the same place.
    let rendered = checked["rendered"].as_str().unwrap();
    assert!(
        rendered.contains(&format!("aftersale.kefu:{line}:{col}: error: ")),
        "{rendered}"
    );
    // Nothing was written.
    assert_eq!(std::fs::read_to_string(rules.join("aftersale.kefu")).unwrap(), saved);

    // A buffer for a new file counts too; a bad path is refused.
    let new = server.post(
        "/admin/draft/check",
        &json!({ "overlay": { "path": "extra.kefu", "text": "rule 新规则 {\n  on 售后.换或\n  reply \"好\"\n}\n" } }),
    );
    let new = new.json();
    assert!(
        new["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["file"] == "extra.kefu" && d["line"] == 2),
        "{new}"
    );
    assert!(!rules.join("extra.kefu").exists());
    let bad = server.post(
        "/admin/draft/check",
        &json!({ "overlay": { "path": "../x.kefu", "text": "" } }),
    );
    assert_eq!(bad.status, 400);
}

/// The rows a table route answers.
fn rows(server: &TestServer, table: &str) -> (Vec<Value>, String) {
    let reply = server.get(&format!("/admin/draft/table/{table}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    (
        body["rows"].as_array().unwrap().clone(),
        body["version"].as_str().unwrap().to_string(),
    )
}

fn import(server: &TestServer, table: &str, content_type: &str, bytes: &[u8]) -> support::http::Reply {
    // The test client sends text; XLSX goes through `?format=` with its bytes as Latin-1
    // would not survive, so the body is sent raw.
    let mut head = format!(
        "POST /admin/draft/table/{table}/import HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        bytes.len()
    )
    .into_bytes();
    head.extend_from_slice(bytes);
    support::http::raw_request(server.addr, &head)
}

fn export(server: &TestServer, table: &str, format: &str) -> Vec<u8> {
    let raw = format!(
        "GET /admin/draft/table/{table}/export?format={format} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-disposition: attachment"), "{head}");
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    bytes[split + 4..].to_vec()
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[test]
fn the_faq_and_product_tables_import_and_export_csv_and_xlsx() {
    let (server, _temp, rules) = server();
    let (faq, version) = rows(&server, "faq");
    let written = std::fs::read_to_string(rules.join("kb/faq.yaml")).unwrap();
    assert_eq!(faq.len(), written.matches("\n  - id:").count());
    assert!(faq[0]["variants"].is_array());

    // A bad cell: its row and column as a spreadsheet shows them; nothing taken.
    let bad = "条目名,标准问法,回复\nA,问一,答一\nB,问二,\n";
    let refused = import(&server, "faq", "text/csv", bad.as_bytes());
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.error_type(), "invalid_rows");
    let errors = refused.json()["error"]["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["row"], 3);
    assert_eq!(errors[0]["column"], 3);
    assert_eq!(errors[0]["column_letter"], "C");

    // A good CSV is a preview: rows back, nothing written.
    let good = "id,question,variants,answer\nA,问一,说法一|说法二,答一\n";
    let preview = import(&server, "faq", "text/csv", good.as_bytes());
    assert_eq!(preview.status, 200, "{}", preview.body);
    let preview = preview.json();
    assert_eq!(preview["count"], 1);
    assert_eq!(preview["rows"][0]["variants"], json!(["说法一", "说法二"]));
    assert_eq!(std::fs::read_to_string(rules.join("kb/faq.yaml")).unwrap(), written);

    // An XLSX written by a spreadsheet library, with a bad price in D3.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("商品").unwrap();
    for (c, heading) in ["商品编号", "商品名", "类目", "售价", "库存", "上架日期"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *heading).unwrap();
    }
    sheet.write_number(1, 0, 1001).unwrap();
    sheet.write_string(1, 1, "新款卫衣").unwrap();
    sheet.write_string(1, 2, "卫衣").unwrap();
    sheet.write_number(1, 3, 129).unwrap();
    sheet.write_string(1, 4, "黑色:5|白色:0").unwrap();
    sheet.write_string(1, 5, "2026-11-01").unwrap();
    let good_xlsx = book.save_to_buffer().unwrap();
    let preview = import(&server, "products", XLSX, &good_xlsx);
    assert_eq!(preview.status, 200, "{}", preview.body);
    let row = &preview.json()["rows"][0];
    assert_eq!(row["id"], "1001");
    assert_eq!(row["price"], 129);
    assert_eq!(row["stock"], json!({ "黑色": 5, "白色": 0 }));
    assert_eq!(row["listed"], "2026-11-01");
    sheet_with_bad_price(&server);

    // Export, then import: the same rows, as CSV and as XLSX.
    for table in ["faq", "products"] {
        let (rows_now, _) = rows(&server, table);
        for (format, content_type) in [("csv", "text/csv"), ("xlsx", XLSX)] {
            let file = export(&server, table, format);
            let back = import(&server, table, content_type, &file);
            assert_eq!(back.status, 200, "{table} {format}: {}", back.body);
            assert_eq!(back.json()["rows"], Value::Array(rows_now.clone()), "{table} {format}");
        }
    }

    // Saved: the comment block kept, the knowledge base reads it, a stale save refused.
    let mut changed = faq.clone();
    changed[0]["answer"] = json!("新的回复。");
    let saved = put(
        &server,
        "/admin/draft/table/faq",
        &json!({ "rows": changed, "version": version }),
    );
    assert_eq!(saved.status, 200, "{}", saved.body);
    let text = std::fs::read_to_string(rules.join("kb/faq.yaml")).unwrap();
    let comment: Vec<&str> = written.lines().take_while(|l| l.starts_with('#')).collect();
    assert!(text.starts_with(&comment.join("\n")), "{text}");
    assert_eq!(rows(&server, "faq").0, changed);
    let checked = kefu::dsl::check_dir(&rules);
    assert!(!checked.report.has_errors(), "{}", checked.report);
    let stale = put(
        &server,
        "/admin/draft/table/faq",
        &json!({ "rows": faq, "version": version }),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    // A row about an unknown product is refused by the knowledge base's own check.
    let mut unknown = changed.clone();
    unknown[0]["products"] = json!(["没有这件"]);
    let current = rows(&server, "faq").1;
    let refused = put(
        &server,
        "/admin/draft/table/faq",
        &json!({ "rows": unknown, "version": current }),
    );
    assert_eq!(refused.status, 422, "{}", refused.body);
    let bad_cell = put(
        &server,
        "/admin/draft/table/products",
        &json!({ "rows": [{ "id": "X", "name": "n", "category": "c", "price": "贵" }], "version": null }),
    );
    assert_eq!(bad_cell.status, 422, "{}", bad_cell.body);
    assert_eq!(bad_cell.json()["error"]["errors"][0]["key"], "price");
    assert_eq!(server.get("/admin/draft/table/orders").status, 404);
}

/// An XLSX with a price that is not a number: refused at its sheet, row and column.
fn sheet_with_bad_price(server: &TestServer) {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, heading) in ["id", "name", "category", "price"].iter().enumerate() {
        sheet.write_string(0, c as u16, *heading).unwrap();
    }
    for (r, price) in ["59", "很便宜"].iter().enumerate() {
        let r = r as u32 + 1;
        sheet.write_string(r, 0, format!("P{r}")).unwrap();
        sheet.write_string(r, 1, "名").unwrap();
        sheet.write_string(r, 2, "类").unwrap();
        sheet.write_string(r, 3, *price).unwrap();
    }
    let bytes = book.save_to_buffer().unwrap();
    let refused = import(server, "products", XLSX, &bytes);
    assert_eq!(refused.status, 422, "{}", refused.body);
    let error = &refused.json()["error"]["errors"][0];
    assert_eq!(error["sheet"], "Sheet1");
    assert_eq!(
        (error["row"].as_u64(), error["column_letter"].as_str()),
        (Some(3), Some("D"))
    );
}
