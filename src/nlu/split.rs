//! Splitting a message that asks several questions ("发票怎么开 另外什么时候发货", "包邮吗，有赠品吗")
//! into its questions, so that the turn can understand and answer each (docs/language.md
//! section 1).
//!
//! Pure: text in, byte ranges of the parts out; no rule set. Labelled data in
//! `tests/data/split/` (`tests/split.rs` measures precision and recall).
//!
//! # How a message is split
//!
//! The message is cut into *clauses* at punctuation (`？?。！!；;，,、~…`, line ends), at
//! spaces next to a Chinese character (between two Latin words a space is only a space), and
//! at *cue words* that introduce another question: strong ones (另外, 顺便, 再问一下, 还想问,
//! 还有就是, 还有个问题, 对了, "by the way", "btw", "one more thing", "another question") and
//! weak ones (然后, 以及, a 还有 followed by a pause, "and", "also", "and then").
//!
//! Each clause is then read as one of:
//! - a **greeting or filler** (在吗, 你好, 亲, 请问, 谢谢, hi, "是吗"): never a part of its own;
//! - a **question**: a question particle (吗, a final 么, 了没, 不), a question word (怎么, 什么,
//!   哪, 几, 多少, 为什么, 是否 …), an A-not-A form (能不能, 有没有, 包不包邮), an English
//!   question start (how, when, can, is …), or a question mark after three characters or
//!   more. A question word alone ("有没有", "怎么", "多少") or a tag ("可以吗", "是不是") is
//!   not a question by itself: it is completed by what follows;
//! - **content**: anything else (a statement, an order number, a condition "如果…的话").
//!
//! Clauses are grouped into parts: a part runs until a question, and a new part starts
//! only at another question after it ("包邮吗 有赠品吗"), or at a strong cue after a part
//! with content ("衣服大了 另外发票怎么开"). Content between two questions goes with the
//! next one ("有货吗 今天下单 明天能到吗": the topic comes before its question in Chinese);
//! content after the last question stays with it ("能换吗 我买的太大了"). Greetings at the
//! edges of a part are left out of it.
//!
//! **Conservative by construction.** A cut that halves one question ("这个和那个 哪个好",
//! "如果不合适的话 能退吗", "202611010001 什么时候发货") gives two wrong answers, while a
//! missed cut costs one answer the customer asks for again; so nothing is cut unless both
//! sides hold a question, or a strong cue says so. A message that is not split returns no
//! parts, and one without any separator or cue is decided after one pass over its
//! characters, with no allocation.

use std::ops::Range;

use super::features::fold_char;

/// The most parts a message is split into; what follows the last is part of it.
pub const MAX_PARTS: usize = 6;

/// How strongly a cue word says another question follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cue {
    None,
    /// 然后, "and": only a boundary, both sides must be questions.
    Weak,
    /// 另外, "by the way": a new part even after a statement.
    Strong,
}

/// What a clause is, for grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Filler,
    Question,
    Content,
}

#[derive(Clone, Copy, Debug)]
struct Clause {
    start: usize,
    end: usize,
    /// A question mark follows it.
    qmark: bool,
    /// The cue word before it.
    cue: Cue,
}

/// Chinese cue words (already folded), with their strength. Longest first where one is a
/// prefix of another.
const CUES_ZH: &[(&str, Cue)] = &[
    ("还有一个问题", Cue::Strong),
    ("还有个问题", Cue::Strong),
    ("还有一件事", Cue::Strong),
    ("还有件事", Cue::Strong),
    ("还有就是", Cue::Strong),
    ("还有一个就是", Cue::Strong),
    ("另一个问题", Cue::Strong),
    ("顺便问一下", Cue::Strong),
    ("顺便问下", Cue::Strong),
    ("顺便问问", Cue::Strong),
    ("顺便问", Cue::Strong),
    ("顺便", Cue::Strong),
    ("再问一下", Cue::Strong),
    ("再问下", Cue::Strong),
    ("再问个", Cue::Strong),
    ("再请问", Cue::Strong),
    ("想再问", Cue::Strong),
    ("我还想问一下", Cue::Strong),
    ("我还想问", Cue::Strong),
    ("还想问一下", Cue::Strong),
    ("还想问下", Cue::Strong),
    ("还想问", Cue::Strong),
    ("还要问", Cue::Strong),
    ("另外", Cue::Strong),
    ("然后", Cue::Weak),
    ("以及", Cue::Weak),
    ("还有", Cue::Weak),
    ("对了", Cue::Strong),
];

