//! Entities: the shop's regex and lexicon entities, and built-in ones every shop needs.
//!
//! Built-ins ([`BUILTIN_ENTITIES`]): `order_no` (long digit strings), `money` (300元,
//! ¥99.5, 三百块), `quantity` (2件, 两条), `date` (昨天, 11月3号, 2026-11-03 → ISO date),
//! `size` (S…XXXL, 均码, 165/88A), `color` (红/红色/黑…), `yes_no` (a whole message that is a
//! clear yes or no: `yes`/`no`, read by [`super::reading::yes_no`]). A shop entity with the same
//! name replaces the built-in one entirely: the shop knows its own order numbers and colours.
//!
//! Matching runs on the message with full-width ASCII folded to half-width (so "ＸＬ" is a
//! size and "２０２６…" an order number); spans are byte ranges of the original message.
//! Latin surfaces ("L", "navy") only match as whole words, and a one-character Chinese
//! surface ("白") does not match inside common words that merely contain it ("明白",
//! "红包", "蓝牙").

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use chrono::{Datelike, Days, NaiveDate, Weekday};
use regex::Regex;

use super::EntityMatch;

/// Names of the built-in entities, available to every shop.
pub const BUILTIN_ENTITIES: &[&str] = &["order_no", "money", "quantity", "date", "size", "color", "yes_no"];

/// Common words that contain a colour character without naming a colour: a one-character
/// lexicon surface inside one of them is not a match.
const NOT_A_COLOUR: &[&str] = &[
    "明白",
    "白天",
    "白白",
    "白费",
    "空白",
    "坦白",
    "白条",
    "白菜",
    "白送",
    "白跑",
    "白等",
    "表白",
    "红包",
    "网红",
    "红利",
    "走红",
    "红火",
    "眼红",
    "黑名单",
    "拉黑",
    "黑客",
    "黑心",
    "抹黑",
    "天黑",
    "蓝牙",
    "蓝天",
    "绿色通道",
    "黄牛",
    "黄了",
    "灰心",
    "粉丝",
    "金额",
    "现金",
    "金币",
    "黄页",
    "紫外线",
    "青春",
    "青年",
    "年青",
    "黑店",
    "白拿",
    "白痴",
    "红绿灯",
    "发黄",
    "黄金周",
];

/// A declared entity (an `entity` block): what [`Recognizer`] looks for besides the
/// built-ins. Defined here, kept in the rule set.
#[derive(Clone, Debug)]
pub struct Entity {
    /// Its name.
    pub name: String,
    /// How it is recognised.
    pub matcher: EntityMatcher,
}

impl Entity {
    /// Whether its value is a map of fields: a regex with named groups (`(?<amount>…)`).
    pub fn has_fields(&self) -> bool {
        matches!(&self.matcher, EntityMatcher::Regex(re) if re.capture_names().any(|n| n.is_some()))
    }
}

/// How an entity is recognised in a message.
#[derive(Clone, Debug)]
pub enum EntityMatcher {
    /// A compiled regular expression.
    Regex(Regex),
    /// Surface forms and the canonical value each stands for.
    Lexicon(Vec<(String, String)>),
}

/// Recognises every entity of a rule set in a message.
#[derive(Clone, Debug)]
pub struct Recognizer {
    entities: Vec<(String, Matcher)>,
    /// Compounds that a one-character CJK lexicon match must not sit inside.
    compounds: AhoCorasick,
}

#[derive(Clone, Debug)]
enum Matcher {
    Regex(Regex),
    Lexicon(Lexicon),
    OrderNo,
    Money,
    Quantity,
    Date,
    Size,
    /// The whole message as a clear yes or no ([`super::reading::yes_no`]).
    YesNo,
}

#[derive(Clone, Debug)]
struct Lexicon {
    automaton: AhoCorasick,
    canonical: Vec<String>,
    /// Whether the surface is Latin-script (must stand as a whole word).
    latin: Vec<bool>,
    /// Whether the surface is one CJK character (checked against [`NOT_A_COLOUR`]).
    single: Vec<bool>,
}

