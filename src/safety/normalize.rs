//! The normalizer: text → matching form, with the way back to the original.
//!
//! Evasion tricks (`Ｖ Ｐ Ｎ`, `法*轮*功`, `①②③`, `微信` written `微訊`, `ⓕⓤⓒⓚ`, `傻傻傻逼`) all
//! change how a word looks without changing what it says. Each [`Fold`] undoes one family of
//! tricks. NFKC alone is not enough: it changes lengths, leaves case and traditional
//! characters alone, and keeps the symbols inserted between characters.
//!
//! Every fold is decided per character, once, when a [`FoldTable`] is built: a flat 64K
//! table for the BMP gives the final folded character after all enabled folds (or "skip"
//! for a gap), a small map covers the astral planes (`𝐀`, `🅰`, emoji). Normalizing is then
//! one pass with one lookup per character, writing UTF-16 code units (what the automaton
//! reads; fixed width, so a unit index is a position) and, for every unit, the byte where
//! its character starts in the original. Gaps and repeats are dropped from the matching
//! form, so a matched span maps back to the original text, gaps included.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use unicode_normalization::char::{decompose_canonical, decompose_compatible};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::Fold;

/// A set of folds, e.g. all of them, or all but `repeats`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Folds(u8);

impl Folds {
    /// Every fold.
    pub const ALL: Folds = Folds((1 << Fold::ALL.len()) - 1);
    /// No fold at all: the text is matched as written (invisible characters still go).
    pub const NONE: Folds = Folds(0);

    fn bit(fold: Fold) -> u8 {
        1 << fold as u8
    }

    /// All folds but these (a list's `without`).
    pub fn without(folds: &[Fold]) -> Folds {
        Folds(folds.iter().fold(Folds::ALL.0, |set, &f| set & !Folds::bit(f)))
    }

    /// Exactly these folds.
    pub fn only(folds: &[Fold]) -> Folds {
        Folds(folds.iter().fold(0, |set, &f| set | Folds::bit(f)))
    }

    /// Whether `fold` is in the set.
    pub fn contains(self, fold: Fold) -> bool {
        self.0 & Folds::bit(fold) != 0
    }

    /// The folds in the set, in [`Fold::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Fold> {
        Fold::ALL.into_iter().filter(move |&f| self.contains(f))
    }
}

impl fmt::Debug for Folds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Fold::name)).finish()
    }
}

/// What went wrong building a fold table.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FoldError {
    /// The traditional→simplified dictionary shipped with `ferrous-opencc` did not load.
    #[error("the traditional→simplified dictionary did not load: {0}")]
    Traditional(String),
}

/// A table code: a character is dropped from the matching form.
pub(crate) const SKIP: u32 = 0xD800;
/// Table codes `NUMBER..NUMBER + 100` stand for a two-digit number (`⑩` → `10`).
const NUMBER: u32 = 0xDC00;
/// Table codes `FORM..FORM + 100` stand for a number form (`①`, `⑴`, `⒈`, `❶`, `㈠`, `¹`)
/// whose value is the code less `FORM`, in a table with both the numbers and the gaps
/// fold. Such a character alone between two other characters that are not digits is noise
/// put into a word (`唯①品②会`) and is skipped like a symbol; anywhere else it reads as its
/// digits (`①②③` → `123`, `第⑩` → `第10`).
const FORM: u32 = 0xDE00;

/// The folded form of every character for one set of folds. Built once per set per process
/// (see [`FoldTable::get`]) and shared.
pub struct FoldTable {
    folds: Folds,
    /// One code per BMP character: the folded character, [`SKIP`], or a two-digit number.
    /// A fixed-size array, so that indexing by a BMP code point needs no bounds check.
    bmp: Box<[u16; 0x1_0000]>,
    /// One bit per BMP character: set when its code is not itself. Most characters of a
    /// text fold to themselves, and this 8 KiB stays in L1 where the 128 KiB table would
    /// not.
    changed: Box<[u64; 0x1_0000 / 64]>,
    /// Astral characters whose code is not themselves.
    astral: HashMap<u32, u16>,
}

impl fmt::Debug for FoldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoldTable")
            .field("folds", &self.folds)
            .field("astral", &self.astral.len())
            .finish_non_exhaustive()
    }
}

