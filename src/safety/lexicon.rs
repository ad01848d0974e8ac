//! Word lists compiled for matching: every list and the allow list in one Aho-Corasick
//! automaton per fold set, leftmost-longest, with English word boundaries.
//!
//! Lists that switch a fold off need the text normalized without it, so lists are grouped
//! by fold set (one group unless a list says `without`), and each group normalizes the
//! text once. Words and allowed phrases are normalized with the same table as the text,
//! so both sides agree on every fold.
//!
//! A scan runs one or more passes over the normalized text, each for the words of the lists
//! it asks for (by where they apply: [`ACTS_ON_MESSAGES`], [`ACTS_ON_REPLIES`],
//! [`FLAGS_ON_MESSAGES`]). Words of other lists are not there for a pass, so a flag word
//! never hides a block word that overlaps it. A word of a `segmented` list counts only on
//! word boundaries ([`super::segment`]); the text is segmented when such a word is first
//! found in it, at most once per scan.
//!
//! Speed: a plain unanchored scan with 60,000 Chinese words runs below 100 MB/s, because
//! almost every character of Chinese text starts some word and the automaton walks its
//! whole (cache-missing) trie at every byte. Instead, the normalizing pass checks each pair
//! of adjacent characters against a bitmap of the first two characters of every word
//! (and each character against a bitmap of one-character words). Positions that pass (a
//! few percent) are checked once more against the first three characters of the longer
//! words and the two-character words, and only what passes that (about one position in a
//! hundred in the benchmark) runs an anchored leftmost-longest search. Every word starts
//! with one of those pairs or triples, so no match is missed, and scanning candidates left
//! to right with anchored longest matches is exactly leftmost-longest.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind, StartKind};

use super::normalize::{FoldTable, Folds, Normalized};
use super::{BuildError, ListAction, SafetyConfig, Skipped, segment};

/// A pass for the words of lists that act (block or mask) on customers' messages.
pub(crate) const ACTS_ON_MESSAGES: u8 = 1;
/// A pass for the words of lists that act on kefu's replies.
pub(crate) const ACTS_ON_REPLIES: u8 = 2;
/// A pass for the words noted in customers' messages: `flag` lists and lists that do not
/// act on messages.
pub(crate) const FLAGS_ON_MESSAGES: u8 = 4;
/// Allowed phrases count in every pass.
const EVERY_PASS: u8 = ACTS_ON_MESSAGES | ACTS_ON_REPLIES | FLAGS_ON_MESSAGES;

/// Characters of context held back after the longest word of a group with a segmented
/// list, for the streaming guard: how a word ends can depend on the characters after it
/// (东突 then 然 is 东|突然).
const SEGMENT_CONTEXT: usize = 4;

/// The compiled word lists.
#[derive(Debug, Default)]
pub(crate) struct Lexicon {
    groups: Vec<Group>,
}

/// The passes a list's words count in.
fn passes(list: &super::WordList) -> u8 {
    match list.action {
        ListAction::Flag => FLAGS_ON_MESSAGES,
        _ => {
            let messages = if list.on.messages() {
                ACTS_ON_MESSAGES
            } else {
                FLAGS_ON_MESSAGES
            };
            let replies = if list.on.replies() { ACTS_ON_REPLIES } else { 0 };
            messages | replies
        }
    }
}

/// Lists sharing one fold set, compiled together.
#[derive(Debug)]
struct Group {
    table: Arc<FoldTable>,
    /// Anchored, leftmost-longest, over little-endian UTF-16 units.
    automaton: AhoCorasick,
    /// One per automaton pattern.
    entries: Vec<Entry>,
    /// Owners beyond each entry's first, contiguous per entry.
    more_owners: Vec<Owner>,
    /// First two characters of every pattern of two or more characters.
    pairs: PairBits,
    /// Every one-character pattern; `None` when there is none, to save the probe.
    singles: Option<CharSet>,
    /// Every two-character pattern.
    doubles: Bits,
    /// First three characters of every pattern of three or more characters.
    triples: Bits,
    /// The longest pattern, in units.
    max_units: usize,
    /// The passes any word counts in: a pass for none of them skips the group.
    passes: u8,
    /// Whether any word is of a segmented list.
    segmented: bool,
}