/// English cue words (lowercase), matched at a word start and followed by a word end.
const CUES_EN: &[(&str, Cue)] = &[
    ("and one more thing", Cue::Strong),
    ("one more thing", Cue::Strong),
    ("another question", Cue::Strong),
    ("by the way", Cue::Strong),
    ("btw", Cue::Strong),
    ("and also", Cue::Weak),
    ("and then", Cue::Weak),
    ("also", Cue::Weak),
    ("and", Cue::Weak),
    ("plus", Cue::Weak),
];

/// Characters after which 另外 means "another" (另外一个颜色), not "also".
const NOT_AFTER_LINGWAI: &[char] = &[
    '一', '的', '两', '几', '个', '那', '这', '件', '款', '种', '地', '些', '半', '再',
];

/// Greetings and fillers: a clause made only of these (and particles) is no question.
const FILLERS: &[&str] = &[
    "在不在",
    "在吗",
    "在么",
    "在嘛",
    "在不",
    "在",
    "你们好",
    "你好",
    "您好",
    "亲亲",
    "亲爱的",
    "亲",
    "哈喽",
    "哈罗",
    "嗨",
    "客服",
    "老板",
    "掌柜",
    "店家",
    "美女",
    "小姐姐",
    "帅哥",
    "请问一下",
    "请问下",
    "请问",
    "问一下",
    "问下",
    "咨询一下",
    "咨询下",
    "咨询",
    "打扰了",
    "打扰一下",
    "打扰",
    "麻烦问一下",
    "麻烦问下",
    "麻烦",
    "有人在吗",
    "有人吗",
    "有人",
    "早上好",
    "上午好",
    "中午好",
    "下午好",
    "晚上好",
    "早安",
    "谢谢",
    "谢了",
    "多谢",
    "感谢",
    "好的",
    "嗯嗯",
    "嗯",
    "哦",
    "噢",
    "是吗",
    "真的吗",
    "对吗",
    "好吧",
    "那个",
    "就是",
    "我想问一下",
    "我想问下",
    "我想问",
    "想问一下",
    "想问下",
    "想问",
    "我问一下",
    "我问下",
    "hello",
    "hi",
    "hey",
    "thanks",
    "thank you",
    "excuse me",
    "ok",
    "okay",
];

/// Tags and bare question words: a question only together with what they ask about.
const TAGS: &[&str] = &[
    "可以吗",
    "可以不",
    "行吗",
    "行不",
    "好吗",
    "可不可以",
    "能不能",
    "有没有",
    "是不是",
    "对不对",
    "好不好",
    "行不行",
    "怎么样",
    "怎么办",
    "咋办",
    "怎么说",
    "然后呢",
    "怎么",
    "怎样",
    "如何",
    "什么",
    "啥",
    "为什么",
    "为啥",
    "多少",
    "哪个",
    "哪里",
    "哪儿",
    "咋样",
    "咋",
];

/// Question words (folded). 什么/啥 after 没 are not questions (没什么).
const QUESTION_WORDS: &[&str] = &[
    "怎么",
    "怎样",
    "如何",
    "什么",
    "啥",
    "哪",
    "几",
    "多少",
    "多久",
    "多长",
    "多大",
    "多重",
    "多高",
    "多远",
    "多宽",
    "多贵",
    "为什么",
    "为啥",
    "咋",
    "谁",
    "是否",
    "能否",
    "可否",
    "有无",
    "何时",
    "几时",
];

/// English words that start a question.
const QUESTION_STARTS_EN: &[&str] = &[
    "how", "what", "when", "where", "why", "which", "who", "whom", "whose", "can", "could", "do", "does", "did", "is",
    "are", "was", "were", "will", "would", "should", "shall", "may", "might", "any", "have", "has", "isn't", "aren't",
    "don't", "doesn't", "can't", "won't", "didn't",
];

/// Sentence particles, ignored when a clause is judged a filler or a tag.
const PARTICLES: &[char] = &[
    '啊', '呀', '哈', '呢', '哦', '喔', '噢', '嘛', '啦', '吧', '哇', '呐', '捏', '了', '的', '嗯', '么', '吗', '哎',
    '诶', '唉', '额', '呃',
];

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF)
}