impl FoldTable {
    /// The table for `folds`, built on first use and then shared by every rule set.
    pub fn get(folds: Folds) -> Result<Arc<FoldTable>, FoldError> {
        static TABLES: OnceLock<Mutex<HashMap<Folds, Arc<FoldTable>>>> = OnceLock::new();
        let tables = TABLES.get_or_init(Default::default);
        // A poisoned lock only means another thread panicked mid-insert of a whole
        // `Arc`; the map itself is still consistent.
        let mut tables = tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = tables.get(&folds) {
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(FoldTable::build(folds)?);
        tables.insert(folds, Arc::clone(&table));
        Ok(table)
    }

    fn build(folds: Folds) -> Result<FoldTable, FoldError> {
        let t2s = if folds.contains(Fold::Traditional) {
            traditional()?
        } else {
            &HashMap::new()
        };
        let forms = folds.contains(Fold::Numbers) && folds.contains(Fold::Gaps);
        let code = |c: char| match fold_char(c, folds, t2s) {
            Folded::Skip => SKIP,
            Folded::Char(d) if forms && d.is_ascii_digit() && is_number_form(c) => FORM + (d as u32 - '0' as u32),
            Folded::Number(n) if forms && is_number_form(c) => FORM + u32::from(n),
            Folded::Char(d) => d as u32,
            Folded::Number(n) => NUMBER + u32::from(n),
        };
        let bmp: Vec<u16> = (0..=0xFFFFu32)
            .map(|u| match char::from_u32(u) {
                // Surrogates never occur in a `str`; the code is never read.
                None => SKIP as u16,
                Some(c) => {
                    let code = code(c);
                    // A BMP character folding to an astral one would not fit; keep it.
                    if code > 0xFFFF { u as u16 } else { code as u16 }
                }
            })
            .collect();
        let bmp: Box<[u16; 0x1_0000]> = bmp.into_boxed_slice().try_into().expect("one code per BMP character");
        let mut changed = Box::new([0u64; 0x1_0000 / 64]);
        for (u, &code) in bmp.iter().enumerate() {
            if usize::from(code) != u {
                changed[u / 64] |= 1 << (u % 64);
            }
        }
        let mut astral = HashMap::new();
        let planes = [0x1_0000..0x2_0000u32, 0x2_F800..0x2_FA20, 0xE_0000..0xE_1000];
        let extra = t2s.keys().map(|&c| c as u32).filter(|&u| u > 0xFFFF);
        for u in planes.into_iter().flatten().chain(extra) {
            let Some(c) = char::from_u32(u) else { continue };
            let code = code(c);
            if code != u && code <= 0xFFFF {
                astral.insert(u, code as u16);
            }
        }
        Ok(FoldTable {
            folds,
            bmp,
            changed,
            astral,
        })
    }

    /// The folds this table applies.
    pub fn folds(&self) -> Folds {
        self.folds
    }

    /// The code of one character: its folded form as a `u32`, [`SKIP`], or a number code.
    #[inline(always)]
    pub(crate) fn code(&self, c: char) -> u32 {
        self.code_of(c as u32)
    }

    /// [`code`](Self::code) of a scalar value.
    #[inline(always)]
    fn code_of(&self, u: u32) -> u32 {
        if u <= 0xFFFF {
            let i = usize::from(u as u16);
            if self.changed[i / 64] & (1 << (i % 64)) == 0 {
                u
            } else {
                u32::from(self.bmp[i])
            }
        } else if u >= 0xF_0000 {
            // Private-use planes: invisible to a reader of the matching form.
            if self.folds.contains(Fold::Gaps) { SKIP } else { u }
        } else {
            self.astral.get(&u).map_or(u, |&code| u32::from(code))
        }
    }

    /// Whether a character is, or may be, dropped from the matching form: a gap, or a
    /// number form (dropped where it stands alone between two characters).
    pub(crate) fn skips(&self, c: char) -> bool {
        let code = self.code(c);
        code == SKIP || (FORM..FORM + 100).contains(&code)
    }

    /// Normalizes `text` into `out` (cleared first), calling `on_char(unit, char)` for
    /// every character kept in the matching form, in order. This is the hot loop: one
    /// table lookup per character, stores into buffers sized once, no reallocation.
    #[inline(always)]
    pub(crate) fn normalize_with(&self, text: &str, out: &mut Normalized, mut on_char: impl FnMut(u32, u32)) {
        // Each character gives at most two units, and gives two only when its UTF-8 takes
        // three or four bytes, so `text.len()` units always fit.
        out.ensure(text.len());
        let repeats = self.folds.contains(Fold::Repeats);
        let Normalized { units, starts, len } = out;
        let mut n = 0usize;
        let mut prev = u32::MAX;
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let (u, width) = decode(b, i);
            // Offsets are `u32`: messages are far below 4 GiB.
            let at = i as u32;
            i += width;
            let code = self.code_of(u);
            // Common case: a BMP character, not a skip or number code.
            if code.wrapping_sub(0xD800) >= 0x800 && code <= 0xFFFF {
                if repeats && code == prev {
                    continue;
                }
                prev = code;
                units[n] = code as u16;
                starts[n] = at;
                on_char(n as u32, code);
                n += 1;
                continue;
            }
            if code == SKIP {
                continue;
            }
            let number = if (FORM..FORM + 100).contains(&code) {
                if self.is_noise(b, i, prev) {
                    continue;
                }
                Some(code - FORM)
            } else if (NUMBER..NUMBER + 100).contains(&code) {
                Some(code - NUMBER)
            } else {
                None
            };
            let mut emit = |ch: u32| {
                if repeats && ch == prev {
                    return;
                }
                prev = ch;
                let pair = if ch <= 0xFFFF {
                    [ch as u16, 0]
                } else {
                    let c = ch - 0x1_0000;
                    [(0xD800 + (c >> 10)) as u16, (0xDC00 + (c & 0x3FF)) as u16]
                };
                let width = if ch <= 0xFFFF { 1 } else { 2 };
                for &u in &pair[..width] {
                    units[n] = u;
                    starts[n] = at;
                    n += 1;
                }
                on_char((n - width) as u32, ch);
            };
            if let Some(number) = number
                && number < 10
            {
                emit(u32::from(b'0') + number);
            } else if let Some(number) = number {
                emit(u32::from(b'0') + number / 10);
                emit(u32::from(b'0') + number % 10);
            } else {
                emit(code);
            }
        }
        *len = n;
    }