/// The longest surface (in bytes) an entity lexicon is built into a DFA with. aho-corasick
/// picks a DFA for a small lexicon, the fastest to search, but a leftmost DFA takes time
/// quadratic in a long repetitive surface to build (an 8,000-character synonym: 15 s);
/// past this length the contiguous NFA, built in linear time (3 ms), is used instead.
const DFA_MAX_SURFACE: usize = 96;

impl Lexicon {
    fn new(pairs: &[(String, String)]) -> Self {
        let surfaces: Vec<String> = pairs.iter().map(|(s, _)| fold_width(s.trim())).collect();
        let kind = surfaces
            .iter()
            .any(|s| s.len() > DFA_MAX_SURFACE)
            .then_some(AhoCorasickKind::ContiguousNFA);
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .kind(kind)
            .build(&surfaces)
            .expect("entity lexicon within size limits");
        Lexicon {
            automaton,
            canonical: pairs.iter().map(|(_, c)| c.clone()).collect(),
            latin: surfaces
                .iter()
                .map(|s| s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()))
                .collect(),
            single: surfaces
                .iter()
                .map(|s| s.chars().count() == 1 && !s.is_ascii())
                .collect(),
        }
    }
}

impl Recognizer {
    /// The shop's entities, then every built-in whose name the shop does not use.
    pub fn new(declared: &[Entity]) -> Self {
        let mut entities: Vec<(String, Matcher)> = declared
            .iter()
            .map(|e| {
                let m = match &e.matcher {
                    EntityMatcher::Regex(re) => Matcher::Regex(re.clone()),
                    EntityMatcher::Lexicon(pairs) => Matcher::Lexicon(Lexicon::new(pairs)),
                };
                (e.name.clone(), m)
            })
            .collect();
        for &name in BUILTIN_ENTITIES {
            if declared.iter().any(|e| e.name == name) {
                continue;
            }
            let m = match name {
                "order_no" => Matcher::OrderNo,
                "money" => Matcher::Money,
                "quantity" => Matcher::Quantity,
                "date" => Matcher::Date,
                "size" => Matcher::Size,
                "yes_no" => Matcher::YesNo,
                _ => Matcher::Lexicon(Lexicon::new(&builtin_colours())),
            };
            entities.push((name.to_string(), m));
        }
        Recognizer {
            entities,
            compounds: AhoCorasick::new(NOT_A_COLOUR).expect("small automaton"),
        }
    }

