//! The output guard: checks a model answer while it streams, before any of it is shown.
//!
//! A word can be split across two chunks (`法轮` + `功`), and a phone number arrives a few
//! digits at a time, so the guard holds back the tail that could still turn out to be
//! part of something: the last *n* characters of the matching form, where *n* is the
//! longest word or allowed phrase (with one more for the word boundary after an English
//! word), and any trailing run that could still become a number, email or address. The
//! rest is released, masked. The held tail overlaps the next chunk, so nothing split
//! across chunks escapes.
//!
//! Each step rescans the whole answer so far rather than keeping matcher state: answers
//! are bounded by the model's token limit (a few KB, microseconds per scan), and a full
//! rescan gives exactly the findings of checking the whole text at once. Everything
//! before the held tail is final: a match starting there is fully visible, and
//! leftmost-longest decisions only depend on what lies within one word's length.

use super::{Action, Blocked, Safety, Side, mask_range, pii};

/// What to do after a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardStep {
    /// Show this (possibly empty) text, masked; it follows what was shown before.
    Emit(String),
    /// The answer has a blocked word: replace everything shown so far with the reply and
    /// stop generating.
    Blocked(Blocked),
}

/// Checks one streamed answer. Feed it chunks with [`push`](Self::push) and end with
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct OutputGuard<'s> {
    safety: &'s Safety,
    /// The answer so far.
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    /// Set once blocked; every later step says so again.
    blocked: Option<Blocked>,
}

impl<'s> OutputGuard<'s> {
    pub(crate) fn new(safety: &'s Safety) -> Self {
        OutputGuard {
            safety,
            text: String::new(),
            released: 0,
            blocked: None,
        }
    }

    /// Adds a chunk of the answer and says what may be shown now.
    pub fn push(&mut self, chunk: &str) -> GuardStep {
        if self.blocked.is_none() {
            self.text.push_str(chunk);
        }
        self.step(false)
    }

    /// Ends the answer: everything held back is decided and released.
    pub fn finish(mut self) -> GuardStep {
        self.step(true)
    }

    /// The whole answer received so far, unmasked.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn step(&mut self, end: bool) -> GuardStep {
        if let Some(blocked) = &self.blocked {
            return GuardStep::Blocked(blocked.clone());
        }
        // A model answer is a reply: the lists that apply to replies.
        let (findings, words_stable) = self.safety.scan(&self.text, Side::Reply);
        let decided = if end { self.text.len() } else { words_stable };
        if let Some(f) = findings
            .iter()
            .find(|f| f.action == Action::Block && f.span.start < decided)
        {
            let blocked = self.safety.blocked(f);
            self.blocked = Some(blocked.clone());
            return GuardStep::Blocked(blocked);
        }
        let mut release = decided;
        if !end && !self.safety.config.pii.is_empty() {
            release = release.min(pii::stable_until(&self.text));
        }
        // Never cut through something that will be masked: hold it whole.
        while let Some(f) = findings
            .iter()
            .find(|f| f.action != Action::Block && f.span.start < release && f.span.end > release)
        {
            release = f.span.start;
        }
        let release = release.max(self.released);
        let out = mask_range(&self.text, self.released..release, &findings);
        self.released = release;
        GuardStep::Emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::{Applies, ListAction, PiiKind, SafetyConfig, WordList};

    fn safety() -> Safety {
        Safety::build(SafetyConfig {
            lists: vec![
                WordList {
                    category: "政治".into(),
                    action: ListAction::Block {
                        reply: "换个话题吧".into(),
                    },
                    words: vec!["法轮功".into()],
                    without: vec![],
                    on: Applies::Both,
                    segmented: false,
                },
                WordList {
                    category: "脏话".into(),
                    action: ListAction::Mask,
                    words: vec!["傻逼".into()],
                    without: vec![],
                    on: Applies::Both,
                    segmented: false,
                },
            ],
            allow: vec![],
            pii: vec![PiiKind::Phone],
            order_number: None,
        })
        .unwrap()
    }

    fn stream(safety: &Safety, chunks: &[&str]) -> Result<String, Blocked> {
        let mut guard = safety.output_guard();
        let mut shown = String::new();
        for chunk in chunks {
            match guard.push(chunk) {
                GuardStep::Emit(s) => shown.push_str(&s),
                GuardStep::Blocked(b) => return Err(b),
            }
        }
        match guard.finish() {
            GuardStep::Emit(s) => shown.push_str(&s),
            GuardStep::Blocked(b) => return Err(b),
        }
        Ok(shown)
    }

    #[test]
    fn a_word_split_across_chunks_is_caught() {
        let s = safety();
        let blocked = stream(&s, &["你好，关于法", "轮", "功的问题"]).unwrap_err();
        assert_eq!(blocked.reply, "换个话题吧");
        assert_eq!(stream(&s, &["你这个傻", "逼东西"]).unwrap(), "你这个**东西");
    }

    #[test]
    fn a_segmented_reply_list_waits_for_the_words_around_a_match() {
        let s = Safety::build(SafetyConfig {
            lists: vec![WordList {
                category: "竞品".into(),
                action: ListAction::Block {
                    reply: "不评价".into()
                },
                words: vec!["京东".into()],
                without: vec![],
                on: Applies::Replies,
                segmented: true,
            }],
            ..SafetyConfig::default()
        })
        .unwrap();
        assert_eq!(stream(&s, &["您可以去京", "东看看"]).unwrap_err().reply, "不评价");
        // 京东 across 南京|东路 is no match, however the answer is cut into chunks.
        let text = "我们在南京东路有门店";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chunks: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(stream(&s, &chunks).unwrap(), text);
    }

    #[test]
    fn a_phone_number_split_across_chunks_is_masked() {
        let s = safety();
        assert_eq!(
            stream(&s, &["请拨打138", "1234", "5678联系我们"]).unwrap(),
            "请拨打138****5678联系我们"
        );
    }

    #[test]
    fn nothing_is_shown_before_it_is_decided() {
        let s = safety();
        let mut guard = s.output_guard();
        // "法" could start the blocked word: held.
        assert_eq!(guard.push("法"), GuardStep::Emit(String::new()));
        // Still held: a longer allowed phrase could start the same way.
        assert_eq!(guard.push("轮功"), GuardStep::Emit(String::new()));
        assert!(matches!(guard.push("后面"), GuardStep::Blocked(_)));
        assert!(matches!(guard.push("还有"), GuardStep::Blocked(_)));
    }
}