    /// Whether the number form ending at byte `next` of `b` is noise: the character kept
    /// before it (`prev`, `u32::MAX` for none) and the next one not dropped are both there
    /// and neither is a digit or a number form. Only number forms take this path, and they
    /// are rare, so the look ahead costs ordinary text nothing.
    #[cold]
    fn is_noise(&self, b: &[u8], mut next: usize, prev: u32) -> bool {
        let digit = |code: u32| {
            (u32::from(b'0')..=u32::from(b'9')).contains(&code)
                || (NUMBER..NUMBER + 100).contains(&code)
                || (FORM..FORM + 100).contains(&code)
        };
        if prev == u32::MAX || digit(prev) {
            return false;
        }
        while next < b.len() {
            let (u, width) = decode(b, next);
            next += width;
            match self.code_of(u) {
                SKIP => continue,
                code => return !digit(code),
            }
        }
        false
    }

    /// The matching form of `text` with its offsets.
    pub fn normalize(&self, text: &str) -> Normalized {
        let mut out = Normalized::default();
        self.normalize_with(text, &mut out, |_, _| {});
        out
    }

    /// The matching form of `text` as a string.
    pub fn normalize_str(&self, text: &str) -> String {
        self.normalize(text).text()
    }
}

/// The character whose UTF-8 starts at byte `i` of `b` (valid UTF-8) and its length.
/// Decoding by hand: the lead byte gives the length, and this is a third cheaper than
/// `char_indices` in the normalizer's loop.
#[inline(always)]
fn decode(b: &[u8], i: usize) -> (u32, usize) {
    let lead = u32::from(b[i]);
    if lead < 0x80 {
        (lead, 1)
    } else if lead < 0xE0 {
        (((lead & 0x1F) << 6) | (u32::from(b[i + 1]) & 0x3F), 2)
    } else if lead < 0xF0 {
        let rest = ((u32::from(b[i + 1]) & 0x3F) << 6) | (u32::from(b[i + 2]) & 0x3F);
        (((lead & 0x0F) << 12) | rest, 3)
    } else {
        let rest =
            ((u32::from(b[i + 1]) & 0x3F) << 12) | ((u32::from(b[i + 2]) & 0x3F) << 6) | (u32::from(b[i + 3]) & 0x3F);
        (((lead & 0x07) << 18) | rest, 4)
    }
}