    /// Every entity in `text`, ordered by position (then by name); relative dates resolve
    /// against `today`.
    pub fn find(&self, text: &str, today: NaiveDate) -> Vec<EntityMatch> {
        let folded = Folded::new(text);
        let mut out = Vec::new();
        // Compound words that hide a single-character lexicon entry; found once, when the
        // first lexicon needs them.
        let mut compounds: Option<Vec<(usize, usize)>> = None;
        for (name, matcher) in &self.entities {
            let mut push_fields = |start: usize, end: usize, value: String, fields: Vec<(String, String)>| {
                let (s, e) = folded.original_span(start, end);
                out.push(EntityMatch {
                    name: name.clone(),
                    value,
                    text: text[s..e].to_string(),
                    start: s,
                    end: e,
                    fields,
                });
            };
            let mut push = |start: usize, end: usize, value: String| push_fields(start, end, value, Vec::new());
            let f = folded.text.as_str();
            match matcher {
                Matcher::Regex(re) => {
                    let named = re.capture_names().any(|n| n.is_some());
                    for c in captures_if(re, f, named) {
                        let m = c.get(0).expect("match");
                        // Digits glued to more digits are part of a longer number: a
                        // 12-digit order pattern must not take the first 12 digits of a
                        // 16-digit one, nor a height pattern "191" out of its middle.
                        if glued_digits(f, m.start(), m.end()) {
                            continue;
                        }
                        // A pattern such as `1\d\d\s*(cm)?` may take the space after the
                        // number; the entity is the number, not the space.
                        let text = m.as_str();
                        let start = m.start() + (text.len() - text.trim_start().len());
                        let end = m.end() - (text.len() - text.trim_end().len());
                        if start < end {
                            let fields = if named { named_fields(re, &c) } else { Vec::new() };
                            push_fields(start, end, f[start..end].to_string(), fields);
                        }
                    }
                }
                Matcher::Lexicon(lex) => {
                    let compounds = compounds
                        .get_or_insert_with(|| self.compounds.find_iter(f).map(|m| (m.start(), m.end())).collect());
                    for m in lex.automaton.find_iter(f) {
                        let id = m.pattern().as_usize();
                        if lex.latin[id] && !latin_word_at(f, m.start(), m.end()) {
                            continue;
                        }
                        if lex.single[id] && compounds.iter().any(|&(s, e)| s <= m.start() && m.end() <= e) {
                            continue;
                        }
                        push(m.start(), m.end(), lex.canonical[id].clone());
                    }
                }
                Matcher::OrderNo => order_numbers(f, &mut push),
                Matcher::Money => money(f, &mut push),
                Matcher::Quantity => quantities(f, &mut push),
                Matcher::Date => dates(f, today, &mut push),
                Matcher::Size => sizes(f, &mut push),
                Matcher::YesNo => {
                    if let Some(yes) = super::reading::yes_no(text) {
                        // The whole message, as written but for surrounding whitespace.
                        let start = f.len() - f.trim_start().len();
                        let end = f.trim_end().len();
                        push(start, end, if yes { "yes" } else { "no" }.to_string());
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
        out
    }
}

/// The captures of every match of `re` in `f`. Most messages hold no date, money or
/// quantity, and `captures_iter` allocates its capture slots before it searches; a plain
/// `is_match` first (a DFA scan, no allocation) skips that for the common case.
fn captures<'h>(re: &'h Regex, f: &'h str) -> impl Iterator<Item = regex::Captures<'h>> + 'h {
    re.is_match(f).then(|| re.captures_iter(f)).into_iter().flatten()
}

/// Every match of `re` in `f`: with its groups' captures when `groups` (a regex with
/// named groups), else the whole match only (the faster search).
fn captures_if<'h>(re: &'h Regex, f: &'h str, groups: bool) -> Box<dyn Iterator<Item = Match<'h>> + 'h> {
    if groups {
        Box::new(re.captures_iter(f).map(Match::Groups))
    } else {
        Box::new(re.find_iter(f).map(Match::Whole))
    }
}

/// One match of a regex entity: the whole match, or the captures of its groups.
enum Match<'h> {
    Whole(regex::Match<'h>),
    Groups(regex::Captures<'h>),
}

impl<'h> Match<'h> {
    /// The whole match (`0`) or nothing else: groups are read by [`named_fields`].
    fn get(&self, i: usize) -> Option<regex::Match<'h>> {
        match self {
            Match::Whole(m) if i == 0 => Some(*m),
            Match::Whole(_) => None,
            Match::Groups(c) => c.get(i),
        }
    }
}

/// The named groups of a match, in pattern order, with the text each took (trimmed); a
/// group that took no part is left out.
fn named_fields(re: &Regex, m: &Match<'_>) -> Vec<(String, String)> {
    let Match::Groups(c) = m else { return Vec::new() };
    re.capture_names()
        .flatten()
        .filter_map(|name| c.name(name).map(|g| (name.to_string(), g.as_str().trim().to_string())))
        .collect()
}

/// Whether the match `start..end` of `f` begins or ends with a digit that continues
/// beyond it.
fn glued_digits(f: &str, start: usize, end: usize) -> bool {
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let (first, last) = (f[start..end].chars().next(), f[start..end].chars().next_back());
    (digit(first) && digit(f[..start].chars().next_back())) || (digit(last) && digit(f[end..].chars().next()))
}

/// Full-width ASCII to half-width, nothing else (regexes may be case-sensitive).
fn fold_width(s: &str) -> String {
    s.chars().map(width_char).collect()
}

fn width_char(c: char) -> char {
    match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        0xFFE5 => '¥',
        _ => c,
    }
}

/// A message with full-width ASCII folded, and the way back to the original byte offsets.
struct Folded {
    text: String,
    /// `origin[i]` = byte offset in the original of the folded byte `i` (a char boundary);
    /// one extra entry for the end.
    origin: Vec<usize>,
}

impl Folded {
    fn new(original: &str) -> Self {
        let mut text = String::with_capacity(original.len());
        let mut origin = Vec::with_capacity(original.len() + 1);
        for (at, c) in original.char_indices() {
            let f = width_char(c);
            for _ in 0..f.len_utf8() {
                origin.push(at);
            }
            text.push(f);
        }
        origin.push(original.len());
        Folded { text, origin }
    }

    fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        (self.origin[start], self.origin[end])
    }
}

/// Whether `text[start..end]` is not glued to other Latin letters or digits (an apostrophe
/// counts as part of a word: the "s" of "it's" is no size).
fn latin_word_at(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let glue = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '\'');
    !glue(before) && !glue(after)
}

fn builtin_colours() -> Vec<(String, String)> {
    let bases = [
        "红",
        "粉",
        "橙",
        "黄",
        "绿",
        "青",
        "蓝",
        "紫",
        "黑",
        "白",
        "灰",
        "棕",
        "褐",
        "咖啡",
        "卡其",
        "米",
        "杏",
        "驼",
        "藏青",
        "藏蓝",
        "军绿",
        "墨绿",
        "天蓝",
        "宝蓝",
        "湖蓝",
        "雾霾蓝",
        "酒红",
        "玫红",
        "桃红",
        "粉红",
        "姜黄",
        "土黄",
        "银",
        "金",
        "奶白",
        "米白",
        "浅灰",
        "深灰",
        "深蓝",
        "浅蓝",
        "肉",
    ];
    let mut pairs = Vec::new();
    for b in bases {
        pairs.push((format!("{b}色"), format!("{b}色")));
        pairs.push((b.to_string(), format!("{b}色")));
    }
    for (en, zh) in [
        ("red", "红色"),
        ("pink", "粉色"),
        ("orange", "橙色"),
        ("yellow", "黄色"),
        ("green", "绿色"),
        ("blue", "蓝色"),
        ("purple", "紫色"),
        ("black", "黑色"),
        ("white", "白色"),
        ("grey", "灰色"),
        ("gray", "灰色"),
        ("brown", "棕色"),
        ("khaki", "卡其色"),
        ("beige", "米色"),
        ("navy", "藏青色"),
    ] {
        pairs.push((en.to_string(), zh.to_string()));
    }
    pairs
}

/// Parses a number written with Arabic digits, Chinese numerals, or both ("3百", "两千五",
/// "1.5万", "十一"). `None` when it is not one.
pub fn parse_number(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    let digit = |c: char| -> Option<f64> {
        Some(match c {
            '零' | '〇' => 0.0,
            '一' => 1.0,
            '二' | '两' => 2.0,
            '三' => 3.0,
            '四' => 4.0,
            '五' => 5.0,
            '六' => 6.0,
            '七' => 7.0,
            '八' => 8.0,
            '九' => 9.0,
            _ => return None,
        })
    };
    let mut total = 0.0; // completed 万 groups
    let mut section = 0.0; // below 万
    let mut current: Option<f64> = None; // the pending digit(s)
    let mut last_unit = 1.0;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            current = Some(n.parse().ok()?);
            continue;
        }
        if let Some(d) = digit(c) {
            current = Some(d);
        } else {
            let unit = match c {
                '十' => 10.0,
                '百' => 100.0,
                '千' => 1000.0,
                '万' => 10000.0,
                _ => return None,
            };
            if unit == 10000.0 {
                section += current.take().unwrap_or(0.0);
                total += if section == 0.0 { 1.0 } else { section } * unit;
                section = 0.0;
            } else {
                // "十一" = 10 + 1: a bare unit means one of it.
                section += current.take().unwrap_or(1.0) * unit;
            }
            last_unit = unit;
        }
        i += 1;
    }
    if let Some(d) = current {
        // "两千五" = 2500: a trailing digit after a unit counts in the next unit down.
        let scale = if last_unit >= 100.0 && chars.last().is_some_and(|c| digit(*c).is_some()) && chars.len() > 1 {
            last_unit / 10.0
        } else {
            1.0
        };
        section += d * scale;
    }
    Some(total + section)
}

/// A number without a needless fraction: `300`, `99.5`.
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

const NUM: &str = r"(?:\d+(?:\.\d+)?[十百千万]?|[零〇一二两三四五六七八九十百千万]+)";

