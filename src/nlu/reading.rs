//! Reading a short reply against what kefu last asked.
//!
//! A customer answers "是的", "可以", "没有了", "第二个" or "蓝色的" to a question of
//! kefu's; on its own such a message means nothing an intent classifier can use, and it
//! must never fire an unrelated rule. This module reads such replies as what they are: a
//! yes, a no, an option picked, a goodbye, an acknowledgement, thanks, or `Other` (anything
//! the turn should understand the usual way). It is pure: it knows what kefu asked
//! ([`Pending`], derived from kefu's reply text by [`pending_of`]) and the message, nothing
//! else.
//!
//! # How a reply is read
//!
//! The message is folded as the rest of `nlu` folds it (full width, case: [`fold_char`]);
//! punctuation, whitespace and emoji go (a `？`/`?` is remembered: a question is never a
//! yes or a no), Latin words keep one space between them. The rest is cut greedily into the
//! longest known reply words (a few hundred, Chinese and English, with the spellings
//! customers type: 恩 for 嗯, 是滴, 好滴, 木有, 没得, 对头, 中, 3q …), each of a [`Word`]
//! kind: an assertion (是, 对, 有), an agreement (好, 可以, 行, ok), a hum (嗯, 哦), a
//! refusal (不要, 不用, 算了), a correction (不对, 不是), "nothing more" (没有了, 就这些), a
//! goodbye, thanks, an acknowledgement (知道了, 收到), or a particle (啊, 呀, 的, 亲 …).
//!
//! **Conservative by construction.** One character the lexicon does not know ("好 急", "好贵",
//! "是的 但是我要换个地址"), a question (a question mark, 吗/么/咩, A-not-A such as 是不是 or
//! 要不要, 是吧/对吧), a condition (如果, 要是, 的话, 除非) or both a yes and a no word ("是的不对",
//! "好…不要了") make the message `Other`: the turn answers it as a message and, in a
//! confirmation, asks again. A wrong "yes" submits a ticket the customer did not want; a
//! missed one costs one more question.
//!
//! **What kefu asked decides the rest** ([`read`]): "嗯" is a yes to a yes/no question and an
//! acknowledgement otherwise; "没有了" is a no to a yes/no question and a goodbye after "还有
//! 其他可以帮您的吗？", where "是的/有" mean there is something else; ordinals and option
//! words pick an option only when options were offered.
//!
//! **取消 is no yes/no answer.** To "确认提交保修申请吗？" it means no, to "确认要取消订单吗？"
//! yes, and [`Pending::YesNo`] does not carry the question's words; so a message holding
//! 取消/cancel reads as `Other` after a yes/no question (the turn asks again), and as a no
//! or a goodbye after a choice or "anything else?".
//!
//! # Options
//!
//! For `Pending::Choice`, each option is folded and compared with the message: the whole
//! option ("蓝色"), its core (what is left when the options' common prefix and suffix go:
//! "颜色"/"尺码" of "换颜色"/"换尺码", "黑"/"白" of "黑色"/"白色"), or, for Chinese, characters
//! only that option has ("灰" for "浅灰色", "码" for "换尺码"). An option preceded by a
//! negation (不要黑色) is not picked. Exactly one option must be named; what else the message
//! says must be particles, agreement or picking words (要, 选, 换成, 那个 …), else it is
//! `Other`. Ordinals (第二个, 第2种, 2, B, 后面那个, 最后一个, the second one) pick by position.
//!
//! Nothing here allocates more than the folded message (and, for a choice, the folded
//! options); the word table is built once per process.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::features::fold_char;

/// What kefu asked in its last reply, as far as reading the customer's next message needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pending<'a> {
    #[default]
    /// kefu asked nothing (or this is the first message).
    Nothing,
    /// A yes-or-no question ("需要帮您查一下物流吗？", "确认提交保修申请吗？", a flow's confirm step).
    YesNo,
    /// "还有其他可以帮您的吗？" and its variants: asking whether the customer needs anything else.
    AnythingElse,
    /// A question offering these options ("黑色、白色还是灰色？", "换颜色还是换尺码？").
    Choice(&'a [String]),
    /// An open question (a flow asking for an order number, "请问是什么问题呢？").
    Open,
}

/// The owned form of [`Pending`], which a session stores between turns.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// kefu asked nothing.
    #[default]
    Nothing,
    /// A yes-or-no question.
    YesNo,
    /// Whether the customer needs anything else.
    AnythingElse,
    /// A question offering these options, as kefu wrote them.
    Choice(Vec<String>),
    /// An open question.
    Open,
}

impl PendingKind {
    /// The borrowed form [`read`] takes.
    pub fn as_pending(&self) -> Pending<'_> {
        match self {
            PendingKind::Nothing => Pending::Nothing,
            PendingKind::YesNo => Pending::YesNo,
            PendingKind::AnythingElse => Pending::AnythingElse,
            PendingKind::Choice(options) => Pending::Choice(options),
            PendingKind::Open => Pending::Open,
        }
    }

    /// The kind's name as scripts see it in `session.asked`: `""` when nothing was asked.
    pub fn name(&self) -> &'static str {
        match self {
            PendingKind::Nothing => "",
            PendingKind::YesNo => "yes_no",
            PendingKind::AnythingElse => "anything_else",
            PendingKind::Choice(_) => "choice",
            PendingKind::Open => "open",
        }
    }
}

/// How a message reads as a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A clear yes (是的, 对, 好的呀, 嗯嗯 to a yes/no question, 可以, 没问题, 行, ok, yes, sure).
    Yes,
    /// A clear no (不是, 不要, 算了, 不用了, 取消, no, nope).
    No,
    /// The index (0-based) of the option picked from a `Pending::Choice` ("第二个", "蓝色的", "后面那个", "换尺码").
    Choice(usize),
    /// Nothing more is needed / goodbye (没有了, 木有了, 没了, 不用了谢谢 after AnythingElse, 拜拜, 再见, bye).
    Bye,
    /// An acknowledgement with nothing asked (嗯, 恩, 哦, 好, 好的, 知道了, ok, 收到).
    Ack,
    /// Thanks (谢谢, 多谢, 感谢, thx, thank you) — rules for thanks should still answer these.
    Thanks,
    /// Anything else: a question (是不是要我自己寄回去？, 对不对啊, 要不要…), a condition
    /// (如果…的话), an unclear or mixed reply (好 急 = "very urgent", 是…不是…), or a real message.
    Other,
}

impl Reading {
    /// The reading's name as scripts see it in `reading`: `""` for [`Reading::Other`],
    /// and no option index.
    pub fn name(self) -> &'static str {
        match self {
            Reading::Yes => "yes",
            Reading::No => "no",
            Reading::Choice(_) => "choice",
            Reading::Bye => "bye",
            Reading::Ack => "ack",
            Reading::Thanks => "thanks",
            Reading::Other => "",
        }
    }

    /// Whether this is a short reply that answers kefu's question (or acknowledges) and
    /// carries no intent of its own. Thanks are not: a thank-you rule answers them.
    pub fn is_short_reply(self) -> bool {
        matches!(
            self,
            Reading::Yes | Reading::No | Reading::Choice(_) | Reading::Bye | Reading::Ack
        )
    }

    /// The reading as the labelled data writes it: `yes`, `no`, `choice:N`, `bye`, `ack`,
    /// `thanks`, `other`.
    pub fn label(self) -> String {
        match self {
            Reading::Yes => "yes".into(),
            Reading::No => "no".into(),
            Reading::Choice(i) => format!("choice:{i}"),
            Reading::Bye => "bye".into(),
            Reading::Ack => "ack".into(),
            Reading::Thanks => "thanks".into(),
            Reading::Other => "other".into(),
        }
    }
}