/// The matching form of one text: UTF-16 code units, and for every unit the byte where
/// its character starts in the original text. The buffers are reused between texts and
/// only ever grow; `len` says how much of them is this text.
#[derive(Clone, Debug, Default)]
pub struct Normalized {
    /// The units.
    units: Vec<u16>,
    /// Per unit, the original byte offset of its character (both units of a pair share it).
    starts: Vec<u32>,
    /// Units in use.
    len: usize,
}

impl Normalized {
    /// Makes room for `units` units.
    fn ensure(&mut self, units: usize) {
        if self.starts.len() < units {
            self.starts.resize(units, 0);
            self.units.resize(units, 0);
        }
        self.len = 0;
    }

    /// The number of UTF-16 units.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Units `range` as little-endian bytes (what the automaton reads) into `out`.
    pub(crate) fn bytes_into(&self, range: Range<usize>, out: &mut Vec<u8>) {
        out.clear();
        out.extend(self.units[range].iter().flat_map(|u| u.to_le_bytes()));
    }

    /// The original byte offset of unit `i`'s character.
    #[inline]
    pub(crate) fn start(&self, i: usize) -> usize {
        self.starts[i] as usize
    }

    /// The buffers' capacity in bytes, to let a thread drop buffers a huge text grew.
    pub(crate) fn capacity(&self) -> usize {
        2 * self.units.capacity() + 4 * self.starts.capacity()
    }

    /// The unit at `i`.
    #[inline]
    pub(crate) fn unit(&self, i: usize) -> u16 {
        self.units[i]
    }

    /// The character starting at unit `i` and the unit after it, if `i` is in range.
    #[inline]
    pub(crate) fn char_at(&self, i: usize) -> Option<(u32, usize)> {
        if i >= self.len {
            return None;
        }
        let u = u32::from(self.unit(i));
        if (0xD800..0xDC00).contains(&u) && i + 1 < self.len {
            let low = u32::from(self.unit(i + 1));
            return Some((0x1_0000 + ((u - 0xD800) << 10) + (low - 0xDC00), i + 2));
        }
        Some((u, i + 1))
    }

    /// The matching form as a string.
    pub fn text(&self) -> String {
        char::decode_utf16((0..self.len()).map(|i| self.unit(i)))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }

    /// The units as a vector (for building patterns).
    pub(crate) fn units(&self) -> Vec<u16> {
        (0..self.len()).map(|i| self.unit(i)).collect()
    }

    /// Whether unit `i` is an ASCII letter or digit.
    pub(crate) fn is_ascii_alnum(&self, i: usize) -> bool {
        let u = self.unit(i);
        u < 0x80 && (u as u8).is_ascii_alphanumeric()
    }

    /// The original byte where the character of unit `i` ends: up to the next unit's
    /// character, less any gaps in between (they belong to neither).
    pub(crate) fn char_end(&self, table: &FoldTable, original: &str, i: usize) -> usize {
        let start = self.start(i);
        let next = self.starts[i + 1..self.len]
            .iter()
            .find(|&&s| s as usize != start)
            .map_or(original.len(), |&s| s as usize);
        let mut end = next;
        for (at, c) in original[start..next].char_indices().rev() {
            if !table.skips(c) || at == 0 {
                break;
            }
            end = start + at;
        }
        end
    }

    /// The original byte range of units `range` (a whole number of characters).
    pub(crate) fn original_span(&self, table: &FoldTable, original: &str, range: Range<usize>) -> Range<usize> {
        self.start(range.start)..self.char_end(table, original, range.end - 1)
    }

    /// Whether a dropped character stands right before unit `i` in the original: then
    /// unit `i` does not touch the unit before it.
    pub(crate) fn gap_before(&self, table: &FoldTable, original: &str, i: usize) -> bool {
        original[..self.start(i)]
            .chars()
            .next_back()
            .is_some_and(|c| table.skips(c))
    }