static ORDER_NO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d{10,20}").expect("valid"));
static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)[¥$]\s*(\d+(?:\.\d{{1,2}})?)|({NUM})\s*(?:块钱|块|元|rmb|人民币)|(\d+(?:\.\d{{1,2}})?)\s*(?:毛钱|毛|角)"
    ))
    .expect("valid")
});
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(第)?({NUM}|俩)\s*(件|条|个|双|套|只|包|盒|瓶|箱|台|份|顶|张|支|对|袋|本|单)"
    ))
    .expect("valid")
});
static DATE_FULL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*[日号]?").expect("valid"));
static DATE_MONTH_DAY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([\d一二三四五六七八九十]{1,3})\s*月\s*(?:([\d一二三四五六七八九十]{1,3})\s*[日号]?|份)")
        .expect("valid")
});
static DATE_DAY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([\d一二三四五六七八九十]{1,3})\s*[日号]").expect("valid"));
static DATE_RELATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)大前天|前天|昨天|昨日|昨儿|今天|今日|今儿|明天|明日|明儿|大后天|后天|\byesterday\b|\btoday\b|\btomorrow\b",
    )
    .expect("valid")
});
static DATE_WEEKDAY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(上上|上|下下|下|这|本)?(?:周|星期|礼拜)([一二三四五六日天1-7]|末)").expect("valid"));
static DATE_FESTIVAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"双(11|十一|12|十二)").expect("valid"));
static SIZE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\d{3}/\d{2,3}[ab]?)|(xxxl|xxl|xl|xs|[2-6]xl|l|m|s)(?:码|号)?|(均码|free\s*size|one\s*size)")
        .expect("valid")
});

fn order_numbers(f: &str, push: &mut impl FnMut(usize, usize, String)) {
    for m in ORDER_NO.find_iter(f) {
        if glued_digits(f, m.start(), m.end()) {
            continue;
        }
        // An 11-digit number starting 13-19 is a mobile phone number unless the customer
        // says it is an order number.
        let s = m.as_str();
        let phone = s.len() == 11 && s.starts_with('1') && s.as_bytes()[1] >= b'3';
        let before: String = f[..m.start()]
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if phone && !before.contains("单") {
            continue;
        }
        push(m.start(), m.end(), s.to_string());
    }
}

fn money(f: &str, push: &mut impl FnMut(usize, usize, String)) {
    for c in captures(&MONEY, f) {
        let whole = c.get(0).expect("match");
        let value = if let Some(n) = c.get(1).or(c.get(2)) {
            parse_number(n.as_str())
        } else {
            c.get(3).and_then(|n| parse_number(n.as_str())).map(|v| v / 10.0)
        };
        if let Some(v) = value {
            push(whole.start(), whole.end(), format_number(v));
        }
    }
}

fn quantities(f: &str, push: &mut impl FnMut(usize, usize, String)) {
    for c in captures(&QUANTITY, f) {
        if c.get(1).is_some() {
            continue; // 第二件: an ordinal, not a quantity
        }
        let whole = c.get(0).expect("match");
        let n = c.get(2).expect("number").as_str();
        // "块" is money, never matched here; "一个" after "这" ("这一个") still counts.
        let value = if n == "俩" { Some(2.0) } else { parse_number(n) };
        if let Some(v) = value.filter(|v| *v > 0.0 && v.fract() == 0.0) {
            push(whole.start(), whole.end(), format_number(v));
        }
    }
}

