//! The language of a customer's message, among the languages the shop declares
//! (`languages "zh", "en"`; docs/language.md, "Languages").
//!
//! Detection runs on every turn, so it is one pass over the characters with no
//! allocation. The script decides first: Han characters are Chinese (Japanese when kana
//! come with them), Hangul Korean, Cyrillic, Greek, Arabic, Hebrew, Thai and Devanagari
//! the first declared language written in them. Latin-script text is the shop's declared
//! Latin-script language; when it declares several, a handful of common words of each
//! decides. Short or mixed messages keep the language the conversation already has: a
//! size ("XL"), "ok", an order number, or a Chinese sentence with an English word in it
//! ("这件 size M 有吗") give no clear signal, and a language only changes on one. Only
//! declared languages come out: a shop that declares one language never changes.
//!
//! No detection library is used: deciding among the two or three languages a shop
//! declares needs the script and a few words, and general detectors (whatlang and the
//! like) guess among dozens of languages from trigram tables, cost tens of microseconds
//! a message and are unreliable on the few words of a chat message.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A language, by its two-letter ISO 639-1 code (`zh`, `en`, `ja`). Copy and two bytes,
/// so a turn carries it around for free.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lang([u8; 2]);

impl Lang {
    /// Chinese, the shop's language unless it declares another first.
    pub const ZH: Lang = Lang(*b"zh");
    /// English.
    pub const EN: Lang = Lang(*b"en");

    /// Reads a two-letter lowercase code (`en`); anything else is `None`.
    pub fn parse(code: &str) -> Option<Lang> {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_lowercase() && b.is_ascii_lowercase() => Some(Lang([a, b])),
            _ => None,
        }
    }

    /// The code, `en`.
    pub fn as_str(&self) -> &str {
        // Only ASCII lowercase letters get in (`parse`).
        std::str::from_utf8(&self.0).unwrap_or("zh")
    }

    /// The language's name in Chinese, for model prompts (`英文`); the code when kefu does
    /// not know the language.
    pub fn name_zh(&self) -> &str {
        match &self.0 {
            b"zh" => "中文",
            b"en" => "英文",
            b"ja" => "日文",
            b"ko" => "韩文",
            b"fr" => "法文",
            b"de" => "德文",
            b"es" => "西班牙文",
            b"it" => "意大利文",
            b"pt" => "葡萄牙文",
            b"ru" => "俄文",
            b"vi" => "越南文",
            b"th" => "泰文",
            b"id" => "印尼文",
            b"ms" => "马来文",
            b"ar" => "阿拉伯文",
            _ => self.as_str(),
        }
    }

    /// The script the language is written in, as detection sees it.
    fn script(self) -> Script {
        match &self.0 {
            b"zh" => Script::Han,
            b"ja" => Script::Kana,
            b"ko" => Script::Hangul,
            b"ru" | b"uk" | b"be" | b"bg" | b"mk" | b"sr" | b"kk" | b"ky" | b"mn" | b"tg" => Script::Cyrillic,
            b"el" => Script::Greek,
            b"ar" | b"fa" | b"ur" | b"ps" => Script::Arabic,
            b"he" | b"yi" => Script::Hebrew,
            b"th" => Script::Thai,
            b"hi" | b"mr" | b"ne" => Script::Devanagari,
            _ => Script::Latin,
        }
    }
}

impl fmt::Debug for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Lang {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Lang {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Lang::parse(&code).ok_or_else(|| serde::de::Error::custom(format!("not a language code: {code:?}")))
    }
}

/// The writing systems detection tells apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    Han,
    Kana,
    Hangul,
    Cyrillic,
    Greek,
    Arabic,
    Hebrew,
    Thai,
    Devanagari,
    Latin,
}

const SCRIPTS: usize = 10;

impl Script {
    fn of(c: char) -> Option<Script> {
        Some(match c as u32 {
            0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F => Script::Han,
            0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9D => Script::Kana,
            0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F => Script::Hangul,
            0x0400..=0x04FF => Script::Cyrillic,
            0x0370..=0x03FF => Script::Greek,
            0x0600..=0x06FF => Script::Arabic,
            0x0590..=0x05FF => Script::Hebrew,
            0x0E00..=0x0E7F => Script::Thai,
            0x0900..=0x097F => Script::Devanagari,
            _ => return None,
        })
    }
}

