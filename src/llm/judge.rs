//! The judge: whether a model answer may be shown to the customer.
//!
//! A small model's token probabilities say how sure it was of each word, not whether the
//! answer makes sense: it is often very sure while it copies the customer's question back,
//! stops mid-sentence or recites its instructions. So the judge checks what a person
//! reading the answer would reject first, and only then turns the probabilities into a
//! confidence ([`judge`]). The same checks that can be decided early also run on the
//! stream ([`Watch`]), so that a generation that is clearly going to be withheld (an echo,
//! a loop, prompt markup, another language) is stopped in its first tokens instead of
//! running out its time.
//!
//! The rules were set on a labelled set of real model answers (tests/data/judge/, scored by
//! tests/judge.rs): none of the bad answers there may pass.

use super::{Finish, Generation, prompt};
use crate::nlu::Lang;

/// What an answer is judged against.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The customer's message.
    pub message: &'a str,
    /// The persona and fixed instructions ([`prompt::instructions`]): an answer may not
    /// recite them.
    pub instructions: &'a str,
    /// What the shop told the model (the system message: policies, promotions, passages):
    /// numbers in an answer are checked against it.
    pub facts: &'a str,
    /// The language the answer must be in, when the shop serves several (the turn's);
    /// `None`: the message's own language decides, Chinese or English.
    pub language: Option<Lang>,
}

/// The verdict on a model answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Judgement {
    /// The answer's confidence, 0 when it is invalid.
    pub confidence: f64,
    /// Why it is invalid, if it is.
    pub problem: Option<String>,
}

/// Judges a model answer: what a person would reject ([`problem`]), then the token
/// probabilities, the weakest token pulling the confidence down (one wild token is often a
/// made-up fact).
pub fn judge(generation: &Generation, context: &Context<'_>) -> Judgement {
    let problem = problem(&generation.text, generation.finish, context);
    let confidence = if problem.is_some() {
        0.0
    } else {
        0.8 * generation.mean_prob + 0.2 * generation.min_prob
    };
    Judgement { confidence, problem }
}

/// Why a whole answer that ended for `finish` may not be shown, if it may not.
pub fn problem(answer: &str, finish: Finish, context: &Context<'_>) -> Option<String> {
    let text = answer.trim();
    if text.is_empty() {
        return Some("empty answer".into());
    }
    if let Some(p) = early_problem(text, context) {
        return Some(p);
    }
    if core(text).len() < core(context.message).len().min(SHORTEST_ANSWER) {
        return Some("the answer is too short to answer anything".into());
    }
    if restates(text, context.message) {
        return Some("the answer restates the customer's message".into());
    }
    if finish == Finish::Length && !ends_a_sentence(text) {
        return Some("the answer is cut off mid-sentence".into());
    }
    if !ends_a_sentence(text) {
        return Some("the answer stops mid-sentence".into());
    }
    if let Some(number) = unfounded_number(text, context) {
        return Some(format!("the answer says {number}, which the shop's policies do not"));
    }
    None
}

/// An answer this many characters long (not counting punctuation) can answer a question;
/// a shorter one only a shorter question (`在吗` → `在的`).
const SHORTEST_ANSWER: usize = 6;

/// Problems that text shows as soon as it is written, so the stream can be stopped on them:
/// broken characters, a loop, markup, the prompt recited, the question echoed, another
/// language. `text` is what was generated so far (or all of it).
fn early_problem(text: &str, context: &Context<'_>) -> Option<String> {
    if text.contains('\u{FFFD}') {
        return Some("replacement characters in the answer".into());
    }
    if repeats(text) {
        return Some("the answer repeats itself".into());
    }
    if prompt::has_markup(text) || has_tag(text) {
        return Some("the answer contains prompt markup".into());
    }
    if recites(text, context.instructions) {
        return Some("the answer recites the instructions".into());
    }
    if prompt::HEADINGS.iter().any(|h| text.contains(h)) {
        return Some("the answer recites the prompt".into());
    }
    if echoes(text, context.message) {
        return Some("the answer echoes the customer's message".into());
    }
    wrong_language(text, context.message, context.language)
}

/// Watches a generation as it streams and says when to stop it: as soon as what was
/// written already makes the answer one the judge will withhold.
#[derive(Debug)]
pub struct Watch<'a> {
    context: Context<'a>,
    text: String,
    /// Characters generated when the checks last ran.
    checked: usize,
}