/// The kind of a reply word. Public so that tests and tools can show why a message read as
/// it did ([`words`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// States a fact: 是, 对, 有, 还有, 要, 需要, 确认, yes. A yes; after "anything else?",
    /// "there is something else".
    Assert,
    /// Agrees: 好, 好的, 可以, 行, 没问题, ok, sure. A yes to a yes/no question, an
    /// acknowledgement otherwise.
    Agree,
    /// A hum: 嗯, 恩, 哦, 额. Like `Agree`, but it may also lead a no ("嗯，不用了").
    Hum,
    /// Refuses or denies: 不, 不要, 不用, 不需要, 算了, 取消, 没有, no.
    Refuse,
    /// Corrects: 不对, 不是, 错了, wrong. A no to a yes/no question, nothing else.
    Wrong,
    /// Nothing more: 没有了, 没了, 就这些, 没事了, that's all.
    Done,
    /// Goodbye: 拜拜, 再见, 88, bye.
    Bye,
    /// Thanks and polite closings: 谢谢, 多谢, 麻烦了, 辛苦了, thx, thank you.
    Thanks,
    /// Acknowledges without agreeing: 知道了, 明白, 收到, 了解, got it.
    Ack,
    /// A particle or filler that changes nothing: 啊, 呀, 哈, 呢, 吧, 的, 啦, 了, 亲, 我, 那就.
    Particle,
    /// A verb that only makes sense after a refusal: 不**换**了, 别**转**了.
    Verb,
    /// A word for picking an option (要, 选, 换成, 那个, 这款); meaningless outside a choice.
    Pick,
    /// An ordinal: 1-based position, or [`LAST`] / [`MIDDLE`].
    Ordinal(i8),
    /// Marks a question (吗, 么, 咩, 是否) or a condition (如果, 要是, 的话, 除非, 但是).
    Question,
    /// Anything the lexicon does not know.
    Unknown,
}

/// [`Word::Ordinal`] for the last option (最后一个, 后面那个, 后者).
pub const LAST: i8 = -1;
/// [`Word::Ordinal`] for the middle one of an odd number of options (中间那个).
pub const MIDDLE: i8 = 0;

/// Messages longer than this (in characters, after folding) are never short replies.
const MAX_REPLY_CHARS: usize = 48;

/// Reads `message` (already safety-masked) as a reply to what kefu asked.
pub fn read(message: &str, pending: Pending<'_>) -> Reading {
    let Some(text) = Normal::new(message) else {
        return Reading::Other;
    };
    if let Pending::Choice(options) = pending
        && let Some(i) = pick(&text, options)
    {
        return Reading::Choice(i);
    }
    let seen = Seen::of(&text);
    seen.reading(pending)
}

/// A clear yes (`Some(true)`), a clear no (`Some(false)`) or neither (`None`):
/// `read(message, Pending::YesNo)` reduced to yes/no. Used by the built-in `yes_no` entity.
pub fn yes_no(message: &str) -> Option<bool> {
    match read(message, Pending::YesNo) {
        Reading::Yes => Some(true),
        Reading::No => Some(false),
        _ => None,
    }
}

