//! Data sources: the `source` items of the rule files, which scripts call as functions of
//! a key (`orders(order_id)`), answered from a file read when the rules load or by a GET
//! to the shop's back office per lookup (the HTTP client of `http` sources lives here).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::host;

/// A data source scripts call as a function of a key.
#[derive(Clone, Debug)]
pub struct Source {
    /// The function name.
    pub name: String,
    /// Where records come from.
    pub kind: SourceKind,
}

/// Where a source's records come from.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// Records read from a YAML or JSON file when the rules were loaded, by key.
    File {
        /// The file, relative to the rules directory.
        path: PathBuf,
        /// The field records are indexed by.
        key: String,
        /// The records, shared with the script function that reads them.
        records: Arc<HashMap<String, rhai::Dynamic>>,
    },
    /// A GET per lookup, `{key}` replaced in the URL.
    Http {
        /// The URL template.
        url: String,
        /// How long a lookup may take before it counts as absent.
        timeout: Duration,
    },
}

/// Registers every source as a script function of its key. File sources answer from the
/// records read at load; HTTP sources make a GET with the source's timeout, and any
/// failure (connection, status, timeout, body that is not JSON) reads as `()` with a note
/// in the turn's trace, so a slow back office never hangs a turn.
pub fn register(engine: &mut rhai::Engine, sources: &[Source]) {
    for source in sources {
        match &source.kind {
            SourceKind::File { records, .. } => {
                let records = Arc::clone(records);
                engine.register_fn(source.name.as_str(), move |key: rhai::Dynamic| -> rhai::Dynamic {
                    records.get(&key_string(&key)).cloned().unwrap_or(rhai::Dynamic::UNIT)
                });
            }
            SourceKind::Http { url, timeout } => {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(*timeout))
                    .build()
                    .into();
                let (name, url) = (source.name.clone(), url.clone());
                engine.register_fn(source.name.as_str(), move |key: rhai::Dynamic| -> rhai::Dynamic {
                    let key = key_string(&key);
                    let target = url.replace("{key}", &encode_path(&key));
                    let fetched = agent
                        .get(&target)
                        .call()
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().map_err(|e| e.to_string()))
                        .and_then(|v| rhai::serde::to_dynamic(v).map_err(|e| e.to_string()));
                    fetched.unwrap_or_else(|error| {
                        host::note(|| format!("source {name}({key}) failed: {error}"));
                        rhai::Dynamic::UNIT
                    })
                });
            }
        }
    }
}

/// Percent-encodes a key for use in a URL path.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The lookup key of a script value: strings as they are, numbers in decimal.
pub(super) fn key_string(key: &rhai::Dynamic) -> String {
    if let Some(s) = key.read_lock::<rhai::ImmutableString>() {
        return s.to_string();
    }
    key.to_string()
}