/// One distinct normalized pattern and everything that normalizes to it.
#[derive(Debug)]
struct Entry {
    /// The first character is an ASCII letter or digit, so the match needs a word
    /// boundary on the left; likewise `right`.
    left: bool,
    right: bool,
    /// The first word or phrase behind the pattern, kept inline: almost every pattern has
    /// exactly one, and a separate allocation would cost a cache miss per match.
    owner: Owner,
    /// Any others, in [`Group::more_owners`].
    more: Range<u32>,
}

impl Entry {
    fn owners<'g>(&'g self, group: &'g Group) -> impl Iterator<Item = &'g Owner> {
        std::iter::once(&self.owner).chain(&group.more_owners[self.more.start as usize..self.more.end as usize])
    }
}

/// A list word or allowed phrase behind a pattern.
#[derive(Debug)]
struct Owner {
    /// `None` for an allowed phrase.
    word: Option<WordRef>,
    /// The passes it counts in.
    passes: u8,
    /// Its list is segmented: it counts only on word boundaries.
    segmented: bool,
    /// Characters the repeat fold merged in the word itself (`爸爸` → `爸` with 2): the
    /// text must repeat them as often, or a single `爸` would match. (unit offset, count).
    runs: Box<[(u16, u8)]>,
}

/// A word of a list: indices into [`SafetyConfig::lists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordRef {
    /// The list.
    pub list: usize,
    /// The word in the list.
    pub word: usize,
}

/// A list word found in a text: small and allocation-free, for the hot path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordHit {
    /// Which word.
    pub word: WordRef,
    /// Where, in bytes of the original text.
    pub span: Range<usize>,
}

/// Per-thread buffers, so that scanning allocates nothing once warm.
#[derive(Default)]
pub(crate) struct Scratch {
    norm: Normalized,
    candidates: Vec<u32>,
    /// The units from a candidate on, as bytes for the automaton: at most the longest
    /// pattern, so the hot loop only ever writes `u16` units.
    window: Vec<u8>,
    /// Word boundaries of the text being scanned, once a segmented word needs them.
    bounds: Vec<u32>,
    /// Whether `bounds` is for the text being scanned.
    segmented: bool,
}

impl Scratch {
    /// Drops buffers grown by one huge text, so that a thread does not keep them.
    pub(crate) fn shrink_if_large(&mut self) {
        const MAX_BYTES: usize = 16 << 20;
        if self.norm.capacity() + 4 * (self.candidates.capacity() + self.bounds.capacity()) > MAX_BYTES {
            *self = Scratch::default();
        }
    }
}