/// Words a Chinese-speaking customer types in Latin letters without writing English:
/// they are no sign of a language.
const NEUTRAL_WORDS: &[&str] = &[
    "ok", "okay", "okk", "kk", "hh", "hhh", "haha", "hahaha", "lol", "xs", "xl", "xxl", "xxxl", "vip", "sku", "app",
    "wifi", "pdd", "tb", "jd", "qq", "wx", "vx",
];

/// English words that say the language on their own, as a whole message ("Hello",
/// "Thanks!"): the first message of a conversation is often one. Words Chinese-speaking
/// customers type as often ("hi", "ok", "yes") are not among them.
const ENGLISH_ON_THEIR_OWN: &[&str] = &["hello", "hey", "thanks", "goodbye"];

/// A few frequent words of Latin-script languages, to tell them apart when a shop
/// declares more than one.
fn common_words(lang: Lang) -> &'static [&'static str] {
    match &lang.0 {
        b"en" => &[
            "the", "is", "are", "you", "do", "does", "my", "it", "this", "what", "how", "can", "i", "to", "and", "of",
            "have", "please", "thanks", "thank", "yes", "no", "not", "will", "when", "where", "order",
        ],
        b"fr" => &[
            "le", "la", "les", "est", "je", "vous", "de", "et", "un", "une", "pas", "mon", "ma", "ce", "que", "merci",
            "oui", "non", "bonjour", "pour", "avec", "commande",
        ],
        b"es" => &[
            "el", "la", "los", "las", "es", "yo", "de", "y", "un", "una", "no", "mi", "que", "gracias", "hola", "por",
            "para", "con", "pedido", "puedo", "tiene",
        ],
        b"de" => &[
            "der",
            "die",
            "das",
            "ist",
            "ich",
            "sie",
            "und",
            "ein",
            "eine",
            "nicht",
            "mein",
            "meine",
            "danke",
            "hallo",
            "bitte",
            "mit",
            "für",
            "bestellung",
            "kann",
        ],
        b"it" => &[
            "il", "lo", "la", "gli", "le", "è", "io", "di", "e", "un", "una", "non", "mio", "che", "grazie", "ciao",
            "per", "con", "ordine",
        ],
        b"pt" => &[
            "o", "a", "os", "as", "é", "eu", "de", "e", "um", "uma", "não", "meu", "que", "obrigado", "obrigada",
            "olá", "para", "com", "pedido",
        ],
        b"nl" => &[
            "de",
            "het",
            "een",
            "is",
            "ik",
            "je",
            "u",
            "en",
            "niet",
            "mijn",
            "dank",
            "bedankt",
            "hallo",
            "met",
            "voor",
            "bestelling",
        ],
        b"id" | b"ms" => &[
            "saya", "anda", "ini", "itu", "dan", "tidak", "apa", "bisa", "terima", "kasih", "yang", "untuk", "dengan",
            "pesanan",
        ],
        b"vi" => &[
            "tôi", "bạn", "không", "có", "và", "của", "là", "được", "cảm", "ơn", "này", "đơn", "hàng",
        ],
        _ => &[],
    }
}