/// Punctuation that ends a clause (folded: full-width forms are ASCII here).
fn is_break(c: char) -> bool {
    matches!(
        c,
        '?' | '!' | ';' | ',' | '。' | '，' | '、' | '~' | '…' | '\n' | '\r' | '\t' | '；' | '！' | '？' | '～'
    )
}

/// Whether the message could split at all: it holds a separator or the first character of
/// a cue. One pass, no allocation; most single questions stop here.
fn may_split(message: &str) -> bool {
    message.chars().any(|c| {
        let c = fold_char(c);
        is_break(c)
            || matches!(
                c,
                ' ' | '.' | '另' | '顺' | '再' | '还' | '然' | '以' | '对' | '想' | '我'
            )
    })
}

/// The parts of a message that asks several questions, as byte ranges of `message` in
/// order; empty when it asks one question (or none), so that the caller keeps the whole
/// message. At most [`MAX_PARTS`].
pub fn split(message: &str) -> Vec<Range<usize>> {
    if !may_split(message) {
        return Vec::new();
    }
    let clauses = clauses(message);
    if clauses.len() < 2 {
        return Vec::new();
    }
    let kinds: Vec<Kind> = clauses
        .iter()
        .map(|c| kind(&message[c.start..c.end], c.qmark))
        .collect();
    group(message, &clauses, &kinds)
}

/// The message's clauses, cut at punctuation, spaces next to Chinese and cue words.
fn clauses(message: &str) -> Vec<Clause> {
    let mut out: Vec<Clause> = Vec::new();
    let mut start = 0;
    let mut cue = Cue::None;
    let chars: Vec<(usize, char)> = message.char_indices().collect();
    let mut i = 0;
    let close = |out: &mut Vec<Clause>, start: usize, end: usize, cue: &mut Cue| {
        let text = &message[start..end];
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return;
        }
        // Spaces between Latin words are inside a clause; not at its edges.
        let start = start + (text.len() - text.trim_start().len());
        out.push(Clause {
            start,
            end: start + trimmed.len(),
            qmark: false,
            cue: std::mem::replace(cue, Cue::None),
        });
    };
    while i < chars.len() {
        let (at, raw) = chars[i];
        let c = fold_char(raw);
        let boundary = if is_break(c) {
            true
        } else if c == '.' {
            // A decimal point is not a sentence end.
            let digit = |j: Option<&(usize, char)>| j.is_some_and(|(_, c)| c.is_ascii_digit());
            !(i > 0 && digit(chars.get(i - 1)) && digit(chars.get(i + 1)))
        } else if c == ' ' {
            // Between two Latin words a space is only a space.
            let before = chars[..i].iter().rev().map(|&(_, c)| fold_char(c)).find(|c| *c != ' ');
            let after = chars[i + 1..].iter().map(|&(_, c)| fold_char(c)).find(|c| *c != ' ');
            let latin = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric() || c == '\'');
            !(latin(before) && latin(after))
        } else {
            false
        };
        if boundary {
            close(&mut out, start, at, &mut cue);
            if matches!(c, '?')
                && let Some(last) = out.last_mut()
            {
                last.qmark = true;
            }
            start = at + raw.len_utf8();
            i += 1;
            continue;
        }
        if let Some((len, strength)) = cue_at(message, &chars, i) {
            close(&mut out, start, at, &mut cue);
            cue = if cue == Cue::Strong { Cue::Strong } else { strength };
            start = at + len;
            i = chars.partition_point(|&(b, _)| b < start);
            continue;
        }
        i += 1;
    }
    close(&mut out, start, message.len(), &mut cue);
    out
}