impl<'a> Watch<'a> {
    /// A watch over an answer to `context`.
    pub fn new(context: Context<'a>) -> Self {
        Watch {
            context,
            text: String::new(),
            checked: 0,
        }
    }

    /// Takes the next piece of the answer; `Some(problem)` when the generation should stop.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        self.text.push_str(piece);
        let chars = self.text.chars().count();
        // Checks run every few characters: a token is often part of one.
        if chars < self.checked + 2 {
            return None;
        }
        self.checked = chars;
        let text = self.text.trim_start();
        let problem = early_problem(text, &self.context)?;
        // The language is only clear once there is enough text to tell.
        if problem.starts_with("the question is") && chars < LANGUAGE_AFTER {
            return None;
        }
        Some(problem)
    }
}

/// Characters of an answer before its language is judged on the stream.
const LANGUAGE_AFTER: usize = 12;

/// The letters and digits of `text`, lower-cased: what is left to compare when
/// punctuation, blanks and emoji are dropped.
fn core(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `text` opens by copying the customer's message: the longest start of the
/// answer found as it is in the message covers at least 70% of the message. A person never
/// answers by repeating the question; a small model does when it does not know the answer,
/// and what follows is rarely better.
fn echoes(text: &str, message: &str) -> bool {
    let asked = core(message);
    // `好的` → `好的亲，…`: a short message is echoed only when nothing else is said,
    // which `restates` sees.
    if asked.len() < 4 {
        return false;
    }
    let answer = core(text);
    let copied = (1..=answer.len().min(asked.len()))
        .rev()
        .find(|&n| asked.windows(n).any(|w| w == &answer[..n]))
        .unwrap_or(0);
    copied >= 2 && copied * 10 >= asked.len() * 7
}

/// Whether an answer to `message` is in another language: Chinese asked, something else
/// answered (or mostly something else), or the other way round. With the turn's
/// `language` known, it is what the answer must be in: a Chinese answer to an English
/// turn is as wrong as an English one to a Chinese turn, whatever the last message was
/// ("ok" in an English conversation).
fn wrong_language(text: &str, message: &str, language: Option<Lang>) -> Option<String> {
    let (cjk, latin) = scripts(text);
    match language {
        Some(Lang::ZH) => {
            if cjk == 0 || latin > 2 * cjk + 8 {
                return Some("the question is in Chinese but the answer is not".into());
            }
            return None;
        }
        // A Latin-script language: a few Chinese characters (a product's name) may be
        // quoted, but not the answer written in them.
        Some(lang) if lang.as_str() != "ja" && lang.as_str() != "ko" => {
            if cjk > 0 && cjk * 3 > latin {
                return Some(format!("the question is in {lang} but the answer is not"));
            }
            return None;
        }
        _ => {}
    }
    let (asked_cjk, asked_latin) = scripts(message);
    if asked_cjk > 0 && (cjk == 0 || latin > 2 * cjk + 8) {
        return Some("the question is in Chinese but the answer is not".into());
    }
    if asked_cjk == 0 && asked_latin >= 8 && cjk > latin {
        return Some("the question is in English but the answer is not".into());
    }
    None
}

/// Han characters and Latin letters in `text`.
fn scripts(text: &str) -> (usize, usize) {
    text.chars().fold((0, 0), |(cjk, latin), c| {
        if is_cjk(c) {
            (cjk + 1, latin)
        } else if c.is_ascii_alphabetic() {
            (cjk, latin + 1)
        } else {
            (cjk, latin)
        }
    })
}

fn is_cjk(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c) || ('\u{3400}'..='\u{4DBF}').contains(&c)
}

/// Whether `text` contains something shaped like a markup tag, `<客户活动>` or `</x>`: a
/// model that lost track of its prompt invents tags like the prompt's own fences.
fn has_tag(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().any(|(i, &c)| {
        matches!(c, '<' | '＜')
            && chars[i + 1..]
                .iter()
                .take(12)
                .position(|&c| matches!(c, '>' | '＞'))
                .is_some_and(|end| {
                    let inside = &chars[i + 1..i + 1 + end];
                    let name = inside.strip_prefix(&['/']).unwrap_or(inside);
                    !name.is_empty() && name.iter().all(|c| c.is_alphanumeric() || *c == '_' || *c == '|')
                })
    })
}

