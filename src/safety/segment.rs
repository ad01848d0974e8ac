//! Word boundaries of Chinese text, for the word lists that opt in with `segmented`.
//!
//! Chinese is written without spaces, so a listed word can turn up across two real words:
//! 台独 in 一台|独显, 港独 in 香港|独家, 东突 in 广东|突然, 中共 in 其中|共有, 得物 in
//! 觉得|物流. A segmented list's match counts only where a segmenter (jieba, through the
//! `jieba-rs` crate, with its bundled dictionary) puts a word boundary before it, and
//! either a boundary after it or a word that starts with it (中共|中央 cut as 中共中央 still
//! counts, 全能|神器 does not count for 全能神).
//!
//! The text is segmented as written, not in its matching form: symbols and spaces put
//! between characters (台*独) are words of their own, so they stand at boundaries and an
//! evasion still counts, while the numbers fold would turn 一台 into 1台 and hide the word
//! 一台 from the segmenter. The hidden Markov model for unknown words is off: it would join
//! unknown characters into words and hide boundaries, and it costs time.
//!
//! The dictionary takes a while to load (about 0.1 s and 30 MiB in a release build,
//! `cargo bench --bench safety`), so it is loaded once per process, lazily, and only when
//! a rule set has a segmented list ([`warm`] when such a rule set is built, so no customer
//! waits for it). A text is segmented only when a segmented list's word was found in it,
//! at most once per check: over the 1,244 messages of the false-refusal set, the demo
//! shop's lists cost 0.27 µs a message unsegmented and 0.29 µs segmented.

use std::sync::OnceLock;

use jieba_rs::Jieba;

/// Everyday shop words jieba's dictionary (compiled from newspaper text of the 1990s)
/// lacks, where the segmenter would otherwise cut a listed word out of them: without
/// 独显, 一台独显 is cut 一|台独|显.
const SUPPLEMENT: &[&str] = &["独显", "核显", "集显", "核芯显卡", "台式机"];

/// The dictionary frequency of a supplement word: that of a fairly common word (the
/// dictionary counts 60 million in all; 独立 9,907, 独家 413). 一台|独显 needs more than
/// 11 to beat 一|台独|显, 这|台|独显 more than 107 to beat 这|台独|显; a real 台独|显然
/// keeps its cut below 1.9 million.
const SUPPLEMENT_FREQ: usize = 2000;

/// The segmenter, loaded on first use and shared by every rule set.
fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(|| {
        let mut jieba = Jieba::new();
        for word in SUPPLEMENT {
            jieba.add_word(word, Some(SUPPLEMENT_FREQ), None);
        }
        jieba
    })
}

/// Loads the dictionary now, if it is not loaded yet.
pub(crate) fn warm() {
    jieba();
}

/// The words of `text` as the byte offsets where they start, then `text.len()`: every
/// boundary between two words, ascending. `out` is cleared first.
pub(crate) fn boundaries(text: &str, out: &mut Vec<u32>) {
    out.clear();
    // `cut` gives the words of `text` in order, covering all of it.
    out.extend(jieba().cut(text, false).iter().map(|token| token.byte_start as u32));
    out.push(text.len() as u32);
}

/// Whether `span` (bytes of the text `bounds` came from) starts on a word boundary and
/// ends on one or inside a word that starts where it starts.
pub(crate) fn on_boundaries(bounds: &[u32], span: &std::ops::Range<usize>) -> bool {
    let (start, end) = (span.start as u32, span.end as u32);
    let Ok(at) = bounds.binary_search(&start) else {
        return false;
    };
    // The word starting at `start` ends at the next boundary.
    let word_end = bounds.get(at + 1).copied().unwrap_or(start);
    word_end >= end || bounds[at..].binary_search(&end).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(text: &str) -> String {
        let mut bounds = Vec::new();
        boundaries(text, &mut bounds);
        bounds
            .windows(2)
            .map(|w| &text[w[0] as usize..w[1] as usize])
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn boundaries_cover_the_text_word_by_word() {
        assert_eq!(cut("两台电脑，一台独显"), "两台/电脑/，/一台/独显");
        assert_eq!(cut("这台独显"), "这/台/独显");
        assert_eq!(cut("台独显然是错的"), "台独/显然/是/错/的");
        assert_eq!(cut("台*独"), "台/*/独");
        assert_eq!(cut(""), "");
    }

    #[test]
    fn a_match_starts_on_a_boundary_and_ends_on_one_or_inside_a_word_it_begins() {
        let check = |text: &str, word: &str| {
            let mut bounds = Vec::new();
            boundaries(text, &mut bounds);
            let start = text.find(word).unwrap();
            on_boundaries(&bounds, &(start..start + word.len()))
        };
        assert!(!check("一台独显", "台独"));
        assert!(!check("香港独家代理", "港独"));
        assert!(!check("厨房全能神器", "全能神"));
        assert!(check("支持台独", "台独"));
        assert!(check("中共中央", "中共"));
        assert!(check("全能神教会", "全能神"));
    }
}
