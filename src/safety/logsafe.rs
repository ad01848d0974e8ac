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

#[cfg(test)]
mod tests {
    use super::*;

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