/// The reply words of `message` as [`read`] cuts them (for tests and tools that explain a
/// reading); `None` when the message is too long to be a short reply.
pub fn words(message: &str) -> Option<Vec<(String, Word)>> {
    let text = Normal::new(message)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.chars.len() {
        let (len, word) = next_word(&text.chars, at);
        out.push((text.chars[at..at + len].iter().collect(), word));
        at += len;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------

/// A message folded for reading: CJK characters, Latin words, digits and `*` (a safety
/// mask) kept; every run of anything else (punctuation, whitespace, emoji) one space.
struct Normal {
    chars: Vec<char>,
    /// A `？`/`?` was seen.
    question: bool,
}

impl Normal {
    fn new(message: &str) -> Option<Self> {
        let mut chars = Vec::with_capacity(message.len().min(MAX_REPLY_CHARS * 2));
        let mut question = false;
        let mut gap = false;
        for c in message.chars() {
            let c = match fold_char(c) {
                '’' | '‘' | '`' => '\'',
                c => c,
            };
            let keep = c.is_ascii_alphanumeric() || c == '\'' || c == '*' || is_cjk(c);
            if !keep {
                if matches!(c, '?' | '¿' | '⁇') {
                    question = true;
                }
                gap = true;
                continue;
            }
            if c == '\'' && !chars.last().is_some_and(|p: &char| p.is_ascii_alphanumeric()) {
                gap = true;
                continue;
            }
            // A gap (punctuation, space, emoji) between two kept characters stays as one
            // space: it ends a clause ("不换了，退货吧") and separates Latin words.
            if gap && chars.last().is_some_and(|p: &char| *p != ' ') {
                chars.push(' ');
            }
            gap = false;
            chars.push(c);
            if chars.len() > MAX_REPLY_CHARS {
                return None;
            }
        }
        Some(Normal { chars, question })
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

fn latin(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '\''
}

// ---------------------------------------------------------------------------------------
// The lexicon
// ---------------------------------------------------------------------------------------

const ASSERT: &[&str] = &[
    "是",
    "是的",
    "是滴",
    "是哒",
    "是呀",
    "是啊",
    "对",
    "对的",
    "对滴",
    "对哒",
    "对头",
    "对呀",
    "没错",
    "没错的",
    "有",
    "有的",
    "有滴",
    "还有",
    "要",
    "要的",
    "需要",
    "会",
    "能",
    "确认",
    "确定",
    "当然",
    "当然了",
    "肯定",
    "肯定的",
    "必须",
    "必须的",
    "那必须",
    "正确",
    "就是",
    "就是的",
    "对对",
    "是是",
    "yes",
    "yeah",
    "yep",
    "yup",
    "ya",
    "yea",
    "ye",
    "yes please",
    "y",
    "correct",
    "right",
    "exactly",
    "absolutely",
    "definitely",
    "indeed",
    "affirmative",
    "确认无误",
    "确认提交",
    "提交吧",
    "提交",
];

const AGREE: &[&str] = &[
    "好",
    "好的",
    "好滴",
    "好哒",
    "好嘞",
    "好咧",
    "好勒",
    "好呀",
    "好啊",
    "好好",
    "好der",
    "可以",
    "可以的",
    "可以滴",
    "可以呀",
    "可",
    "行",
    "行的",
    "行啊",
    "中",
    "妥",
    "妥了",
    "妥妥的",
    "没问题",
    "木问题",
    "没毛病",
    "同意",
    "要得",
    "得嘞",
    "ok",
    "okay",
    "okk",
    "okok",
    "oki",
    "okie",
    "k",
    "kk",
    "sure",
    "of course",
    "fine",
    "alright",
    "all right",
    "sounds good",
    "go ahead",
    "please do",
    "please",
    "yes sure",
    "ok sure",
    "why not",
    "no problem",
    "np",
    "agreed",
    "great",
    "good",
    "perfect",
    "cool",
];

const HUM: &[&str] = &[
    "嗯", "恩", "嗯嗯", "恩恩", "嗯呢", "恩呢", "嗯那", "嗯哼", "哦", "噢", "喔", "额", "呃", "唔", "哦哦", "噢噢",
    "en", "um", "uh", "hmm", "mm", "oh",
];

const REFUSE: &[&str] = &[
    "不",
    "不要",
    "不用",
    "不需要",
    "不必",
    "不行",
    "不可以",
    "不会",
    "不能",
    "不好",
    "不了",
    "不想",
    "不确认",
    "不同意",
    "不提交",
    "不用麻烦了",
    "不麻烦了",
    "不劳烦了",
    "算了",
    "算啦",
    "算",
    "取消",
    "取消吧",
    "别",
    "没有",
    "没",
    "木有",
    "没得",
    "没呢",
    "还没",
    "还没有",
    "免了",
    "拉倒",
    "没必要",
    "都不要",
    "都不用",
    "先不用",
    "暂时不用",
    "先不要",
    "暂时不要",
    "暂不",
    "先不",
    "不需要了",
    "无需",
    "否",
    "no",
    "nope",
    "nah",
    "n",
    "cancel",
    "not now",
    "no thanks",
    "no thank you",
    "no need",
    "not needed",
    "never mind",
    "nevermind",
    "dont",
    "don't",
    "no way",
    "not really",
    "not yet",
    "stop",
];

const WRONG: &[&str] = &[
    "不是",
    "不是的",
    "不是滴",
    "不对",
    "不对的",
    "错",
    "错了",
    "不正确",
    "wrong",
    "incorrect",
    "not right",
    "that's wrong",
    "thats wrong",
];

const DONE: &[&str] = &[
    "没有了",
    "没了",
    "木有了",
    "木了",
    "没得了",
    "没啦",
    "没有啦",
    "木有啦",
    "就这些",
    "就这些了",
    "就这样",
    "就这样吧",
    "没事了",
    "没事啦",
    "没事",
    "暂时没有",
    "暂时没有了",
    "暂时没了",
    "没其他的了",
    "没其他了",
    "没别的了",
    "没有其他了",
    "没有别的了",
    "没有其他的了",
    "没其他问题了",
    "没有其他问题了",
    "没什么了",
    "没啥了",
    "没什么事了",
    "没啥事了",
    "没有问题了",
    "没什么",
    "没啥",
    "其他没有了",
    "别的没有了",
    "暂时就这些",
    "先这样",
    "先这样吧",
    "that's all",
    "thats all",
    "that's it",
    "thats it",
    "nothing else",
    "nothing",
    "all good",
    "i'm good",
    "im good",
    "i'm fine",
    "nothing more",
    "no more",
    "that is all",
    "all set",
];

const BYE: &[&str] = &[
    "拜拜",
    "拜",
    "白白",
    "拜拜了",
    "再见",
    "回见",
    "88",
    "886",
    "bye",
    "byebye",
    "bye bye",
    "goodbye",
    "good bye",
    "see you",
    "see ya",
    "cya",
];

const THANKS: &[&str] = &[
    "谢谢",
    "谢谢你",
    "谢谢您",
    "谢谢亲",
    "谢谢啦",
    "谢谢了",
    "多谢",
    "多谢了",
    "多谢啦",
    "感谢",
    "感谢你",
    "感谢您",
    "非常感谢",
    "太感谢了",
    "谢了",
    "谢啦",
    "谢谢客服",
    "谢谢小姐姐",
    "谢谢小哥哥",
    "3q",
    "3ku",
    "thx",
    "thanks",
    "thank you",
    "thank u",
    "ty",
    "thanks a lot",
    "many thanks",
    "thank you so much",
    "thanks so much",
    "麻烦了",
    "麻烦你了",
    "麻烦您了",
    "麻烦啦",
    "辛苦了",
    "辛苦啦",
    "辛苦你了",
    "辛苦您了",
    "有劳了",
    "谢谢谢谢",
    "蟹蟹",
    "谢",
];

const ACK: &[&str] = &[
    "知道",
    "知道了",
    "知道啦",
    "明白",
    "明白了",
    "明白啦",
    "了解",
    "了解了",
    "懂了",
    "懂",
    "收到",
    "收到了",
    "收到啦",
    "晓得",
    "晓得了",
    "哈哈",
    "哈哈哈",
    "呵呵",
    "嘻嘻",
    "i see",
    "got it",
    "noted",
    "understood",
    "i know",
    "gotcha",
    "roger",
];

const PARTICLE: &[&str] = &[
    "本人",
    "啊",
    "呀",
    "哈",
    "呢",
    "吧",
    "的",
    "啦",
    "嘛",
    "了",
    "滴",
    "哒",
    "呐",
    "哟",
    "呗",
    "咯",
    "嘞",
    "哇",
    "耶",
    "亲",
    "亲亲",
    "我",
    "那",
    "那就",
    "就",
    "先",
    "暂时",
    "还是",
    "这个",
    "der",
    "da",
    "la",
    "lah",
    "ah",
    "ha",
    "la",
    "then",
    "um",
    "well",
    "just",
    "yeah yeah",
    "客服",
    "小姐姐",
    "老板",
    "掌柜",
];

const VERB: &[&str] = &[
    "换", "退", "退款", "退货", "换货", "发货", "买", "查", "转", "改", "寄", "等", "申请", "提交", "帮", "麻烦",
    "处理", "弄", "办", "催",
];

const PICK: &[&str] = &[
    "要",
    "选",
    "换",
    "换成",
    "换个",
    "改成",
    "改",
    "那个",
    "这个",
    "那款",
    "这款",
    "这种",
    "那种",
    "个",
    "款",
    "种",
    "用",
    "拿",
    "来",
    "给我",
    "帮我",
    "发",
    "一个",
    "一件",
    "想要",
    "想",
    "选择",
    "吧",
    "码",
    "号",
    "色",
    "换一下",
    "一下",
    "改一下",
    "i'll take",
    "i want",
    "take",
    "want",
    "pick",
    "choose",
    "the",
    "one",
    "option",
];

const QUESTION: &[&str] = &[
    "吗",
    "么",
    "咩",
    "是否",
    "如果",
    "要是",
    "的话",
    "除非",
    "假如",
    "假设",
    "万一",
    "但是",
    "但",
    "可是",
    "不过",
    "只要",
    "不然",
    "否则",
    "难道",
    "是不是",
    "对不对",
    "要不要",
    "能不能",
    "可不可以",
    "好不好",
    "行不行",
    "有没有",
    "需不需要",
    "确不确定",
    "if",
    "unless",
    "but",
    "why",
    "what",
    "how",
    "when",
    "where",
    "which",
    "who",
    "is it",
    "really",
];

/// Words that start like a yes or a no and mean something else: "不错" (good), "不客气"
/// (you're welcome), "不要紧" (never mind), "没关系". Read as unknown words, so a message
/// holding one is `Other`.
const OPAQUE: &[&str] = &[
    "不错",
    "不客气",
    "不要紧",
    "不好意思",
    "不一定",
    "不知道",
    "不清楚",
    "不确定",
    "不好说",
    "没关系",
    "没想好",
    "不急",
    "不方便",
    "可以了",
    "好了",
    "行了",
    "好了好了",
    "行了行了",
    "不会吧",
    "不能吧",
    "不至于",
    "好像",
    "好多",
    "好看",
    "好贵",
    "好急",
    "可能",
    "可惜",
    "对了",
    "对于",
    "有点",
    "有些",
    "要求",
];

/// Ordinals and positional words (1-based, or [`LAST`], [`MIDDLE`]).
fn ordinals() -> Vec<(String, i8)> {
    let mut out = Vec::new();
    let nums: [(&str, &str, &str, i8); 9] = [
        ("一", "1", "first", 1),
        ("二", "2", "second", 2),
        ("三", "3", "third", 3),
        ("四", "4", "fourth", 4),
        ("五", "5", "fifth", 5),
        ("六", "6", "sixth", 6),
        ("七", "7", "seventh", 7),
        ("八", "8", "eighth", 8),
        ("九", "9", "ninth", 9),
    ];
    for (zh, digit, en, n) in nums {
        for num in [zh, digit] {
            for unit in ["", "个", "种", "款", "项", "样", "条", "件", "号", "位", "款式"] {
                out.push((format!("第{num}{unit}"), n));
            }
            out.push((format!("{num}号"), n));
        }
        out.push((digit.to_string(), n));
        out.push((en.to_string(), n));
        out.push((format!("the {en}"), n));
        out.push((format!("the {en} one"), n));
        out.push((format!("{en} one"), n));
    }
    out.push(("第两个".into(), 2));
    for (latin, n) in [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 4),
        ("1st", 1),
        ("2nd", 2),
        ("3rd", 3),
    ] {
        out.push((latin.to_string(), n));
    }
    for first in [
        "前面那个",
        "前面的",
        "前面那种",
        "前面那款",
        "前一个",
        "前一种",
        "前者",
        "上面那个",
        "上面的",
        "上一个",
        "前面",
        "左边那个",
        "左边的",
    ] {
        out.push((first.to_string(), 1));
    }
    for last in [
        "后面那个",
        "后面的",
        "后面那种",
        "后面那款",
        "后一个",
        "后一种",
        "后者",
        "下面那个",
        "下面的",
        "下一个",
        "最后一个",
        "最后那个",
        "最后的",
        "最后一种",
        "最后一款",
        "最后",
        "后面",
        "右边那个",
        "右边的",
        "the last",
        "the last one",
        "last one",
        "last",
        "the latter",
        "latter",
    ] {
        out.push((last.to_string(), LAST));
    }
    for middle in [
        "中间那个",
        "中间的",
        "中间那种",
        "中间那款",
        "中间",
        "the middle one",
        "middle one",
    ] {
        out.push((middle.to_string(), MIDDLE));
    }
    out.push(("the former".into(), 1));
    out.push(("former".into(), 1));
    out
}

/// The lexicon: every reply word, folded, with its kind.
struct Lexicon {
    words: HashMap<String, Word>,
    /// For each first character, the longest word (in chars) starting with it: most
    /// positions of a message try one or two lengths, not the longest word's.
    longest: HashMap<char, usize>,
}

/// The longest lexicon word in bytes (checked when the table is built): keys are built on
/// the stack.
const KEY_BYTES: usize = 64;

static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
    let mut map = HashMap::new();
    // Later tables do not override earlier ones: the order says which reading a word that
    // appears twice keeps ("换" is a picking word in a choice, a verb after a refusal: the
    // two are told apart in `Seen`/`pick`, so the table keeps the verb).
    let tables: [(&[&str], Word); 13] = [
        (QUESTION, Word::Question),
        (OPAQUE, Word::Unknown),
        (DONE, Word::Done),
        (WRONG, Word::Wrong),
        (REFUSE, Word::Refuse),
        (BYE, Word::Bye),
        (THANKS, Word::Thanks),
        (ACK, Word::Ack),
        (ASSERT, Word::Assert),
        (AGREE, Word::Agree),
        (HUM, Word::Hum),
        (VERB, Word::Verb),
        (PARTICLE, Word::Particle),
    ];
    for (words, kind) in tables {
        for w in words {
            map.entry(w.to_string()).or_insert(kind);
        }
    }
    for w in PICK {
        map.entry(w.to_string()).or_insert(Word::Pick);
    }
    for (w, n) in ordinals() {
        map.entry(w).or_insert(Word::Ordinal(n));
    }
    let mut longest: HashMap<char, usize> = HashMap::new();
    for k in map.keys() {
        assert!(k.len() <= KEY_BYTES, "reply word {k:?} longer than {KEY_BYTES} bytes");
        let first = k.chars().next().expect("no empty reply word");
        let n = longest.entry(first).or_default();
        *n = (*n).max(k.chars().count());
    }
    Lexicon { words: map, longest }
});

/// The longest lexicon word at `chars[at..]` (a Latin word only when whole), or one unknown
/// character (a whole Latin word when it starts one). Returns its length in chars.
fn next_word(chars: &[char], at: usize) -> (usize, Word) {
    let lexicon = &*LEXICON;
    if chars[at] == ' ' {
        return (1, Word::Particle);
    }
    let longest = lexicon.longest.get(&chars[at]).copied().unwrap_or(0);
    let mut key = [0u8; KEY_BYTES];
    for len in (1..=longest.min(chars.len() - at)).rev() {
        let end = at + len;
        // A Latin word is matched whole: "no" is not the start of "nothing".
        if latin(chars[end - 1]) && end < chars.len() && latin(chars[end]) {
            continue;
        }
        let mut n = 0;
        for c in &chars[at..end] {
            if n + c.len_utf8() > KEY_BYTES {
                break;
            }
            n += c.encode_utf8(&mut key[n..]).len();
        }
        if let Ok(k) = std::str::from_utf8(&key[..n])
            && let Some(&w) = lexicon.words.get(k)
        {
            return (len, w);
        }
    }
    if latin(chars[at]) {
        let len = chars[at..].iter().take_while(|c| latin(**c)).count();
        return (len, Word::Unknown);
    }
    (1, Word::Unknown)
}

// ---------------------------------------------------------------------------------------
// Reading yes, no, bye, thanks, acknowledgements
// ---------------------------------------------------------------------------------------

/// What kinds of word a message is made of.
#[derive(Default, Debug)]
struct Seen {
    assert: bool,
    agree: bool,
    hum: bool,
    refuse: bool,
    wrong: bool,
    done: bool,
    bye: bool,
    thanks: bool,
    /// Thanks of the "please do" kind (麻烦了, 麻烦你了, please): accepting an offer.
    please: bool,
    ack: bool,
    /// A question, a condition, an unknown word: the message is `Other` whatever else it holds.
    other: bool,
    /// At least one meaningful word (not only particles).
    any: bool,
    /// A word for cancelling (取消, cancel): a no, unless the question was whether to cancel.
    cancel: bool,
}

impl Seen {
    fn of(text: &Normal) -> Seen {
        let mut seen = Seen {
            other: text.question || a_not_a(&text.chars),
            ..Seen::default()
        };
        let chars = &text.chars;
        let mut at = 0;
        let mut prev = Word::Particle;
        while at < chars.len() && !seen.other {
            let (len, mut word) = next_word(chars, at);
            let piece = &chars[at..at + len];
            // 是吧, 对吧, 是嘛, 不是吧: a tag asking for confirmation, or surprise.
            if matches!(prev, Word::Assert | Word::Wrong) && matches!(piece, ['吧'] | ['嘛']) {
                word = Word::Question;
            }
            // A verb only after a refusal: 不换了, 别转了, 不用麻烦. A picking word outside
            // a choice reads as unknown.
            if word == Word::Verb && !matches!(prev, Word::Refuse | Word::Verb) {
                word = Word::Unknown;
            }
            match word {
                Word::Assert => seen.assert = true,
                Word::Agree => seen.agree = true,
                Word::Hum => seen.hum = true,
                Word::Refuse => {
                    seen.refuse = true;
                    seen.cancel |= piece.windows(2).any(|w| w == ['取', '消']) || piece.starts_with(&['c', 'a', 'n']);
                }
                Word::Wrong => seen.wrong = true,
                Word::Done => seen.done = true,
                Word::Bye => seen.bye = true,
                Word::Thanks => {
                    seen.thanks = true;
                    seen.please |= matches!(piece, ['麻', '烦', ..]);
                }
                Word::Ack => seen.ack = true,
                Word::Particle | Word::Verb => {}
                Word::Pick | Word::Ordinal(_) | Word::Question | Word::Unknown => seen.other = true,
            }
            if word != Word::Particle {
                seen.any = true;
                prev = word;
            } else if matches!(piece, [' '] | ['了'] | ['啦'] | ['吧']) {
                // The clause ends: a verb after it is not under the refusal before it.
                prev = Word::Particle;
            }
            at += len;
        }
        seen
    }

    fn reading(&self, pending: Pending<'_>) -> Reading {
        if self.other || !self.any {
            return Reading::Other;
        }
        let positive = self.assert || self.agree;
        let negative = self.refuse || self.wrong || self.done;
        // "好的，没有了" after "anything else?" is an acknowledgement and a goodbye; to a
        // yes/no question, a yes and a no.
        let agree_is_ack = !matches!(pending, Pending::YesNo);
        if negative && (self.assert || self.ack || (self.agree && !agree_is_ack)) {
            return Reading::Other;
        }
        if self.cancel && matches!(pending, Pending::YesNo) {
            // "取消" answers "确认提交吗？" with a no and "确认要取消订单吗？" with a yes:
            // which one, only the question knows.
            return Reading::Other;
        }
        match pending {
            Pending::YesNo => {
                if negative {
                    Reading::No
                } else if positive || (self.hum && !self.ack) {
                    if self.bye { Reading::Other } else { Reading::Yes }
                } else if self.bye {
                    Reading::Bye
                } else if self.ack {
                    Reading::Ack
                } else if self.please {
                    // "麻烦你了" to "需要帮您查一下物流吗？": please do.
                    Reading::Yes
                } else if self.thanks {
                    Reading::Thanks
                } else {
                    Reading::Other
                }
            }
            Pending::AnythingElse => {
                if self.wrong {
                    Reading::Other
                } else if self.bye || self.done || self.refuse {
                    if self.assert { Reading::Other } else { Reading::Bye }
                } else if self.assert {
                    Reading::Yes
                } else if self.thanks {
                    Reading::Thanks
                } else {
                    Reading::Ack
                }
            }
            Pending::Nothing | Pending::Open | Pending::Choice(_) => {
                if self.bye || self.done {
                    Reading::Bye
                } else if self.wrong {
                    Reading::Other
                } else if self.refuse {
                    // "不换了", "算了" when options were offered: the customer wants none.
                    if matches!(pending, Pending::Choice(_)) {
                        Reading::No
                    } else {
                        Reading::Other
                    }
                } else if self.thanks {
                    Reading::Thanks
                } else {
                    Reading::Ack
                }
            }
        }
    }
}

/// An A-not-A question anywhere: 是不是, 好不好, 可不可以, 有没有, 需不需要 (X不X / X没X,
/// X not 不 itself: "不不不" is a no).
fn a_not_a(chars: &[char]) -> bool {
    chars.windows(3).enumerate().any(|(i, w)| {
        matches!(w[1], '不' | '没')
            && w[0] == w[2]
            && is_cjk(w[0])
            && !matches!(w[0], '不' | '没' | '了' | '的' | '啦' | '呢' | '吧' | '啊')
            // "不是不是", "没了没了": a no said twice.
            && !(i > 0 && matches!(chars[i - 1], '不' | '没'))
    })
}

// ---------------------------------------------------------------------------------------
// Picking an option
// ---------------------------------------------------------------------------------------

/// Characters too common in options to name one on their own.
const NOT_DISTINCTIVE: &[char] = &[
    '的', '个', '一', '换', '要', '款', '种', '号', '浅', '深', '大', '小', '是',
];

/// The option the message picks, if it clearly picks exactly one.
fn pick(text: &Normal, options: &[String]) -> Option<usize> {
    if text.question || options.is_empty() || a_not_a(&text.chars) {
        return None;
    }
    let chars = &text.chars;
    let folded: Vec<Vec<char>> = options.iter().map(|o| fold_option(o)).collect();
    let cores = cores(&folded);
    // Spans (start, end, option, strength) of every option named.
    let mut found: Vec<(usize, usize, usize, u8)> = Vec::new();
    for (i, (full, core)) in folded.iter().zip(&cores).enumerate() {
        for (needle, strength) in [(full, 2u8), (core, 1u8)] {
            if needle.is_empty() {
                continue;
            }
            for start in find_all(chars, needle) {
                found.push((start, start + needle.len(), i, strength));
            }
        }
    }
    if found.is_empty() {
        // Characters only one option's core has ("灰" of "浅灰色", "尺码" of "换尺码").
        let mut at = 0;
        while at < chars.len() {
            let c = chars[at];
            let owner = distinctive_owner(c, &cores);
            if let Some(i) = owner {
                // The run of this option's characters around it: "灰色" for "浅灰色", "换码"
                // for "换尺码".
                let mut start = at;
                while start > 0 && folded[i].contains(&chars[start - 1]) {
                    start -= 1;
                }
                let mut end = at + 1;
                while end < chars.len()
                    && folded[i].contains(&chars[end])
                    && distinctive_owner(chars[end], &cores).is_none_or(|o| o == i)
                {
                    end += 1;
                }
                found.push((start, end, i, 0));
                at = end;
            } else {
                at += 1;
            }
        }
    }
    // Latin options stand as whole words ("s" is not in "yes").
    found.retain(|&(s, e, _, _)| {
        let glued_before = s > 0 && latin(chars[s - 1]) && latin(chars[s]);
        let glued_after = e < chars.len() && latin(chars[e - 1]) && latin(chars[e]);
        !glued_before && !glued_after
    });
    // Keep the strongest, then drop spans inside another's ("l" inside "xl").
    let best = found.iter().map(|f| f.3).max();
    found.retain(|f| Some(f.3) == best);
    let spans = found.clone();
    found.retain(|&(s, e, i, _)| {
        !spans
            .iter()
            .any(|&(s2, e2, i2, _)| i2 != i && s2 <= s && e <= e2 && (e2 - s2) > (e - s))
    });
    // A negated option is not picked, and its negation is part of its span.
    let mut covered = vec![false; chars.len()];
    let mut picked: Option<usize> = None;
    let mut several = false;
    for &(s, e, i, _) in &found {
        let neg = negation_before(chars, s);
        for c in covered.iter_mut().take(e).skip(s - neg) {
            *c = true;
        }
        if neg > 0 {
            continue;
        }
        match picked {
            None => picked = Some(i),
            Some(p) if p != i => several = true,
            _ => {}
        }
    }
    if several {
        return None;
    }
    let ordinal = if picked.is_none() {
        let (n, span) = ordinal_in(chars, &covered)?;
        for c in covered.iter_mut().take(span.1).skip(span.0) {
            *c = true;
        }
        Some(resolve_ordinal(n, options.len())?)
    } else {
        None
    };
    let choice = picked.or(ordinal)?;
    rest_is_filler(chars, &covered).then_some(choice)
}

/// An option folded like a message, its particles at the end dropped ("黑色的" → "黑色").
fn fold_option(option: &str) -> Vec<char> {
    let mut out: Vec<char> = Normal::new(option).map(|n| n.chars).unwrap_or_default();
    while out.len() > 1 && matches!(out.last(), Some('的' | '呢' | '吧' | '呀' | '啊')) {
        out.pop();
    }
    out
}

/// Each option without the prefix and suffix all options share ("换颜色"/"换尺码" → "颜色"/
/// "尺码"; "黑色"/"白色" → "黑"/"白"); the whole option when that would leave nothing.
fn cores(folded: &[Vec<char>]) -> Vec<Vec<char>> {
    if folded.len() < 2 {
        return folded.to_vec();
    }
    let shortest = folded.iter().map(Vec::len).min().unwrap_or(0);
    let prefix = (0..shortest)
        .take_while(|&k| folded.iter().all(|o| o[k] == folded[0][k]))
        .count();
    let suffix = (0..shortest - prefix)
        .take_while(|&k| {
            let c = folded[0][folded[0].len() - 1 - k];
            folded.iter().all(|o| o[o.len() - 1 - k] == c)
        })
        .count();
    folded
        .iter()
        .map(|o| {
            let core = &o[prefix..o.len() - suffix];
            if core.is_empty() { o.clone() } else { core.to_vec() }
        })
        .collect()
}

fn find_all(hay: &[char], needle: &[char]) -> Vec<usize> {
    if needle.len() > hay.len() {
        return Vec::new();
    }
    (0..=hay.len() - needle.len())
        .filter(|&s| hay[s..s + needle.len()] == *needle)
        .collect()
}

/// The one option whose core holds this Chinese character when no other core does.
fn distinctive_owner(c: char, cores: &[Vec<char>]) -> Option<usize> {
    if !is_cjk(c) || NOT_DISTINCTIVE.contains(&c) {
        return None;
    }
    let mut owners = cores.iter().enumerate().filter(|(_, core)| core.contains(&c));
    let (i, _) = owners.next()?;
    owners.next().is_none().then_some(i)
}

/// How many characters before `at` negate what follows (不, 别, 不要, 不是, 不想, 没): 0 if none.
fn negation_before(chars: &[char], at: usize) -> usize {
    for neg in [
        &['不', '要'][..],
        &['不', '是'],
        &['不', '想'],
        &['不', '用'],
        &['不', '换'],
        &['不'],
        &['别'],
        &['没'],
    ] {
        if at >= neg.len() && chars[at - neg.len()..at] == *neg {
            return neg.len();
        }
    }
    0
}

/// The one ordinal among the uncovered characters, and its span.
fn ordinal_in(chars: &[char], covered: &[bool]) -> Option<(i8, (usize, usize))> {
    let mut found = None;
    let mut at = 0;
    while at < chars.len() {
        if covered[at] {
            at += 1;
            continue;
        }
        let (len, word) = next_word(chars, at);
        if let Word::Ordinal(n) = word {
            if found.is_some() {
                return None;
            }
            found = Some((n, (at, at + len)));
        }
        at += len;
    }
    found
}

fn resolve_ordinal(n: i8, count: usize) -> Option<usize> {
    match n {
        LAST => count.checked_sub(1),
        MIDDLE => (count % 2 == 1 && count >= 3).then_some(count / 2),
        n => {
            let i = usize::try_from(n).ok()?.checked_sub(1)?;
            (i < count).then_some(i)
        }
    }
}

/// Whether the characters not covered by the picked option are only particles, agreement
/// and picking words ("我要", "换成", "吧", "好的", "谢谢").
fn rest_is_filler(chars: &[char], covered: &[bool]) -> bool {
    let mut at = 0;
    while at < chars.len() {
        if covered[at] {
            at += 1;
            continue;
        }
        let end = (at..chars.len()).find(|&k| covered[k]).unwrap_or(chars.len());
        let piece = &chars[at..end];
        let mut k = 0;
        while k < piece.len() {
            let (len, word) = next_word(piece, k);
            let ok = matches!(
                word,
                Word::Particle | Word::Pick | Word::Agree | Word::Hum | Word::Thanks | Word::Verb
            ) || (word == Word::Assert
                && matches!(&piece[k..k + len], ['要'] | ['就', '是'] | ['是'] | ['是', '的']));
            if !ok {
                return false;
            }
            k += len;
        }
        at = end;
    }
    true
}

// ---------------------------------------------------------------------------------------
// What kefu asked
// ---------------------------------------------------------------------------------------

/// Phrases asking whether the customer needs anything else.
const ANYTHING_ELSE: &[&str] = &[
    "还有其他",
    "还有别的",
    "还有什么",
    "还有哪些",
    "还有需要",
    "还有要",
    "还需要什么",
    "还需要其他",
    "还需要别的",
    "其他问题",
    "其他需要",
    "其他可以帮",
    "别的可以帮",
    "其他疑问",
    "还有疑问",
    "还有问题",
    "还有啥",
    "其他事",
    "anything else",
    "something else",
    "any other",
    "anything more",
];

/// Words of an open question.
const OPEN_WORDS: &[&str] = &[
    "什么",
    "啥",
    "哪",
    "几",
    "多少",
    "怎么",
    "怎样",
    "如何",
    "为什么",
    "为啥",
    "谁",
    "多久",
    "多大",
    "多高",
    "多重",
    "多长",
    "咋",
    "what",
    "which",
    "how",
    "when",
    "where",
    "why",
    "who",
];

/// A request for information ("方便说一下您的身高吗？", "麻烦发一下订单号"): open, even when
/// phrased as a yes/no question.
const INFO_REQUEST: &[&str] = &[
    "说一下",
    "说下",
    "告诉我",
    "告诉小美",
    "提供一下",
    "提供下",
    "请提供",
    "麻烦提供",
    "发一下",
    "发下",
    "发个",
    "发给我",
    "发给小美",
    "留一下",
    "请输入",
    "请填写",
    "填写一下",
    "报一下",
    "截图",
    "麻烦发",
    "请发",
    "please send",
    "please provide",
    "please tell",
    "let me know",
    "could you send",
    "can you send",
    "could you tell",
    "can you tell",
];

/// Words opening an English yes/no question.
const EN_YES_NO: &[&str] = &[
    "do", "does", "did", "is", "are", "was", "were", "can", "could", "would", "will", "shall", "should", "may", "have",
    "has", "want", "need",
];

/// Words in front of the first option of a "还是" question ("您是想**换颜色**还是…").
const LEADS: &[&str] = &[
    "请问",
    "亲亲",
    "亲",
    "您",
    "你",
    "是想",
    "想要",
    "想",
    "是要",
    "要",
    "是",
    "打算",
    "需要",
    "喜欢",
    "选择",
    "选",
    "倾向于",
    "更",
    "还",
    "请",
    "那",
    "就",
    "这边",
    "帮您",
    "给您",
    "我们",
    "的话",
    "好的",
];

/// What a reply of kefu's asks, read from its text: the last sentence ending in ？/? decides.
/// Returns the kind and, for a choice, the options (e.g. "想换成什么颜色呢？常备颜色：黑色、白色、
/// 浅灰色" or "您是想换颜色还是换尺码呢？" give Choice options). An "anything else" question
/// anywhere in the last line wins.
///
/// A reply with no question mark that asks for information ("麻烦发一下订单号（12位数字）～")
/// is an open question; one without either asks nothing.
pub fn pending_of(reply: &str) -> PendingKind {
    // The same replies come back turn after turn (a rule's reply, a flow's question), and
    // reading one is a tenth of a rule-answered turn: the reading of a reply is kept,
    // process-wide, for replies short enough to be a shop's own text. The reading depends
    // on the text alone, so a kept one is never stale; replies with a customer's details
    // in them are kept too, and the cache keeps the frequent ones over those.
    static READ: std::sync::LazyLock<quick_cache::sync::Cache<Box<str>, PendingKind>> =
        std::sync::LazyLock::new(|| quick_cache::sync::Cache::new(PENDING_CACHE_ENTRIES));
    if reply.len() > PENDING_CACHE_MAX_BYTES {
        return read_pending(reply);
    }
    if let Some(kind) = READ.get(reply) {
        return kind;
    }
    let kind = read_pending(reply);
    READ.insert(reply.into(), kind.clone());
    kind
}

/// How many replies' readings [`pending_of`] keeps.
const PENDING_CACHE_ENTRIES: usize = 4096;

/// The longest reply whose reading [`pending_of`] keeps.
const PENDING_CACHE_MAX_BYTES: usize = 1024;

/// [`pending_of`] without the cache.
fn read_pending(reply: &str) -> PendingKind {
    // Most replies ask nothing; this runs after every answer, so they are told apart
    // without the folding and sentence splitting below: with no question mark, no 吗 and
    // no request for information anywhere, the reply asks nothing.
    if !may_ask(reply) {
        return PendingKind::Nothing;
    }
    // Width folded only: options keep the case kefu wrote them in ("XL"). The phrases
    // looked for are Chinese or ASCII, so comparisons lowercase ASCII only: a full Unicode
    // `to_lowercase` of every sentence was a third of a rule-answered turn.
    let folded: String = reply.chars().map(fold_width).collect();
    let last_line = folded.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let last_sentences = sentences(last_line);
    if last_sentences.iter().any(|(s, q)| {
        let s = s.to_ascii_lowercase();
        (*q || s.trim_end().ends_with('吗')) && ANYTHING_ELSE.iter().any(|p| s.contains(p))
    }) {
        return PendingKind::AnythingElse;
    }
    let all = sentences(&folded);
    let Some(at) = all.iter().rposition(|(_, q)| *q) else {
        let last = all.last().map_or("", |(s, _)| s.as_str());
        return if INFO_REQUEST.iter().any(|p| last.to_ascii_lowercase().contains(p)) {
            PendingKind::Open
        } else {
            PendingKind::Nothing
        };
    };
    let question = all[at].0.as_str();
    // Options listed after the question stand in the sentence right after it.
    let tail = all.get(at + 1).map_or("", |(s, _)| s.as_str());
    classify(question, tail)
}

/// Whether `reply` may ask something: a question mark, a 吗, a full-width letter (folded
/// below, it may spell a request), or a request for information (ASCII case ignored). One
/// pass of an automaton built once.
fn may_ask(reply: &str) -> bool {
    static ASKING: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(INFO_REQUEST.iter().copied().chain(["?", "？", "吗"]))
            .expect("a small automaton of fixed words")
    });
    ASKING.is_match(reply)
        || reply
            .chars()
            .any(|c| matches!(c, '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}'))
}

