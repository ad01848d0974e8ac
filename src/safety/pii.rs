//! Personal data: mainland mobile and landline numbers, resident ID numbers, bank cards,
//! emails and street addresses, found in the original text and masked so that a useful
//! part stays (`138****5678`, `010-****5678`, `5***************1X`, `6222 **** **** 3256`,
//! `z***@example.com`, `北京市朝阳区******`).
//!
//! Numbers are read as digit groups. A digit is ASCII, full-width or a Chinese numeral
//! (`一`…`九`, `〇`/`零`, `幺` for 1, `壹`…`玖`); groups are joined by up to four blanks,
//! dashes, dots or a closing parenthesis (`138 1234 5678`, `１３８-１２３４-５６７８`,
//! `138.1234.5678`, `(021)12345678`, `+86 138...`), and invisible characters (zero-width
//! spaces and joiners, soft hyphens) are read as if absent. A dot followed by fewer than
//! three digits is a decimal point or part of a date (`99.00`, `2026.11.02`) and ends the
//! number there, and one number does not mix dots and blanks (`134 0.066 0.212` is three
//! numbers). Every run of consecutive groups holding a possible count of digits (11 to
//! 19) is tried, longest first, so a number next to another one (`13812345678 2件`) is
//! still found, and the work per group is bounded: the search is linear in the text.
//! Numbers are validated, not just counted: ID numbers by their GB 11643 check character
//! and birth date, bank cards by their scheme's issuer prefix and length ([`card_scheme`])
//! and Luhn, mobiles by the `1[3-9]` prefix, landlines by their
//! area code (`010`, `02x`, `0[3-9]xx`) and a local number of 7 or 8 digits that does not
//! start with 0, with an optional extension group (`010-12345678-123`). The
//! validators are a few lines each; no crate does them better.
//!
//! Emails: the `@` may be full-width or spelled out (`at` between blanks or in brackets:
//! `zhangsan at example dot com`, `zhangsan(at)example(dot)com`, `[at]`), the dots of
//! the domain too (`．`, `。`, `dot`), and full-width letters read as ASCII.
//!
//! A shop's order numbers are not personal data: when the shop declares them
//! ([`OrderNumber`]), a run of digits they match is left alone before any kind is tried,
//! so an 18-digit order number that happens to pass Luhn (one in ten does) stays readable
//! for the order flow.
//!
//! Addresses: a clause with a district (区/县/旗, else a city 市) followed by a street part
//! with a house number (`建国路88号`) has everything after the district masked.

use std::ops::Range;

use super::{OrderNumber, PiiKind};

/// One piece of personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiiMatch {
    /// What it is.
    pub kind: PiiKind,
    /// Where, in the original text.
    pub span: Range<usize>,
    /// What replaces it.
    pub masked: String,
}

/// `text` with the personal data of `kinds` replaced by its masks; borrowed when there
/// is nothing to mask.
pub fn redact<'t>(text: &'t str, kinds: &[PiiKind]) -> std::borrow::Cow<'t, str> {
    redact_with(text, kinds, None)
}

/// [`redact`], leaving the shop's order numbers alone.
pub fn redact_with<'t>(text: &'t str, kinds: &[PiiKind], orders: Option<&OrderNumber>) -> std::borrow::Cow<'t, str> {
    let found = find_with(text, kinds, orders);
    if found.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in found {
        out.push_str(&text[at..m.span.start]);
        out.push_str(&m.masked);
        at = m.span.end;
    }
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
}

/// Finds the personal data of `kinds` in `text`, in order, without overlaps.
pub fn find(text: &str, kinds: &[PiiKind]) -> Vec<PiiMatch> {
    find_with(text, kinds, None)
}

/// [`find`], leaving the shop's order numbers alone: a run of digits that `orders`
/// matches whole is no personal data, whatever else it could be.
pub fn find_with(text: &str, kinds: &[PiiKind], orders: Option<&OrderNumber>) -> Vec<PiiMatch> {
    let mut found = Vec::new();
    if kinds.is_empty() {
        return found;
    }
    // Every message and every reply is searched, and most have nothing to find: one
    // cheap pass rules out each kind the text cannot contain before the detailed reads.
    let census = Census::of(text);
    let numbers = [PiiKind::Phone, PiiKind::IdCard, PiiKind::BankCard];
    if census.numerals >= MIN_PII_DIGITS && numbers.iter().any(|k| kinds.contains(k)) {
        numbers_in(text, kinds, orders, &mut found);
    }
    if census.at_sign && kinds.contains(&PiiKind::Email) {
        emails_in(text, &mut found);
    }
    if census.digits > 0 && kinds.contains(&PiiKind::Address) && text.contains(['区', '县', '旗', '市']) {
        addresses_in(text, &mut found);
    }
    // Earlier first, then longer; drop anything overlapping what is kept.
    found.sort_by_key(|m| (m.span.start, std::cmp::Reverse(m.span.end)));
    let mut kept: Vec<PiiMatch> = Vec::with_capacity(found.len());
    for m in found {
        if kept.last().is_none_or(|k| k.span.end <= m.span.start) {
            kept.push(m);
        }
    }
    kept
}

/// The byte offset before which [`find`] gives the same answer however `text` goes on:
/// a trailing run that could still become a number or email, or a trailing clause that
/// names a district and may still get its street, is held back. Bounded, so that a
/// stream of digits cannot hold everything.
pub fn stable_until(text: &str) -> usize {
    const MAX_HOLD: usize = 320;
    let mut hold = text.len();
    for (i, c) in text.char_indices().rev() {
        if is_token_char(c) || is_separator(c) || is_invisible(c) || numeral(c).is_some() {
            hold = i;
        } else {
            break;
        }
    }
    let clause = text
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_address_char(c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    if text[clause..].contains(['省', '市', '区', '县', '旗']) {
        hold = hold.min(clause);
    }
    hold.max(floor_char_boundary(text, text.len().saturating_sub(MAX_HOLD)))
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Characters that may be part of a number or an email (with the spelled-out `at` and
/// `dot` in brackets).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '@'
                | '_'
                | '%'
                | '+'
                | '-'
                | '('
                | '['
                | '{'
                | '<'
                | '>'
                | '}'
                | ']'
                | '＋'
                | '＠'
                | '．'
                | '（'
                | '【'
                | '】'
                | '［'
                | '］'
                | '｛'
                | '｝'
                | '０'..='９'
                | 'Ａ'..='Ｚ'
                | 'ａ'..='ｚ'
        )
}

/// The most separator characters between two digit groups of one number: four blanks
/// are a common way to space a number out; wider gaps are columns of a table, numbers
/// side by side.
const MAX_GAP: usize = 4;

/// Blanks, dashes, dots and closing parentheses that may join digit groups.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '-' | '\u{3000}' | '\u{00A0}' | '－' | '‐' | '‑' | '–' | '—' | ')' | '）'
    ) || is_dot(c)
}

