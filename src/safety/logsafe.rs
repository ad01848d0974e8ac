//! Identifiers as a log line may show them.
//!
//! Session ids and agent names come from clients: an OpenAI client's `user` is often a
//! phone number or an email, and an id with spaces and `=` in it would read as extra
//! `name=value` fields in a text log. [`LogSafe`] writes such a value with its personal
//! data masked, and quoted (with escapes) when it holds anything beyond the characters of
//! a plain token, so that one field stays one field.

use std::fmt;

use super::PiiKind;
use super::pii;

/// A client-given identifier, written for a log line (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct LogSafe<'a>(pub &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = pii::redact(self.0, &PiiKind::ALL);
        if text.chars().all(plain) && !text.is_empty() {
            f.write_str(&text)
        } else {
            write!(f, "{:?}", text)
        }
    }
}

/// Characters a log field may show bare: letters and digits of any script, and the
/// punctuation ids are made of. Not blanks, quotes, `=` or controls.
fn plain(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '#' | '+' | '*')
}

/// A URL as a log line (or `--print-config`) may show it: credentials before the host
/// (`user:secret@`, or Redis's lone `secret@`) as `***@`, every query value as `***`
/// (model servers take API keys there, Redis sockets their `pass`), the fragment dropped.
/// Redis, model-server and back-office addresses all go through this one function.
pub fn redacted_url(url: &str) -> String {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (url, None),
    };
    let mut out = match address.find("://") {
        Some(scheme) => {
            let rest = &address[scheme + 3..];
            let host_start = rest.find('/').map_or(rest.len(), |end| end);
            match rest[..host_start].rfind('@') {
                Some(at) => format!("{}***{}", &address[..scheme + 3], &rest[at..]),
                None => address.to_string(),
            }
        }
        None => address.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) => {
                    out.push_str(key);
                    out.push_str("=***");
                }
                None => out.push_str(pair),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            ("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
            ("redis://kefu:p@ss@10.0.0.5:6379/2", "redis://***@10.0.0.5:6379/2"),
            ("rediss://secret@host", "rediss://***@host"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://host/0?x=a@b", "redis://host/0?x=***"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?db=***&pass=***",
            ),
            (
                "https://user:pw@api.example.com:8443/v1/chat/completions?key=s3cret#frag",
                "https://***@api.example.com:8443/v1/chat/completions?key=***",
            ),
            ("http://a@b@host/x", "http://***@host/x"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    fn shown(id: &str) -> String {
        LogSafe(id).to_string()
    }

    #[test]
    fn plain_ids_are_written_as_they_are() {
        assert_eq!(shown("客户-1"), "客户-1");
        assert_eq!(shown("sess_42.a"), "sess_42.a");
    }

    #[test]
    fn an_id_with_spaces_cannot_forge_fields() {
        assert_eq!(shown("x source=rule rule=admin"), "\"x source=rule rule=admin\"");
        assert_eq!(shown("a\"b"), "\"a\\\"b\"");
        assert_eq!(shown("line\nbreak"), "\"line\\nbreak\"");
        assert_eq!(shown(""), "\"\"");
    }

    #[test]
    fn personal_data_in_an_id_is_masked() {
        let phone = shown("13812345678");
        assert!(!phone.contains("12345678"), "{phone}");
        let email = shown("zhangsan@example.com");
        assert!(!email.contains("zhangsan"), "{email}");
    }
}