/// Splits at sentence ends, keeping whether each sentence ended in a question mark.
fn sentences(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '?' => {
                out.push((std::mem::take(&mut cur), true));
            }
            '。' | '!' | '\n' | '；' | ';' => {
                if !cur.trim().is_empty() {
                    out.push((std::mem::take(&mut cur), false));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push((cur, false));
    }
    out
}

/// Full-width ASCII to half-width, the ideographic space to a space; case kept.
fn fold_width(c: char) -> char {
    match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    }
}

fn classify(question: &str, tail: &str) -> PendingKind {
    let lower = question.trim().to_ascii_lowercase();
    let q = lower.as_str();
    let core = strip_trailing(q);
    let ends_ma = core.ends_with('吗') || core.ends_with('么') || core.ends_with('咩') || core.ends_with('嘛');
    let open = OPEN_WORDS.iter().any(|w| {
        if w.is_ascii() {
            q.split(|c: char| !c.is_ascii_alphanumeric()).any(|t| t == *w)
        } else {
            q.contains(w)
        }
    });
    if !ends_ma && let Some(options) = options_of_or(strip_trailing(question.trim())) {
        return PendingKind::Choice(options);
    }
    if open && let Some(options) = list_of(tail) {
        return PendingKind::Choice(options);
    }
    if INFO_REQUEST.iter().any(|p| q.contains(p)) {
        return PendingKind::Open;
    }
    if ends_ma {
        return if q.contains("什么") || q.contains('啥') {
            PendingKind::Open
        } else {
            PendingKind::YesNo
        };
    }
    if open {
        return PendingKind::Open;
    }
    let chars: Vec<char> = core.chars().collect();
    let tag = [
        "对吧",
        "是吧",
        "好吧",
        "可以吧",
        "行吧",
        "好不",
        "行不",
        "可以不",
        "对不",
        "是不",
    ];
    if a_not_a(&chars) || tag.iter().any(|t| core.ends_with(t)) || core.contains("是否") {
        return PendingKind::YesNo;
    }
    let first = core
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or("");
    if core.is_ascii() && EN_YES_NO.contains(&first) {
        return PendingKind::YesNo;
    }
    PendingKind::Open
}

