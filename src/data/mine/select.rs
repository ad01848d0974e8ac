//! Which customer messages count as misses, read in one pass over the log.
//!
//! A customer turn (not a platform event, not empty, not `dropped` because a person took
//! the conversation over while it ran) is a miss, for the first of these reasons that
//! holds:
//!
//! 1. **fallback**: `source` is `fallback`; **withheld** instead when the model's answer
//!    was withheld by the judge (`TurnRecord::withheld`);
//! 2. **handoff**: `source` is `handoff`, or the turn carries a handoff reason. A customer
//!    who only asked for a person ("转人工", "我要真人", "human please") is no miss: the
//!    shop did what was asked. Such a message counts only when something is left once the
//!    words of asking for a person are taken out ([`asks_only_for_a_person`]): "转人工 我要
//!    退货" is a miss (the return was not answered), "转人工啊" is not. Turns answered while
//!    a person already had the conversation (`source` `human`) are the agent's, not kefu's
//!    misses;
//! 3. **low_intent**: `source` is `llm` and no intent reached the shop's threshold (the
//!    model answered on its own: the rules do not know the question);
//! 4. **bad_rating**: the last two customer messages before a feedback record scored at or
//!    below `bad_rating`, when they are not misses already.
//!
//! Only the misses are held, and per conversation the last two customer messages (for a
//! rating that may follow).

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset};

use super::{MineOptions, Miss, MissReason};
use crate::data::Record;
use crate::data::record::TurnRecord;
use crate::engine::AnswerSource;
use crate::kb::text::{is_han, terms};
use crate::nlu::features::fold;

/// The misses of a log and the figures around them, filled one record at a time.
pub(super) struct Selector<'a> {
    options: &'a MineOptions,
    /// The intent confidence below which a model answer is a miss.
    threshold: f64,
    /// Customer turns in the period.
    pub turns: u64,
    /// The misses, in log order (bad ratings where their feedback was read).
    pub misses: Vec<Miss>,
    /// The period's first and last customer turn.
    pub first: Option<DateTime<FixedOffset>>,
    /// See `first`.
    pub last: Option<DateTime<FixedOffset>>,
    /// Per conversation, its last two customer messages not yet a miss.
    recent: HashMap<String, Recent>,
}

/// The last two customer messages of a conversation (oldest first), each with whether it
/// already counts.
#[derive(Default)]
struct Recent {
    messages: Vec<(DateTime<FixedOffset>, String, bool)>,
}

/// How many customer messages before a bad rating count.
const BEFORE_RATING: usize = 2;

impl<'a> Selector<'a> {
    /// A selector for `options`, with the shop's intent threshold.
    pub fn new(options: &'a MineOptions, threshold: f64) -> Self {
        Selector {
            options,
            threshold,
            turns: 0,
            misses: Vec::new(),
            first: None,
            last: None,
            recent: HashMap::new(),
        }
    }

    fn in_period(&self, ts: DateTime<FixedOffset>) -> bool {
        self.options.since.is_none_or(|s| ts >= s) && self.options.until.is_none_or(|u| ts < u)
    }