impl Lexicon {
    /// Compiles the lists and allow list of `config`, collecting every problem. Words and
    /// phrases that normalize to nothing are left out and returned, in list order.
    pub(crate) fn build(config: &SafetyConfig) -> Result<(Lexicon, Vec<Skipped>), Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut skipped = Vec::new();
        let mut by_folds: Vec<(Folds, Vec<usize>)> = Vec::new();
        for (i, list) in config.lists.iter().enumerate() {
            let folds = Folds::without(&list.without);
            match by_folds.iter_mut().find(|(f, _)| *f == folds) {
                Some((_, lists)) => lists.push(i),
                None => by_folds.push((folds, vec![i])),
            }
        }
        let mut empty_allows = vec![false; config.allow.len()];
        let mut groups = Vec::new();
        for (folds, lists) in by_folds {
            let table = match FoldTable::get(folds) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(BuildError::Fold(e));
                    continue;
                }
            };
            let mut builder = GroupBuilder::new(&table);
            for &list in &lists {
                let passes = passes(&config.lists[list]);
                let segmented = config.lists[list].segmented;
                for (w, word) in config.lists[list].words.iter().enumerate() {
                    let word_ref = WordRef { list, word: w };
                    if !builder.add(word, Some(word_ref), passes, segmented) {
                        skipped.push(Skipped::Word {
                            list,
                            word: w,
                            text: word.clone(),
                            category: config.lists[list].category.clone(),
                        });
                    }
                }
            }
            for (i, phrase) in config.allow.iter().enumerate() {
                if !builder.add(phrase, None, EVERY_PASS, false) {
                    empty_allows[i] = true;
                }
            }
            match builder.finish(Arc::clone(&table)) {
                Ok(Some(group)) => groups.push(group),
                Ok(None) => {}
                Err(e) => errors.push(BuildError::Automaton(e)),
            }
        }
        for (index, _) in empty_allows.iter().enumerate().filter(|(_, e)| **e) {
            skipped.push(Skipped::Allow {
                index,
                text: config.allow[index].clone(),
            });
        }
        if errors.is_empty() {
            Ok((Lexicon { groups }, skipped))
        } else {
            Err(errors)
        }
    }

    /// Whether there is nothing to match.
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The fold table of the first group (the lists without `without`, usually all).
    pub(crate) fn first_table(&self) -> Option<&Arc<FoldTable>> {
        self.groups.first().map(|g| &g.table)
    }

    /// Finds the words of each pass in `text`, in order of position, into that pass's
    /// hits: `passes` pairs a pass ([`ACTS_ON_MESSAGES`], ...) with where its hits go.
    /// Returns the byte offset before which the result is final however the text goes
    /// on (for the streaming guard): a match starting later may still grow, shrink, or
    /// appear.
    pub(crate) fn scan(&self, text: &str, scratch: &mut Scratch, passes: &mut [(u8, &mut Vec<WordHit>)]) -> usize {
        debug_assert!(passes.len() <= 4, "at most one pass of each kind");
        let mut before = [0usize; 4];
        for (b, (_, hits)) in before.iter_mut().zip(passes.iter()) {
            *b = hits.len();
        }
        let mut stable = text.len();
        scratch.segmented = false;
        for group in &self.groups {
            stable = stable.min(group.scan(text, scratch, passes));
        }
        if self.groups.len() > 1 {
            for ((_, hits), before) in passes.iter_mut().zip(before) {
                hits[before..].sort_by_key(|h| (h.span.start, std::cmp::Reverse(h.span.end)));
            }
        }
        stable
    }
}

impl Group {
    fn scan(&self, text: &str, scratch: &mut Scratch, passes: &mut [(u8, &mut Vec<WordHit>)]) -> usize {
        if passes.iter().all(|(pass, _)| self.passes & pass == 0) {
            return text.len();
        }
        let Scratch {
            norm,
            candidates,
            window,
            bounds,
            segmented,
        } = scratch;
        candidates.clear();
        let pairs = &self.pairs;
        let singles = self.singles.as_ref();
        let mut prev = u32::MAX;
        let mut prev_unit = 0;
        // The pass that normalizes also picks the positions where a word may start; a
        // position is decided when the next character arrives.
        self.table.normalize_with(text, norm, |unit, ch| {
            if prev != u32::MAX && (pairs.contains(prev, ch) || singles.is_some_and(|s| s.contains(prev))) {
                candidates.push(prev_unit);
            }
            prev = ch;
            prev_unit = unit;
        });
        if prev != u32::MAX && singles.is_some_and(|s| s.contains(prev)) {
            candidates.push(prev_unit);
        }

        let n = norm.len();
        for (pass, hits) in passes.iter_mut() {
            if self.passes & *pass != 0 {
                let mut segments = Segments {
                    text,
                    bounds: &mut *bounds,
                    ready: &mut *segmented,
                };
                self.matches(text, norm, candidates, window, *pass, &mut segments, hits);
            }
        }
        let hold = self.max_units + if self.segmented { SEGMENT_CONTEXT } else { 0 };
        if n > hold { norm.start(n - hold) } else { 0 }
    }

