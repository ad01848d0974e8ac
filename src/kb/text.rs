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

use crate::nlu::features::fold_char;

/// Weight of a single-character term relative to a bigram or a word.
pub const UNIGRAM_WEIGHT: f32 = 0.5;

/// Characters that end a run of Chinese text: particles and the possessive, which carry no
/// topic and would otherwise glue neighbouring words into meaningless bigrams.
const PARTICLES: &[char] = &[
    '吗', '呢', '吧', '啊', '呀', '哦', '嘛', '哈', '呗', '么', '的', '了', '啦', '哇', '喔', '噢',
];

/// Bigrams that say nothing about the topic: greetings, politeness, pointing words and
/// the frames of a question (可以…吗, 有没有, 怎么, 什么时候). Without them, "可以用熨斗吗"
/// matched "可以用花呗吗" on 可以/以用 better than "熨斗开几档" on 熨斗. Product focus
/// ("这件") is detected separately, before these are dropped.
const FILLER_BIGRAMS: &[&str] = &[
    "请问", "问下", "问一", "一下", "你好", "您好", "谢谢", "麻烦", "这件", "这款", "这个", "那个", "这条", "我想",
    "想问", "客服", "在吗", "亲亲", "知道", "可以", "能不", "不能", "什么", "怎么", "有没", "没有", "是不", "不是",
    "会不", "不会", "多少", "哪里", "哪些", "时候", "能用", "一起",
];

/// One term of a text with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// The term: a Chinese bigram or single character, or a Latin word or number.
    pub text: String,
    /// Its weight: 1 for bigrams and words, [`UNIGRAM_WEIGHT`] for single characters.
    pub weight: f32,
}

fn is_han(c: char) -> bool {
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
    if !word.is_empty() {
        out.push(Term {
            text: std::mem::take(word),
            weight: 1.0,
        });
    }
}

fn flush_han(run: &mut Vec<char>, out: &mut Vec<Term>) {
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
    fn cache_form_ignores_punctuation_spaces_and_width() {
        assert_eq!(cache_form("什么时候 发货？？"), cache_form("什么时候发货"));
        assert_eq!(cache_form("ＸＬ有货吗!"), "xl有货吗");
    }
}
