//! A realistic conversation log, for the `kefu report` benchmark and the docs.
//!
//! ```text
//! cargo run --release --example conversation_log -- OUT_DIR [TURNS] [SEED]
//! ```
//!
//! Customers (new, regular and VIP) talk to the demo shop in `rules/` over one simulated
//! day (2026-11-11, busier in the evening). Their messages are the labelled utterances of
//! `rules/tests/intents.jsonl`, answers to the flows' questions (order numbers, sizes),
//! open questions the model answers, some phone numbers and ID cards, some insults and
//! competitor names, and a few test sessions ("测试"). Every turn goes through the real
//! engine, so sources, intents, confidences, flows, handoffs and safety findings are
//! kefu's own; the model is a stand-in that answers in about 40 tokens a second with a
//! prompt-sized token count, and its latency is simulated from that. Agents answer and
//! release some of the handed-over conversations, and about a quarter of the customers
//! leave a score. Records go through [`ConversationLog`] (masking, rotation by day), in
//! time order. `TURNS` (default 10,000) counts customer turns; the same seed gives the
//! same conversations (the engine's measured latencies vary). Turn records carry the
//! customer's profile, so `kefu replay` can answer them again (`benches/replay.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone};
use kefu::data::record::{AgentRecord, FeedbackRecord, ReleaseRecord, TakeoverRecord, TurnRecord};
use kefu::data::{ConversationLog, LogConfig, Record};
use kefu::llm::{GenerateRequest, Generation, LlmBackend, LlmError};
use kefu::{Engine, TurnRequest};

/// xorshift64*: small, seedable, good enough to pick messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The model's stand-in: answers from a pool, counts prompt tokens from the prompt's
/// length, and leaves the token counts of its last answer for the log.
struct StandIn {
    last: Mutex<(u32, u32)>,
}

const MODEL_ANSWERS: &[(&str, f64)] = &[
    ("亲，这款支持七天无理由退换，收到后不满意可以申请退货哦。", 0.91),
    ("您好，这个问题我帮您确认一下：一般下单后48小时内发货。", 0.88),
    ("亲，面料是棉加少量氨纶，弹性好，建议冷水手洗。", 0.86),
    ("您好，关于这个问题我帮您查询一下，请稍等。", 0.74),
    ("亲，这边建议您联系人工客服进一步确认。", 0.55),
];

impl LlmBackend for StandIn {
    fn name(&self) -> &str {
        "stand-in"
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> std::ops::ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let prompt_chars: usize = request.messages.iter().map(|m| m.content.chars().count()).sum();
        let key: usize = request
            .messages
            .last()
            .map_or(0, |m| m.content.bytes().map(usize::from).sum());
        let (answer, confidence) = MODEL_ANSWERS[key % MODEL_ANSWERS.len()];
        // One piece: nothing to stop early.
        let _ = on_text(answer);
        let prompt = (prompt_chars as f64 / 1.4) as u32;
        let tokens = (answer.chars().count() as f64 / 1.3) as u32 + 8;
        *self.last.lock().unwrap() = (prompt, tokens);
        Ok(Generation {
            text: answer.into(),
            prompt_tokens: prompt,
            tokens,
            mean_prob: confidence,
            min_prob: confidence - 0.1,
            ..Generation::default()
        })
    }
}