    /// One pass over the candidates: the words counting in `pass`, leftmost-longest.
    #[allow(clippy::too_many_arguments)]
    fn matches(
        &self,
        text: &str,
        norm: &Normalized,
        candidates: &[u32],
        window: &mut Vec<u8>,
        pass: u8,
        segments: &mut Segments<'_>,
        hits: &mut Vec<WordHit>,
    ) {
        let n = norm.len();
        let mut next_free = 0;
        let mut allowed_until = 0;
        for &p in candidates.iter() {
            let p = p as usize;
            if p < next_free || !self.may_start(norm, p) {
                continue;
            }
            // Longest first; when the longest fails a check, look again for a shorter
            // match at the same place.
            let mut limit = n.min(p + self.max_units);
            norm.bytes_into(p..limit, window);
            while limit > p {
                let input = Input::new(window.as_slice())
                    .span(0..2 * (limit - p))
                    .anchored(Anchored::Yes);
                // Anchored searches are supported: the automaton is built for them.
                let Some(m) = self.automaton.try_find(input).ok().flatten() else {
                    break;
                };
                let end = p + m.end() / 2;
                let entry = &self.entries[m.pattern().as_usize()];
                if !self.bounded(entry, norm, text, p, end) {
                    limit = end - 1;
                    continue;
                }
                let repeated = |o: &&Owner| {
                    o.runs
                        .iter()
                        .all(|&(at, min)| norm.run_length(&self.table, text, p + at as usize) >= usize::from(min))
                };
                if entry.owners(self).filter(|o| o.word.is_none()).any(|o| repeated(&o)) {
                    // An allowed phrase: words inside it are excused, words starting
                    // inside it and reaching past it are not.
                    allowed_until = allowed_until.max(end);
                    break;
                }
                if end <= allowed_until {
                    break;
                }
                let before = hits.len();
                let span = norm.original_span(&self.table, text, p..end);
                for owner in entry.owners(self).filter(repeated) {
                    if let Some(word) = owner.word
                        && owner.passes & pass != 0
                        && (!owner.segmented || segments.on_boundaries(&span))
                    {
                        hits.push(WordHit {
                            word,
                            span: span.clone(),
                        });
                    }
                }
                if hits.len() > before {
                    next_free = end;
                    break;
                }
                limit = end - 1;
            }
        }
    }

    /// The second filter, at a candidate: the first one, two or three characters from
    /// `p` begin some pattern.
    fn may_start(&self, norm: &Normalized, p: usize) -> bool {
        let Some((a, next)) = norm.char_at(p) else { return false };
        if self.singles.as_ref().is_some_and(|s| s.contains(a)) {
            return true;
        }
        let Some((b, next)) = norm.char_at(next) else {
            return false;
        };
        if self.doubles.contains(pair_key(a, b)) {
            return true;
        }
        norm.char_at(next)
            .is_some_and(|(c, _)| self.triples.contains(triple_key(a, b, c)))
    }

    /// Whether an ASCII end of a match stands at a word boundary: the neighbouring
    /// character is not an ASCII letter or digit, or a dropped gap separates them (`a v`
    /// is the evasion of `av`, `have` is not).
    fn bounded(&self, entry: &Entry, norm: &Normalized, text: &str, start: usize, end: usize) -> bool {
        // An ASCII letter or digit at `i` whose character touches the one at `j` in the
        // original, with nothing dropped between them.
        let glued = |i: usize, j: usize| norm.is_ascii_alnum(i) && !norm.gap_before(&self.table, text, j);
        let left_ok = !entry.left || start == 0 || !glued(start - 1, start);
        let right_ok = !entry.right || end == norm.len() || !glued(end, end);
        left_ok && right_ok
    }
}

/// The word boundaries of the text being scanned, found when first asked for.
struct Segments<'s> {
    text: &'s str,
    bounds: &'s mut Vec<u32>,
    /// Whether `bounds` holds this text's boundaries (shared by every group and pass).
    ready: &'s mut bool,
}

impl Segments<'_> {
    fn on_boundaries(&mut self, span: &Range<usize>) -> bool {
        if !*self.ready {
            segment::boundaries(self.text, self.bounds);
            *self.ready = true;
        }
        segment::on_boundaries(self.bounds, span)
    }
}

