//! Lowering data sources, and reading the files rule files name (data files and word
//! lists): inside the rules directory, size-limited, with YAML and JSON errors placed in
//! the data file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Lowerer;
use crate::diag::{Diagnostic, Span, files};
use crate::dsl::ast::{self, Str};
use crate::script::{Source, SourceKind};

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest `timeout` an http source may have. A lookup runs inside a customer's turn;
/// an hour-long (or `u64::MAX` ms) deadline would also overflow the clock arithmetic.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

impl Lowerer<'_> {
    /// Reads a file a rule file names (a data source or a word list): inside the rules
    /// directory, a regular file, size-limited ([`files`]). A refusal is an error at the
    /// path as written, and never shows the refused file.
    pub(super) fn read_aux(&mut self, path: &Str) -> Option<(PathBuf, String)> {
        let read = files::resolve(self.root, &path.value).and_then(|full| {
            let text = self.options.overlay.read(self.root, &full)?;
            Ok((full, text))
        });
        match read {
            Ok((full, text)) => {
                self.inputs.push((full.clone(), text.clone()));
                Some((full, text))
            }
            Err(e) => {
                self.push(
                    Diagnostic::error(
                        path.span,
                        format!("cannot read `{}`: {e}", self.root.join(&path.value).display()),
                    )
                    .with_label("file named here")
                    .with_help(format!(
                        "paths are relative to the rules directory and name a regular file inside it of at most {} MiB",
                        files::MAX_FILE_BYTES >> 20
                    )),
                );
                None
            }
        }
    }

    pub(super) fn data_sources(&mut self, sources: &[ast::Source]) -> Vec<Source> {
        let mut out = Vec::new();
        for source in sources {
            let kind = match &source.kind {
                ast::SourceKind::File { path, key } => {
                    let key_name = key.as_ref().map_or("id".to_string(), |k| k.value.clone());
                    let Some((full, text)) = self.read_aux(path) else {
                        continue;
                    };
                    match self.records(&full, text, &key_name, key.as_ref().map_or(path.span, |k| k.span)) {
                        Some(records) => SourceKind::File {
                            path: full,
                            key: key_name,
                            records: Arc::new(records),
                        },
                        None => continue,
                    }
                }
                ast::SourceKind::Http { url, timeout } => {
                    if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                        self.push(Diagnostic::error(
                            url.span,
                            "an http source needs an `http://` or `https://` URL",
                        ));
                    } else if !url.value.contains("{key}") {
                        self.push(Diagnostic::warning(
                            url.span,
                            "the URL has no `{key}`; every lookup fetches the same resource",
                        ));
                    }
                    let timeout = match timeout {
                        Some(t) if t.millis == 0 => {
                            self.push(Diagnostic::error(t.span, "timeout must be longer than zero"));
                            DEFAULT_HTTP_TIMEOUT
                        }
                        Some(t) if Duration::from_millis(t.millis) > MAX_HTTP_TIMEOUT => {
                            self.push(Diagnostic::error(
                                t.span,
                                format!("timeout must be at most {}s", MAX_HTTP_TIMEOUT.as_secs()),
                            ));
                            DEFAULT_HTTP_TIMEOUT
                        }
                        Some(t) => Duration::from_millis(t.millis),
                        None => DEFAULT_HTTP_TIMEOUT,
                    };
                    SourceKind::Http {
                        url: url.value.clone(),
                        timeout,
                    }
                }
            };
            out.push(Source {
                name: source.name.name.clone(),
                kind,
            });
        }
        out
    }

    /// Reads a data file's records, indexed by `key`. YAML and JSON errors are reported
    /// at their position in the data file.
    fn records(
        &mut self,
        full: &Path,
        text: String,
        key: &str,
        key_span: Span,
    ) -> Option<HashMap<String, rhai::Dynamic>> {
        let is_json = full.extension().is_some_and(|e| e == "json");
        let parsed: Result<serde_json::Value, (usize, usize, String)> = if is_json {
            serde_json::from_str(&text).map_err(|e| (e.line(), e.column(), e.to_string()))
        } else {
            serde_yaml::from_str(&text).map_err(|e| {
                let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                (line, col, e.to_string())
            })
        };
        let file = self.sources.add(full.to_path_buf(), text);
        let value = match parsed {
            Ok(v) => v,
            Err((line, col, message)) => {
                let at = self.sources.file(file).offset_of(line, col);
                let message = message.split(" at line ").next().unwrap_or(&message).to_string();
                self.push(Diagnostic::error(
                    self.sources.char_span(file, at),
                    format!("invalid {}: {message}", if is_json { "JSON" } else { "YAML" }),
                ));
                return None;
            }
        };
        let list: Vec<serde_json::Value> = match value {
            serde_json::Value::Array(list) => list,
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, mut v)| {
                    if let Some(obj) = v.as_object_mut() {
                        obj.entry(key.to_string()).or_insert(serde_json::Value::String(k));
                    }
                    v
                })
                .collect(),
            _ => {
                self.push(Diagnostic::error(
                    self.sources.char_span(file, 0),
                    "a data file must hold a list of records (or a map of them)",
                ));
                return None;
            }
        };
        let mut records = HashMap::new();
        for (n, record) in list.into_iter().enumerate() {
            let Some(id) = record.get(key).and_then(|k| match k {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }) else {
                self.push(
                    Diagnostic::error(
                        key_span,
                        format!("record {} in `{}` has no `{key}` field", n + 1, full.display()),
                    )
                    .with_help(format!("every record needs a string or number `{key}` to be found by")),
                );
                continue;
            };
            match rhai::serde::to_dynamic(&record) {
                Ok(value) => {
                    records.insert(id, value);
                }
                Err(e) => {
                    self.push(Diagnostic::error(
                        key_span,
                        format!("record `{id}` cannot be used in scripts: {e}"),
                    ));
                }
            }
        }
        Some(records)
    }
}