    /// How many folded characters the repeat fold merged into unit `i` (`哈哈哈` → 3).
    pub(crate) fn run_length(&self, table: &FoldTable, original: &str, i: usize) -> usize {
        let span = self.start(i)..self.char_end(table, original, i);
        original[span]
            .chars()
            .map(|c| match table.code(c) {
                SKIP => 0,
                code if (NUMBER..NUMBER + 100).contains(&code) => 2,
                code if (FORM + 10..FORM + 100).contains(&code) => 2,
                _ => 1,
            })
            .sum()
    }
}

/// The result of folding one character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Folded {
    Skip,
    Char(char),
    Number(u8),
}

/// Folds one character through every enabled fold until nothing changes.
fn fold_char(c: char, folds: Folds, t2s: &HashMap<char, char>) -> Folded {
    if is_invisible(c) {
        return Folded::Skip;
    }
    let mut c = c;
    // Folds feed each other (`Ａ` → `A` → `a`, `㈠` → `一` → `1`); four rounds reach the
    // end of every chain in the tables below.
    for _ in 0..4 {
        match step(c, folds, t2s) {
            None => break,
            Some(Folded::Char(d)) => c = d,
            Some(other) => return other,
        }
    }
    if folds.contains(Fold::Gaps) && is_gap(c) {
        Folded::Skip
    } else {
        Folded::Char(c)
    }
}

/// One application of the first fold that changes `c`.
fn step(c: char, folds: Folds, t2s: &HashMap<char, char>) -> Option<Folded> {
    if folds.contains(Fold::Width)
        && let Some(d) = width(c)
    {
        return Some(Folded::Char(d));
    }
    if folds.contains(Fold::Numbers)
        && let Some(n) = number(c)
    {
        return Some(n);
    }
    if folds.contains(Fold::Letters)
        && let Some(d) = letter(c)
    {
        return Some(Folded::Char(d));
    }
    if folds.contains(Fold::Traditional)
        && let Some(d) = variant(c, t2s)
    {
        return Some(Folded::Char(d));
    }
    if folds.contains(Fold::Case) && c.is_uppercase() {
        let mut lower = c.to_lowercase();
        if let (Some(d), None) = (lower.next(), lower.next())
            && d != c
        {
            return Some(Folded::Char(d));
        }
    }
    None
}

/// The compatibility decomposition of `c` (NFKD of one character).
fn compat(c: char) -> String {
    let mut s = String::new();
    decompose_compatible(c, |d| s.push(d));
    s
}

/// `c`'s decomposition with enclosing punctuation dropped: `⑴` → `1`, `⒜` → `a`, `⒈` → `1`.
fn compat_core(c: char) -> String {
    compat(c)
        .chars()
        .filter(|d| !matches!(d, '(' | ')' | '.' | ',' | ' '))
        .collect()
}

/// A number form: a character the numbers fold reads as digits that is not a digit or a
/// Chinese numeral itself (`①`, `⑴`, `⒈`, `❶`, `㈠`, `㊀`, `¹`, `₂`, `𝟏`). Chinese numerals
/// (`一`, `壹`) are words (`一台`, `唯一`), never noise.
fn is_number_form(c: char) -> bool {
    !c.is_ascii()
        && !is_width_form(c)
        && !matches!(
            c,
            '〇' | '零'
                | '一'
                | '壹'
                | '弌'
                | '二'
                | '贰'
                | '貳'
                | '弍'
                | '三'
                | '叁'
                | '參'
                | '叄'
                | '弎'
                | '四'
                | '肆'
                | '五'
                | '伍'
                | '六'
                | '陆'
                | '陸'
                | '七'
                | '柒'
                | '八'
                | '捌'
                | '九'
                | '玖'
        )
}

/// Full-width and half-width forms.
fn width(c: char) -> Option<char> {
    match c {
        '\u{3000}' => Some(' '),
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
        '\u{FF5F}'..='\u{FFEE}' => single(&compat(c)),
        _ => None,
    }
}

/// The full-width and half-width block: the width fold's own.
fn is_width_form(c: char) -> bool {
    matches!(c, '\u{3000}' | '\u{FF01}'..='\u{FFEE}')
}