/// Collects the patterns of one group.
struct GroupBuilder<'t> {
    table: &'t FoldTable,
    index: HashMap<Vec<u16>, usize>,
    patterns: Vec<Vec<u8>>,
    /// Per pattern: (left boundary, right boundary, owners).
    entries: Vec<(bool, bool, Vec<Owner>)>,
    /// First two characters of every pattern of two or more characters.
    firsts: Vec<(u32, u32)>,
    singles: Vec<u32>,
    doubles: Vec<u64>,
    triples: Vec<u64>,
    max_units: usize,
}

impl<'t> GroupBuilder<'t> {
    fn new(table: &'t FoldTable) -> Self {
        GroupBuilder {
            table,
            index: HashMap::new(),
            patterns: Vec::new(),
            entries: Vec::new(),
            firsts: Vec::new(),
            singles: Vec::new(),
            doubles: Vec::new(),
            triples: Vec::new(),
            max_units: 0,
        }
    }

    /// Adds a word (or an allowed phrase when `word` is `None`) counting in `passes`;
    /// false when it is empty once normalized.
    fn add(&mut self, text: &str, word: Option<WordRef>, passes: u8, segmented: bool) -> bool {
        let mut chars: Vec<u32> = Vec::new();
        let mut norm = Normalized::default();
        self.table.normalize_with(text, &mut norm, |_, ch| chars.push(ch));
        if norm.is_empty() {
            return false;
        }
        let units = norm.units();
        let mut runs = Vec::new();
        for i in 0..units.len() {
            // The second unit of a pair shares the first one's run.
            if i > 0 && norm.start(i) == norm.start(i - 1) {
                continue;
            }
            let run = norm.run_length(self.table, text, i);
            if run > 1 {
                runs.push((i as u16, run.min(usize::from(u8::MAX)) as u8));
            }
        }
        let id = match self.index.get(&units) {
            Some(&id) => id,
            None => {
                let id = self.entries.len();
                self.entries
                    .push((norm.is_ascii_alnum(0), norm.is_ascii_alnum(units.len() - 1), Vec::new()));
                let mut bytes = Vec::new();
                norm.bytes_into(0..norm.len(), &mut bytes);
                self.patterns.push(bytes);
                match chars[..] {
                    [only] => self.singles.push(only),
                    [a, b] => {
                        self.firsts.push((a, b));
                        self.doubles.push(pair_key(a, b));
                    }
                    [a, b, c, ..] => {
                        self.firsts.push((a, b));
                        self.triples.push(triple_key(a, b, c));
                    }
                    [] => unreachable!("a non-empty normal form has a character"),
                }
                self.max_units = self.max_units.max(units.len());
                self.index.insert(units, id);
                id
            }
        };
        self.entries[id].2.push(Owner {
            word,
            passes,
            segmented,
            runs: runs.into_boxed_slice(),
        });
        true
    }

    fn finish(self, table: Arc<FoldTable>) -> Result<Option<Group>, aho_corasick::BuildError> {
        if self
            .entries
            .iter()
            .all(|(_, _, owners)| owners.iter().all(|o| o.word.is_none()))
        {
            // Only allowed phrases (or nothing): nothing can ever be reported.
            return Ok(None);
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Anchored)
            .build(&self.patterns)?;
        let singles = (!self.singles.is_empty()).then(|| CharSet::new(&self.singles));
        let words = || self.entries.iter().flat_map(|(_, _, o)| o).filter(|o| o.word.is_some());
        let passes = words().fold(0, |p, o| p | o.passes);
        let segmented = words().any(|o| o.segmented);
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut more_owners = Vec::new();
        for (left, right, owners) in self.entries {
            let mut owners = owners.into_iter();
            let owner = owners.next().expect("every pattern is added with an owner");
            let start = more_owners.len() as u32;
            more_owners.extend(owners);
            entries.push(Entry {
                left,
                right,
                owner,
                more: start..more_owners.len() as u32,
            });
        }
        Ok(Some(Group {
            table,
            automaton,
            entries,
            more_owners,
            pairs: PairBits::from_pairs(&self.firsts),
            singles,
            doubles: Bits::from_keys(&self.doubles, 32),
            triples: Bits::from_keys(&self.triples, 32),
            max_units: self.max_units,
            passes,
            segmented,
        }))
    }
}