/// Whether `text` ends as a finished sentence does: with punctuation that ends one, a
/// closing quote or bracket, a sentence-final particle (`哦`, `呢`, `啦`...), `亲`, a tilde
/// or an emoji. A capable model ends its answers so; one that stops on `在`, `点击` or a
/// comma stopped in the middle (`你可以在`).
fn ends_a_sentence(text: &str) -> bool {
    text.chars().last().is_some_and(|c| {
        matches!(
            c,
            '。' | '！' | '？' | '!' | '?' | '.' | '~' | '～' | '…' | '」' | '』' | '”' | '）' | ')' | '"' | '♪'
        ) || "哦呢啦呀吧哈嘛的了啊噢哟喔亲".contains(c)
            || (c as u32) >= 0x1F300
    })
}

/// Whether the answer only says the customer's message again: its longest common
/// subsequence with the message covers 70% of the message, and it adds at most two
/// characters of its own (`可以视频看看实物吗` → `你可以视频看实物吗？`). `我可以帮您订机票`
/// to `帮我订机票` says something of its own.
fn restates(text: &str, message: &str) -> bool {
    let asked = core(message);
    let answer = core(text);
    if asked.len() < 2 || answer.len() > asked.len() + 2 {
        return false;
    }
    let common = lcs(&answer, &asked);
    common * 10 >= asked.len() * 7 && answer.len() - common <= 2
}

/// The length of the longest common subsequence of `a` and `b`.
fn lcs(a: &[char], b: &[char]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diagonal = 0;
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A number with a unit in the answer (`30天`, `20元`) that the shop's facts contradict or
/// do not give: the facts give numbers of that unit but not this one, or the fact sentence
/// the answer's sentence is about gives another one (`签收7天内的质量问题可以换新` when the
/// policy says `质量问题签收15天内可换新`). Prices and discounts (`元`, `折`) must come from
/// the facts or the message; other units the facts never mention cannot be checked
/// (`100%纯棉` is a product's make-up, not a discount).
fn unfounded_number(text: &str, context: &Context<'_>) -> Option<String> {
    if context.facts.is_empty() {
        return None;
    }
    let known = quantities(context.facts);
    let asked = quantities(context.message);
    let fact_clauses: Vec<(&str, Vec<Quantity>)> = clauses(context.facts).map(|c| (c, quantities(c))).collect();
    for clause in clauses(text) {
        for q in quantities(clause) {
            let said = |k: &Quantity| k.unit == q.unit && k.value == q.value;
            if asked.iter().any(said) {
                continue;
            }
            let strict = matches!(q.unit, "元" | "折");
            if (strict || known.iter().any(|k| k.unit == q.unit)) && !known.iter().any(said) {
                return Some(q.written);
            }
            // The fact sentence most like this one, when it is clearly the same topic.
            let best = fact_clauses
                .iter()
                .filter(|(_, qs)| qs.iter().any(|k| k.unit == q.unit))
                .map(|(c, qs)| (shared_bigrams(clause, c), qs))
                .max_by_key(|(shared, _)| *shared);
            if let Some((shared, qs)) = best
                && shared >= 3
                && !qs.iter().any(said)
            {
                return Some(q.written);
            }
        }
    }
    None
}

/// The clauses of `text`: what lies between commas, stops and line breaks.
fn clauses(text: &str) -> impl Iterator<Item = &str> {
    text.split(['，', ',', '。', '；', ';', '！', '？', '\n'])
        .filter(|c| !c.trim().is_empty())
}

/// How many distinct pairs of adjacent Han characters `a` and `b` share.
fn shared_bigrams(a: &str, b: &str) -> usize {
    let pairs = |t: &str| {
        let chars: Vec<char> = t.chars().filter(|c| is_cjk(*c)).collect();
        let mut out: Vec<(char, char)> = chars.windows(2).map(|w| (w[0], w[1])).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    let b = pairs(b);
    pairs(a).iter().filter(|p| b.binary_search(p).is_ok()).count()
}

/// A number and the unit written after it.
#[derive(Debug, PartialEq)]
struct Quantity {
    value: u64,
    unit: &'static str,
    written: String,
}

/// Units whose numbers are policy: days, hours, money, months and years, percentages and
/// discounts. Longer spellings first (`个工作日` before `日`).
const UNITS: [(&str, &str); 12] = [
    ("个工作日", "天"),
    ("工作日", "天"),
    ("天", "天"),
    ("日", "天"),
    ("小时", "小时"),
    ("元", "元"),
    ("块", "元"),
    ("个月", "月"),
    ("年", "年"),
    ("%", "%"),
    ("％", "%"),
    ("折", "折"),
];

/// Every number followed by a unit of [`UNITS`] in `text`, in Arabic or Chinese numerals
/// (`7天`, `七天`, `三十天`, `1-3个工作日` gives 1 and 3).
fn quantities(text: &str) -> Vec<Quantity> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chinese_digit(chars[i]).is_some()) {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let number: String = chars[start..i].iter().collect();
        // `满 49 元`: a blank may stand between the number and its unit.
        let unit_at = i + chars[i..].iter().take_while(|c| **c == ' ').count();
        let rest: String = chars[unit_at..chars.len().min(unit_at + 4)].iter().collect();
        let Some(value) = parse_number(&number) else { continue };
        if let Some((written, unit)) = UNITS.iter().find(|(w, _)| rest.starts_with(w)) {
            out.push(Quantity {
                value,
                unit,
                written: format!("{number}{written}"),
            });
            // `1-3个工作日`: the first number of a range takes the unit of the second.
            if let Some(first) = range_start(&chars[..start]) {
                out.push(Quantity {
                    value: first,
                    unit,
                    written: format!("{first}{written}"),
                });
            }
        }
    }
    out
}