/// Number forms: circled, parenthesized, with a full stop, superscript, subscript,
/// mathematical, Chinese numerals and their 壹-style capitals.
fn number(c: char) -> Option<Folded> {
    let digit = match c {
        '〇' | '零' => '0',
        '一' | '壹' | '弌' => '1',
        '二' | '贰' | '貳' | '弍' => '2',
        '三' | '叁' | '參' | '叄' | '弎' => '3',
        '四' | '肆' => '4',
        '五' | '伍' => '5',
        '六' | '陆' | '陸' => '6',
        '七' | '柒' => '7',
        '八' | '捌' => '8',
        '九' | '玖' => '9',
        // Tens, hundreds and thousands are positional, not digits: the capitals read as
        // the ordinary characters, which stay.
        '拾' => return Some(Folded::Char('十')),
        '佰' => return Some(Folded::Char('百')),
        '仟' => return Some(Folded::Char('千')),
        // Full-width digits belong to the width fold, so that each fold can be switched
        // off on its own.
        _ if c.is_ascii() || is_width_form(c) => return None,
        // Dingbat and double-circled numbers have no compatibility decomposition.
        '❶'..='❾' | '➀'..='➈' | '➊'..='➒' | '⓵'..='⓽' => {
            let first = match c {
                '❶'..='❾' => '❶',
                '➀'..='➈' => '➀',
                '➊'..='➒' => '➊',
                _ => '⓵',
            };
            return char::from_u32(u32::from(b'1') + (c as u32 - first as u32)).map(Folded::Char);
        }
        '❿' | '➉' | '➓' | '⓾' => return Some(Folded::Number(10)),
        '⓫'..='⓴' => return Some(Folded::Number(11 + (c as u32 - '⓫' as u32) as u8)),
        '⓿' => '0',
        _ => {
            use GeneralCategory::*;
            if !matches!(
                c.general_category(),
                DecimalNumber | OtherNumber | LetterNumber | OtherSymbol
            ) {
                return None;
            }
            let core = compat_core(c);
            if core.chars().all(|d| d.is_ascii_digit()) {
                return match core.len() {
                    1 => core.chars().next().map(Folded::Char),
                    2 => core.parse().ok().map(Folded::Number),
                    _ => None,
                };
            }
            // `㈠`, `㊀`: an enclosed Chinese numeral reads as the numeral.
            let d = single(&core).filter(|&d| d != c)?;
            return number(d).map(|_| Folded::Char(d));
        }
    };
    Some(Folded::Char(digit))
}

/// Decorated and enclosed letters, and letters that look Latin.
fn letter(c: char) -> Option<char> {
    if c.is_ascii() || is_width_form(c) {
        return None;
    }
    let u = c as u32;
    let offset = |base: u32, first: u8| char::from_u32(u32::from(first) + (u - base));
    let mapped = match u {
        // Negative circled, negative squared letters and regional indicators have no
        // compatibility decomposition.
        0x1F150..=0x1F169 => offset(0x1F150, b'A'),
        0x1F170..=0x1F189 => offset(0x1F170, b'A'),
        0x1F1E6..=0x1F1FF => offset(0x1F1E6, b'A'),
        _ => None,
    };
    if mapped.is_some() {
        return mapped;
    }
    if let Some(d) = lookalike(c) {
        return Some(d);
    }
    // Enclosed ideographs: `㊙` → `秘`, `㈱` → `株`.
    if matches!(u, 0x3200..=0x32FF | 0x1F200..=0x1F2FF) {
        let core = compat_core(c);
        return single(&core).filter(|d| !d.is_ascii_digit());
    }
    let core = compat_core(c);
    if let Some(d) = single(&core)
        && d.is_ascii_alphabetic()
    {
        return Some(d);
    }
    // Letters with diacritics: `é` → `e`.
    if c.is_alphabetic() {
        let mut base = None;
        let mut rest_are_marks = true;
        decompose_canonical(c, |d| {
            if base.is_none() {
                base = Some(d);
            } else if !unicode_normalization::char::is_combining_mark(d) {
                rest_are_marks = false;
            }
        });
        if let Some(b) = base
            && rest_are_marks
            && b.is_ascii_alphabetic()
        {
            return Some(b);
        }
    }
    None
}