    /// Reads one record.
    pub fn add(&mut self, record: Record) {
        if !self.in_period(record.ts()) {
            return;
        }
        match record {
            Record::Turn(turn) => self.turn(turn),
            Record::Feedback(feedback) if feedback.score <= self.options.bad_rating => {
                let Some(recent) = self.recent.get_mut(&feedback.session) else {
                    return;
                };
                for (ts, message, counted) in &mut recent.messages {
                    if !*counted {
                        *counted = true;
                        self.misses.push(Miss {
                            ts: *ts,
                            session: feedback.session.clone(),
                            message: message.clone(),
                            reason: MissReason::BadRating,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn turn(&mut self, turn: TurnRecord) {
        if turn.event.is_some() || turn.dropped || turn.message.trim().is_empty() {
            return;
        }
        self.turns += 1;
        self.first = Some(self.first.map_or(turn.ts, |f| f.min(turn.ts)));
        self.last = Some(self.last.map_or(turn.ts, |l| l.max(turn.ts)));
        let reason = reason(&turn, self.threshold);
        let recent = self.recent.entry(turn.session.clone()).or_default();
        if recent.messages.len() == BEFORE_RATING {
            recent.messages.remove(0);
        }
        recent.messages.push((turn.ts, turn.message.clone(), reason.is_some()));
        if let Some(reason) = reason {
            self.misses.push(Miss {
                ts: turn.ts,
                session: turn.session,
                message: turn.message,
                reason,
            });
        }
    }
}

/// Why `turn` is a miss, if it is one (bad ratings aside).
fn reason(turn: &TurnRecord, threshold: f64) -> Option<MissReason> {
    match turn.source {
        AnswerSource::Fallback if turn.withheld => Some(MissReason::Withheld),
        AnswerSource::Fallback => Some(MissReason::Fallback),
        // A person had the conversation: what the bot did not say is no miss of its own.
        AnswerSource::Human => None,
        AnswerSource::Handoff => (!asks_only_for_a_person(&turn.message)).then_some(MissReason::Handoff),
        _ if turn.handoff.is_some() => (!asks_only_for_a_person(&turn.message)).then_some(MissReason::Handoff),
        AnswerSource::Llm if turn.intent.is_none() || turn.confidence < threshold => Some(MissReason::LowIntent),
        // A model answer given again from the answer cache is the same miss as the first
        // (a cached FAQ answer names its entry and is no miss): the most repeated
        // questions would otherwise count once.
        AnswerSource::Cache if turn.faq.is_none() && (turn.intent.is_none() || turn.confidence < threshold) => {
            Some(MissReason::LowIntent)
        }
        _ => None,
    }
}

/// Words of asking for a person, folded (lowercase); removed before looking for content.
const ASKING: &[&str] = &[
    "转人工",
    "接人工",
    "人工客服",
    "真人客服",
    "客服人员",
    "人工服务",
    "人工",
    "真人",
    "活人",
    "机器人",
    "客服",
    "转接",
    "店长",
    "掌柜",
    "找个人",
    "找人",
    "说话",
    "human",
    "person",
    "agent",
    "real",
    "people",
    "someone",
    "please",
    "talk",
    "speak",
    "to",
    "a",
    "i",
    "want",
    "need",
    "customer",
    "service",
    "with",
    "let",
    "me",
];

/// Words that show a message asks for a person at all.
const SIGNALS: &[&str] = &[
    "人工",
    "真人",
    "活人",
    "机器人",
    "客服",
    "转接",
    "店长",
    "掌柜",
    "human",
    "person",
    "agent",
];

/// Characters of a request that say nothing beyond it (我, 要, 找, 叫 …): a bigram made of
/// one of them is no content.
const REQUEST_CHARS: &[char] = &[
    '我', '你', '要', '找', '叫', '让', '跟', '和', '来', '个', '是', '接', '转', '给', '帮', '请', '快', '点', '在',
    '不', '想', '能', '们', '家', '出', '聊', '别', '再', '人', '工', '谢', '一', '下', '有', '没', '还', '好',
];

/// Whether `message` asks for a person and for nothing else: once the words of asking are
/// taken out, no bigram of two content characters and no Latin word is left.
pub fn asks_only_for_a_person(message: &str) -> bool {
    let mut folded = fold(message);
    let asked = SIGNALS.iter().any(|w| folded.contains(w));
    if !asked {
        return false;
    }
    for word in ASKING {
        if word.is_ascii() {
            // Latin words only as whole words: "a" must not eat the a of "size".
            folded = folded
                .split(|c: char| !c.is_ascii_alphanumeric() && !is_han(c))
                .map(|w| if w == *word { "" } else { w })
                .collect::<Vec<_>>()
                .join(" ");
        } else {
            folded = folded.replace(word, " ");
        }
    }
    !terms(&folded).iter().any(|t| {
        let chars: Vec<char> = t.text.chars().collect();
        if chars.iter().all(|c| is_han(*c)) {
            chars.len() >= 2 && chars.iter().all(|c| !REQUEST_CHARS.contains(c))
        } else {
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_a_person_alone_is_no_content() {
        for m in [
            "转人工",
            "转人工啊",
            "人工人工",
            "我要真人",
            "你是机器人吗 我要真人",
            "能不能让人工跟我说",
            "human please",
            "I want to talk to a real person",
            "叫你们客服出来",
        ] {
            assert!(asks_only_for_a_person(m), "{m}");
        }
    }

    #[test]
    fn a_question_besides_asking_for_a_person_is_content() {
        for m in [
            "转人工 我要退货",
            "人工客服 运费险怎么赔",
            "human please, refund status",
            "真人来 尺码偏大",
        ] {
            assert!(!asks_only_for_a_person(m), "{m}");
        }
        // Not asking for a person at all.
        assert!(!asks_only_for_a_person("退货地址在哪"));
    }

    #[test]
    fn a_cached_model_answer_is_a_miss_as_the_first_was_and_a_cached_faq_is_not() {
        let line = r#"{"kind":"turn","ts":"2026-11-02T10:00:00+08:00","session":"s","turn":1,
            "message":"有礼盒吗","reply":"…","source":"llm","confidence":0.2,"latency_ms":1.0,"rules":"v"}"#
            .replace('\n', "");
        let Ok(Record::Turn(model)) = serde_json::from_str::<Record>(&line) else {
            panic!("the test's turn record does not parse: {line}");
        };
        assert_eq!(reason(&model, 0.6), Some(MissReason::LowIntent));
        let cached = TurnRecord {
            source: AnswerSource::Cache,
            ..model.clone()
        };
        assert_eq!(reason(&cached, 0.6), Some(MissReason::LowIntent));
        let faq = TurnRecord {
            faq: Some("礼品包装".into()),
            ..cached.clone()
        };
        assert_eq!(reason(&faq, 0.6), None);
        let confident = TurnRecord {
            intent: Some("商品.库存".into()),
            confidence: 0.9,
            ..cached
        };
        assert_eq!(reason(&confident, 0.6), None);
    }
}