/// The language of `text` among `declared` (the shop's languages, its own first), or
/// `previous` (the conversation's language so far) when the text gives no clear signal.
///
/// A clear signal is one character of a non-Latin script a declared language is written
/// in, or two Latin words (two letters or more, not all capitals, not a neutral word such
/// as "ok" or "XL") outnumbering the Han characters. A result is always one of
/// `declared`; `previous` is used only when declared, else the shop's language.
pub fn detect(text: &str, declared: &[Lang], previous: Lang) -> Lang {
    let Some(&shop) = declared.first() else {
        return previous;
    };
    let previous = if declared.contains(&previous) { previous } else { shop };
    if declared.len() < 2 {
        return shop;
    }
    let mut counts = [0u32; SCRIPTS];
    let mut words = 0u32;
    let latin_langs = declared.iter().filter(|l| l.script() == Script::Latin).count();
    // Up to four Latin-script languages scored by their common words.
    let mut scores = [0u32; 4];
    let mut word_start: Option<usize> = None;
    let mut word_ok = true;
    let mut word_lower = false;
    let mut alone = false;
    let mut on_word = |word: &str, ok: bool, lower: bool, words: &mut u32, scores: &mut [u32; 4]| {
        if !ok || word.len() < 2 && latin_langs < 2 {
            return;
        }
        if word.len() >= 2 && lower && !NEUTRAL_WORDS.iter().any(|n| n.eq_ignore_ascii_case(word)) {
            *words += 1;
            alone |= ENGLISH_ON_THEIR_OWN.iter().any(|w| w.eq_ignore_ascii_case(word));
        }
        if latin_langs >= 2 {
            let latin = declared.iter().filter(|l| l.script() == Script::Latin);
            for (slot, lang) in latin.take(4).enumerate() {
                if common_words(*lang).iter().any(|w| w.eq_ignore_ascii_case(word)) {
                    scores[slot] += 1;
                }
            }
        }
    };
    for (i, c) in text.char_indices() {
        let latin = c.is_ascii_alphabetic() || (c.is_alphabetic() && ('\u{C0}'..='\u{24F}').contains(&c));
        if latin || c == '\'' && word_start.is_some() {
            if word_start.is_none() {
                word_start = Some(i);
                word_ok = true;
                word_lower = false;
            }
            word_lower |= c.is_lowercase();
            continue;
        }
        if c.is_ascii_digit() || c == '_' {
            // `sku123`, `A12`: codes, not words.
            if word_start.is_some() {
                word_ok = false;
            } else {
                word_start = Some(i);
                word_ok = false;
            }
            continue;
        }
        if let Some(start) = word_start.take() {
            on_word(&text[start..i], word_ok, word_lower, &mut words, &mut scores);
        }
        if let Some(script) = Script::of(c) {
            counts[script as usize] += 1;
        }
    }
    if let Some(start) = word_start {
        on_word(&text[start..], word_ok, word_lower, &mut words, &mut scores);
    }
    let declared_for = |script: Script| declared.iter().copied().find(|l| l.script() == script);
    // Kana and Hangul are their language's own; Han with kana is Japanese.
    for script in [Script::Kana, Script::Hangul] {
        if counts[script as usize] > 0
            && let Some(lang) = declared_for(script)
        {
            return lang;
        }
    }
    if counts[Script::Kana as usize] > 0 {
        // Japanese, which the shop does not serve: its Han characters are no sign of
        // Chinese.
        return previous;
    }
    let han = counts[Script::Han as usize];
    let others = [
        Script::Cyrillic,
        Script::Greek,
        Script::Arabic,
        Script::Hebrew,
        Script::Thai,
        Script::Devanagari,
    ];
    let (best, best_count) = others
        .iter()
        .map(|&s| (s, counts[s as usize]))
        .filter(|&(s, _)| declared_for(s).is_some())
        .max_by_key(|&(_, n)| n)
        .unwrap_or((Script::Latin, 0));
    if best_count > han && best_count >= words {
        return declared_for(best).unwrap_or(previous);
    }
    if han > 0 && han >= words {
        return declared_for(Script::Han).unwrap_or(previous);
    }
    let english_alone = alone && words == 1 && declared.contains(&Lang::EN);
    if english_alone && han == 0 {
        return Lang::EN;
    }
    if words >= 2 {
        if latin_langs < 2 {
            return declared_for(Script::Latin).unwrap_or(previous);
        }
        let mut best: Option<(Lang, u32)> = None;
        for (slot, lang) in declared
            .iter()
            .filter(|l| l.script() == Script::Latin)
            .take(4)
            .enumerate()
        {
            if scores[slot] > best.map_or(0, |(_, s)| s) {
                best = Some((*lang, scores[slot]));
            }
        }
        return match best {
            Some((lang, _)) => lang,
            // Latin words, none of them telling: stay in a Latin language already spoken.
            None if previous.script() == Script::Latin => previous,
            None => declared_for(Script::Latin).unwrap_or(previous),
        };
    }
    previous
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZH_EN: &[Lang] = &[Lang::ZH, Lang::EN];

    fn lang(code: &str) -> Lang {
        Lang::parse(code).unwrap()
    }

    #[test]
    fn codes_parse_and_print() {
        assert_eq!(lang("en").as_str(), "en");
        assert_eq!(Lang::parse("EN"), None);
        assert_eq!(Lang::parse("eng"), None);
        assert_eq!(Lang::parse("e"), None);
        assert_eq!(serde_json::to_string(&Lang::EN).unwrap(), "\"en\"");
        assert_eq!(serde_json::from_str::<Lang>("\"zh\"").unwrap(), Lang::ZH);
        assert!(serde_json::from_str::<Lang>("\"chinese\"").is_err());
    }

    /// (message, language so far, expected)
    #[test]
    fn clear_messages_set_the_language_and_unclear_ones_keep_it() {
        let cases: &[(&str, Lang, Lang)] = &[
            ("Does this T-shirt shrink after washing?", Lang::ZH, Lang::EN),
            ("这件T恤洗了会缩水吗", Lang::EN, Lang::ZH),
            ("thank you", Lang::ZH, Lang::EN),
            ("好", Lang::EN, Lang::ZH),
            // No clear signal: the conversation's language stays.
            ("ok", Lang::EN, Lang::EN),
            ("ok", Lang::ZH, Lang::ZH),
            ("OK", Lang::EN, Lang::EN),
            ("XL", Lang::EN, Lang::EN),
            ("XL", Lang::ZH, Lang::ZH),
            ("M", Lang::EN, Lang::EN),
            ("202611110001", Lang::EN, Lang::EN),
            ("202611110001", Lang::ZH, Lang::ZH),
            ("SKU-1234 A12", Lang::ZH, Lang::ZH),
            ("Thanks!", Lang::ZH, Lang::EN),
            ("Hello", Lang::ZH, Lang::EN),
            ("hi", Lang::ZH, Lang::ZH),
            ("yes", Lang::ZH, Lang::ZH),
            ("no", Lang::EN, Lang::EN),
            ("175cm 65kg", Lang::EN, Lang::EN),
            ("？？？", Lang::EN, Lang::EN),
            ("", Lang::EN, Lang::EN),
            ("😀👍", Lang::EN, Lang::EN),
            // Mixed: the larger part decides.
            ("这件 size M 有吗", Lang::EN, Lang::ZH),
            ("我要退货 order 202611110001", Lang::EN, Lang::ZH),
            ("iPhone 能用吗", Lang::EN, Lang::ZH),
            ("Do you have this in 红色?", Lang::ZH, Lang::EN),
            ("ok ok", Lang::EN, Lang::EN),
            ("ok 好的", Lang::EN, Lang::ZH),
            ("black please", Lang::ZH, Lang::EN),
        ];
        for &(text, previous, expected) in cases {
            assert_eq!(detect(text, ZH_EN, previous), expected, "{text:?} after {previous}");
        }
    }

    #[test]
    fn only_declared_languages_come_out() {
        // A Chinese-only shop never changes language.
        assert_eq!(detect("Does this shrink?", &[Lang::ZH], Lang::ZH), Lang::ZH);
        assert_eq!(detect("Does this shrink?", &[Lang::ZH], Lang::EN), Lang::ZH);
        // Japanese in a shop without Japanese: its Han characters are not Chinese.
        assert_eq!(detect("これは縮みますか", ZH_EN, Lang::EN), Lang::EN);
        assert_eq!(detect("洗濯で縮みますか", ZH_EN, Lang::EN), Lang::EN);
        // A stored language the shop no longer declares gives way to the shop's.
        assert_eq!(detect("ok", ZH_EN, lang("fr")), Lang::ZH);
        // The shop's own language need not be Chinese.
        assert_eq!(detect("ok", &[Lang::EN, Lang::ZH], Lang::EN), Lang::EN);
        assert_eq!(detect("多少钱", &[Lang::EN, Lang::ZH], Lang::EN), Lang::ZH);
    }

    #[test]
    fn scripts_pick_their_declared_language() {
        let many = &[Lang::ZH, Lang::EN, lang("ja"), lang("ko"), lang("ru")];
        assert_eq!(detect("これは縮みますか", many, Lang::ZH), lang("ja"));
        assert_eq!(detect("洗濯で縮みますか", many, Lang::ZH), lang("ja"));
        assert_eq!(detect("세탁하면 줄어드나요", many, Lang::ZH), lang("ko"));
        assert_eq!(detect("Это садится после стирки?", many, Lang::ZH), lang("ru"));
        assert_eq!(detect("洗了会缩水吗", many, Lang::EN), Lang::ZH);
    }

    #[test]
    fn several_latin_languages_are_told_apart_by_common_words() {
        let shop = &[Lang::ZH, Lang::EN, lang("fr"), lang("es")];
        assert_eq!(detect("Is this the right size for me", shop, Lang::ZH), Lang::EN);
        assert_eq!(detect("Est-ce que le tee-shirt rétrécit ?", shop, Lang::ZH), lang("fr"));
        assert_eq!(detect("Hola, tiene la talla M?", shop, Lang::ZH), lang("es"));
        // Latin words none of whose languages can be told: a Latin language already
        // spoken stays, else the first declared one.
        assert_eq!(detect("cotton tshirt", shop, lang("fr")), lang("fr"));
        assert_eq!(detect("cotton tshirt", shop, Lang::ZH), Lang::EN);
    }
}
