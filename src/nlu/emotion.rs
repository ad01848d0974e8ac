//! Emotion: angry, hesitant, satisfied or neutral, from a lexicon with negation and
//! intensity, and from what the customer felt in the last few messages.
//!
//! A message is scanned once with a leftmost-longest automaton over cue words, so "不满意"
//! (a complaint) wins over "满意" and "不错" (praise) over "不". Each cue adds its weight to
//! one of three scores:
//!
//! - a **negator** (不, 没, 一点都不, 并不, not …) within three characters before a cue, with no
//!   punctuation between, turns praise into dissatisfaction ("一点都不满意" is angry, not
//!   satisfied) and cancels anger or hesitation ("没有生气");
//! - an **intensifier** (很, 非常, 太, 特别, so, very …) just before a cue multiplies it;
//! - **"!!!"**, "???", shouting in capitals and the same words typed three times raise anger
//!   when there is something to be angry about, and a bare "怎么还没发货!!!" is enough;
//! - **recent anger** in [`Context::recent_emotions`](super::Context) raises anger: a second
//!   complaint in a row is angrier than the first.
//!
//! The highest score wins if it reaches 1; otherwise the message is neutral.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::Emotion;
use super::features::fold;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cue {
    Angry(f64),
    Hesitant(f64),
    Satisfied(f64),
    /// A negator with its strength (一点都不 negates harder than 不).
    Negator(f64),
    Intensifier(f64),
}

const ANGRY: &[(&str, f64)] = &[
    ("投诉", 1.0),
    ("差评", 1.0),
    ("垃圾", 1.0),
    ("骗子", 1.2),
    ("骗人", 1.2),
    ("欺骗", 1.0),
    ("忽悠", 1.0),
    ("坑人", 1.0),
    ("坑爹", 1.0),
    ("黑心", 1.0),
    ("黑店", 1.2),
    ("无良", 1.0),
    ("什么破", 1.0),
    ("破店", 1.2),
    ("气死", 1.2),
    ("生气", 1.0),
    ("气人", 1.0),
    ("火大", 1.0),
    ("愤怒", 1.2),
    ("恶心", 1.0),
    ("太差", 1.0),
    ("很差", 1.0),
    ("真差", 1.0),
    ("差劲", 1.0),
    ("烂透", 1.2),
    ("不满意", 1.0),
    ("不满", 0.8),
    ("失望", 1.0),
    ("离谱", 1.0),
    ("过分", 1.0),
    ("忍无可忍", 1.5),
    ("受不了", 1.0),
    ("搞什么", 1.0),
    ("搞什么鬼", 1.2),
    ("有病", 1.0),
    ("他妈", 1.2),
    ("tmd", 1.2),
    ("wtf", 1.0),
    ("退钱", 1.0),
    ("12315", 1.2),
    ("态度差", 1.0),
    ("态度恶劣", 1.2),
    ("没人管", 1.0),
    ("没人理", 1.0),
    ("不理人", 1.0),
    ("无语", 0.8),
    ("服了", 0.7),
    ("凭什么", 1.0),
    ("耍人", 1.0),
    ("太慢", 0.7),
    ("慢死", 1.0),
    ("急死", 0.8),
    ("怎么还没", 0.6),
    ("怎么还不", 0.6),
    ("到底", 0.5),
    ("都几天了", 0.8),
    ("好几天", 0.4),
    ("一直没", 0.5),
    ("还没到", 0.3),
    ("最后一次", 0.6),
    ("scam", 1.2),
    ("terrible", 1.0),
    ("worst", 1.0),
    ("awful", 1.0),
    ("angry", 1.0),
    ("ridiculous", 1.0),
    ("unacceptable", 1.2),
    ("disappointed", 1.0),
    ("😡", 1.2),
    ("😠", 1.2),
    ("🤬", 1.5),
    ("💢", 1.0),
];