/// Questions no rule answers (the fallback asks the model).
const OPEN_QUESTIONS: &[&str] = &[
    "这个适合送男朋友吗",
    "有没有同款的裤子搭配",
    "能帮我推荐一件上班穿的吗",
    "可以用花呗吗",
    "能便宜点吗",
    "你们是哪里发货的",
];
const PII: &[&str] = &[
    "我电话13812345678，麻烦快递员到了打给我",
    "身份证号110101199003074514要填吗",
    "退款退到这张卡6222020200112233446可以吗",
    "我邮箱是zhang.san@example.com，发票发这里",
];
const HOSTILE: &[&str] = &["你们这什么破客服，傻逼", "淘宝上便宜多了", "拼多多上同款才一半价钱"];
const CHATTER: &[&str] = &["测试", "test", "测试一下", "123"];
const ORDERS: &[&str] = &[
    "202611020001",
    "202610180002",
    "202611010003",
    "202611080004",
    "202611100005",
    "202611050006",
];
const AGENT_ANSWERS: &[&str] = &[
    "您好，我是人工客服小李，已经看到您的问题了，这就帮您处理。",
    "亲，已经帮您登记了，24小时内会有专人电话联系您（13900001111）。",
    "给您带来不便非常抱歉，这单我们给您补发一件，运费我们承担。",
    "已为您申请加急退款，1-3个工作日原路退回。",
];
const COMMENTS: &[&str] = &[
    "回复很快",
    "还行",
    "问了半天没解决",
    "小姐姐很耐心，电话13812345678可以回访",
    "",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).ok_or("usage: conversation_log OUT_DIR [TURNS] [SEED]")?;
    let turns: usize = args.get(2).map_or(Ok(10_000), |t| t.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(11), |s| s.parse())?;

    let compiled = kefu::dsl::load_dir(Path::new("rules"));
    let rules = Arc::new(compiled.rules.ok_or("the demo rules in rules/ do not compile")?);
    // The labelled set has as many complaints and requests for a person as questions about
    // sizes; real traffic has far fewer, so those come in at a fifth of their share.
    let mut utterances = Vec::new();
    let mut escalations = Vec::new();
    for line in std::fs::read_to_string("rules/tests/intents.jsonl")?.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(text), Some(intent)) = (v["text"].as_str(), v["intent"].as_str()) else {
            continue;
        };
        match intent {
            "其他.投诉" | "其他.人工" | "oos" => escalations.push(text.to_string()),
            _ => utterances.push(text.to_string()),
        }
    }
    let model = Arc::new(StandIn {
        last: Mutex::new((0, 0)),
    });
    let engine = Arc::new(Engine::new(Arc::clone(&rules)).with_llm(model.clone()));
    let tz = rules.shop.timezone;
    let day = tz
        .with_ymd_and_hms(2026, 11, 11, 0, 0, 0)
        .single()
        .ok_or("no such time")?
        .fixed_offset();

    let mut rng = Rng(seed.max(1));
    let mut records: Vec<Record> = Vec::with_capacity(turns * 13 / 10);
    let mut done = 0;
    let mut sessions = 0;
    while done < turns {
        sessions += 1;
        let session = format!("s{seed}-{sessions:05}");
        let start = day + Duration::seconds(busy_second(&mut rng));
        let segment = *rng.pick(&["new", "regular", "regular", "vip"]);
        let user = serde_json::json!({ "segment": segment, "orders": rng.below(30) });
        let test_session = rng.chance(0.02);
        let length = if test_session {
            1 + rng.below(3)
        } else {
            1 + rng.below(7)
        };
        let mut at = start;
        let mut handed = false;
        let mut asked_order = false;
        for _ in 0..length.min(turns - done) {
            let message = if test_session {
                rng.pick(CHATTER).to_string()
            } else if asked_order && rng.chance(0.7) {
                rng.pick(ORDERS).to_string()
            } else {
                let roll = rng.unit();
                if roll < 0.68 {
                    rng.pick(&utterances).clone()
                } else if roll < 0.72 {
                    rng.pick(&escalations).clone()
                } else if roll < 0.86 {
                    rng.pick(OPEN_QUESTIONS).to_string()
                } else if roll < 0.93 {
                    rng.pick(PII).to_string()
                } else if roll < 0.97 {
                    rng.pick(HOSTILE).to_string()
                } else {
                    "转人工".to_string()
                }
            };
            let request = TurnRequest {
                session_id: session.clone(),
                message,
                user: user.as_object().cloned(),
                context: None,
                as_of: Some(at),
                rules_version: None,
                channel: None,
                event: None,
                images: Vec::new(),
            };
            *model.last.lock().unwrap() = (0, 0);
            let response = engine.turn(request.clone()).unwrap();
            let (prompt_tokens, completion_tokens) = *model.last.lock().unwrap();
            // The stand-in answers at once; a local model generates about 40 tokens a
            // second after reading the prompt at about 400.
            let latency_ms = response.latency_ms
                + if completion_tokens > 0 {
                    f64::from(prompt_tokens) * 2.5 + f64::from(completion_tokens) * 25.0 * (0.8 + rng.unit() * 0.6)
                } else {
                    0.0
                };
            asked_order = response.step.as_deref().is_some_and(|s| s.starts_with("ask order_id"));
            handed |= response.handoff.is_some();
            // The simulated model time counts in the latency.
            let mut record = TurnRecord::from_response(
                &response,
                at,
                Some(segment),
                (prompt_tokens, completion_tokens),
                "gen-1",
            )
            .with_request(&request);
            record.latency_ms = latency_ms;
            records.push(Record::Turn(record));
            done += 1;
            at += Duration::seconds(8 + rng.below(60) as i64) + Duration::milliseconds(latency_ms as i64);
            if handed {
                break;
            }
        }
        // A few conversations an agent takes over on their own, from the console.
        let taken = !handed && !test_session && rng.chance(0.03);
        if taken {
            records.push(Record::Takeover(TakeoverRecord {
                ts: at,
                session: session.clone(),
                agent: Some("agent-07".into()),
                handoff_kind: None,
                group: None,
                reason: None,
                waited_ms: None,
            }));
        }
        if (handed && rng.chance(0.8)) || taken {
            for _ in 0..1 + rng.below(2) {
                at += Duration::seconds(20 + rng.below(120) as i64);
                records.push(Record::Agent(AgentRecord {
                    ts: at,
                    session: session.clone(),
                    agent: Some(rng.pick(&["agent-03", "agent-07", "agent-12"]).to_string()),
                    text: rng.pick(AGENT_ANSWERS).to_string(),
                }));
            }
            at += Duration::seconds(30);
            records.push(Record::Release(ReleaseRecord {
                ts: at,
                session: session.clone(),
                hold: Default::default(),
                resumed: false,
            }));
        }
        if !test_session && rng.chance(0.25) {
            // Happier when the bot solved it alone.
            let score = if handed {
                *rng.pick(&[2, 3, 4, 4, 5])
            } else {
                *rng.pick(&[3, 4, 5, 5, 5, 5, 5])
            };
            let comment = *rng.pick(COMMENTS);
            records.push(Record::Feedback(FeedbackRecord {
                ts: at + Duration::seconds(40),
                session: session.clone(),
                score,
                comment: (!comment.is_empty()).then(|| comment.to_string()),
                agent: None,
            }));
        }
    }
    records.sort_by_key(Record::ts);

    let config = LogConfig {
        timezone: Some(tz),
        node: "gen-1".into(),
        ..LogConfig::new(out)
    };
    let current = Arc::clone(&rules);
    let (log, guard) = ConversationLog::open(config, move || Arc::clone(&current))?;
    let lines = records.len();
    for record in records {
        // The batch holds 16 MiB; a generator outruns any disk, so wait rather than drop.
        while !log.push(record.clone()) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    drop(guard);
    let counts = log.counts();
    eprintln!(
        "{done} turns in {sessions} sessions, {lines} lines; written {}, dropped {}, failed {} ({out})",
        counts.written, counts.dropped, counts.failed
    );
    Ok(())
}

/// A second of the day, busier in the evening (a customer-service day peaks 20:00-23:00).
fn busy_second(rng: &mut Rng) -> i64 {
    const WEIGHTS: [u32; 24] = [
        3, 2, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 9, 8, 7, 7, 7, 8, 9, 11, 14, 16, 13, 7,
    ];
    let total: u32 = WEIGHTS.iter().sum();
    let mut roll = rng.below(total as usize) as u32;
    let mut hour = 0;
    for (h, w) in WEIGHTS.iter().enumerate() {
        if roll < *w {
            hour = h;
            break;
        }
        roll -= w;
    }
    (hour * 3600 + rng.below(3600)) as i64
}