/// Dots between digit groups (`138.1234.5678`), also the decimal point of prices.
fn is_dot(c: char) -> bool {
    matches!(c, '.' | '．' | '·' | '・')
}

/// Characters that show nothing: inside a number they are read as if absent.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// The check character of an ID number.
fn is_x(c: char) -> bool {
    matches!(c, 'X' | 'x' | 'Ｘ' | 'ｘ')
}

/// The value of an ASCII or full-width digit (what an address's house number is written
/// with).
fn digit(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '０'..='９' => Some((c as u32 - '０' as u32) as u8),
        _ => None,
    }
}

/// The value of a digit of a number: ASCII, full-width, or a Chinese numeral as numbers
/// are read out (`幺三八`), including the financial forms (`壹贰叁`).
fn numeral(c: char) -> Option<u8> {
    match c {
        '〇' | '零' => Some(0),
        '一' | '幺' | '壹' => Some(1),
        '二' | '贰' | '貳' => Some(2),
        '三' | '叁' | '參' => Some(3),
        '四' | '肆' => Some(4),
        '五' | '伍' => Some(5),
        '六' | '陆' | '陸' => Some(6),
        '七' | '柒' => Some(7),
        '八' | '捌' => Some(8),
        '九' | '玖' => Some(9),
        _ => digit(c),
    }
}

/// The three-byte character starting at `bytes[i]` (a lead byte `E0..=EF`), if complete.
fn three_byte_char(bytes: &[u8], i: usize) -> Option<char> {
    let (b1, b2) = (*bytes.get(i + 1)?, *bytes.get(i + 2)?);
    let code = (u32::from(bytes[i] & 0x0F) << 12) | (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F);
    char::from_u32(code)
}

/// The three-byte characters the census counts (full-width digits, `＠`, the Chinese
/// numerals), one bit per code point of the Basic Multilingual Plane: 8 KiB.
static NOTABLE: [u64; 1024] = notable_table();

const fn notable_table() -> [u64; 1024] {
    const CHARS: [char; 35] = [
        '０', '１', '２', '３', '４', '５', '６', '７', '８', '９', '＠', '〇', '零', '一', '幺', '壹', '二', '贰',
        '貳', '三', '叁', '參', '四', '肆', '五', '伍', '六', '陆', '陸', '七', '柒', '八', '捌', '九', '玖',
    ];
    let mut table = [0u64; 1024];
    let mut i = 0;
    while i < CHARS.len() {
        let c = CHARS[i] as usize;
        table[c >> 6] |= 1 << (c & 63);
        i += 1;
    }
    table
}

/// What one pass over the bytes tells about a text: enough to skip the kinds of personal
/// data it cannot hold.
struct Census {
    /// ASCII and full-width digits in the whole text.
    digits: usize,
    /// Those and Chinese numerals: what a number can be written with.
    numerals: usize,
    /// Whether it has `@` or `＠`, or `at` standing alone (an email needs one).
    at_sign: bool,
}

impl Census {
    fn of(text: &str) -> Census {
        let bytes = text.as_bytes();
        // ASCII first: one pass without branches.
        let ascii = bytes.iter().map(|b| usize::from(b.is_ascii_digit())).sum::<usize>();
        let mut at_sign = bytes.contains(&b'@') || spelled_at(bytes);
        // Full-width digits, `＠` and the Chinese numerals are all three-byte characters:
        // only their lead bytes (E0..=EF) are decoded.
        let (mut wide, mut chinese) = (0, 0);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !(0xE0..0xF0).contains(&b) {
                i += 1;
                continue;
            }
            // Most of a Chinese text is three-byte characters that are none of these: one
            // bit of a table says so, before any character is decoded and matched.
            if let (Some(&b1), Some(&b2)) = (bytes.get(i + 1), bytes.get(i + 2)) {
                let code = (usize::from(b & 0x0F) << 12) | (usize::from(b1 & 0x3F) << 6) | usize::from(b2 & 0x3F);
                if NOTABLE[code >> 6] & (1 << (code & 63)) == 0 {
                    i += 3;
                    continue;
                }
            }
            match three_byte_char(bytes, i) {
                Some('＠') => at_sign = true,
                Some(c) if digit(c).is_some() => wide += 1,
                Some(c) if numeral(c).is_some() => chinese += 1,
                _ => {}
            }
            i += 3;
        }
        Census {
            digits: ascii + wide,
            numerals: ascii + wide + chinese,
            at_sign,
        }
    }
}

/// Whether `at` (any case) stands alone somewhere, not inside a word: a spelled-out `@`.
fn spelled_at(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, w)| {
        w[0] | 0x20 == b'a'
            && w[1] | 0x20 == b't'
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
            && bytes.get(i + 2).is_none_or(|b| !b.is_ascii_alphanumeric())
    })
}

/// A digit of a number: where it is and its value.
#[derive(Clone, Copy, Debug)]
struct Digit {
    at: usize,
    value: u8,
}

/// A run of digits in the text without anything between them.
#[derive(Clone, Debug)]
struct Group {
    /// Its digits, indices into [`Token::digits`].
    digits: Range<usize>,
    /// End of the last digit.
    end: usize,
    /// A check character `X` right after the digits (ID numbers), with its span.
    x: Option<Range<usize>>,
    /// Whether a dot joins it to the group before.
    dotted: bool,
}