const HESITANT: &[(&str, f64)] = &[
    ("犹豫", 1.0),
    ("纠结", 1.0),
    ("拿不准", 1.0),
    ("拿不定", 1.0),
    ("不确定", 1.0),
    ("不知道选", 1.0),
    ("不知道买", 1.0),
    ("再看看", 1.0),
    ("再想想", 1.0),
    ("考虑一下", 1.0),
    ("考虑考虑", 1.0),
    ("要不要", 0.6),
    ("该不该", 0.8),
    ("选哪个", 0.6),
    ("哪个好", 0.5),
    ("还是算了", 0.8),
    ("有点贵", 0.7),
    ("太贵", 0.6),
    ("便宜点", 0.5),
    ("怕", 0.4),
    ("担心", 0.5),
    ("会不会", 0.3),
    ("万一", 0.5),
    ("不好说", 0.6),
    ("嗯…", 0.4),
    ("额", 0.3),
    ("呃", 0.3),
    ("not sure", 1.0),
    ("maybe", 0.5),
    ("hmm", 0.6),
    ("🤔", 0.8),
];

const SATISFIED: &[(&str, f64)] = &[
    ("满意", 1.0),
    ("好评", 1.0),
    ("不错", 1.0),
    ("挺好", 1.0),
    ("很好", 1.0),
    ("太好了", 1.2),
    ("喜欢", 0.8),
    ("爱了", 1.2),
    ("棒", 1.0),
    ("赞", 1.0),
    ("完美", 1.2),
    ("给力", 1.0),
    ("好看", 0.8),
    ("舒服", 0.8),
    ("合身", 0.8),
    ("感谢", 1.0),
    ("谢谢", 1.0),
    ("谢啦", 1.0),
    ("多谢", 1.0),
    ("辛苦了", 1.0),
    ("点赞", 1.0),
    ("五星", 1.0),
    ("开心", 1.0),
    ("惊喜", 1.0),
    ("物超所值", 1.2),
    ("超值", 1.0),
    ("好用", 0.8),
    ("thanks", 1.0),
    ("thank you", 1.0),
    ("thx", 1.0),
    ("great", 1.0),
    ("perfect", 1.2),
    ("awesome", 1.2),
    ("love it", 1.2),
    ("👍", 1.0),
    ("😊", 1.0),
    ("😄", 1.0),
    ("❤", 1.0),
    ("🥰", 1.2),
];

const NEGATORS: &[(&str, f64)] = &[
    ("不", 1.0),
    ("没", 1.0),
    ("没有", 1.0),
    ("别", 1.0),
    ("无", 1.0),
    ("未", 1.0),
    ("不太", 0.8),
    ("不怎么", 1.0),
    ("不是很", 0.8),
    ("并不", 1.2),
    ("并没有", 1.2),
    ("毫不", 1.3),
    ("从不", 1.3),
    ("绝不", 1.3),
    ("一点都不", 1.5),
    ("一点也不", 1.5),
    ("一点儿都不", 1.5),
    ("一点儿也不", 1.5),
    ("根本不", 1.5),
    ("完全不", 1.5),
    ("not", 1.0),
    ("never", 1.3),
    ("don't", 1.0),
    ("dont", 1.0),
    ("didn't", 1.0),
    ("isn't", 1.0),
    ("wasn't", 1.0),
    ("no", 1.0),
];

const INTENSIFIERS: &[(&str, f64)] = &[
    ("很", 1.5),
    ("非常", 1.8),
    ("太", 1.6),
    ("特别", 1.8),
    ("超", 1.5),
    ("超级", 1.8),
    ("十分", 1.7),
    ("极其", 2.0),
    ("真的", 1.4),
    ("真", 1.3),
    ("巨", 1.6),
    ("贼", 1.6),
    ("相当", 1.5),
    ("实在", 1.4),
    ("so", 1.5),
    ("very", 1.5),
    ("really", 1.4),
    ("extremely", 2.0),
    ("too", 1.4),
];

/// How far (in characters) a negator or intensifier reaches forward to the cue it modifies.
const REACH: usize = 3;
/// How much each recent angry message adds (the last three count).
const RECENT_ANGER: f64 = 0.5;

/// The emotion lexicon, compiled once and shared.
#[derive(Clone, Debug)]
pub struct EmotionDetector {
    automaton: AhoCorasick,
    cues: Vec<Cue>,
}