/// The cue word starting at character `i`, if any: its byte length and strength.
fn cue_at(message: &str, chars: &[(usize, char)], i: usize) -> Option<(usize, Cue)> {
    let (at, raw) = chars[i];
    let c = fold_char(raw);
    let rest = &message[at..];
    if is_cjk(c) {
        if !matches!(c, '另' | '顺' | '再' | '还' | '然' | '以' | '对' | '想' | '我') {
            return None;
        }
        for &(cue, strength) in CUES_ZH {
            if !rest.starts_with(cue) {
                continue;
            }
            let next = rest[cue.len()..].chars().next().map(fold_char);
            let pause = next.is_none_or(|n| is_break(n) || n == ' ');
            let ok = match cue {
                // 还另外送湿巾吗, 要另外付运费吗: "in addition", inside one question; a
                // cue only where a clause can end before it.
                "另外" => {
                    let before = i.checked_sub(1).map(|j| fold_char(chars[j].1));
                    next.is_none_or(|n| !NOT_AFTER_LINGWAI.contains(&n))
                        && before.is_none_or(|b| is_break(b) || b == ' ' || "吗呢吧啊呀哦嘛了的哈".contains(b))
                }
                // 还有货吗, 还有吗: "still have", unless a pause follows.
                "还有" => pause,
                // 地址对了吗: "right", unless a pause follows.
                "对了" => pause,
                // 然后呢: "and then?", a tag of its own.
                "然后" => next != Some('呢'),
                _ => true,
            };
            if ok {
                return Some((cue.len(), strength));
            }
        }
        return None;
    }
    if !c.is_ascii_alphabetic() {
        return None;
    }
    // English cues start a word.
    if i > 0 && fold_char(chars[i - 1].1).is_ascii_alphanumeric() {
        return None;
    }
    for &(cue, strength) in CUES_EN {
        let Some(head) = rest.get(..cue.len()) else { continue };
        if !head.eq_ignore_ascii_case(cue) {
            continue;
        }
        let next = rest[cue.len()..].chars().next();
        if next.is_some_and(|n| n.is_ascii_alphanumeric()) {
            continue;
        }
        return Some((cue.len(), strength));
    }
    None
}

/// The clause's text folded, without spaces, punctuation and (when `particles`) sentence
/// particles.
fn core(text: &str, particles: bool) -> String {
    text.chars()
        .map(fold_char)
        .filter(|&c| (c.is_alphanumeric() || c == '\'') && !(particles && PARTICLES.contains(&c)))
        .collect()
}

/// Whether `text` is made only of words of `words`, taken greedily longest first (the
/// lists are short; clauses are a few characters).
fn made_of(text: &str, words: &[&str]) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let Some(word) = words.iter().filter(|w| rest.starts_with(**w)).max_by_key(|w| w.len()) else {
            return false;
        };
        rest = &rest[word.len()..];
    }
    true
}

fn kind(text: &str, qmark: bool) -> Kind {
    let plain = core(text, true);
    // Latin fillers keep their spaces apart: "thank you", "excuse me".
    let latin = text.trim().to_ascii_lowercase();
    if plain.is_empty() || made_of(&plain, FILLERS) || FILLERS.contains(&latin.trim_end_matches(['!', '.', '?'])) {
        return Kind::Filler;
    }
    if made_of(&plain, TAGS) {
        return Kind::Content;
    }
    if is_question(text) {
        return Kind::Question;
    }
    let letters = plain.chars().count();
    let english = text.chars().any(|c| c.is_ascii_alphabetic()) && !text.chars().any(is_cjk);
    if qmark && (letters >= 3 || english) {
        return Kind::Question;
    }
    Kind::Content
}

/// Whether a clause asks something by its words alone.
fn is_question(text: &str) -> bool {
    let folded: String = text.chars().map(fold_char).collect();
    let trimmed = folded.trim();
    if trimmed.chars().any(is_cjk) {
        if folded.contains(['吗', '嗎']) {
            return true;
        }
        for w in QUESTION_WORDS {
            for (p, _) in folded.match_indices(w) {
                let before = folded[..p].chars().next_back();
                let after = folded[p + w.len()..].chars().next();
                let not_asking = match *w {
                    // 没什么, 没啥: "nothing".
                    "什么" | "啥" => before == Some('没'),
                    // 好几天, 十几件, 这几天, 几乎: "several", "these", "almost".
                    "几" => {
                        matches!(before, Some('好' | '十' | '这' | '那' | '前' | '后' | '没' | '些'))
                            || after == Some('乎')
                    }
                    _ => false,
                };
                if !not_asking {
                    return true;
                }
            }
        }
        let chars: Vec<char> = folded.chars().filter(|c| is_cjk(*c)).collect();
        // A-not-A: 能不能, 有没有, 包不包邮, 支不支持.
        if chars
            .windows(3)
            .any(|w| w[0] == w[2] && matches!(w[1], '不' | '没') && !matches!(w[0], '不' | '没'))
        {
            return true;
        }
        // A final particle: 到了没, 包邮不, 这样么 (after particles such as 啊 and 呀).
        let core: Vec<char> = chars
            .iter()
            .rev()
            .skip_while(|c| matches!(c, '啊' | '呀' | '哈' | '呢' | '亲' | '哦' | '呐'))
            .copied()
            .collect();
        return match core.as_slice() {
            ['么', ..] => core.len() >= 2,
            ['没', '了', ..] | ['有', '没', '了', ..] => true,
            ['不', before, ..] => {
                core.len() >= 3
                    && !matches!(
                        before,
                        '还' | '也' | '都' | '并' | '就' | '可' | '我' | '你' | '他' | '她' | '要' | '会'
                    )
            }
            _ => false,
        };
    }
    let first = trimmed
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .find(|w| !w.is_empty())
        .unwrap_or("");
    QUESTION_STARTS_EN.contains(&first)
}

