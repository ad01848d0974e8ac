//! Personal data: mainland mobile numbers, resident ID numbers, bank cards, emails and
//! street addresses, found in the original text and masked so that a useful part stays
//! (`138****5678`, `5***************1X`, `6222 **** **** 3256`, `z***@example.com`,
//! `北京市朝阳区******`).
//!
//! Numbers are read as digit groups: ASCII or full-width digits, groups joined by short
//! runs of blanks or dashes (`138 1234 5678`, `１３８-１２３４-５６７８`, `+86 138...`).
//! Every run of consecutive groups is tried, longest first, so a number next to another
//! one (`13812345678 2件`) is still found. Numbers are validated, not just counted: ID
//! numbers by their GB 11643 check character and birth date, bank cards by Luhn, phones
//! by the `1[3-9]` prefix. The validators are a few lines each; no crate does them better.
//!
//! Addresses: a clause with a district (区/县/旗, else a city 市) followed by a street part
//! with a house number (`建国路88号`) has everything after the district masked.

use std::ops::Range;

use super::PiiKind;

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

/// Finds the personal data of `kinds` in `text`, in order, without overlaps.
pub fn find(text: &str, kinds: &[PiiKind]) -> Vec<PiiMatch> {
    let mut found = Vec::new();
    if kinds.is_empty() {
        return found;
    }
    // Every message and every reply is searched, and most have nothing to find: one
    // cheap pass rules out each kind the text cannot contain before the detailed reads.
    let census = Census::of(text);
    let numbers = [PiiKind::Phone, PiiKind::IdCard, PiiKind::BankCard];
    if census.digits >= MIN_PII_DIGITS && numbers.iter().any(|k| kinds.contains(k)) {
        numbers_in(text, kinds, &mut found);
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
        if is_token_char(c) || is_separator(c) {
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

/// Characters that may be part of a number or an email.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '@' | '_' | '%' | '+' | '-' | '＋' | '＠' | 'Ｘ' | 'ｘ' | '０'..='９'
        )
}

/// Blanks and dashes that may join digit groups.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '\u{3000}' | '\u{00A0}' | '－' | '‐' | '‑' | '–' | '—')
}

/// The value of an ASCII or full-width digit.
fn digit(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '０'..='９' => Some((c as u32 - '０' as u32) as u8),
        _ => None,
    }
}

/// What one pass over the bytes tells about a text: enough to skip the kinds of personal
/// data it cannot hold.
struct Census {
    /// ASCII and full-width digits in the whole text.
    digits: usize,
    /// Whether it has `@` or `＠` (an email needs one).
    at_sign: bool,
}

impl Census {
    fn of(text: &str) -> Census {
        let bytes = text.as_bytes();
        // ASCII first: one pass without branches.
        let mut digits = bytes.iter().map(|b| usize::from(b.is_ascii_digit())).sum::<usize>();
        let mut at_sign = bytes.contains(&b'@');
        // Full-width digits are EF BC 90..=99 and `＠` is EF BC A0; 0xBC also occurs
        // inside other characters, so the byte before it is checked too.
        for (i, _) in bytes.iter().enumerate().skip(1).filter(|&(_, &b)| b == 0xBC) {
            if bytes[i - 1] == 0xEF {
                match bytes.get(i + 1) {
                    Some(0x90..=0x99) => digits += 1,
                    Some(0xA0) => at_sign = true,
                    _ => {}
                }
            }
        }
        Census { digits, at_sign }
    }
}

/// A run of digits in the text, with where each digit is.
struct Group {
    /// (byte offset, value) of each digit.
    digits: Vec<(usize, u8)>,
    /// End of the last digit.
    end: usize,
    /// A check character `X` right after the digits (ID numbers), with its span.
    x: Option<Range<usize>>,
}

/// The byte offset of the next ASCII or full-width digit at or after `from`. A byte loop:
/// most of a Chinese text has no digit, and this is the only pass over it.
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

/// Reads the digit groups of the token starting at the digit at `start`: groups joined
/// by at most three separator characters. Returns the groups, the byte where reading
/// stopped, and whether the token stands alone (no letter right after it).
fn token(text: &str, start: usize) -> (Vec<Group>, usize, bool) {
    let mut groups: Vec<Group> = Vec::new();
    let mut gap = 0;
    for (offset, c) in text[start..].char_indices() {
        let i = start + offset;
        if let Some(d) = digit(c) {
            match groups.last_mut() {
                Some(g) if gap == 0 && g.x.is_none() => {
                    g.digits.push((i, d));
                    g.end = i + c.len_utf8();
                }
                _ => groups.push(Group {
                    digits: vec![(i, d)],
                    end: i + c.len_utf8(),
                    x: None,
                }),
            }
            gap = 0;
        } else if matches!(c, 'X' | 'x' | 'Ｘ' | 'ｘ') && gap == 0 && groups.last().is_some_and(|g| g.x.is_none()) {
            if let Some(g) = groups.last_mut() {
                g.x = Some(i..i + c.len_utf8());
            }
        } else if is_separator(c) && gap < 3 {
            gap += 1;
        } else {
            // A letter right after the digits makes it a code (`13812345678abc`).
            return (groups, i, !c.is_ascii_alphanumeric());
        }
    }
    (groups, text.len(), true)
}

/// The fewest digits a number recognised as PII has: a mobile number's 11 (identity
/// cards have 17 and a check character, bank cards 16 to 19).
const MIN_PII_DIGITS: usize = 11;