impl Default for EmotionDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EmotionDetector {
    /// Compiles the built-in lexicon.
    pub fn new() -> Self {
        let mut patterns: Vec<&str> = Vec::new();
        let mut cues = Vec::new();
        let lists = [
            (ANGRY, Cue::Angry as fn(f64) -> Cue),
            (HESITANT, Cue::Hesitant),
            (SATISFIED, Cue::Satisfied),
            (NEGATORS, Cue::Negator),
            (INTENSIFIERS, Cue::Intensifier),
        ];
        for (list, make) in lists {
            for &(word, weight) in list {
                patterns.push(word);
                cues.push(make(weight));
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("emotion lexicon within size limits");
        EmotionDetector { automaton, cues }
    }

    /// The emotion of `text`, given the emotions of the customer's previous messages
    /// (oldest first).
    pub fn detect(&self, text: &str, recent: &[Emotion]) -> Emotion {
        Self::decide(self.scores(text, recent))
    }

    /// [`detect`](Self::detect) from the message's own scores, as
    /// [`text_scores`](Self::text_scores) gave them (a caller may keep those for a message
    /// that comes again).
    pub fn detect_with(&self, text_scores: Scores, recent: &[Emotion]) -> Emotion {
        Self::decide(with_recent(text_scores, recent))
    }

    fn decide(s: Scores) -> Emotion {
        let best = [
            (Emotion::Angry, s.angry),
            (Emotion::Hesitant, s.hesitant),
            (Emotion::Satisfied, s.satisfied),
        ]
        .into_iter()
        .fold((Emotion::Neutral, 0.0), |best, x| if x.1 > best.1 { x } else { best });
        if best.1 >= 1.0 { best.0 } else { Emotion::Neutral }
    }

    /// The three scores behind [`detect`](Self::detect).
    pub fn scores(&self, text: &str, recent: &[Emotion]) -> Scores {
        with_recent(self.text_scores(text), recent)
    }

    /// The scores of the message alone, before the customer's recent emotions count.
    pub fn text_scores(&self, text: &str) -> Scores {
        let folded = fold(text);
        let chars: Vec<(usize, char)> = folded.char_indices().collect();
        let char_at = |byte: usize| chars.partition_point(|(b, _)| *b < byte);
        let separator_between = |from: usize, to: usize| {
            chars[from.min(to)..to.max(from)]
                .iter()
                .any(|(_, c)| matches!(c, ',' | '.' | '!' | '?' | ';' | '，' | '。' | '；' | '、' | '\n'))
        };
        let mut s = Scores::default();
        // (end char index, strength) of the last negator and intensifier.
        let mut negator: Option<(usize, f64)> = None;
        let mut intensifier: Option<(usize, f64)> = None;
        for m in self.automaton.find_iter(&folded) {
            let (start, end) = (char_at(m.start()), char_at(m.end()));
            if !whole_latin_word(&folded, m.start(), m.end()) {
                continue;
            }
            let near = |mark: Option<(usize, f64)>| {
                mark.filter(|&(at, _)| at <= start && start - at <= REACH && !separator_between(at, start))
                    .map(|(_, w)| w)
            };
            let cue = self.cues[m.pattern().as_usize()];
            let boost = near(intensifier).unwrap_or(1.0);
            let negated = near(negator);
            match cue {
                Cue::Negator(w) => negator = Some((end, w)),
                Cue::Intensifier(w) => {
                    // "不太" is a negator already; "太" after a negator softens nothing.
                    intensifier = Some((end, w));
                }
                Cue::Satisfied(w) => match negated {
                    Some(n) => s.angry += 0.8 * w * n * boost,
                    None => s.satisfied += w * boost,
                },
                Cue::Angry(w) => {
                    if negated.is_none() {
                        s.angry += w * boost;
                    }
                }
                Cue::Hesitant(w) => {
                    if negated.is_none() {
                        s.hesitant += w * boost;
                    }
                }
            }
        }

        // Punctuation and typing that shout.
        let bangs = longest_run(&folded, '!');
        let questions = longest_run(&folded, '?');
        let shouting = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_uppercase()))
            .count();
        let mut agitation = 0.0;
        if bangs >= 3 {
            agitation += 0.6;
        } else if bangs == 2 {
            agitation += 0.3;
        }
        if questions >= 3 {
            agitation += 0.4;
        }
        if shouting >= 2 {
            agitation += 0.4;
        }
        if repeats_itself(&folded) {
            agitation += 0.6;
        }
        if s.angry > 0.0 || s.satisfied == 0.0 {
            // "谢谢!!!" is enthusiasm, not anger.
            s.angry += agitation * if s.angry > 0.0 { 1.0 } else { 0.9 };
        } else {
            s.satisfied += agitation * 0.5;
        }
        s
    }
}