fn iso(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn dates(f: &str, today: NaiveDate, push: &mut impl FnMut(usize, usize, String)) {
    // Taken spans, so "2026年11月3日" is not also read as "11月3日" and "3日".
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut add = |s: usize, e: usize, d: NaiveDate, taken: &mut Vec<(usize, usize)>| {
        if taken.iter().any(|&(ts, te)| s < te && ts < e) {
            return;
        }
        taken.push((s, e));
        push(s, e, iso(d));
    };
    let num = |s: &str| {
        parse_number(s)
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
            .map(|v| v as u32)
    };
    for c in captures(&DATE_FULL, f) {
        let (y, m, d) = (c[1].parse().ok(), c[2].parse().ok(), c[3].parse().ok());
        if let (Some(y), Some(m), Some(d)) = (y, m, d)
            && let Some(date) = NaiveDate::from_ymd_opt(y, m, d)
        {
            let w = c.get(0).expect("match");
            add(w.start(), w.end(), date, &mut taken);
        }
    }
    for c in captures(&DATE_MONTH_DAY, f) {
        let w = c.get(0).expect("match");
        let month = num(&c[1]);
        let day = c.get(2).map_or(Some(1), |d| num(d.as_str()));
        if let (Some(m), Some(d)) = (month, day)
            && let Some(date) = NaiveDate::from_ymd_opt(today.year(), m, d)
        {
            add(w.start(), w.end(), date, &mut taken);
        }
    }
    for c in captures(&DATE_FESTIVAL, f) {
        let w = c.get(0).expect("match");
        let m = if matches!(&c[1], "11" | "十一") { 11 } else { 12 };
        if let Some(date) = NaiveDate::from_ymd_opt(today.year(), m, m) {
            add(w.start(), w.end(), date, &mut taken);
        }
    }
    for m in DATE_RELATIVE.find_iter(f) {
        let offset: i64 = match m.as_str().to_ascii_lowercase().as_str() {
            "大前天" => -3,
            "前天" => -2,
            "昨天" | "昨日" | "昨儿" | "yesterday" => -1,
            "今天" | "今日" | "今儿" | "today" => 0,
            "明天" | "明日" | "明儿" | "tomorrow" => 1,
            "后天" => 2,
            _ => 3, // 大后天
        };
        let date = if offset >= 0 {
            today.checked_add_days(Days::new(offset as u64))
        } else {
            today.checked_sub_days(Days::new((-offset) as u64))
        };
        if let Some(date) = date {
            add(m.start(), m.end(), date, &mut taken);
        }
    }
    for c in captures(&DATE_WEEKDAY, f) {
        let w = c.get(0).expect("match");
        let weeks: i64 = match c.get(1).map(|m| m.as_str()) {
            Some("上上") => -2,
            Some("上") => -1,
            Some("下") => 1,
            Some("下下") => 2,
            _ => 0,
        };
        let day = match &c[2] {
            "一" | "1" => Weekday::Mon,
            "二" | "2" => Weekday::Tue,
            "三" | "3" => Weekday::Wed,
            "四" | "4" => Weekday::Thu,
            "五" | "5" => Weekday::Fri,
            "六" | "6" | "末" => Weekday::Sat,
            _ => Weekday::Sun,
        };
        let monday = today.weekday().num_days_from_monday() as i64;
        let delta = weeks * 7 + day.num_days_from_monday() as i64 - monday;
        let date = if delta >= 0 {
            today.checked_add_days(Days::new(delta as u64))
        } else {
            today.checked_sub_days(Days::new((-delta) as u64))
        };
        if let Some(date) = date {
            add(w.start(), w.end(), date, &mut taken);
        }
    }
    for c in captures(&DATE_DAY, f) {
        let w = c.get(0).expect("match");
        // "3号" after a digit or "月" was part of a longer date; after a letter it is a size
        // ("L号").
        let before = f[..w.start()].chars().next_back();
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '月') {
            continue;
        }
        if let Some(d) = num(&c[1])
            && let Some(date) = NaiveDate::from_ymd_opt(today.year(), today.month(), d)
        {
            add(w.start(), w.end(), date, &mut taken);
        }
    }
}