/// A question without its closing particles and punctuation.
fn strip_trailing(q: &str) -> &str {
    let mut s = q.trim_end();
    loop {
        let t = s
            .trim_end_matches(|c: char| {
                c.is_whitespace() || c.is_ascii_punctuation() || matches!(c, '～' | '~' | '…' | '，' | '、')
            })
            .trim_end_matches(['呢', '呀', '啊', '哈', '哦', '亲']);
        if t == s {
            return s;
        }
        s = t;
    }
}

/// The options of "A、B还是C" / "A or B".
fn options_of_or(core: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = if core.contains("还是") {
        let (head, last) = core.rsplit_once("还是")?;
        // Commas separate the question's opening ("好的，您要黑色还是白色"), 、 the options.
        let head = head
            .split([',', '，'])
            .rev()
            .find(|p| !p.trim().is_empty())
            .unwrap_or("");
        let mut v: Vec<String> = head
            .split(['、', '/'])
            .flat_map(|p| p.split("还是"))
            .map(str::to_string)
            .collect();
        v.push(last.to_string());
        v
    } else if core.is_ascii() && core.to_ascii_lowercase().contains(" or ") {
        let at = core.to_ascii_lowercase().rfind(" or ")?;
        let (head, last) = (&core[..at], &core[at + 4..]);
        let mut v: Vec<String> = head.split(',').map(str::to_string).collect();
        v.push(last.to_string());
        v
    } else {
        return None;
    };
    for p in parts.iter_mut() {
        *p = clean_option(p);
    }
    parts.retain(|p| !p.is_empty());
    if parts.len() < 2 {
        return None;
    }
    // The first part still holds the question's opening when no lead word matched
    // ("您喜欢藏青色"): keep as many characters (words, in English) as the second option has.
    let second = parts[1].chars().count();
    let latin_words = parts[0].is_ascii();
    if latin_words {
        let words: Vec<&str> = parts[0].split_whitespace().collect();
        let n = parts[1].split_whitespace().count().max(1);
        if words.len() > n {
            parts[0] = words[words.len() - n..].join(" ");
        }
    } else if parts[0].chars().count() > 2 * second + 1 {
        let skip = parts[0].chars().count() - second;
        parts[0] = parts[0].chars().skip(skip).collect();
    }
    if parts.iter().any(|p| p.chars().count() > 16) {
        return None;
    }
    Some(parts)
}