/// A message's own scores with the customer's recent emotions (oldest first) added:
/// anger carries over, so a complaint after complaints is angrier.
fn with_recent(mut s: Scores, recent: &[Emotion]) -> Scores {
    let recent_angry = recent.iter().rev().take(3).filter(|e| **e == Emotion::Angry).count();
    if recent_angry > 0 && s.angry > 0.0 {
        s.angry += RECENT_ANGER * recent_angry as f64;
    } else if recent_angry >= 2 && s.satisfied == 0.0 && s.hesitant == 0.0 {
        // Still upset unless the message says otherwise.
        s.angry += RECENT_ANGER * recent_angry as f64;
    }
    s
}

/// Scores per emotion; the emotion is the largest one of at least 1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Anger and dissatisfaction.
    pub angry: f64,
    /// Hesitation.
    pub hesitant: f64,
    /// Satisfaction.
    pub satisfied: f64,
}

/// Latin cues ("no", "so") count only as whole words ("not" is not "no" + "t").
fn whole_latin_word(text: &str, start: usize, end: usize) -> bool {
    let word = &text[start..end];
    if !word.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return true;
    }
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let glue = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !glue(before) && !glue(after)
}

fn longest_run(text: &str, c: char) -> usize {
    let mut best = 0;
    let mut run = 0;
    for x in text.chars() {
        if x == c {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// Whether the message is one phrase typed three or more times ("退货退货退货", "人工 人工 人工").
fn repeats_itself(text: &str) -> bool {
    let chars: Vec<char> = text.chars().filter(|c| c.is_alphanumeric()).collect();
    let n = chars.len();
    (2..=n / 3)
        .any(|len| n.is_multiple_of(len) && n / len >= 3 && chars.chunks(len).all(|chunk| chunk == &chars[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(text: &str) -> Emotion {
        EmotionDetector::new().detect(text, &[])
    }

    #[test]
    fn lexicon_cues() {
        assert_eq!(detect("你们这是欺骗消费者"), Emotion::Angry);
        assert_eq!(detect("纠结选哪个颜色"), Emotion::Hesitant);
        assert_eq!(detect("衣服收到了 很满意"), Emotion::Satisfied);
        assert_eq!(detect("什么时候发货"), Emotion::Neutral);
    }

    #[test]
    fn negation_turns_praise_into_complaint() {
        assert_eq!(detect("一点都不满意"), Emotion::Angry);
        assert_ne!(detect("并不喜欢"), Emotion::Satisfied);
        assert_eq!(detect("我没有生气 就问问"), Emotion::Neutral);
        assert_eq!(detect("质量不错"), Emotion::Satisfied);
    }

    #[test]
    fn a_comma_stops_negation() {
        assert_eq!(detect("不是我说，真的很满意"), Emotion::Satisfied);
    }

    #[test]
    fn exclamations_and_repetition_raise_anger() {
        assert_eq!(detect("怎么还没发货"), Emotion::Neutral);
        assert_eq!(detect("怎么还没发货!!!"), Emotion::Angry);
        assert_eq!(detect("退货退货退货"), Emotion::Neutral);
        assert_eq!(detect("退货退货退货!!!"), Emotion::Angry);
        assert_eq!(detect("谢谢！！！"), Emotion::Satisfied);
    }

    #[test]
    fn recent_complaints_raise_anger() {
        let d = EmotionDetector::new();
        assert_eq!(d.detect("到底什么时候发货", &[]), Emotion::Neutral);
        assert_eq!(d.detect("到底什么时候发货", &[Emotion::Angry]), Emotion::Angry);
    }

    #[test]
    fn latin_cues_are_whole_words() {
        assert_eq!(detect("nothing special"), Emotion::Neutral);
        assert_eq!(detect("this is the worst"), Emotion::Angry);
        assert_eq!(detect("not great"), Emotion::Neutral);
    }
}
