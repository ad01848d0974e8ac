//! Text → retrieval terms, without a word segmenter.
//!
//! Chinese is written without spaces, and customers do not write like the shop's FAQ.
//! Character bigrams are the classic answer for Chinese retrieval: "可以机洗吗" and
//! "能不能机洗" share "机洗" although no segmenter is involved. On their own, bigrams miss
//! paraphrases that reorder a word ("洗衣机" / "机洗" share no bigram), so single characters
//! count too, at half weight ([`UNIGRAM_WEIGHT`]): enough to rescue such pairs, too little
//! to let one common character decide. The weights and word lists here were chosen on the
//! demo shop's paraphrase file (`rules/tests/kb/`) and checked on a held-out set
//! (`tests/data/kb/`); see `tests/kb.rs`.
//!
//! - Characters are folded as the classifier folds them (full-width → half-width, case).
//! - Latin words and digit runs are terms of their own (`xl`, `32`, `polo`).
//! - Sentence particles (吗, 呢, 吧, 的, 了, …) end a run instead of joining a bigram, so
//!   "会缩水吗" and "会缩水呢" give the same bigrams, and "我的订单" does not yield "的订".
//! - A few filler bigrams that carry no topic (请问, 谢谢, 这件, 一下, …) are dropped: a
//!   polite customer should not look less like the FAQ than a terse one.
//!
//! Real customers' messages (the Taobao dialogue set of benches/real_traffic.py) carry
//! more noise than written paraphrases, and the terms leave it out too:
//!
//! - chat interjections (亲, 嗯, 哎, 哒, …) end a run as particles do: "亲在吗亲 运费险怎么赔"
//!   is the same question as "运费险怎么赔";
//! - a character said three times or more ("好好好", "快快快快") counts once;
//! - product ids, order numbers and phone numbers (runs of [`LONG_NUMBER`] digits or more)
//!   are no terms: a number pasted from a product link never matches an FAQ entry, and as
//!   a term no entry has it only lowered every entry's confidence;
//! - more filler bigrams of chat (你们, 帮我, 就是, 因为, 好的, …).

use crate::nlu::features::fold_char;

/// Weight of a single-character term relative to a bigram or a word.
pub const UNIGRAM_WEIGHT: f32 = 0.5;

/// Characters that end a run of Chinese text: particles and the possessive, which carry no
/// topic and would otherwise glue neighbouring words into meaningless bigrams; and the
/// interjections and forms of address of chat (亲, 嗯, 哎, 哒 …), which real messages
/// scatter anywhere ("亲在吗", "嗯嗯好的", "么么哒").
const PARTICLES: &[char] = &[
    '吗', '呢', '吧', '啊', '呀', '哦', '嘛', '哈', '呗', '么', '的', '了', '啦', '哇', '喔', '噢', '亲', '嗯', '恩',
    '哎', '诶', '欸', '额', '呃', '嘿', '哟', '咯', '哒', '噻', '撒', '哼', '唉', '嘞', '咧',
];

/// Digit runs at least this long are ids (a product link's 12 digits, an order number, a
/// phone number), not terms.
pub const LONG_NUMBER: usize = 6;

/// Bigrams that say nothing about the topic: greetings, politeness, pointing words and
/// the frames of a question (可以…吗, 有没有, 怎么, 什么时候). Without them, "可以用熨斗吗"
/// matched "可以用花呗吗" on 可以/以用 better than "熨斗开几档" on 熨斗. Product focus
/// ("这件") is detected separately, before these are dropped.
const FILLER_BIGRAMS: &[&str] = &[
    "请问", "问下", "问一", "一下", "你好", "您好", "谢谢", "麻烦", "这件", "这款", "这个", "那个", "这条", "我想",
    "想问", "客服", "在吗", "亲亲", "知道", "可以", "能不", "不能", "什么", "怎么", "有没", "没有", "是不", "不是",
    "会不", "不会", "多少", "哪里", "哪些", "哪个", "哪儿", "时候", "能用", "一起",
    // chat: who is speaking, filler verbs and connectives, acknowledgements
    "你们", "我们", "你家", "帮我", "给我", "我要", "就是", "因为", "所以", "但是", "然后", "还是", "如果", "好的",
    "是的", "哈哈", "不好", "好意", "意思", "那我", "在不", "不在",
];

/// One term of a text with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// The term: a Chinese bigram or single character, or a Latin word or number.
    pub text: String,
    /// Its weight: 1 for bigrams and words, [`UNIGRAM_WEIGHT`] for single characters.
    pub weight: f32,
}