fn numbers_in(text: &str, kinds: &[PiiKind], out: &mut Vec<PiiMatch>) {
    let mut from = 0;
    while let Some(start) = next_digit(text.as_bytes(), from) {
        // A digit glued to a letter before it is part of a code (`SN13812345678`).
        let glued = text[..start]
            .chars()
            .next_back()
            .is_some_and(|p| p.is_ascii_alphabetic());
        let (groups, end, alone) = token(text, start);
        from = end.max(start + 1);
        // Prices, sizes and dates are the common numbers; none has the digits of a
        // phone number, the shortest PII, so the search of sub-runs below (which
        // allocates) is skipped for them.
        if glued || !alone || groups.iter().map(|g| g.digits.len()).sum::<usize>() < MIN_PII_DIGITS {
            continue;
        }
        let mut i = 0;
        while i < groups.len() {
            // Longest run of groups from `i` that is some kind of PII.
            let found = (i..groups.len())
                .rev()
                .find_map(|j| classify(text, &groups[i..=j], kinds).map(|m| (j, m)));
            match found {
                Some((j, m)) => {
                    out.push(m);
                    i = j + 1;
                }
                None => i += 1,
            }
        }
    }
}

/// Whether these digit groups, read as one number, are PII of one of `kinds`.
fn classify(text: &str, groups: &[Group], kinds: &[PiiKind]) -> Option<PiiMatch> {
    // A check character can only end the number.
    if groups[..groups.len() - 1].iter().any(|g| g.x.is_some()) {
        return None;
    }
    if groups.iter().map(|g| g.digits.len()).sum::<usize>() < MIN_PII_DIGITS {
        return None;
    }
    let digits: Vec<(usize, u8)> = groups.iter().flat_map(|g| g.digits.iter().copied()).collect();
    let values: Vec<u8> = digits.iter().map(|&(_, d)| d).collect();
    let last = &groups[groups.len() - 1];
    let end = last.x.as_ref().map_or(last.end, |x| x.end);
    let char_at = |at: usize| text[at..].chars().next().unwrap_or('*');

    if kinds.contains(&PiiKind::IdCard) {
        let id = match &last.x {
            Some(_) if values.len() == 17 => Some(true),
            None if values.len() == 18 => Some(false),
            _ => None,
        };
        if let Some(has_x) = id
            && id_card_valid(&values, has_x)
        {
            let first = char_at(digits[0].0);
            let tail: String = if has_x {
                [char_at(digits[16].0), char_at(last.x.as_ref()?.start)]
                    .into_iter()
                    .collect()
            } else {
                [char_at(digits[16].0), char_at(digits[17].0)].into_iter().collect()
            };
            return Some(PiiMatch {
                kind: PiiKind::IdCard,
                span: digits[0].0..end,
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
            let head: String = number[..3].iter().map(|&(at, _)| char_at(at)).collect();
            let tail: String = number[7..].iter().map(|&(at, _)| char_at(at)).collect();
            return Some(PiiMatch {
                kind: PiiKind::Phone,
                span: number[0].0..end,
                masked: format!("{head}****{tail}"),
            });
        }
    }
    if kinds.contains(&PiiKind::BankCard) && (16..=19).contains(&values.len()) && luhn_valid(&values) {
        // Card numbers start with 3-6 (international schemes, UnionPay `62`) or 9
        // (older domestic cards); anything else is more likely an order number.
        if matches!(values[0], 3..=6 | 9) {
            let start = digits[0].0;
            let n = digits.len();
            let mut masked = String::new();
            let mut k = 0;
            for c in text[start..end].chars() {
                if digit(c).is_some() {
                    masked.push(if k < 4 || k >= n - 4 { c } else { '*' });
                    k += 1;
                } else {
                    masked.push(c);
                }
            }
            return Some(PiiMatch {
                kind: PiiKind::BankCard,
                span: start..end,
                masked,
            });
        }
    }
    None
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

fn emails_in(text: &str, out: &mut Vec<PiiMatch>) {
    let is_local = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    let is_domain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    for (at, c) in text.char_indices().filter(|&(_, c)| c == '@' || c == '＠') {
        let start = text[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_local(c))
            .last()
            .map_or(at, |(i, _)| i);
        let after = at + c.len_utf8();
        let mut end = after
            + text[after..]
                .char_indices()
                .find(|&(_, c)| !is_domain(c))
                .map_or(text.len() - after, |(i, _)| i);
        // A sentence may end right after the address.
        while end > after && matches!(text.as_bytes()[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let local = &text[start..at];
        let domain = &text[after..end];
        let labels: Vec<&str> = domain.split('.').collect();
        let tld = labels.last().copied().unwrap_or("");
        let ok = !local.is_empty()
            && !local.starts_with('.')
            && labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
            && tld.len() >= 2
            && tld.bytes().all(|b| b.is_ascii_alphabetic());
        if ok {
            let first = local.chars().next().unwrap_or('*');
            out.push(PiiMatch {
                kind: PiiKind::Email,
                span: start..end,
                masked: format!("{first}***{c}{domain}"),
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
    let anchor = |markers: &[char]| {
        clause.iter().enumerate().position(|(k, &(_, c))| {
            markers.contains(&c)
                && k > 0
                && is_cjk(clause[k - 1].1)
                && !(c == '区' && NOT_DISTRICTS.contains(&clause[k - 1].1))
                && clause[k + 1..].iter().any(|&(_, t)| STREET_MARKERS.contains(&t))
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
        assert_eq!(masked("邮箱ｚｈａｎｇ＠qq.com", PiiKind::Email).len(), 0);
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
    }
}