/// An option without the question's lead words and closing particles.
fn clean_option(p: &str) -> String {
    let mut s = p.trim();
    'lead: loop {
        for lead in LEADS {
            if let Some(rest) = s.strip_prefix(lead)
                && !rest.is_empty()
            {
                s = rest.trim_start();
                continue 'lead;
            }
        }
        break;
    }
    if s.is_ascii() {
        let lower = s.to_ascii_lowercase();
        for lead in [
            "would you like ",
            "do you want ",
            "do you prefer ",
            "would you prefer ",
            "is it ",
            "prefer ",
        ] {
            if lower.starts_with(lead) {
                s = &s[lead.len()..];
                break;
            }
        }
    }
    let s = strip_trailing(s).trim_end_matches('的');
    s.trim().to_string()
}

/// A list of options after the question ("常备颜色：黑色、白色、浅灰色（…）", "S / M / L").
fn list_of(tail: &str) -> Option<Vec<String>> {
    let mut text = String::new();
    let mut depth = 0usize;
    for c in tail.chars() {
        match c {
            '(' | '（' => depth += 1,
            ')' | '）' => depth = depth.saturating_sub(1),
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    let text = text.rsplit_once([':', '：']).map_or(text.as_str(), |(_, after)| after);
    let items: Vec<String> = text
        .split(['、', '/', '|'])
        .map(|s| {
            s.trim()
                .trim_end_matches(['～', '~', '等', '。', '.'])
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect();
    (items.len() >= 2 && items.iter().all(|s| s.chars().count() <= 10)).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(options: &[&str]) -> PendingKind {
        PendingKind::Choice(options.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn pending_kinds_from_kefu_replies() {
        assert_eq!(pending_of("请问您的订单号是多少？"), PendingKind::Open);
        assert_eq!(pending_of("还有其他可以帮您的吗？"), PendingKind::AnythingElse);
        assert_eq!(
            pending_of("好的亲，已经帮您备注了。还有其他可以帮您的吗？"),
            PendingKind::AnythingElse
        );
        assert_eq!(pending_of("需要帮您转人工吗？"), PendingKind::YesNo);
        assert_eq!(pending_of("确认提交保修申请吗？"), PendingKind::YesNo);
        assert_eq!(pending_of("您是想换颜色还是换尺码呢？"), choice(&["换颜色", "换尺码"]));
        assert_eq!(
            pending_of("请问您是想换颜色、换尺码，还是两样都换呢？"),
            choice(&["换颜色", "换尺码", "两样都换"])
        );
        assert_eq!(pending_of("黑色、白色还是灰色？"), choice(&["黑色", "白色", "灰色"]));
        assert_eq!(
            pending_of("想换成什么颜色呢？常备颜色：黑色、白色、浅灰色、藏青色、杏色（其他颜色以商品页为准）"),
            choice(&["黑色", "白色", "浅灰色", "藏青色", "杏色"])
        );
        assert_eq!(
            pending_of("想换成什么尺码呢？S / M / L / XL / XXL / XXXL"),
            choice(&["S", "M", "L", "XL", "XXL", "XXXL"])
        );
        assert_eq!(
            pending_of("亲，本店T恤主要用新疆长绒棉，柔软透气～"),
            PendingKind::Nothing
        );
        assert_eq!(pending_of(""), PendingKind::Nothing);
        assert_eq!(pending_of("请问是什么问题呢？"), PendingKind::Open);
        assert_eq!(pending_of("您哪天收到的货？"), PendingKind::Open);
        assert_eq!(pending_of("大概几号下的单呢？"), PendingKind::Open);
        assert_eq!(pending_of("为什么要退货呢？"), PendingKind::Open);
        assert_eq!(pending_of("您知道怎么申请退货吗？"), PendingKind::YesNo);
        assert_eq!(pending_of("方便说一下您的身高吗？（比如 170cm）"), PendingKind::Open);
        assert_eq!(
            pending_of("亲，麻烦发一下订单号（12位数字），小美帮您查物流～"),
            PendingKind::Open
        );
        assert_eq!(pending_of("这款是纯棉的，要不要给您留一件？"), PendingKind::YesNo);
        assert_eq!(pending_of("帮您改成顺丰，可以吧？"), PendingKind::YesNo);
        assert_eq!(
            pending_of("Is there anything else I can help with?"),
            PendingKind::AnythingElse
        );
        assert_eq!(
            pending_of("Would you like me to check the tracking?"),
            PendingKind::YesNo
        );
        assert_eq!(pending_of("What is your order number?"), PendingKind::Open);
        assert_eq!(pending_of("还有什么问题随时找小美哦～"), PendingKind::Nothing);
    }

    #[test]
    fn a_kept_reading_is_the_reading() {
        let long = format!("{}请问订单号是多少？", "很长的回复。".repeat(100));
        for reply in [
            "需要帮您转人工吗？",
            "黑色、白色还是灰色？",
            "亲，本店T恤柔软透气～",
            long.as_str(),
        ] {
            let fresh = read_pending(reply);
            // Once to fill the cache (or pass it by, for the long one), once from it.
            assert_eq!(pending_of(reply), fresh);
            assert_eq!(pending_of(reply), fresh);
        }
        assert!(long.len() > PENDING_CACHE_MAX_BYTES);
    }

    #[test]
    fn the_last_question_decides() {
        assert_eq!(pending_of("您是要退货吗？好的，请问订单号是多少？"), PendingKind::Open);
        assert_eq!(
            pending_of("请问订单号是多少？查到了，需要帮您催一下吗？"),
            PendingKind::YesNo
        );
    }

    #[test]
    fn pending_kind_serialises_as_snake_case() {
        let json = serde_json::to_string(&choice(&["a", "b"])).unwrap();
        assert_eq!(json, r#"{"choice":["a","b"]}"#);
        assert_eq!(serde_json::to_string(&PendingKind::YesNo).unwrap(), r#""yes_no""#);
        let back: PendingKind = serde_json::from_str(r#""anything_else""#).unwrap();
        assert_eq!(back, PendingKind::AnythingElse);
    }

    #[test]
    fn short_replies_read_against_the_question() {
        use Reading::*;
        let yn = Pending::YesNo;
        for (m, r) in [
            ("是的", Yes),
            ("好的呀", Yes),
            ("嗯嗯", Yes),
            ("可以", Yes),
            ("没问题", Yes),
            ("行", Yes),
            ("OK", Yes),
            ("ｏｋ", Yes),
            ("是的，谢谢", Yes),
            ("好的麻烦了", Yes),
            ("可以的亲", Yes),
            ("对的没错", Yes),
            ("不是", No),
            ("不要", No),
            ("算了", No),
            ("不用了", No),
            ("取消", Other),
            ("no", No),
            ("nope", No),
            ("不换了", No),
            ("嗯，不用了", No),
            ("是不是要我自己寄回去？运费谁出", Other),
            ("对不对啊", Other),
            ("可以，那运费谁出？", Other),
            ("是的 但是我要换个地址", Other),
            ("好 急", Other),
            ("不要紧", Other),
            ("没问题吗？", Other),
            ("是吧", Other),
            ("好…不要了", Other),
            ("是的不对", Other),
            ("如果能今天发的话可以", Other),
            ("nothing", No),
        ] {
            assert_eq!(read(m, yn), r, "{m} after a yes/no question");
        }
        assert_eq!(read("是的", Pending::AnythingElse), Yes);
        assert_eq!(read("木有了", Pending::AnythingElse), Bye);
        assert_eq!(read("没有了", Pending::AnythingElse), Bye);
        assert_eq!(read("不用了谢谢", Pending::AnythingElse), Bye);
        assert_eq!(read("好的", Pending::AnythingElse), Ack);
        for m in ["嗯", "恩", "哦", "好", "好的", "知道了", "收到"] {
            assert_eq!(read(m, Pending::Nothing), Ack, "{m}");
        }
        assert_eq!(read("好 急", Pending::Nothing), Other);
        assert_eq!(read("好急", Pending::Nothing), Other);
        assert_eq!(read("谢谢", Pending::Nothing), Thanks);
        assert_eq!(read("拜拜", Pending::Nothing), Bye);
        assert_eq!(read("第二个", Pending::Nothing), Other);
    }

    #[test]
    fn options_are_picked_by_name_part_or_position() {
        let colours: Vec<String> = ["黑色", "白色", "蓝色"].iter().map(|s| s.to_string()).collect();
        let c = Pending::Choice(&colours);
        assert_eq!(read("第二个", c), Reading::Choice(1));
        assert_eq!(read("蓝色的", c), Reading::Choice(2));
        assert_eq!(read("白的吧", c), Reading::Choice(1));
        assert_eq!(read("最后一个", c), Reading::Choice(2));
        assert_eq!(read("不要黑色，要白色", c), Reading::Choice(1));
        assert_eq!(read("黑色和白色都要", c), Reading::Other);
        assert_eq!(read("第四个", c), Reading::Other);
        assert_eq!(read("蓝色有货吗", c), Reading::Other);
        let change: Vec<String> = ["换颜色", "换尺码"].iter().map(|s| s.to_string()).collect();
        let c = Pending::Choice(&change);
        assert_eq!(read("换尺码", c), Reading::Choice(1));
        assert_eq!(read("尺码", c), Reading::Choice(1));
        assert_eq!(read("后面那个", c), Reading::Choice(1));
        assert_eq!(read("算了不换了", c), Reading::No);
        let sizes: Vec<String> = ["S", "M", "L", "XL", "XXL"].iter().map(|s| s.to_string()).collect();
        let c = Pending::Choice(&sizes);
        assert_eq!(read("xl", c), Reading::Choice(3));
        assert_eq!(read("XXL吧", c), Reading::Choice(4));
        assert_eq!(read("yes", c), Reading::Ack);
    }

    #[test]
    fn yes_no_reduces_the_reading() {
        assert_eq!(yes_no("好滴"), Some(true));
        assert_eq!(yes_no("不用啦"), Some(false));
        assert_eq!(yes_no("要不要啊"), None);
        assert_eq!(yes_no("知道了"), None);
    }
}