/// The key of two adjacent characters (21 bits each).
#[inline(always)]
fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 21) | u64::from(b) | (1 << 63)
}

/// An exact set of characters: a bit per BMP character (8 KiB, stays in L1) and a sorted
/// list for the rest. Holds the one-character patterns, probed at every character.
#[derive(Debug)]
struct CharSet {
    bmp: Box<[u64; 0x1_0000 / 64]>,
    astral: Vec<u32>,
}

impl CharSet {
    fn new(chars: &[u32]) -> CharSet {
        let mut set = CharSet {
            bmp: Box::new([0; 0x1_0000 / 64]),
            astral: Vec::new(),
        };
        for &c in chars {
            if c <= 0xFFFF {
                set.bmp[c as usize / 64] |= 1 << (c % 64);
            } else {
                set.astral.push(c);
            }
        }
        set.astral.sort_unstable();
        set
    }

    #[inline(always)]
    fn contains(&self, c: u32) -> bool {
        if c <= 0xFFFF {
            self.bmp[(c as u16 as usize) / 64] & (1 << (c % 64)) != 0
        } else {
            self.astral.binary_search(&c).is_ok()
        }
    }
}

/// The filter probed at every character: "may a pattern start with these two
/// characters?". A Bloom filter blocked by the first character: all pairs starting with
/// one character set their two bits in the same 64-byte line. Text repeats its frequent
/// characters, so the lines it probes stay in L1 instead of missing all over a large
/// table; false positives (about 1% at 16 bits per pair) are cheap, since the triple
/// filter behind it catches them before the automaton runs.
#[derive(Debug)]
struct PairBits {
    /// 8 words (one cache line) per line.
    words: Box<[u64]>,
    /// Shift selecting a line from a hash of the first character.
    shift: u32,
}

impl PairBits {
    const BITS_PER_PAIR: usize = 16;

    fn from_pairs(pairs: &[(u32, u32)]) -> PairBits {
        let lines = (pairs.len() * Self::BITS_PER_PAIR / 512).next_power_of_two().max(8);
        let mut set = PairBits {
            words: vec![0; lines * 8].into_boxed_slice(),
            shift: 64 - lines.trailing_zeros(),
        };
        for &(a, b) in pairs {
            let (word, mask) = set.probe(a, b);
            set.words[word] |= mask;
        }
        set
    }