/// Whether `c` is a CJK ideograph (the characters that form bigrams).
pub fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The retrieval terms of `text`, in order (repeated terms repeat).
pub fn terms(text: &str) -> Vec<Term> {
    let mut out = Vec::new();
    let mut han: Vec<char> = Vec::new();
    let mut word = String::new();
    for c in text.chars().map(fold_char) {
        if is_han(c) && !PARTICLES.contains(&c) {
            flush_word(&mut word, &mut out);
            han.push(c);
        } else if c.is_alphanumeric() && !is_han(c) {
            flush_han(&mut han, &mut out);
            word.push(c);
        } else {
            flush_han(&mut han, &mut out);
            flush_word(&mut word, &mut out);
        }
    }
    flush_han(&mut han, &mut out);
    flush_word(&mut word, &mut out);
    out
}

fn flush_word(word: &mut String, out: &mut Vec<Term>) {
    if !word.is_empty() && !has_long_number(word) {
        out.push(Term {
            text: std::mem::take(word),
            weight: 1.0,
        });
    }
    word.clear();
}

/// "好好好", "快快快快": a character said three times or more in a row counts once; a
/// doubled one is often a word of its own (宝宝, 看看, 刚刚) and stays.
fn collapse_repeats(run: &mut Vec<char>) {
    let mut out = 0;
    let mut i = 0;
    while i < run.len() {
        let c = run[i];
        let mut j = i;
        while j < run.len() && run[j] == c {
            j += 1;
        }
        let keep = if j - i >= 3 { 1 } else { j - i };
        for _ in 0..keep {
            run[out] = c;
            out += 1;
        }
        i = j;
    }
    run.truncate(out);
}

/// Whether a Latin word holds a run of [`LONG_NUMBER`] digits or more (an id, not a term).
fn has_long_number(word: &str) -> bool {
    let mut run = 0;
    for c in word.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= LONG_NUMBER {
            return true;
        }
    }
    false
}

fn flush_han(run: &mut Vec<char>, out: &mut Vec<Term>) {
    collapse_repeats(run);
    for c in run.iter() {
        out.push(Term {
            text: c.to_string(),
            weight: UNIGRAM_WEIGHT,
        });
    }
    for pair in run.windows(2) {
        let bigram: String = pair.iter().collect();
        if !FILLER_BIGRAMS.contains(&bigram.as_str()) {
            out.push(Term {
                text: bigram,
                weight: 1.0,
            });
        }
    }
    run.clear();
}

/// The message in the form the answer cache compares: folded, without spaces, punctuation
/// or emoji, so "什么时候发货？" and "什么时候发货" are one question.
pub fn cache_form(text: &str) -> String {
    text.chars()
        .map(fold_char)
        .filter(|c| c.is_alphanumeric() || is_han(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        terms(text).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn chinese_runs_give_characters_and_bigrams_and_particles_split_them() {
        assert_eq!(texts("会缩水吗"), ["会", "缩", "水", "会缩", "缩水"]);
        assert_eq!(texts("我的订单"), ["我", "订", "单", "订单"]);
    }

    #[test]
    fn latin_words_and_numbers_are_terms_and_case_and_width_fold() {
        assert_eq!(texts("ＸＬ码 Polo衫32支"), ["xl", "码", "polo", "衫", "32", "支"]);
    }

    #[test]
    fn filler_bigrams_are_dropped_but_their_characters_stay() {
        let t = texts("请问这件");
        assert!(
            !t.contains(&"请问".to_string()) && !t.contains(&"这件".to_string()),
            "{t:?}"
        );
        assert!(t.contains(&"问这".to_string()));
    }

    #[test]
    fn chat_noise_is_no_term() {
        // interjections and the form of address end runs like particles
        assert_eq!(texts("亲运费险嗯"), texts("运费险"));
        assert_eq!(texts("嗯嗯好的亲"), ["好"]);
        // a character said three times counts once, a doubled one stays
        assert_eq!(texts("快快快快发货"), texts("快发货"));
        assert_eq!(texts("宝宝"), ["宝", "宝", "宝宝"]);
        // product ids and order numbers are not terms; short numbers and sizes are
        assert_eq!(texts("538872953711这个包邮吗"), texts("这个包邮吗"));
        assert_eq!(texts("2546321013154hi"), Vec::<String>::new());
        assert_eq!(texts("买2件 32支"), ["买", "2", "件", "32", "支"]);
        // chat filler bigrams go, their characters stay
        let t = texts("你们帮我看看");
        assert!(
            !t.contains(&"你们".to_string()) && !t.contains(&"帮我".to_string()),
            "{t:?}"
        );
        assert!(t.contains(&"看".to_string()));
    }

    #[test]
    fn cache_form_ignores_punctuation_spaces_and_width() {
        assert_eq!(cache_form("什么时候 发货？？"), cache_form("什么时候发货"));
        assert_eq!(cache_form("ＸＬ有货吗!"), "xl有货吗");
    }
}