/// The digit groups of one token, in buffers reused from token to token.
#[derive(Default)]
struct Token {
    digits: Vec<Digit>,
    groups: Vec<Group>,
}

/// The byte offset of the next digit or Chinese numeral at or after `from`. A byte loop:
/// most of a Chinese text has none, and this is the only pass over it.
fn next_numeral(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            return Some(i);
        }
        if (0xE0..0xF0).contains(&b) && three_byte_char(bytes, i).is_some_and(|c| numeral(c).is_some()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The byte offset of the next ASCII or full-width digit at or after `from`.
fn next_digit(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            return Some(i);
        }
        // Full-width digits are EF BC 90..=99.
        if b == 0xEF && bytes.get(i + 1) == Some(&0xBC) && bytes.get(i + 2).is_some_and(|b| (0x90..=0x99).contains(b)) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Reads the digit groups of the token starting at the digit at `start` into `token`:
/// groups joined by at most [`MAX_GAP`] separator characters. Returns the byte where
/// reading stopped and whether the token stands alone (no letter right after it).
fn read_token(text: &str, start: usize, token: &mut Token) -> (usize, bool) {
    token.digits.clear();
    token.groups.clear();
    let mut gap = 0;
    let mut dotted = false;
    for (offset, c) in text[start..].char_indices() {
        let i = start + offset;
        if let Some(value) = numeral(c) {
            token.digits.push(Digit { at: i, value });
            let n = token.digits.len();
            match token.groups.last_mut() {
                Some(g) if gap == 0 && g.x.is_none() => {
                    g.digits.end = n;
                    g.end = i + c.len_utf8();
                }
                _ => token.groups.push(Group {
                    digits: n - 1..n,
                    end: i + c.len_utf8(),
                    x: None,
                    dotted,
                }),
            }
            gap = 0;
            dotted = false;
        } else if is_x(c) && gap == 0 && token.groups.last().is_some_and(|g| g.x.is_none()) {
            if let Some(g) = token.groups.last_mut() {
                g.x = Some(i..i + c.len_utf8());
            }
        } else if is_invisible(c) {
            // As if absent: `138\u{200B}1234` is one group.
        } else if is_separator(c) && gap < MAX_GAP {
            gap += 1;
            dotted |= is_dot(c);
        } else {
            // A letter right after the digits makes it a code (`13812345678abc`).
            return (i, !c.is_ascii_alphanumeric());
        }
    }
    (text.len(), true)
}

/// The fewest digits a number recognised as PII has: a mobile number's 11 (landlines have
/// 11 or 12, identity cards 17 and a check character, bank cards 16 to 19).
const MIN_PII_DIGITS: usize = 11;

/// The most: a bank card's 19 (a mobile with `0086` has 15, a landline with an extension
/// at most 18).
const MAX_PII_DIGITS: usize = 19;

#[cfg(test)]
thread_local! {
    /// How many runs of groups [`classify`] was asked about: the work the linear search
    /// must keep proportional to the text.
    static CLASSIFIED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn numbers_in(text: &str, kinds: &[PiiKind], orders: Option<&OrderNumber>, out: &mut Vec<PiiMatch>) {
    let mut token = Token::default();
    let mut from = 0;
    while let Some(start) = next_numeral(text.as_bytes(), from) {
        // A digit glued to a letter before it is part of a code (`SN13812345678`).
        let glued = text[..start]
            .chars()
            .next_back()
            .is_some_and(|p| p.is_ascii_alphabetic());
        let (end, alone) = read_token(text, start, &mut token);
        from = end.max(start + 1);
        // Prices, sizes and dates are the common numbers; none has the digits of a
        // phone number, the shortest PII, so the search of runs below is skipped.
        if glued || !alone || token.digits.len() < MIN_PII_DIGITS {
            continue;
        }
        // A dot before fewer than three digits is a decimal point or a date's: no number
        // goes across it.
        let mut first = 0;
        for k in 1..=token.groups.len() {
            let g = token.groups.get(k);
            if g.is_none_or(|g| g.dotted && g.digits.len() < 3) {
                runs_in(text, &token, first..k, kinds, orders, out);
                first = k;
            }
        }
    }
}

/// Tries the runs of consecutive groups `segment` of `token`, longest first from each
/// group, keeping the first PII found and going on after it. Only runs with 11 to 19
/// digits can be PII, and every group has a digit, so at most nine runs are tried from
/// each group. A run that is one of the shop's order numbers is passed over whole, before
/// any kind is tried.
fn runs_in(
    text: &str,
    token: &Token,
    segment: Range<usize>,
    kinds: &[PiiKind],
    orders: Option<&OrderNumber>,
    out: &mut Vec<PiiMatch>,
) {
    let groups = &token.groups[segment];
    let mut i = 0;
    // The last group a run from `i` can reach without too many digits; it never moves
    // back as `i` moves on.
    let mut reach = 0;
    while i < groups.len() {
        let base = groups[i].digits.start;
        let count = |j: usize| groups[j].digits.end - base;
        reach = reach.max(i);
        while reach + 1 < groups.len() && count(reach + 1) <= MAX_PII_DIGITS {
            reach += 1;
        }
        let mut found = None;
        if count(reach) <= MAX_PII_DIGITS {
            for j in (i..=reach).rev() {
                if count(j) < MIN_PII_DIGITS {
                    break;
                }
                if let Some(orders) = orders
                    && is_order_number(token, &groups[i..=j], orders)
                {
                    found = Some((j, None));
                    break;
                }
                if let Some(m) = classify(text, token, &groups[i..=j], kinds) {
                    found = Some((j, Some(m)));
                    break;
                }
            }
        }
        match found {
            Some((j, m)) => {
                out.extend(m);
                i = j + 1;
            }
            None => i += 1,
        }
    }
}

/// Whether the digits of `groups` (with no check character), read as one number, are one
/// of the shop's order numbers.
fn is_order_number(token: &Token, groups: &[Group], orders: &OrderNumber) -> bool {
    let last = &groups[groups.len() - 1];
    if last.x.is_some() {
        return false;
    }
    let mut digits = [0u8; MAX_PII_DIGITS];
    let run = &token.digits[groups[0].digits.start..last.digits.end];
    for (d, digit) in digits.iter_mut().zip(run) {
        *d = b'0' + digit.value;
    }
    std::str::from_utf8(&digits[..run.len().min(MAX_PII_DIGITS)]).is_ok_and(|s| orders.matches(s))
}

/// Whether these digit groups, read as one number, are PII of one of `kinds`.
fn classify(text: &str, token: &Token, groups: &[Group], kinds: &[PiiKind]) -> Option<PiiMatch> {
    #[cfg(test)]
    CLASSIFIED.with(|c| c.set(c.get() + 1));
    // A check character can only end the number.
    if groups[..groups.len() - 1].iter().any(|g| g.x.is_some()) {
        return None;
    }
    // Dots and blanks are not mixed in one number: in `134  0.066  0.212` the dots are
    // decimal points of numbers side by side.
    let dots = groups[1..].iter().filter(|g| g.dotted).count();
    if dots > 0 && dots < groups.len() - 1 {
        return None;
    }
    let last = &groups[groups.len() - 1];
    let digits = &token.digits[groups[0].digits.start..last.digits.end];
    if !(MIN_PII_DIGITS..=MAX_PII_DIGITS).contains(&digits.len()) {
        return None;
    }
    let mut buffer = [0u8; MAX_PII_DIGITS];
    for (v, d) in buffer.iter_mut().zip(digits) {
        *v = d.value;
    }
    let values = &buffer[..digits.len()];
    let end = last.x.as_ref().map_or(last.end, |x| x.end);
    let char_at = |at: usize| text[at..].chars().next().unwrap_or('*');

    if kinds.contains(&PiiKind::IdCard) {
        let id = match &last.x {
            Some(_) if values.len() == 17 => Some(true),
            None if values.len() == 18 => Some(false),
            _ => None,
        };
        if let Some(has_x) = id
            && id_card_valid(values, has_x)
        {
            let first = char_at(digits[0].at);
            let tail: String = if has_x {
                [char_at(digits[16].at), char_at(last.x.as_ref()?.start)]
                    .into_iter()
                    .collect()
            } else {
                [char_at(digits[16].at), char_at(digits[17].at)].into_iter().collect()
            };
            return Some(PiiMatch {
                kind: PiiKind::IdCard,
                span: digits[0].at..end,
                masked: format!("{first}{}{tail}", "*".repeat(15)),
            });
        }
    }
    if last.x.is_some() {
        return None;
    }
    if kinds.contains(&PiiKind::Phone) {
        let prefix = match values.len() {
            11 => Some(0),
            13 if values.starts_with(&[8, 6]) => Some(2),
            15 if values.starts_with(&[0, 0, 8, 6]) => Some(4),
            _ => None,
        };
        if let Some(p) = prefix
            && values[p] == 1
            && (3..=9).contains(&values[p + 1])
        {
            let number = &digits[p..];
            let head: String = number[..3].iter().map(|d| char_at(d.at)).collect();
            let tail: String = number[7..].iter().map(|d| char_at(d.at)).collect();
            return Some(PiiMatch {
                kind: PiiKind::Phone,
                span: number[0].at..end,
                masked: format!("{head}****{tail}"),
            });
        }
        if let Some((area, local)) = landline(values, groups) {
            // The area code and the last four digits stay; the rest of the local number
            // and any extension are masked.
            let start = digits[0].at;
            return Some(PiiMatch {
                kind: PiiKind::Phone,
                span: start..end,
                masked: mask_digits(&text[start..end], |k| {
                    k < area || (k >= area + local - 4 && k < area + local)
                }),
            });
        }
    }
    // A card is a card: an issuer prefix its length fits, and the Luhn check; anything
    // else is more likely an order or tracking number.
    if kinds.contains(&PiiKind::BankCard) && card_scheme(values).is_some() && luhn_valid(values) {
        let start = digits[0].at;
        let n = digits.len();
        return Some(PiiMatch {
            kind: PiiKind::BankCard,
            span: start..end,
            masked: mask_digits(&text[start..end], |k| k < 4 || k >= n - 4),
        });
    }
    None
}

/// The card scheme whose issuer prefix (IIN) and length the digits `digits` have, if
/// any. Luhn alone lets one number in ten through, order numbers included; a card also
/// starts with its scheme's prefix and has one of its lengths. The schemes of cards used
/// in China:
///
/// | scheme | prefix | digits |
/// | --- | --- | --- |
/// | UnionPay (银联) | `62`, `81` | 16-19 |
/// | Visa | `4` | 16, 19 |
/// | Mastercard | `51`-`55`, `2221`-`2720` | 16 |
/// | American Express | `34`, `37` | 15 |
/// | JCB | `3528`-`3589` | 16-19 |
/// | Discover | `6011`, `644`-`649`, `65` | 16-19 |
/// | domestic cards from before UnionPay (`9558` ICBC, `9559` ABC, `601382` BOC) | `9`, `60` | 16-19 |
pub fn card_scheme(digits: &[u8]) -> Option<&'static str> {
    let n = digits.len();
    let prefix = |k: usize| digits.iter().take(k).fold(0u32, |p, &d| p * 10 + u32::from(d));
    let long = (16..=19).contains(&n);
    let scheme = match (prefix(1), prefix(2), prefix(3), prefix(4)) {
        (_, 62 | 81, _, _) if long => "unionpay",
        (4, _, _, _) if n == 16 || n == 19 => "visa",
        (_, 51..=55, _, _) | (_, _, _, 2221..=2720) if n == 16 => "mastercard",
        (_, 34 | 37, _, _) if n == 15 => "amex",
        (_, _, _, 3528..=3589) if long => "jcb",
        (_, 65, _, _) | (_, _, 644..=649, _) | (_, _, _, 6011) if long => "discover",
        (9, _, _, _) | (_, 60, _, _) if long => "domestic",
        _ => return None,
    };
    Some(scheme)
}

/// A mainland landline, as the lengths of its area code and local number: area code `010`
/// or `02x` then 8 digits, or `0[3-9]xx` then 7 or 8; the local number does not start
/// with 0.
/// The area code is its own group or written together with the number, and an extension
/// of up to six digits may follow as a last group of its own (`010-12345678-123`).
fn landline(values: &[u8], groups: &[Group]) -> Option<(usize, usize)> {
    if values[0] != 0 {
        return None;
    }
    let area = match (values[1], values[2]) {
        (1, 0) | (2, _) => 3,
        (3..=9, _) => 4,
        _ => return None,
    };
    let lengths: &[usize] = if area == 3 { &[8] } else { &[7, 8] };
    let first = groups[0].digits.len();
    let last = groups[groups.len() - 1].digits.len();
    let valid =
        |local: usize| lengths.contains(&local) && values[area] != 0 && (first == area || first == area + local);
    let whole = values.len() - area;
    if valid(whole) {
        return Some((area, whole));
    }
    let local = whole.checked_sub(last)?;
    (groups.len() >= 2 && (1..=6).contains(&last) && valid(local)).then_some((area, local))
}

/// `number` with the digits whose index `keep` refuses replaced by `*`; separators stay,
/// invisible characters go.
fn mask_digits(number: &str, keep: impl Fn(usize) -> bool) -> String {
    let mut masked = String::with_capacity(number.len());
    let mut k = 0;
    for c in number.chars() {
        if numeral(c).is_some() {
            masked.push(if keep(k) { c } else { '*' });
            k += 1;
        } else if !is_invisible(c) {
            masked.push(c);
        }
    }
    masked
}

/// GB 11643-1999: 17 digits, then a check character from ISO 7064 MOD 11-2 (`X` for 10);
/// the birth date inside must be a date.
pub fn id_card_valid(digits: &[u8], check_is_x: bool) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [u8; 11] = [1, 0, 10, 9, 8, 7, 6, 5, 4, 3, 2];
    let expected_len = if check_is_x { 17 } else { 18 };
    if digits.len() != expected_len || !(1..=8).contains(&digits[0]) {
        return false;
    }
    let number = |range: Range<usize>| digits[range].iter().fold(0u32, |n, &d| n * 10 + u32::from(d));
    let (year, month, day) = (number(6..10), number(10..12), number(12..14));
    if !(1900..=2099).contains(&year) || !(1..=12).contains(&month) || day == 0 || day > days_in(year, month) {
        return false;
    }
    let sum: u32 = digits[..17].iter().zip(WEIGHTS).map(|(&d, w)| u32::from(d) * w).sum();
    let check = CHECK[(sum % 11) as usize];
    if check_is_x { check == 10 } else { check == digits[17] }
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The Luhn check: doubling every second digit from the right, the sum ends in 0.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// What a character (or a spelled-out word) of a text is to an email address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sym {
    /// A letter, digit or `_%+-`, folded to ASCII.
    Char(u8),
    /// A dot: written (`.`, `．`) or not (`。`, `dot`); only written ones go in the local part.
    Dot { written: bool },
    /// `@`, `＠` or a spelled-out `at`.
    At,
    /// Anything else.
    Other,
}

