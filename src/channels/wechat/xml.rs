//! The XML of WeChat's callbacks: a flat `<xml>` of fields (`<ToUserName>`, `<MsgType>`,
//! `<Content>`, `<Encrypt>`...), read into [`Fields`]; and the replies kefu writes (a
//! passive text reply, the envelope of an encrypted one), with every value in CDATA.
//!
//! Reading is strict and bounded: no DTD (so no entity definitions, no external
//! entities), only XML's five named entities and character references, at most
//! [`MAX_FIELDS`] fields, elements nested at most [`MAX_DEPTH`] deep. Nested elements
//! (an event's `<ScanCodeInfo>`) are skipped: kefu reads only the top level.

use quick_xml::events::Event;

/// The most top-level fields a callback may have.
pub const MAX_FIELDS: usize = 64;
/// The deepest nesting read (and skipped) under `<xml>`.
pub const MAX_DEPTH: usize = 8;

/// A callback that is not the XML WeChat sends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed, or an unknown entity.
    #[error("the body is not well-formed XML: {0}")]
    Malformed(String),
    /// A `<!DOCTYPE>`: refused (entities could be defined there).
    #[error("a DOCTYPE is not allowed")]
    Doctype,
    /// Too many fields or too deep.
    #[error("the XML is larger than a WeChat callback")]
    TooLarge,
    /// The root element is not `<xml>`.
    #[error("the root element must be <xml>")]
    Root,
}

/// The top-level fields of a callback, in document order (names are unique in practice;
/// the first wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or `""`.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Reads a callback's XML.
pub fn parse(xml: &str) -> Result<Fields, XmlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed(e.to_string().chars().take(200).collect());
    let mut fields = Vec::new();
    let mut depth = 0usize;
    // The field being read (depth 2) and its text so far.
    let mut current: Option<(String, String)> = None;
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&e))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(XmlError::TooLarge);
                }
                let name = start.name().as_ref().to_string();
                match depth {
                    1 if name == "xml" && !seen_root => seen_root = true,
                    1 => return Err(XmlError::Root),
                    2 => current = Some((name, String::new())),
                    // Nested: the field has structure, not text; it is skipped.
                    _ => current = None,
                }
            }
            Event::Empty(start) => {
                let name = start.name().as_ref().to_string();
                match depth {
                    0 if name == "xml" && !seen_root => seen_root = true,
                    0 => return Err(XmlError::Root),
                    1 => push(&mut fields, name, String::new())?,
                    _ => {}
                }
            }
            Event::End(_) => {
                if depth == 2
                    && let Some((name, value)) = current.take()
                {
                    push(&mut fields, name, value)?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&text.xml10_content());
                } else if depth == 0 && !text.xml10_content().trim().is_empty() {
                    return Err(XmlError::Root);
                }
            }
            Event::CData(data) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference.resolve_char_ref().map_err(|e| malformed(&e))?
                } else {
                    match reference.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        other => return Err(malformed(&format!("unknown entity `&{other};`"))),
                    }
                };
                if let (Some((_, value)), Some(c)) = (current.as_mut(), resolved) {
                    value.push(c);
                }
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root || depth != 0 {
        return Err(XmlError::Root);
    }
    Ok(Fields(fields))
}

fn push(fields: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), XmlError> {
    if fields.len() >= MAX_FIELDS {
        return Err(XmlError::TooLarge);
    }
    if !fields.iter().any(|(n, _)| *n == name) {
        fields.push((name, value));
    }
    Ok(())
}

/// `text` as CDATA; a `]]>` inside is split across two sections (`]]]]><![CDATA[>`), so
/// no text can end the section early.
pub fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// A passive text reply to a message from `to` (the customer's openid) sent to `from`
/// (the account's id).
pub fn text_reply(to: &str, from: &str, create_time: i64, content: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{}</Content></xml>",
        cdata(to),
        cdata(from),
        cdata(content)
    )
}

/// The envelope of an encrypted reply.
pub fn encrypted_reply(encrypt: &str, signature: &str, timestamp: &str, nonce: &str) -> String {
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(encrypt),
        cdata(signature),
        cdata(timestamp),
        cdata(nonce)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_message_reads_into_fields() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\n<FromUserName><![CDATA[o_user]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[有什么 <优惠>]]></Content><MsgId>1234567890123456</MsgId></xml>";
        let fields = parse(xml).unwrap();
        assert_eq!(fields.get("ToUserName"), Some("gh_1"));
        assert_eq!(fields.get("CreateTime"), Some("1348831860"));
        assert_eq!(fields.get("Content"), Some("有什么 <优惠>"));
        assert_eq!(fields.get("MsgId"), Some("1234567890123456"));
        assert_eq!(fields.get("Event"), None);
        assert_eq!(fields.text("Event"), "");
    }

    #[test]
    fn entities_nesting_and_empty_fields() {
        let xml = "<?xml version=\"1.0\"?><xml><A>a &amp; b &#x4E2D;&#25991;</A><B/><ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo><C>c</C></xml>";
        let fields = parse(xml).unwrap();
        assert_eq!(fields.get("A"), Some("a & b 中文"));
        assert_eq!(fields.get("B"), Some(""));
        assert_eq!(fields.get("C"), Some("c"));
        assert_eq!(fields.get("ScanType"), None, "nested fields are not top-level");
    }

    #[test]
    fn hostile_and_broken_xml_is_refused() {
        let bomb = "<!DOCTYPE xml [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;\">]><xml><A>&b;</A></xml>";
        assert_eq!(parse(bomb), Err(XmlError::Doctype));
        assert!(matches!(parse("<xml><A>&ext;</A></xml>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse("<xml><A>x</B></xml>"), Err(XmlError::Malformed(_))));
        assert_eq!(parse("<root><A>x</A></root>"), Err(XmlError::Root));
        assert_eq!(parse("<xml><A>x</A>"), Err(XmlError::Root));
        assert_eq!(parse(""), Err(XmlError::Root));
        assert_eq!(parse("success"), Err(XmlError::Root));
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(parse(&deep), Err(XmlError::TooLarge));
        let wide = format!(
            "<xml>{}</xml>",
            (0..100).map(|i| format!("<f{i}>x</f{i}>")).collect::<String>()
        );
        assert_eq!(parse(&wide), Err(XmlError::TooLarge));
    }

    #[test]
    fn replies_put_text_in_cdata_safely() {
        let reply = text_reply("o_user", "gh_1", 1, "a]]>b<c>");
        let fields = parse(&reply).unwrap();
        assert_eq!(fields.get("Content"), Some("a]]>b<c>"));
        assert_eq!(fields.get("MsgType"), Some("text"));
        assert_eq!(fields.get("ToUserName"), Some("o_user"));
        let envelope = encrypted_reply("QUJD", "abc", "1409304348", "xxxxxx");
        let fields = parse(&envelope).unwrap();
        assert_eq!(fields.get("Encrypt"), Some("QUJD"));
        assert_eq!(fields.get("TimeStamp"), Some("1409304348"));
    }
}