/// Small capitals, barred letters and Cyrillic or Greek letters drawn like Latin ones.
fn lookalike(c: char) -> Option<char> {
    Some(match c {
        'ᴀ' | 'а' | 'α' | 'Α' | 'А' => 'a',
        'ʙ' | 'в' | 'Β' | 'В' | 'ь' => 'b',
        'ᴄ' | 'с' | 'С' | 'ϲ' => 'c',
        'ᴅ' | 'ԁ' | 'đ' => 'd',
        'ᴇ' | 'е' | 'Ε' | 'Е' | 'ё' => 'e',
        'ꜰ' => 'f',
        'ɢ' | 'ɡ' => 'g',
        'ʜ' | 'Η' | 'Н' | 'һ' => 'h',
        'ɪ' | 'і' | 'Ι' | 'І' | 'ι' | 'ı' => 'i',
        'ᴊ' | 'ј' | 'Ј' => 'j',
        'ᴋ' | 'Κ' | 'К' | 'κ' | 'к' => 'k',
        'ʟ' | 'ł' => 'l',
        'ᴍ' | 'Μ' | 'М' | 'м' => 'm',
        'ɴ' | 'Ν' | 'ո' => 'n',
        'ᴏ' | 'о' | 'ο' | 'Ο' | 'О' | 'ø' | 'σ' => 'o',
        'ᴘ' | 'р' | 'ρ' | 'Ρ' | 'Р' => 'p',
        'ǫ' | 'ԛ' => 'q',
        'ʀ' | 'г' => 'r',
        'ꜱ' | 'ѕ' | 'Ѕ' => 's',
        'ᴛ' | 'Τ' | 'Т' | 'т' | 'τ' => 't',
        'ᴜ' | 'υ' => 'u',
        'ᴠ' | 'ν' | 'ѵ' => 'v',
        'ᴡ' | 'ѡ' | 'ω' => 'w',
        'х' | 'Χ' | 'Х' | 'χ' => 'x',
        'ʏ' | 'у' | 'Υ' | 'У' | 'γ' => 'y',
        'ᴢ' | 'Ζ' => 'z',
        _ => return None,
    })
}

/// Traditional characters and CJK variant forms read as the standard simplified one.
fn variant(c: char, t2s: &HashMap<char, char>) -> Option<char> {
    if let Some(&d) = t2s.get(&c) {
        return Some(d);
    }
    // Compatibility ideographs and Kangxi radicals look exactly like ordinary characters.
    if matches!(c as u32, 0x2E80..=0x2FDF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F) {
        return single(&compat(c)).filter(|&d| d != c);
    }
    None
}

/// The one character of `s`, if it has exactly one.
fn single(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// Characters no reader sees: format controls (zero-width space and joiners, the BOM,
/// soft hyphens), variation selectors and Hangul fillers. They are dropped even when
/// the `gaps` fold is off, since they cannot change what a word says.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
        || c.general_category() == GeneralCategory::Format
}

/// Symbols, punctuation, blanks and marks: what may be put between the characters of a
/// word without changing it for a reader.
fn is_gap(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        c.general_category(),
        SpaceSeparator
            | LineSeparator
            | ParagraphSeparator
            | Control
            | Format
            | ConnectorPunctuation
            | DashPunctuation
            | OpenPunctuation
            | ClosePunctuation
            | InitialPunctuation
            | FinalPunctuation
            | OtherPunctuation
            | MathSymbol
            | CurrencySymbol
            | ModifierSymbol
            | OtherSymbol
            | NonspacingMark
            | EnclosingMark
            | PrivateUse
            | Unassigned
            | Surrogate
    )
}