/// The number before a `-`, `~` or `至` that ends `before`, as in `1-3天`.
fn range_start(before: &[char]) -> Option<u64> {
    let (&dash, rest) = before.split_last()?;
    if !matches!(dash, '-' | '~' | '～' | '至' | '到' | '—') {
        return None;
    }
    let digits = rest.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    rest[rest.len() - digits..].iter().collect::<String>().parse().ok()
}

fn chinese_digit(c: char) -> Option<u64> {
    "零一二三四五六七八九"
        .chars()
        .position(|d| d == c)
        .map(|d| d as u64)
        .or(match c {
            '两' => Some(2),
            '十' => Some(10),
            '百' => Some(100),
            _ => None,
        })
}

/// `30`, `三十`, `十五`, `两` as a number.
fn parse_number(text: &str) -> Option<u64> {
    if text.chars().all(|c| c.is_ascii_digit()) {
        return text.parse().ok();
    }
    let mut total = 0;
    let mut digit = None;
    for c in text.chars() {
        match chinese_digit(c)? {
            n @ (10 | 100) => {
                total += digit.take().unwrap_or(1) * n;
            }
            n => digit = Some(n),
        }
    }
    Some(total + digit.unwrap_or(0))
}

/// Whether `text` recites the prompt's instructions rather than answering: half or more
/// of its 4-character windows are copied from the fixed instructions (`只依据下面的政策…`),
/// or it addresses itself as the prompt does (`你是…的客服…`) and is mostly copied from the
/// persona. Small models, lost, recite their system prompt; saying who it is in its own
/// words (`我是…的客服小极`) is an answer to `你叫什么名字`.
fn recites(text: &str, instructions: &str) -> bool {
    let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if chars.len() < 8 || instructions.is_empty() {
        return false;
    }
    let copied_from = |source: &str| {
        let windows = chars.len() - 3;
        let copied = (0..windows)
            .filter(|&i| source.contains(&chars[i..i + 4].iter().collect::<String>()))
            .count();
        copied * 2 >= windows
    };
    let addressed = text.trim_start_matches(['亲', '，', ',', ' ']).starts_with("你是");
    // The fixed part is the same for every shop: made once, not on every check of a stream.
    static FIXED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    copied_from(FIXED.get_or_init(|| prompt::instructions(""))) || (addressed && copied_from(instructions))
}