fn sizes(f: &str, push: &mut impl FnMut(usize, usize, String)) {
    for c in captures(&SIZE, f) {
        let w = c.get(0).expect("match");
        let core = c.get(1).or(c.get(2)).or(c.get(3)).expect("one group");
        // Letters glued to other letters ("size", "ms", "it's") are no size; the 码/号
        // suffix is CJK, so the end is checked on the core.
        if core.as_str().is_ascii() && !latin_word_at(f, w.start(), core.end()) {
            continue;
        }
        let raw = core.as_str().to_ascii_uppercase();
        let value = match raw.as_str() {
            "2XL" => "XXL".to_string(),
            "3XL" => "XXXL".to_string(),
            s if s.contains("SIZE") || s == "均码" => "均码".to_string(),
            s => s.to_string(),
        };
        push(w.start(), w.end(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 5).unwrap() // a Thursday
    }

    fn find(text: &str) -> Vec<(String, String, String)> {
        Recognizer::new(&[])
            .find(text, today())
            .into_iter()
            .map(|e| (e.name, e.value, e.text))
            .collect()
    }

    fn values(text: &str, name: &str) -> Vec<String> {
        find(text).into_iter().filter(|e| e.0 == name).map(|e| e.1).collect()
    }

    #[test]
    fn chinese_numbers_parse() {
        for (s, v) in [
            ("三百", 300.0),
            ("两千五", 2500.0),
            ("十一", 11.0),
            ("二十", 20.0),
            ("3百", 300.0),
            ("1.5万", 15000.0),
            ("一万二千", 12000.0),
            ("99.5", 99.5),
            ("两", 2.0),
        ] {
            assert_eq!(parse_number(s), Some(v), "{s}");
        }
        assert_eq!(parse_number("个"), None);
    }

    #[test]
    fn money_in_its_usual_forms() {
        assert_eq!(values("一共300元", "money"), ["300"]);
        assert_eq!(values("¥99.5 还是 ￥120", "money"), ["99.5", "120"]);
        assert_eq!(values("三百块钱能买吗", "money"), ["300"]);
        assert_eq!(values("便宜5毛", "money"), ["0.5"]);
    }

    #[test]
    fn quantities_but_not_ordinals() {
        assert_eq!(values("我要买2件", "quantity"), ["2"]);
        assert_eq!(values("拿两条黑色的", "quantity"), ["2"]);
        assert!(values("第二件半价吗", "quantity").is_empty());
    }

    #[test]
    fn dates_resolve_against_today() {
        assert_eq!(values("昨天下的单", "date"), ["2026-11-04"]);
        assert_eq!(values("11月3号签收的", "date"), ["2026-11-03"]);
        assert_eq!(values("2026-11-03到的", "date"), ["2026-11-03"]);
        assert_eq!(values("2026年11月3日", "date"), ["2026-11-03"]);
        assert_eq!(values("下周一能到吗", "date"), ["2026-11-09"]);
        assert_eq!(values("双11买的", "date"), ["2026-11-11"]);
        assert_eq!(values("8号发货", "date"), ["2026-11-08"]);
        assert!(values("L号有吗", "date").is_empty());
    }

    #[test]
    fn sizes_are_whole_words() {
        assert_eq!(values("xl码有吗", "size"), ["XL"]);
        assert_eq!(values("160 90斤 s会不会大", "size"), ["S"]);
        assert_eq!(values("ＸＬ还有吗", "size"), ["XL"]);
        assert_eq!(values("165/88A合适吗", "size"), ["165/88A"]);
        assert!(values("size偏大吗", "size").is_empty());
        assert!(values("it's ok", "size").is_empty());
    }

    #[test]
    fn colours_skip_words_that_only_contain_them() {
        assert_eq!(values("有红色吗 黑的也行", "color"), ["红色", "黑色"]);
        assert!(values("明白了 发个红包", "color").is_empty());
        assert_eq!(values("navy好看吗", "color"), ["藏青色"]);
    }

    #[test]
    fn yes_no_spans_the_whole_message() {
        assert_eq!(
            find("是的，谢谢"),
            [("yes_no".into(), "yes".into(), "是的，谢谢".into())]
        );
        assert_eq!(values(" 不用了 ", "yes_no"), ["no"]);
        assert!(values("是不是要我自己寄回去？", "yes_no").is_empty());
        assert!(values("可以，那运费谁出？", "yes_no").is_empty());
    }

    #[test]
    fn order_numbers_but_not_phone_numbers() {
        assert_eq!(values("订单 202611020001 到哪了", "order_no"), ["202611020001"]);
        assert!(values("手机号13812345678", "order_no").is_empty());
        assert_eq!(values("订单号13812345678", "order_no"), ["13812345678"]);
    }

    #[test]
    fn spans_point_into_the_original_message() {
        let text = "ＸＬ码　２件";
        let found = Recognizer::new(&[]).find(text, today());
        let size = found.iter().find(|e| e.name == "size").unwrap();
        assert_eq!(&text[size.start..size.end], "ＸＬ码");
        let qty = found.iter().find(|e| e.name == "quantity").unwrap();
        assert_eq!(&text[qty.start..qty.end], "２件");
        assert_eq!(qty.value, "2");
    }

    #[test]
    fn a_shop_entity_replaces_the_builtin_of_the_same_name() {
        let shop = Entity {
            name: "color".into(),
            matcher: EntityMatcher::Lexicon(vec![("雾蓝".into(), "雾霾蓝".into())]),
        };
        let r = Recognizer::new(&[shop]);
        let found: Vec<String> = r
            .find("雾蓝和红色", today())
            .into_iter()
            .filter(|e| e.name == "color")
            .map(|e| e.value)
            .collect();
        assert_eq!(found, ["雾霾蓝"]);
    }

    #[test]
    fn named_groups_are_fields_and_every_match_is_kept_in_order() {
        let card = Entity {
            name: "card".into(),
            matcher: EntityMatcher::Regex(
                Regex::new(r"\[订单编号[:：](?<id>\d+)[，,]订单金额[:：](?P<amount>[\d.]+)(?:[，,]备注[:：](?<note>[^\]]+))?\]")
                    .unwrap(),
            ),
        };
        assert!(card.has_fields());
        let text = "[订单编号:202611020001，订单金额:59.00][订单编号：202611080004,订单金额：99.00，备注:加急] 这两个";
        let found: Vec<EntityMatch> = Recognizer::new(std::slice::from_ref(&card))
            .find(text, today())
            .into_iter()
            .filter(|e| e.name == "card")
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].fields,
            [("id".into(), "202611020001".into()), ("amount".into(), "59.00".into())]
        );
        // A group that took no part is left out; the value stays the whole match.
        assert_eq!(found[1].fields.len(), 3);
        assert_eq!(found[1].fields[2], ("note".into(), "加急".into()));
        // Values and fields are read on the message with full-width ASCII folded ("，" → ",").
        assert_eq!(found[1].text, &text[found[1].start..found[1].end]);
        assert_eq!(found[1].value, found[1].text.replace('：', ":").replace('，', ","));

        let u = crate::nlu::Understanding {
            entities: found,
            ..Default::default()
        };
        let first = u.entities_map()["card"].clone().cast::<rhai::Map>();
        assert_eq!(first["amount"].to_string(), "59.00");
        assert_eq!(first["text"].to_string(), "[订单编号:202611020001,订单金额:59.00]");
        let all = u.all_entities_map()["card"].clone().cast::<rhai::Array>();
        let amounts: Vec<String> = all
            .into_iter()
            .map(|m| m.cast::<rhai::Map>()["amount"].to_string())
            .collect();
        assert_eq!(amounts, ["59.00", "99.00"]);
    }

    #[test]
    fn a_regex_without_named_groups_stays_text() {
        let plain = Entity {
            name: "order_id".into(),
            matcher: EntityMatcher::Regex(Regex::new(r"(\d{12})").unwrap()),
        };
        assert!(!plain.has_fields());
        let found = Recognizer::new(&[plain]).find("订单 202611020001 和 202611080004", today());
        let ids: Vec<&EntityMatch> = found.iter().filter(|e| e.name == "order_id").collect();
        assert!(ids.iter().all(|e| e.fields.is_empty()));
        let u = crate::nlu::Understanding {
            entities: found.clone(),
            ..Default::default()
        };
        assert_eq!(u.entities_map()["order_id"].to_string(), "202611020001");
        let all: Vec<String> = u.all_entities_map()["order_id"]
            .clone()
            .cast::<rhai::Array>()
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(all, ["202611020001", "202611080004"]);
    }

    #[test]
    fn a_long_repetitive_synonym_builds_as_an_nfa() {
        // An 8,000-character synonym made the default DFA build for 22 s; the lexicon is
        // built as a contiguous NFA past `DFA_MAX_SURFACE` and still finds it.
        let long = "蓝".repeat(8000);
        let lex = Lexicon::new(&[(long.clone(), "蓝色".into()), ("绿".into(), "绿色".into())]);
        assert_eq!(lex.automaton.kind(), AhoCorasickKind::ContiguousNFA);
        assert_eq!(lex.automaton.find_iter(&format!("要{long}的")).count(), 1);
        let short = Lexicon::new(&[("蓝".into(), "蓝色".into())]);
        assert_eq!(short.automaton.kind(), AhoCorasickKind::DFA);
    }
}