/// The spelled-out `at` or `dot` at the start of `rest`, with its length in bytes: the
/// word in brackets (`(at)`, `[dot]`, `（at）`, up to two blanks inside), or between blanks
/// (` at `); blanks around it are part of it. `blanks` is the length of the run of blanks
/// `rest` starts with (found by the caller, so that a long run is read once).
fn spelled(rest: &str, blanks: usize) -> Option<(Sym, usize)> {
    let word = |s: &str| -> Option<(Sym, usize)> {
        let b = s.as_bytes();
        if b.len() >= 3 && b[..3].eq_ignore_ascii_case(b"dot") {
            Some((Sym::Dot { written: false }, 3))
        } else if b.len() >= 2 && b[..2].eq_ignore_ascii_case(b"at") {
            Some((Sym::At, 2))
        } else {
            None
        }
    };
    let leading_blanks = |s: &str, max: usize| {
        s.chars()
            .take(max)
            .take_while(|&c| is_blank(c))
            .map(char::len_utf8)
            .sum::<usize>()
    };
    let bracketed = |s: &str| -> Option<(Sym, usize)> {
        let open = s
            .chars()
            .next()
            .filter(|&c| matches!(c, '(' | '[' | '{' | '<' | '（' | '【' | '［' | '｛'))?;
        let mut at = open.len_utf8();
        at += leading_blanks(&s[at..], 2);
        let (sym, len) = word(&s[at..])?;
        at += len;
        at += leading_blanks(&s[at..], 2);
        let close = s[at..]
            .chars()
            .next()
            .filter(|&c| matches!(c, ')' | ']' | '}' | '>' | '）' | '】' | '］' | '｝'))?;
        Some((sym, at + close.len_utf8()))
    };
    let after = &rest[blanks..];
    if let Some((sym, len)) = bracketed(after) {
        let trailing = leading_blanks(&after[len..], usize::MAX);
        return Some((sym, blanks + len + trailing));
    }
    if blanks == 0 {
        return None;
    }
    let (sym, len) = word(after)?;
    let trailing = leading_blanks(&after[len..], usize::MAX);
    (trailing > 0).then_some((sym, blanks + len + trailing))
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\u{3000}' | '\u{00A0}')
}