    /// The word in the line of `a` and the two bits in it, chosen by `b`: one load.
    #[inline(always)]
    fn probe(&self, a: u32, b: u32) -> (usize, u64) {
        // The top bits of a product by an odd constant are well mixed: one multiply each.
        let line = (u64::from(a).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize * 8;
        let h = (u64::from(b) ^ (u64::from(a) << 21)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let word = line + (h >> 61) as usize;
        let mask = (1 << ((h >> 55) & 63)) | (1 << ((h >> 49) & 63));
        (word, mask)
    }

    #[inline(always)]
    fn contains(&self, a: u32, b: u32) -> bool {
        let (word, mask) = self.probe(a, b);
        self.words[word] & mask == mask
    }
}

/// Mixes every bit of `key` into every bit of the result (a folded 128-bit product).
#[inline(always)]
fn mix(key: u64) -> u64 {
    let product = u128::from(key) * 0x9E37_79B9_7F4A_7C15;
    (product >> 64) as u64 ^ product as u64
}

/// The key of three adjacent characters.
#[inline(always)]
fn triple_key(a: u32, b: u32, c: u32) -> u64 {
    (u64::from(a) << 42) | (u64::from(b) << 21) | u64::from(c)
}

/// A blocked Bloom filter with two bits per key in one 64-bit word (one memory access
/// per probe): `contains` may say yes wrongly (well under 1% of keys at 32 bits per
/// member), never no wrongly.
#[derive(Debug)]
struct Bits {
    words: Box<[u64]>,
    shift: u32,
}

impl Bits {
    /// 32 bits per key keeps the table in L2 for 60,000 words (256 KiB).
    fn from_keys(keys: &[u64], bits_per_key: usize) -> Bits {
        let bits = (keys.len() * bits_per_key).next_power_of_two().max(1 << 12);
        let mut set = Bits {
            words: vec![0; bits / 64].into_boxed_slice(),
            shift: 64 - (bits / 64).trailing_zeros(),
        };
        for &k in keys {
            let (word, mask) = set.probe(k);
            set.words[word] |= mask;
        }
        set
    }

    /// The word and the two bits of `key`: the word from the hash's top bits, the bits
    /// from its low ones.
    #[inline(always)]
    fn probe(&self, key: u64) -> (usize, u64) {
        let h = mix(key);
        let word = (h >> self.shift) as usize;
        let mask = (1 << (h & 63)) | (1 << ((h >> 6) & 63));
        (word, mask)
    }

    #[inline(always)]
    fn contains(&self, key: u64) -> bool {
        let (word, mask) = self.probe(key);
        self.words[word] & mask == mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::{Applies, Fold, ListAction, WordList};

    fn list(words: &[&str], without: &[Fold]) -> WordList {
        WordList {
            category: "测试".into(),
            action: ListAction::Mask,
            words: words.iter().map(|w| w.to_string()).collect(),
            without: without.to_vec(),
            on: Applies::Both,
            segmented: false,
        }
    }

    fn lexicon(words: &[&str], allow: &[&str], without: &[Fold]) -> Lexicon {
        let config = SafetyConfig {
            lists: vec![list(words, without)],
            allow: allow.iter().map(|w| w.to_string()).collect(),
            ..SafetyConfig::default()
        };
        Lexicon::build(&config).unwrap().0
    }

    fn found_in<'a>(lexicon: &Lexicon, text: &'a str, pass: u8) -> Vec<&'a str> {
        let mut hits = Vec::new();
        lexicon.scan(text, &mut Scratch::default(), &mut [(pass, &mut hits)]);
        hits.iter().map(|h| &text[h.span.clone()]).collect()
    }

    fn found<'a>(lexicon: &Lexicon, text: &'a str) -> Vec<&'a str> {
        found_in(lexicon, text, ACTS_ON_MESSAGES)
    }

    #[test]
    fn a_segmented_list_counts_only_matches_on_word_boundaries() {
        let mut political = list(&["台独", "港独", "东突", "中共", "全能神"], &[]);
        political.segmented = true;
        let config = SafetyConfig {
            lists: vec![political],
            ..SafetyConfig::default()
        };
        let lx = Lexicon::build(&config).unwrap().0;
        for text in [
            "两台电脑，一台核显，一台独显",
            "香港独家代理",
            "广东突然降温",
            "其中共有三件",
            "厨房全能神器",
        ] {
            assert_eq!(found(&lx, text), Vec::<&str>::new(), "{text}");
        }
        assert_eq!(found(&lx, "支持台独"), ["台独"]);
        assert_eq!(found(&lx, "台*独"), ["台*独"]);
        // A word the segmenter knows as the head of a longer one still counts.
        assert_eq!(found(&lx, "中共中央"), ["中共"]);
        assert_eq!(found(&lx, "一台独显，支持港独"), ["港独"]);
    }

    #[test]
    fn each_pass_sees_only_its_lists() {
        let mut replies = list(&["京东"], &[]);
        replies.on = Applies::Replies;
        let mut political = list(&["东突"], &[]);
        political.action = ListAction::Block { reply: "no".into() };
        let mut flag = list(&["比价"], &[]);
        flag.action = ListAction::Flag;
        let config = SafetyConfig {
            lists: vec![replies, political, flag],
            ..SafetyConfig::default()
        };
        let lx = Lexicon::build(&config).unwrap().0;
        // On messages, the reply list's 京东 does not hide the 东突 overlapping it.
        assert_eq!(found_in(&lx, "京东突厥", ACTS_ON_MESSAGES), ["东突"]);
        assert_eq!(found_in(&lx, "京东突厥", FLAGS_ON_MESSAGES), ["京东"]);
        assert_eq!(found_in(&lx, "京东比价", ACTS_ON_REPLIES), ["京东"]);
        assert_eq!(found_in(&lx, "京东比价", FLAGS_ON_MESSAGES), ["京东", "比价"]);
    }

    #[test]
    fn leftmost_longest_with_spans_in_the_original() {
        let lx = lexicon(&["法轮", "法轮功", "轮功"], &[], &[]);
        assert_eq!(found(&lx, "说 法-輪-功 啊"), ["法-輪-功"]);
    }

    #[test]
    fn allowed_phrases_excuse_words_inside_them() {
        let lx = lexicon(&["党员", "服务站长"], &["共产党员服务站"], &[]);
        assert_eq!(found(&lx, "共产党员服务站"), Vec::<&str>::new());
        assert_eq!(found(&lx, "党员"), ["党员"]);
        // A word reaching past the allowed phrase is not excused.
        assert_eq!(found(&lx, "共产党员服务站长"), ["服务站长"]);
    }

    #[test]
    fn ascii_words_need_word_boundaries() {
        let lx = lexicon(&["av"], &[], &[]);
        assert_eq!(found(&lx, "I have a cat"), Vec::<&str>::new());
        assert_eq!(found(&lx, "看AV吗"), ["AV"]);
        assert_eq!(found(&lx, "a v"), ["a v"]);
        assert_eq!(found(&lx, "a video"), Vec::<&str>::new());
    }

    #[test]
    fn a_shorter_word_is_tried_when_the_longest_fails_a_check() {
        let lx = lexicon(&["sex", "sexy"], &[], &[]);
        assert_eq!(found(&lx, "sexyz sex"), ["sex"]);
        let lx = lexicon(&["爸爸", "爸爸去"], &[], &[]);
        assert_eq!(found(&lx, "我爸去"), Vec::<&str>::new());
        assert_eq!(found(&lx, "爸爸爸去"), ["爸爸爸去"]);
    }

    #[test]
    fn doubled_characters_in_words_must_be_doubled_in_the_text() {
        let lx = lexicon(&["哈哈"], &[], &[]);
        assert_eq!(found(&lx, "哈"), Vec::<&str>::new());
        assert_eq!(found(&lx, "哈 哈 哈"), ["哈 哈 哈"]);
    }

    #[test]
    fn single_character_words_are_found() {
        let lx = lexicon(&["操"], &[], &[]);
        assert_eq!(found(&lx, "我操了"), ["操"]);
    }

    #[test]
    fn a_word_empty_once_normalized_is_skipped() {
        let config = SafetyConfig {
            lists: vec![WordList {
                words: vec!["好".into(), "***".into()],
                ..list(&[], &[])
            }],
            allow: vec!["...".into()],
            ..SafetyConfig::default()
        };
        let (lx, skipped) = Lexicon::build(&config).unwrap();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(matches!(skipped[0], Skipped::Word { list: 0, word: 1, .. }));
        assert!(matches!(skipped[1], Skipped::Allow { index: 0, .. }));
        assert_eq!(found(&lx, "好***"), ["好"]);
    }

    #[test]
    fn a_list_of_symbol_only_lines_builds() {
        // 32,000 such lines were 32,000 errors, each located by reading the list file from
        // its start: the build took tens of seconds. They are skipped now.
        let symbols = [
            '!', '@', '$', '%', '^', '&', '*', '(', ')', '-', '+', '=', '~', '|', '/', '?',
        ];
        let words: Vec<String> = (0..32_000usize)
            .map(|i| (0..4).map(|k| symbols[(i >> (4 * k)) % 16]).collect())
            .collect();
        let config = SafetyConfig {
            lists: vec![WordList {
                action: ListAction::Block { reply: "no".into() },
                words,
                ..list(&[], &[])
            }],
            ..SafetyConfig::default()
        };
        let (lx, skipped) = Lexicon::build(&config).unwrap();
        assert_eq!(skipped.len(), 32_000);
        assert!(lx.is_empty());
    }
}