/// Whether some run of 4+ characters occurs 4 or more times back to back: the signature
/// of a decoding loop.
fn repeats(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    for len in 4..=chars.len() / 4 {
        for start in 0..chars.len().saturating_sub(4 * len - 1) {
            let unit = &chars[start..start + len];
            if (1..4).all(|k| &chars[start + k * len..start + (k + 1) * len] == unit) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(text: &str, p: f64) -> Generation {
        Generation {
            text: text.into(),
            mean_prob: p,
            min_prob: p,
            ..Generation::default()
        }
    }

    fn verdict(answer: &str, message: &str) -> Option<String> {
        let context = Context {
            language: None,
            message,
            instructions: "你是客服小暖。",
            facts: "签收7天内可无理由退货；质量问题签收15天内可换新；满49元包邮；退款1-3个工作日到账；双12满99减10。",
        };
        judge(&generation(answer, 0.9), &context).problem
    }

    #[test]
    fn empty_looping_and_wrong_language_answers_are_withheld() {
        assert_eq!(verdict("  ", "你好").as_deref(), Some("empty answer"));
        assert!(verdict("好的好的好的好的好的好的好的好的好的好的", "你好").is_some());
        assert!(verdict("Sure, here you go.", "尺码怎么选").is_some());
        assert!(verdict("Sure, here you go, 亲", "尺码怎么选").is_some());
        assert!(verdict("亲，耳机续航大约6小时哦。", "How long does the battery last?").is_some());
        let ok = judge(
            &generation("建议选L码。", 0.9),
            &Context {
                language: None,
                message: "尺码怎么选",
                instructions: "你是客服小暖。",
                facts: "",
            },
        );
        assert_eq!(ok.problem, None);
        assert!((ok.confidence - 0.9).abs() < 1e-9);
    }

    #[test]
    fn echoes_and_fragments_are_withheld() {
        assert!(verdict("你是机器人吗？", "你是机器人吗").is_some());
        assert!(verdict("有什么优惠吗？", "有什么优惠吗").is_some());
        assert!(verdict("你可以在", "有什么优惠吗").is_some());
        assert!(verdict("有的什么！", "有什么优惠吗").is_some());
        assert!(verdict("充电宝能带上飞机吗？\n</客户活动>", "你们家充电宝能带上飞机吗").is_some());
        assert!(verdict("亲，您可以在订单详情里，", "怎么退货").is_some());
        assert!(verdict("亲，您可以在订单详情页点击", "怎么退货").is_some());
        assert!(verdict("你可以视频看实物吗？", "可以视频看看实物吗").is_some());
        assert_eq!(verdict("我可以帮您订机票。", "帮我订机票"), None);
        // Opening with the question is an echo even when an answer follows: it is what
        // small models do when lost, and what lets the stream be stopped early.
        assert!(verdict("能开发票吗？可以的亲，下单后在订单详情里申请就可以～", "能开发票吗").is_some());
        // A short answer to a short question is fine.
        assert_eq!(verdict("在的亲～", "在吗"), None);
        assert_eq!(verdict("不客气～", "谢谢"), None);
        assert_eq!(verdict("好的亲，还有其他问题随时找我～", "好的"), None);
        assert!(verdict("在吗？", "在吗").is_some());
        // Cut off by the token limit without ending the sentence.
        let cut = Generation {
            finish: Finish::Length,
            ..generation("亲，签收7天内包装完好可以无理由退货，您在订单详情页面点击", 0.9)
        };
        let context = Context {
            language: None,
            message: "怎么退货",
            ..Context::default()
        };
        assert_eq!(
            judge(&cut, &context).problem.as_deref(),
            Some("the answer is cut off mid-sentence")
        );
    }

    #[test]
    fn numbers_the_policies_do_not_give_are_withheld() {
        assert_eq!(verdict("亲，签收7天内可以无理由退货哦～", "能退吗"), None);
        assert_eq!(verdict("亲，签收七天内可以无理由退货哦～", "能退吗"), None);
        assert_eq!(verdict("退款1-3个工作日原路退回。", "退款多久到"), None);
        assert!(verdict("亲，签收30天内可以无理由退货哦～", "能退吗").is_some());
        assert!(verdict("满99元包邮哦亲～", "包邮吗").is_some());
        // A unit the facts never mention cannot be checked.
        assert_eq!(verdict("耳机续航大约6小时哦～", "续航多久"), None);
        // Both numbers are in the policy, but the sentence about quality problems says 15.
        assert!(verdict("亲，签收7天内的质量问题可以换新哦。", "质量问题怎么办").is_some());
        assert_eq!(verdict("亲，签收15天内的质量问题可以换新哦。", "质量问题怎么办"), None);
        // A discount the shop never offered.
        assert!(verdict("亲，双12全场五折！", "双12有活动吗").is_some());
        // The customer's own number may be repeated.
        assert_eq!(
            verdict("亲，买了10天了的话已经过了无理由退货期哦。", "买了10天能退吗"),
            None
        );
    }

    #[test]
    fn recitals_and_markup_are_withheld() {
        let system = "你是「暖途」旗舰店的客服小暖，说话亲切、简洁，只依据店铺政策回答。";
        let context = Context {
            language: None,
            message: "在吗",
            instructions: system,
            facts: system,
        };
        let recited = judge(
            &generation("你是「暖途」旗舰店的客服小暖，说话亲切、简洁", 0.9),
            &context,
        );
        assert_eq!(recited.problem.as_deref(), Some("the answer recites the instructions"));
        let tagged = judge(&generation("<客户消息>\n在吗\n</客户消息>", 0.9), &context);
        assert_eq!(tagged.problem.as_deref(), Some("the answer contains prompt markup"));
        let named = judge(&generation("亲，我是「暖途」旗舰店的客服小暖～", 0.9), &context);
        assert_eq!(named.problem, None, "saying who it is in its own words");
        let fine = judge(
            &generation("您好，我是客服小暖，羽绒服支持七天无理由退货哦。", 0.9),
            &context,
        );
        assert_eq!(fine.problem, None);
    }

    #[test]
    fn the_watch_stops_an_echo_and_a_loop_early_and_lets_a_good_answer_run() {
        let context = Context {
            language: None,
            message: "你是机器人吗",
            ..Context::default()
        };
        let mut watch = Watch::new(context);
        let stopped = ["你是", "机器", "人吗", "？", "我是"]
            .iter()
            .position(|p| watch.push(p).is_some());
        assert_eq!(stopped, Some(2), "stopped once the whole question was copied");

        let mut watch = Watch::new(Context {
            language: None,
            message: "在吗",
            ..Context::default()
        });
        let looped = (0..40).position(|_| watch.push("好的亲").is_some());
        assert!(looped.is_some_and(|at| at < 8), "{looped:?}");

        let mut watch = Watch::new(Context {
            language: None,
            message: "耳机防水吗",
            ..Context::default()
        });
        for piece in [
            "亲，", "这款", "耳机", "支持", "IPX4", "级防", "水，", "日常", "出汗", "没问", "题～",
        ] {
            assert_eq!(watch.push(piece), None, "{piece}");
        }
        let mut watch = Watch::new(Context {
            language: None,
            message: "耳机防水吗",
            ..Context::default()
        });
        let english = ["Yes", ", the", " earphones", " are", " water", "proof."]
            .iter()
            .position(|p| watch.push(p).is_some());
        assert!(english.is_some(), "English to a Chinese question is stopped");
    }

    #[test]
    fn quantities_are_read_in_both_numeral_systems() {
        let q = quantities("签收七天内，满 49 元包邮，退款1-3个工作日，十五天换新，两年保修");
        let pairs: Vec<(u64, &str)> = q.iter().map(|q| (q.value, q.unit)).collect();
        assert_eq!(
            pairs,
            [(7, "天"), (49, "元"), (3, "天"), (1, "天"), (15, "天"), (2, "年")]
        );
    }

    #[test]
    fn the_turns_language_is_expected_both_ways() {
        let en = Some(Lang::EN);
        let zh = Some(Lang::ZH);
        let english = "Our T-shirts are pre-shrunk, so they won't shrink much.";
        let chinese = "我们的T恤经过预缩处理，正常洗涤不会明显缩水。";
        // "ok" in an English conversation: the turn's language decides, not the message.
        assert_eq!(wrong_language(english, "ok", en), None);
        assert!(wrong_language(chinese, "ok", en).is_some());
        assert!(wrong_language(english, "ok", zh).is_some());
        assert_eq!(wrong_language(chinese, "ok", zh), None);
        // A product's Chinese name inside an English answer is fine.
        assert_eq!(
            wrong_language("The 纯棉T恤 is 100% cotton, soft and breathable.", "fabric?", en),
            None
        );
        // Without a language, the message decides, as before.
        assert!(wrong_language(chinese, "Does this T-shirt shrink after washing?", None).is_some());
    }
}