/// The clauses grouped into parts (see the module docs), as byte ranges; empty unless
/// there are two or more.
fn group(message: &str, clauses: &[Clause], kinds: &[Kind]) -> Vec<Range<usize>> {
    // Each part: (first clause, last clause, has a question, has content).
    struct Unit {
        first: usize,
        last: usize,
        question: bool,
        content: bool,
    }
    let mut units: Vec<Unit> = Vec::new();
    // Content after a question, waiting to see whether another question follows.
    let mut pending: Option<usize> = None;
    for (i, (clause, &kind)) in clauses.iter().zip(kinds).enumerate() {
        let room = units.len() < MAX_PARTS;
        let Some(unit) = units.last_mut() else {
            units.push(Unit {
                first: i,
                last: i,
                question: kind == Kind::Question,
                content: kind != Kind::Filler,
            });
            continue;
        };
        let strong = clause.cue == Cue::Strong && unit.content && kind != Kind::Filler;
        let another = unit.question && kind == Kind::Question;
        if (strong || another) && room {
            let first = if strong { i } else { pending.unwrap_or(i) };
            if first < i {
                // The waiting content is this question's topic.
                let unit = units.last_mut().expect("a unit");
                unit.last = first - 1;
            }
            pending = None;
            units.push(Unit {
                first,
                last: i,
                question: kind == Kind::Question,
                content: true,
            });
            continue;
        }
        if unit.question && kind == Kind::Content && pending.is_none() {
            pending = Some(i);
        }
        unit.last = i;
        unit.question |= kind == Kind::Question;
        unit.content |= kind != Kind::Filler;
    }
    let parts: Vec<Range<usize>> = units
        .iter()
        .filter(|u| u.content)
        .filter_map(|u| {
            let first = (u.first..=u.last).find(|&i| kinds[i] != Kind::Filler)?;
            let last = (u.first..=u.last).rev().find(|&i| kinds[i] != Kind::Filler)?;
            Some(clauses[first].start..clauses[last].end)
        })
        .collect();
    if parts.len() < 2 {
        return Vec::new();
    }
    debug_assert!(parts.iter().all(|r| message.get(r.clone()).is_some()));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(message: &str) -> Vec<&str> {
        split(message).into_iter().map(|r| &message[r]).collect()
    }

    #[test]
    fn two_questions_split_and_single_ones_do_not() {
        assert_eq!(parts("发票怎么开 另外什么时候发货"), ["发票怎么开", "什么时候发货"]);
        // "In addition", inside one question: no cut.
        assert!(parts("还另外送湿巾吗").len() <= 1, "{:?}", parts("还另外送湿巾吗"));
        assert!(parts("要另外付运费吗").len() <= 1);
        assert_eq!(
            parts("在吗 这个能便宜点吗 什么时候发货"),
            ["这个能便宜点吗", "什么时候发货"]
        );
        assert_eq!(parts("包邮吗，有赠品吗"), ["包邮吗", "有赠品吗"]);
        assert!(parts("这个和那个哪个好").is_empty());
        assert!(parts("能不能今天发货").is_empty());
        assert!(parts("如果不合适的话 能退吗").is_empty());
        assert!(parts("202611010001 什么时候发货").is_empty());
        assert!(parts("is shipping free").is_empty());
        assert_eq!(
            parts("is shipping free? and when will it arrive"),
            ["is shipping free", "when will it arrive"]
        );
    }

    #[test]
    fn a_message_without_separators_is_decided_in_one_pass() {
        assert!(!may_split("这件T恤洗了会缩水吗"));
    }
}