/// Traditional → simplified, one character to one character, from OpenCC's dictionaries
/// as shipped by `ferrous-opencc` (both Apache-2.0). Phrases are not used: a phrase can
/// change length, and the matching form keeps one position per character. The Taiwan and
/// Hong Kong variant tables are not used: they map some simplified characters onward
/// (`么` → `幺`), which would merge words that differ.
fn traditional() -> Result<&'static HashMap<char, char>, FoldError> {
    static T2S: OnceLock<Result<HashMap<char, char>, FoldError>> = OnceLock::new();
    T2S.get_or_init(|| {
        use ferrous_opencc::OpenCC;
        use ferrous_opencc::config::BuiltinConfig;
        let candidates: Vec<char> = [0x3400..0x4DC0u32, 0x4E00..0xA000, 0xF900..0xFB00, 0x2_0000..0x2_FA20]
            .into_iter()
            .flatten()
            .filter_map(char::from_u32)
            .collect();
        // One conversion per dictionary over every candidate, one per line: the newline
        // keeps phrase entries from joining neighbours.
        let mut input = String::with_capacity(candidates.len() * 5);
        let mut map = HashMap::new();
        for &c in &candidates {
            input.push(c);
            input.push('\n');
        }
        let converter = OpenCC::from_config(BuiltinConfig::T2s).map_err(|e| FoldError::Traditional(e.to_string()))?;
        let output = converter.convert(&input);
        for (&c, line) in candidates.iter().zip(output.split('\n')) {
            if let Some(d) = single(line)
                && d != c
            {
                map.insert(c, d);
            }
        }
        Ok(map)
    })
    .as_ref()
    .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(folds: Folds, text: &str) -> String {
        FoldTable::get(folds).unwrap().normalize_str(text)
    }

    #[test]
    fn every_fold_on() {
        let all = Folds::ALL;
        assert_eq!(norm(all, "ＶＰＮ"), "vpn");
        assert_eq!(norm(all, "法 * 轮 . 功"), "法轮功");
        assert_eq!(norm(all, "①⑵⒊⁴₅"), "12345");
        assert_eq!(norm(all, "⑩"), "10");
        assert_eq!(norm(all, "壹贰叁"), "123");
        assert_eq!(norm(all, "ⓕⓤⓒⓚ"), "fuck");
        assert_eq!(norm(all, "𝐀𝐁"), "ab");
        assert_eq!(norm(all, "微訊"), "微讯");
        assert_eq!(norm(all, "傻傻傻逼"), "傻逼");
        assert_eq!(norm(all, "s\u{200B}e\u{FE0F}x"), "sex");
    }

    #[test]
    fn a_fold_switched_off_leaves_its_forms_alone() {
        let no_width = Folds::without(&[Fold::Width]);
        // Case still folds, but the letters stay full-width.
        assert_eq!(norm(no_width, "ＶＰＮ"), "ｖｐｎ");
        let no_case = Folds::without(&[Fold::Case]);
        assert_eq!(norm(no_case, "VPN"), "VPN");
        let no_repeats = Folds::without(&[Fold::Repeats]);
        assert_eq!(norm(no_repeats, "哈哈"), "哈哈");
        let no_gaps = Folds::without(&[Fold::Gaps]);
        assert_eq!(norm(no_gaps, "a b"), "a b");
        // Invisible characters go even without the gaps fold.
        assert_eq!(norm(no_gaps, "a\u{200D}b"), "ab");
    }

    #[test]
    fn offsets_point_back_into_the_original() {
        let table = FoldTable::get(Folds::ALL).unwrap();
        let text = "买 Ｖ-Ｐ-Ｎ 吗";
        let n = table.normalize(text);
        assert_eq!(n.text(), "买vpn吗");
        let span = n.original_span(&table, text, 1..4);
        assert_eq!(&text[span], "Ｖ-Ｐ-Ｎ");
        assert!(n.gap_before(&table, text, 1), "a blank stands before Ｖ");
        assert!(n.gap_before(&table, text, 2), "a dash stands before Ｐ");
        let tight = table.normalize("ab");
        assert!(!tight.gap_before(&table, "ab", 1));
    }

    #[test]
    fn run_length_counts_merged_repeats() {
        let table = FoldTable::get(Folds::ALL).unwrap();
        let text = "哈 哈哈!好";
        let n = table.normalize(text);
        assert_eq!(n.text(), "哈好");
        assert_eq!(n.run_length(&table, text, 0), 3);
        assert_eq!(n.run_length(&table, text, 1), 1);
    }

    #[test]
    fn astral_characters_take_two_units_and_map_back() {
        let table = FoldTable::get(Folds::only(&[Fold::Width])).unwrap();
        let text = "a𠀀b";
        let n = table.normalize(text);
        assert_eq!(n.len(), 4);
        assert_eq!(n.text(), text);
        assert_eq!(&text[n.original_span(&table, text, 1..3)], "𠀀");
    }
}