/// The email symbols of `text`, each with its byte range. One pass: a run of blanks is
/// looked at once, as a whole.
fn email_symbols(text: &str) -> Vec<(Sym, Range<usize>)> {
    let mut syms = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let blanks = rest.find(|c: char| !is_blank(c)).unwrap_or(rest.len());
        if let Some((sym, len)) = spelled(rest, blanks) {
            syms.push((sym, i..i + len));
            i += len;
            continue;
        }
        if blanks > 0 {
            syms.push((Sym::Other, i..i + blanks));
            i += blanks;
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        let sym = match c {
            '@' | '＠' => Sym::At,
            '.' | '．' => Sym::Dot { written: true },
            '。' | '｡' => Sym::Dot { written: false },
            _ => {
                // Full-width ASCII (U+FF01..=U+FF5E) reads as ASCII.
                let a = match c as u32 {
                    0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                    _ => c,
                };
                if a.is_ascii_alphanumeric() || matches!(a, '_' | '%' | '+' | '-') {
                    Sym::Char(a as u8)
                } else {
                    Sym::Other
                }
            }
        };
        syms.push((sym, i..i + c.len_utf8()));
        i += c.len_utf8();
    }
    syms
}

fn emails_in(text: &str, out: &mut Vec<PiiMatch>) {
    let syms = email_symbols(text);
    let is_local = |s: Sym| matches!(s, Sym::Char(_) | Sym::Dot { written: true });
    let is_domain =
        |s: Sym| matches!(s, Sym::Char(c) if c.is_ascii_alphanumeric() || c == b'-') || matches!(s, Sym::Dot { .. });
    // Each symbol is read by at most the `@` before it (as domain) and the one after it
    // (as local part): linear.
    for (a, (_, at_span)) in syms.iter().enumerate().filter(|(_, (s, _))| *s == Sym::At) {
        let mut first = a;
        while first > 0 && is_local(syms[first - 1].0) {
            first -= 1;
        }
        let mut end = a + 1;
        while end < syms.len() && is_domain(syms[end].0) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > a + 1 && matches!(syms[end - 1].0, Sym::Dot { .. } | Sym::Char(b'-')) {
            end -= 1;
        }
        let local = &syms[first..a];
        let domain = &syms[a + 1..end];
        let labels: Vec<&[(Sym, Range<usize>)]> = domain.split(|(s, _)| matches!(s, Sym::Dot { .. })).collect();
        let tld = labels.last().copied().unwrap_or(&[]);
        let ok = !local.is_empty()
            && local[0].0 != (Sym::Dot { written: true })
            && labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && l[0].0 != Sym::Char(b'-') && l[l.len() - 1].0 != Sym::Char(b'-'))
            && tld.len() >= 2
            && tld
                .iter()
                .all(|(s, _)| matches!(s, Sym::Char(c) if c.is_ascii_alphabetic()));
        if ok {
            let start = local[0].1.start;
            let domain = domain[0].1.start..domain[domain.len() - 1].1.end;
            let first = text[start..].chars().next().unwrap_or('*');
            out.push(PiiMatch {
                kind: PiiKind::Email,
                span: start..domain.end,
                masked: format!("{first}***{}{}", &text[at_span.clone()], &text[domain]),
            });
        }
    }
}

/// Characters an address clause is made of; anything else (punctuation, blanks) ends it.
fn is_address_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '#' | '－' | '＃' | '(' | ')' | '（' | '）')
}

/// Words ending in 区/县 that are places inside a district, not districts.
const NOT_DISTRICTS: [char; 12] = ['小', '社', '园', '校', '景', '街', '专', '分', '地', '山', '郊', '矿'];

/// What a street part of an address contains.
const STREET_MARKERS: [char; 18] = [
    '路', '街', '道', '巷', '弄', '号', '村', '镇', '乡', '栋', '幢', '楼', '室', '苑', '园', '厦', '座', '层',
];

/// Addresses worth masking carry a house number, so only clauses with a digit are read
/// (found by the same byte loop as numbers), each once.
fn addresses_in(text: &str, out: &mut Vec<PiiMatch>) {
    let mut from = 0;
    while let Some(digit_at) = next_digit(text.as_bytes(), from) {
        let start = text[..digit_at]
            .char_indices()
            .rev()
            .find(|&(_, c)| !is_address_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = digit_at
            + text[digit_at..]
                .char_indices()
                .find(|&(_, c)| !is_address_char(c))
                .map_or(text.len() - digit_at, |(i, _)| i);
        from = end.max(digit_at + 1);
        let clause = &text[start..end];
        if !clause.contains(['区', '县', '旗', '市']) {
            continue;
        }
        let chars: Vec<(usize, char)> = clause.char_indices().map(|(i, c)| (start + i, c)).collect();
        if let Some(found) = address_in_clause(text, &chars) {
            out.push(found);
        }
    }
}

/// Masks what follows the district (区/县/旗; else the city, 市) in one clause, when what
/// follows looks like a street address.
fn address_in_clause(text: &str, clause: &[(usize, char)]) -> Option<PiiMatch> {
    // A district needs a street marker somewhere after it: before the last one. Found once,
    // so that a clause of districts (`区区区…`) is read in one pass, not once per district.
    let last_street = clause.iter().rposition(|&(_, c)| STREET_MARKERS.contains(&c))?;
    let anchor = |markers: &[char]| {
        clause.iter().enumerate().position(|(k, &(_, c))| {
            markers.contains(&c)
                && k > 0
                && k < last_street
                && is_cjk(clause[k - 1].1)
                && !(c == '区' && NOT_DISTRICTS.contains(&clause[k - 1].1))
        })
    };
    let k = anchor(&['区', '县', '旗']).or_else(|| anchor(&['市']))?;
    let tail = &clause[k + 1..];
    if tail.len() < 2 || !tail.iter().any(|&(_, c)| digit(c).is_some()) {
        return None;
    }
    let start = tail[0].0;
    let (last_at, last) = tail[tail.len() - 1];
    let end = last_at + last.len_utf8();
    Some(PiiMatch {
        kind: PiiKind::Address,
        span: start..end,
        masked: "*".repeat(text[start..end].chars().count()),
    })
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x2_0000..=0x3_134F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(text: &str, kind: PiiKind) -> Vec<String> {
        find(text, &[kind]).into_iter().map(|m| m.masked).collect()
    }

    #[test]
    fn id_checksum_and_date() {
        // 11010519491231002X is the standard's own example.
        let d: Vec<u8> = "11010519491231002".bytes().map(|b| b - b'0').collect();
        assert!(id_card_valid(&d, true));
        let mut wrong = d.clone();
        wrong[16] = 3;
        assert!(!id_card_valid(&wrong, true));
    }

    #[test]
    fn luhn() {
        let d: Vec<u8> = "79927398713".bytes().map(|b| b - b'0').collect();
        assert!(luhn_valid(&d));
        let d: Vec<u8> = "79927398710".bytes().map(|b| b - b'0').collect();
        assert!(!luhn_valid(&d));
    }

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn card_schemes_need_their_prefix_and_length() {
        assert_eq!(card_scheme(&digits("6222021234563257")), Some("unionpay"));
        assert_eq!(card_scheme(&digits("6217001234567890122")), Some("unionpay"));
        assert_eq!(card_scheme(&digits("4111111111111111")), Some("visa"));
        assert_eq!(card_scheme(&digits("411111111111111118")), None);
        assert_eq!(card_scheme(&digits("5412345678901232")), Some("mastercard"));
        assert_eq!(card_scheme(&digits("2720000000000005")), Some("mastercard"));
        assert_eq!(card_scheme(&digits("2721000000000004")), None);
        assert_eq!(card_scheme(&digits("378282246310005")), Some("amex"));
        assert_eq!(card_scheme(&digits("3530111333300000")), Some("jcb"));
        assert_eq!(card_scheme(&digits("202611021234567898")), None);
        assert_eq!(card_scheme(&digits("888888888888888883")), None);
    }

    #[test]
    fn a_declared_order_number_wins_over_personal_data() {
        let all = &crate::safety::PiiKind::ALL;
        let orders = OrderNumber::new(r"\d{18}").unwrap();
        // 18 digits with UnionPay's prefix that pass Luhn: a card, unless the shop says
        // its order numbers look so.
        let order = "622202123456789012";
        assert!(luhn_valid(&digits(order)));
        let text = format!("订单{order}到哪了");
        assert_eq!(find(&text, all)[0].kind, PiiKind::BankCard);
        assert!(find_with(&text, all, Some(&orders)).is_empty());
        assert_eq!(redact_with(&text, all, Some(&orders)), text);
        // In groups too: the digits are what the pattern reads.
        assert!(find_with("订单 622202 123456 789012", all, Some(&orders)).is_empty());
        // A real 16-digit UnionPay card is still masked, and so is a phone number.
        assert_eq!(
            redact_with("卡号6222021234563257，电话13812345678", all, Some(&orders)),
            "卡号6222********3257，电话138****5678"
        );
        // The pattern matches whole numbers only.
        let twelve = OrderNumber::new(r"\d{12}").unwrap();
        assert_eq!(
            redact_with("卡号6222021234563257", all, Some(&twelve)),
            "卡号6222********3257"
        );
    }

    #[test]
    fn the_census_counts_both_widths_of_digit_and_at_sign() {
        let census = Census::of("电话１３８ 12，邮箱ａ＠ｂ");
        assert_eq!((census.digits, census.at_sign), (5, true));
        let census = Census::of("x@y 价格");
        assert_eq!((census.digits, census.at_sign), (0, true));
        // `＜` (EF BC 9C) and `，` (EF BC 8C) are not digits; `Ｐ` (EF BC B0) is no `＠`.
        let census = Census::of("＜，Ｐ");
        assert_eq!((census.digits, census.at_sign), (0, false));
        // Full-width digits alone reach a phone number.
        assert_eq!(
            masked("电话１３８１２３４５６７８", PiiKind::Phone),
            ["１３８****５６７８"]
        );
        // Full-width letters read as ASCII too (they were missed before).
        assert_eq!(masked("邮箱ｚｈａｎｇ＠qq.com", PiiKind::Email), ["ｚ***＠qq.com"]);
        // Chinese numerals count as digits of numbers, not of house numbers.
        let census = Census::of("幺三八一二三四五六七八");
        assert_eq!((census.digits, census.numerals), (0, 11));
        // `at` inside a word is no spelled-out `@`; standing alone it is.
        assert!(!Census::of("that data").at_sign);
        assert!(Census::of("a AT b").at_sign && Census::of("a(at)b").at_sign);
        assert_eq!(masked("邮箱zhang＠qq.com", PiiKind::Email), ["z***＠qq.com"]);
    }

    #[test]
    fn numbers_next_to_other_numbers() {
        assert_eq!(masked("电话13812345678 2件", PiiKind::Phone), ["138****5678"]);
        assert_eq!(masked("SN13812345678", PiiKind::Phone), Vec::<String>::new());
    }

    #[test]
    fn stable_until_holds_a_trailing_number() {
        let text = "我的电话是138 1234";
        assert_eq!(&text[stable_until(text)..], "138 1234");
        let text = "寄到北京市朝阳区建国路";
        assert_eq!(stable_until(text), 0);
        let text = "好的，谢谢。";
        assert_eq!(stable_until(text), text.len());
        // A spelled-out address or Chinese numerals may still grow.
        let text = "邮箱 zhangsan(at)example(dot)";
        assert_eq!(&text[stable_until(text)..], " zhangsan(at)example(dot)");
        let text = "电话一三八一二";
        assert_eq!(&text[stable_until(text)..], "一三八一二");
    }

    fn all(text: &str) -> Vec<(PiiKind, String)> {
        find(text, &PiiKind::ALL)
            .into_iter()
            .map(|m| (m.kind, m.masked))
            .collect()
    }

    #[test]
    fn phone_split_by_dots_is_masked() {
        assert_eq!(masked("电话138.1234.5678", PiiKind::Phone), ["138****5678"]);
        assert_eq!(
            masked("电话１３８．１２３４．５６７８", PiiKind::Phone),
            ["１３８****５６７８"]
        );
    }

    #[test]
    fn phone_split_by_zero_width_spaces_is_masked() {
        for sep in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}'] {
            let text: String = "13812345678".chars().flat_map(|c| [c, sep]).collect();
            let found = find(&text, &[PiiKind::Phone]);
            assert_eq!(found.len(), 1, "{sep:?}");
            assert_eq!(found[0].masked, "138****5678");
            assert_eq!(&text[found[0].span.end..], sep.to_string());
        }
    }

    #[test]
    fn phone_split_by_four_spaces_is_masked() {
        assert_eq!(masked("电话 138    1234    5678 谢谢", PiiKind::Phone), ["138****5678"]);
        assert_eq!(masked("138 - 1234 - 5678", PiiKind::Phone), ["138****5678"]);
        assert_eq!(
            masked("1\t3\t8\t1\t2\t3\t4\t5\t6\t7\t8", PiiKind::Phone),
            ["138****5678"]
        );
        // Wider gaps are columns: numbers side by side.
        assert!(masked("138     1234     5678", PiiKind::Phone).is_empty());
    }

    #[test]
    fn phone_in_chinese_numerals_is_masked() {
        assert_eq!(
            masked("我电话一三八一二三四五六七八", PiiKind::Phone),
            ["一三八****五六七八"]
        );
        assert_eq!(
            masked("幺三八 幺二三四 五六七〇", PiiKind::Phone),
            ["幺三八****五六七〇"]
        );
        assert_eq!(masked("一八六零零零零一二三四", PiiKind::Phone), ["一八六****一二三四"]);
        assert_eq!(masked("壹叁捌壹贰叁肆伍陆柒捌", PiiKind::Phone), ["壹叁捌****伍陆柒捌"]);
        assert_eq!(masked("138一二三四5678", PiiKind::Phone), ["138****5678"]);
        // Numerals in ordinary words are too few to be a number.
        assert!(all("一五一十地说，三三两两，九九八十一难，第一二三四名").is_empty());
    }

    #[test]
    fn email_with_full_width_at_and_dot_is_masked() {
        assert_eq!(
            masked("邮箱zhangsan@example．com", PiiKind::Email),
            ["z***@example．com"]
        );
        assert_eq!(
            masked("邮箱zhangsan＠example．com。", PiiKind::Email),
            ["z***＠example．com"]
        );
        assert_eq!(masked("zhangsan@example。com", PiiKind::Email), ["z***@example。com"]);
    }

    #[test]
    fn email_with_spelled_out_at_and_dot_is_masked() {
        let cases = [
            ("邮箱 zhangsan at example dot com 谢谢", "z*** at example dot com"),
            ("zhangsan(at)example(dot)com", "z***(at)example(dot)com"),
            ("zhangsan[at]example[dot]com", "z***[at]example[dot]com"),
            ("zhangsan AT example.com", "z*** AT example.com"),
            ("zhangsan（at）example（dot）com", "z***（at）example（dot）com"),
            ("zhangsan (at) example (dot) com", "z*** (at) example (dot) com"),
            ("ｚｈａｎｇｓａｎ［at］example．com", "ｚ***［at］example．com"),
        ];
        for (text, mask) in cases {
            assert_eq!(masked(text, PiiKind::Email), [mask], "{text}");
        }
        // `at` in a sentence without a domain after it is no address.
        assert!(masked("I am at home, what about that", PiiKind::Email).is_empty());
        assert!(masked("look at this dot", PiiKind::Email).is_empty());
    }

    #[test]
    fn landlines_are_masked() {
        let cases = [
            ("座机010-12345678", "010-****5678"),
            ("0755-1234567", "0755-***4567"),
            ("0755-12345678", "0755-****5678"),
            ("(021)12345678", "021)****5678"),
            ("（021）1234 5678", "021）**** 5678"),
            ("010-12345678-123", "010-****5678-***"),
            ("02112345678", "021****5678"),
            ("0571 8888 1234", "0571 **** 1234"),
        ];
        for (text, mask) in cases {
            assert_eq!(masked(text, PiiKind::Phone), [mask], "{text}");
        }
        // Area codes that do not exist, a local number starting with 0, too many digits.
        for text in ["011-12345678", "010-02345678", "0755-1234567890", "0123-4567890"] {
            assert!(masked(text, PiiKind::Phone).is_empty(), "{text}");
        }
    }

    #[test]
    fn prices_dates_order_numbers_and_sizes_are_not_masked() {
        let texts = [
            "139.00 59.00 89.00 三件一共287.00元",
            "价格 1380.50 元，优惠 138.00 元，共 1242.50",
            "2026.11.02 13:00 下单，2026-11-05 12:30 到货",
            "订单号 202611020001 和 202610180002",
            "订单202611080004，运单号 SF1234567890123",
            "尺码 165/88A 170/92A，数量 2 件，3 条",
            "1.5 2.5 3.5 4.5 5.5 6.5 7.5",
            "版本 10.0.19041.1234",
            "第1 2 3 4 5 6 7 8 9 10 11名",
            "all    21    134     0.066     0.212      1512",
            "flow 2 0.173 0.134 0.212 0.212 0.212",
        ];
        for text in texts {
            assert!(all(text).is_empty(), "{text}: {:?}", all(text));
        }
    }

    #[test]
    fn digits_and_dashes_are_linear() {
        // `1-` a thousand times was cubic: every run of groups was read whole.
        for (text, groups) in [
            ("1-".repeat(4000), 4000),
            ("1 ".repeat(4000), 4000),
            ("1.234".repeat(2000), 4000),
        ] {
            CLASSIFIED.with(|c| c.set(0));
            assert!(find(&text, &PiiKind::ALL).is_empty());
            let tried = CLASSIFIED.with(|c| c.get());
            assert!(tried <= 9 * groups, "{tried} runs tried for {groups} groups");
        }
        // Digits between separators still make numbers inside a long run.
        let text = "1-".repeat(3000) + "138 1234 5678";
        assert_eq!(masked(&text, PiiKind::Phone).len(), 1);
    }

    #[test]
    fn long_hostile_texts_finish() {
        // Each was quadratic or worse; here they only have to end.
        let texts = [
            "1".repeat(200_000),
            "@".repeat(200_000),
            "a.".repeat(100_000) + "@" + "b.".repeat(100_000).as_str(),
            "a at b dot ".repeat(20_000),
            "(at)".repeat(50_000),
            " ".repeat(100_000) + "at",
            "区".repeat(100_000) + "1",
            "北京市朝阳区".repeat(20_000) + "1号",
            "一 ".repeat(100_000),
            "1 -.2\u{200B}".repeat(40_000),
        ];
        for text in &texts {
            find(text, &PiiKind::ALL);
            stable_until(text);
        }
        assert_eq!(all(&("区".repeat(1000) + "建国路88号")).len(), 1);
    }

    #[test]
    fn the_census_table_holds_exactly_the_characters_it_counts() {
        for code in 0x0800u32..=0xFFFF {
            let Some(c) = char::from_u32(code) else { continue };
            let counted = c == '＠' || numeral(c).is_some();
            let listed = NOTABLE[code as usize >> 6] & (1 << (code & 63)) != 0;
            assert_eq!(listed, counted, "{c} (U+{code:04X})");
        }
    }
}
