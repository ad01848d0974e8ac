//! The decision of one turn, in the order docs/language.md section 1 fixes: input safety,
//! human takeover, active flow, rules by priority, promotions, flow starts, the knowledge
//! base's FAQ (kefu's addition to the language; section 12, item 22), fallback (and the
//! model it may call, in `model`), with the answer cache in front of the FAQ and the
//! model; then output safety and the session saved. What the message triggers is found
//! once, in `candidates`; a waiting flow runs in `flow`.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use rhai::{Dynamic, Map, Scope};

use super::cache::{self, Scope as CacheScope};
use super::candidates::Candidates;
use super::{AnswerSource, Engine, EngineError, Handoff, TraceStep, TurnRequest, TurnResponse, save, scope};
use crate::RuleSet;
use crate::dialogue::{Role, Session};
use crate::kb::{self, Query};
use crate::nlu::reading::{self, PendingKind, Reading};
use crate::nlu::{self, Lang, Understanding};
use crate::ruleset::{FallbackAction, FlowAction, HandoffKind, HandoffSpec, Memo, ModelCall, Trigger};
use crate::script::host::{self, Host};
use crate::script::{Localized, Script, ScriptError, Texts};
use crate::tickets::TicketStore;

/// What a turn decided to say.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    pub reply: String,
    pub source: AnswerSource,
    pub rule: Option<String>,
    pub flow: Option<String>,
    pub step: Option<String>,
    pub promotion: Option<String>,
    /// The FAQ entry that answered.
    pub faq: Option<String>,
    /// Set when the conversation goes to people (boxed: most answers have none).
    pub handoff: Option<Box<Handing>>,
    /// The turn ended without a real answer (counts towards `session.failures`).
    pub failure: bool,
    /// The answerer's own confidence, when it gives one (the model's).
    pub confidence: Option<f64>,
}

impl Answer {
    pub(super) fn new(source: AnswerSource, reply: impl Into<String>) -> Self {
        Answer {
            reply: reply.into(),
            source,
            rule: None,
            flow: None,
            step: None,
            promotion: None,
            faq: None,
            handoff: None,
            failure: false,
            confidence: None,
        }
    }
}

/// A handoff a turn decided on: why, its kind, where it goes, and what the customer is
/// told. The reply of its [`Answer`] holds only the words before it (a rule's reply, a
/// flow's last replies); [`Turn::route`] adds `said`, or the queue's off-hours text, once
/// the queue is known.
#[derive(Debug, Clone)]
pub(super) struct Handing {
    pub reason: String,
    pub kind: HandoffKind,
    /// `to QUEUE`, an index into `RuleSet::queues`.
    pub to: Option<usize>,
    /// The shop's handoff message, or a fallback arm's own words.
    pub said: String,
    /// The queue it waits in, once routed.
    pub group: Option<String>,
    /// The queue is closed now: a ticket instead of a wait.
    pub off_hours: bool,
    /// The customer's place in the queue, as told.
    pub place: Option<usize>,
}

impl Handing {
    /// A handoff as `spec` says, `reason` when the spec gives none, telling the customer `said`.
    pub(super) fn new(spec: &HandoffSpec, reason: impl FnOnce() -> String, said: String) -> Self {
        Handing {
            reason: spec.reason.clone().unwrap_or_else(reason),
            kind: spec.kind,
            to: spec.to,
            said,
            group: None,
            off_hours: false,
            place: None,
        }
    }
}

/// One question of a message that asks several (`nlu::split`), understood on its own.
pub(crate) struct Part {
    /// Its text, a piece of the (masked) message.
    pub(super) text: String,
    /// What it says on its own, with the entities of the rest of the message it does not
    /// name itself (the order number typed before "另外发票怎么开").
    pub(super) understanding: Understanding,
    /// What it triggers (from its own words and entities only).
    pub(super) candidates: Candidates,
}

/// What the decision needs next: nothing more, or the model.
pub(super) enum Decision {
    Answer(Answer),
    /// Ask the model as the fallback arm says (its style and time budget).
    Llm(ModelCall),
}

/// The answer when a flow's ticket could not be recorded (disk or Redis failing).
const TICKET_NOT_RECORDED: &str = "抱歉，系统繁忙，您的申请暂时没能提交，请稍后再试，或回复“人工”联系客服。";

/// The host actions of one turn: tickets go to the engine's store, notes to the trace.
struct TurnHost {
    tickets: Arc<TicketStore>,
    /// Told of each ticket raised.
    observer: Option<Arc<dyn super::Observer>>,
    session_id: String,
    date: String,
    at: i64,
    notes: Mutex<Vec<String>>,
    /// A ticket could not be recorded: the flow's "submitted" reply would not be true.
    ticket_failed: std::sync::atomic::AtomicBool,
}

impl Host for TurnHost {
    fn create_ticket(&self, kind: &str, reference: &str) -> Dynamic {
        let ticket = match self
            .tickets
            .create(kind, reference, &self.session_id, &self.date, self.at)
        {
            Ok(ticket) => ticket,
            Err(error) => {
                tracing::error!(session = %self.session_id, kind, %error, "ticket not recorded");
                self.note(format!("ticket not recorded ({kind} {reference}): {error}"));
                self.ticket_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return Dynamic::UNIT;
            }
        };
        self.note(format!("ticket {} created ({kind} {reference})", ticket.id));
        if let Some(observer) = &self.observer {
            observer.observe(&super::Event::Ticket { ticket: &ticket });
        }
        let mut m = Map::new();
        m.insert("id".into(), ticket.id.into());
        m.insert("kind".into(), ticket.kind.into());
        m.insert("ref".into(), ticket.reference.into());
        m.insert("status".into(), ticket.status.into());
        Dynamic::from_map(m)
    }

    fn note(&self, message: String) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }

    fn now_ms(&self) -> i64 {
        self.at
    }
}

/// The state of one turn while it is decided.
pub(super) struct Turn<'a> {
    pub engine: &'a Engine,
    pub rules: &'a RuleSet,
    /// Where the session stood when the turn read it, for saving it (`save`).
    read: save::Read,
    pub session: Session,
    pub understanding: Understanding,
    pub message: String,
    pub scope: Scope<'static>,
    pub now: DateTime<Tz>,
    pub trace: Vec<TraceStep>,
    pub covered: Vec<String>,
    /// What this message triggers, found once before the decision.
    pub(super) candidates: &'a Candidates,
    /// Whether this turn already added one to `session.failures`.
    failure_counted: bool,
    /// A flow question to ask again after a digression the model answers.
    pub pending_question: Option<String>,
    /// The customer's `user.segment` (empty when absent), part of answer-cache keys.
    segment: String,
    /// The message prepared for retrieval and the product in focus, made when the FAQ
    /// step or the prompt first needs them.
    retrieval: Option<(Query, Option<usize>)>,
    /// Whether the turn looked in the answer cache (`Some`), and found its answer there.
    cache_hit: Option<bool>,
    /// Tokens the turn's model calls used.
    pub usage: super::Usage,
    /// The messages of the turn's model prompt, when the model was asked.
    pub prompt: Vec<crate::llm::ChatMessage>,
    /// Whether the `promotions` variable has been worked out (`Turn::promotions_for`).
    pub promotions_filled: bool,
    /// Scripts that failed (also in the trace).
    script_errors: Vec<super::ScriptFailure>,
    /// The message read as a reply to what kefu asked last.
    pub reading: Reading,
    /// Slots a flow the customer left by changing their mind had filled, which the flow
    /// they changed to takes over instead of asking again.
    pub carried: BTreeSet<String>,
    /// The language the turn answers in (one of the shop's `languages`).
    pub language: Lang,
    /// Whether a text said this turn had no variant in `language` and was said in the
    /// shop's language instead (a model may translate the answer: `translate llm`).
    pub untranslated: bool,
    /// The message's questions when it asks several, else empty.
    parts: &'a [Part],
    /// What became of each of `parts`, for the response.
    part_answers: Vec<super::PartAnswer>,
    /// What the turn remembered (`Some`) or forgot (`None`), in order, for the save.
    memory_changes: Vec<(String, Option<serde_json::Value>)>,
    /// The message as the customer sent it (masked), when cards were cut out of
    /// `message`: the history and the response keep it whole.
    pub said: Option<String>,
    /// The card (an index into `RuleSet::cards`) the message is alone, when it has an
    /// `alone` reply.
    pub card_alone: Option<usize>,
    /// The message exactly as the customer sent it, to recognize it sent again
    /// ([`Unsure`]).
    sent: &'a str,
    /// The platform event the turn answers instead of a message (`TurnRequest::event`).
    event: Option<&'a str>,
    /// The conversation's token as stored, for an event's response that saves nothing.
    stored_token: String,
    /// The images the message carries (`TurnRequest::images`).
    pub images: &'a [crate::dialogue::ImageRef],
}

/// A turn whose save failed in a way that leaves its outcome unknown: the write may have
/// been carried out by a Redis that then went away (shut down, or stopped) before its
/// reply came. The customer was told 系统繁忙 and will send the same message again; if
/// the store then holds exactly what this turn wrote, the turn did happen, and its answer
/// is the one to give (answering the message again would read it against the next step).
pub(super) struct Unsure {
    message: String,
    rev: u64,
    updated_at: i64,
    turns: u32,
    history: usize,
    response: TurnResponse,
}

impl Unsure {
    /// Whether `session` is this turn's own write and `message` the same message.
    fn landed(&self, session: &Session, message: &str) -> bool {
        self.message == message
            && session.rev == self.rev
            && session.updated_at == self.updated_at
            && session.turns == self.turns
            && session.history.len() == self.history
    }
}

/// Runs one turn on `rules`. Fails, having changed nothing, when the session store could
/// not read the session; fails when it could not save the turn's session (the answer is
/// then not given: a customer told an answer their conversation does not remember would
/// have their next message read against the wrong step).
pub(super) fn run(
    engine: &Engine,
    rules: &RuleSet,
    role: crate::dialogue::RulesRole,
    request: &TurnRequest,
    on_delta: &mut dyn FnMut(&str),
) -> Result<TurnResponse, EngineError> {
    let tz = rules.shop.timezone;
    let now = request
        .as_of
        .map_or_else(|| Utc::now().with_timezone(&tz), |t| t.with_timezone(&tz));
    let now_ms = now.timestamp_millis();
    // Before the read: a person's act from here on may not be in the session read.
    let began = std::time::Instant::now();
    // A session that could not be read is an error, never a new conversation.
    let mut session = engine
        .sessions
        .get(&request.session_id)
        .map_err(|e| EngineError::Store(e.to_string()))?
        .unwrap_or_else(|| crate::dialogue::Session::new(&request.session_id));
    if engine.unsure_kept.load(std::sync::atomic::Ordering::Relaxed) > 0
        && let Some((_, unsure)) = engine.unsure.remove(&request.session_id)
        && {
            engine.unsure_kept.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            unsure.landed(&session, &request.message)
        }
    {
        let mut response = unsure.response.clone();
        response.trace.push(step(
            "store",
            "this message's earlier turn was saved although the store failed to confirm it; its answer is given again",
        ));
        return Ok(response);
    }
    let read = save::Read::of(&session, began);
    // A platform event (a follow, a session entered) is not a message: nothing of it is
    // understood, and only `on event` rules and flow starts answer it. Unanswered, it
    // leaves the conversation as it was (not even saved).
    let event = request.event.as_deref().filter(|e| !e.is_empty());
    let stored_token = session.token.clone();
    // The customer writes again: a resolved conversation is the bot's again.
    session.resolved = None;
    if session.token.is_empty() {
        session.token = crate::dialogue::new_token();
    }
    // What a rating or takeover after this turn counts for; compared first so that a
    // conversation on one version copies nothing.
    if session.served_by.version != rules.version || session.served_by.role != role {
        session.served_by = crate::dialogue::ServedBy {
            version: rules.version.clone(),
            role,
        };
    }
    let mut trace = Vec::new();

    // Input safety comes first: a blocked message goes no further, and from here on only
    // the masked text (mask-list words and personal data replaced) is understood, stored
    // in the session or put into a prompt.
    let verdict = rules
        .safety
        .check_input(if event.is_some() { "" } else { request.message.trim() });
    if !verdict.findings.is_empty() {
        trace.push(step("safety", describe_findings(&verdict.findings)));
    }
    if let Some(blocked) = verdict.blocked {
        // Only the fact of the block is kept, never the blocked words.
        let shown = format!("［已屏蔽：{}］", blocked.category);
        session.remember(Role::User, &shown, now_ms);
        session.remember(Role::Bot, &blocked.reply, now_ms);
        session.updated_at = now_ms;
        let mut response = response_for(
            rules,
            &session,
            &Understanding::default(),
            Answer::new(AnswerSource::Safety, blocked.reply),
            false,
        );
        trace.push(step("safety", format!("blocked: {}", blocked.category)));
        response.trace = trace;
        return end_early(engine, read, session, response, (shown, &request.message), false);
    }
    let message = verdict.masked;
    // Detected on the customer's own words: masks (`［手机号］`) are kefu's, not theirs.
    let language = if rules.shop.languages.len() > 1 && event.is_some() {
        // An event says nothing in any language: the conversation's stands.
        session.language.unwrap_or_else(|| rules.shop.language())
    } else if rules.shop.languages.len() > 1 {
        let previous = session.language.unwrap_or_else(|| rules.shop.language());
        let language = nlu::language::detect(request.message.trim(), &rules.shop.languages, previous);
        session.language = Some(language);
        language
    } else {
        session.language = None;
        rules.shop.language()
    };

    if let Some(event) = event
        && session.takeover.is_some()
    {
        // A person has the conversation: an event is not a message to queue for them.
        trace.push(step(
            "event",
            format!("{event}: a human has this conversation; nothing said"),
        ));
        return Ok(silent(rules, &session, trace, stored_token));
    }
    if let Some(takeover) = &mut session.takeover {
        takeover.queue(message.clone());
        let reason = takeover.reason.clone().unwrap_or_else(|| "人工接管".into());
        let (kind, group) = (takeover.kind, takeover.group.clone());
        session.remember(Role::User, &message, now_ms);
        // The agent sees the photos in the inbox.
        with_images(&mut session, &request.images);
        session.updated_at = now_ms;
        let mut response = response_for(
            rules,
            &session,
            &Understanding::default(),
            Answer::new(AnswerSource::Human, ""),
            false,
        );
        response.handoff = Some(Handoff {
            reason,
            kind,
            group,
            ..Handoff::default()
        });
        response.trace.push(step(
            "takeover",
            "a human has this conversation; the message is queued for the agent",
        ));
        return end_early(engine, read, session, response, (message, &request.message), true);
    }

    if let Some(flow) = &session.flow {
        let idle_ms = now_ms - session.updated_at;
        // The flow's own `timeout`, else the shop's `flow_timeout`; a flow gone in a
        // reload is dealt with when it continues.
        let timeout = rules
            .flows
            .iter()
            .find(|f| f.name == flow.name)
            .and_then(|f| f.timeout)
            .unwrap_or(rules.shop.flow_timeout);
        if session.updated_at > 0 && idle_ms > timeout.as_millis() as i64 {
            trace.push(step(
                "flow",
                format!(
                    "flow {} expired: left waiting {} min (timeout {} min); answered as if no flow were running",
                    flow.name,
                    idle_ms / 60_000,
                    timeout.as_secs() / 60
                ),
            ));
            let name = flow.name.clone();
            session.flow = None;
            super::flow::forget_slots(rules, &mut session, &name);
        }
    }

    // Cards the platform put in the message: their fields are this turn's context (and
    // the conversation's), and the question that came with them is understood alone.
    let cards = super::cards::find(&rules.cards, &message);
    let (mut said, mut card_alone) = (None, None);
    let message = match &cards {
        None => message,
        Some(found) => {
            let card = &rules.cards[found.last];
            trace.push(step("card", format!("{} ({})", found.describe(), card.location)));
            session.card_context.insert(card.context.clone(), found.context());
            let alone = found.alone();
            if alone && session.flow.is_none() && card.alone.is_some() {
                card_alone = Some(found.last);
            }
            // A card alone while a flow waits is the flow's answer as sent (an `ask`
            // finds its order number in it).
            if alone && session.flow.is_some() {
                message
            } else {
                said = Some(message);
                found.rest.clone()
            }
        }
    };
    let context = nlu::Context {
        recent_emotions: session.emotions.clone(),
    };
    // A message of photos alone has no words to understand: only `on image` rules and
    // flow starts, a flow waiting for a photo, and the fallback chain answer it.
    let images_only = event.is_none() && message.trim().is_empty() && !request.images.is_empty();
    if !request.images.is_empty() {
        let described = request.images.iter().filter(|i| i.description.is_some()).count();
        trace.push(step(
            "image",
            format!(
                "{} image(s), {described} described{}",
                request.images.len(),
                if images_only {
                    "; no text: only `on image` rules and flow starts, a photo ask, or the fallback answer"
                } else {
                    ""
                }
            ),
        ));
    }
    // Relative dates ("昨天") resolve against the turn's shop-local day, so replays with
    // `as_of` understand them as they were meant.
    let mut understanding = match event {
        Some(_) => Understanding::default(),
        None if images_only => Understanding::default(),
        None => rules.nlu.understand_on(&message, &context, now.date_naive()),
    };
    if let Some(found) = &cards {
        // The cards are entities of the message too, before those of the rest; so are the
        // entities written inside a card that was cut out (its order number fills an
        // `ask order_id`, `entities.order_id` reads it).
        let mut carried = Vec::new();
        for card in &found.matches {
            carried.push(card.clone());
            if said.is_some() {
                for mut e in rules.nlu.recognizer().find(&card.text, now.date_naive()) {
                    e.start += card.start;
                    e.end += card.start;
                    carried.push(e);
                }
            }
        }
        understanding.entities.splice(0..0, carried);
    }
    if let Some(event) = event {
        trace.push(step(
            "event",
            format!("{event}: nothing to understand; only `on event {event}` rules and flow starts answer"),
        ));
    } else if !images_only {
        let mut described = describe_understanding(&understanding, engine.config.explain);
        if language != rules.shop.language() {
            let _ = write!(described, ", language {language}");
        }
        trace.push(step("nlu", described));
    }
    // A short reply is read against what kefu asked last ("可以" to an offer, "没有了" to
    // "还有其他可以帮您的吗？", "嗯" to nothing). Such a reply carries no intent of its own,
    // so whatever the classifier guessed from its one or two characters is set aside: it
    // would fire a rule, or a handoff, meant for something else.
    let reading = match event {
        Some(_) => Reading::Other,
        None if images_only => Reading::Other,
        None => reading::read(&message, session.asked.kind.as_pending()),
    };
    if reading.is_short_reply() {
        let asked = session.asked.kind.name();
        let guess = match &understanding.intent {
            Some(intent) => format!(
                "; the guessed intent {intent} ({:.2}) is set aside",
                understanding.confidence
            ),
            None => String::new(),
        };
        trace.push(step(
            "context",
            format!(
                "read as {} to {}{guess}",
                reading.name(),
                if asked.is_empty() { "nothing asked" } else { asked }
            ),
        ));
        understanding.intent = None;
        understanding.confidence = 0.0;
        understanding.levels.clear();
    }
    if let Some(product) = request.context.as_ref().and_then(|c| c.get("product")) {
        // Kept for later turns, so kept masked like everything a session holds.
        let mut product = product.clone();
        redact_json(&rules.safety, &mut product);
        session.product = Some(product);
    }

    // A message asking several questions ("包邮吗 几天到") is split into them, each
    // understood on its own; not a short reply, nor an answer to a flow's question (the
    // flow reads the whole message), nor when the shop answers one question a message.
    // A message without separators is decided in one pass and pays for nothing else.
    let splits = rules.shop.max_answers > 1 && session.flow.is_none() && !reading.is_short_reply();
    let parts: Vec<Part> = if splits && event.is_none() {
        nlu::split::split(&message)
            .into_iter()
            .map(|range| {
                let text = message[range].to_string();
                let mut understanding_of_part = rules.nlu.understand_on(&text, &context, now.date_naive());
                let candidates = Candidates::find(rules, &text, &understanding_of_part);
                for e in &understanding.entities {
                    if !understanding_of_part.entities.iter().any(|own| own.name == e.name) {
                        understanding_of_part.entities.push(e.clone());
                    }
                }
                Part {
                    text,
                    understanding: understanding_of_part,
                    candidates,
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    // A segment that is not text keys the answer cache by its JSON text.
    let segment = request
        .segment()
        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string))
        .unwrap_or_default();
    // Context maps cards set: this turn's card overrides the request's map, a remembered
    // one fills in for a map the request lacks. Merged only when there are any.
    let merged = (!session.card_context.is_empty()).then(|| {
        let mut context = request.context.clone().unwrap_or_default();
        let fresh = cards.as_ref().map(|f| rules.cards[f.last].context.as_str());
        for (name, value) in &session.card_context {
            if fresh == Some(name.as_str()) || !context.contains_key(name) {
                context.insert(name.clone(), value.clone());
            }
        }
        context
    });
    let scope = scope::build(scope::ScopeInput {
        rules,
        session: &session,
        understanding: &understanding,
        reading,
        message: &message,
        parts: &parts,
        findings: &verdict.findings,
        user: request.user.as_ref(),
        context: merged.as_ref().or(request.context.as_ref()),
        now: &now,
        channel: request.channel_name(),
        event: event.unwrap_or_default(),
        images: &request.images,
    });
    let host = Arc::new(TurnHost {
        tickets: Arc::clone(&engine.tickets),
        observer: engine.observer.get().cloned(),
        session_id: session.id.clone(),
        date: format!("{:04}{:02}{:02}", now.year(), now.month(), now.day()),
        at: now_ms,
        notes: Mutex::new(Vec::new()),
        ticket_failed: std::sync::atomic::AtomicBool::new(false),
    });
    let candidates = match event {
        Some(event) => Candidates::of_event(rules, event),
        None => {
            let mut candidates = match images_only {
                true => Candidates::default(),
                false => Candidates::find(rules, &message, &understanding),
            };
            candidates.add_answers(rules, session.asked.rule.as_deref(), reading);
            if !request.images.is_empty() {
                candidates.add_images(rules);
            }
            candidates
        }
    };
    let mut turn = Turn {
        engine,
        rules,
        read,
        session,
        understanding,
        message,
        scope,
        now,
        trace,
        covered: Vec::new(),
        candidates: &candidates,
        failure_counted: false,
        pending_question: None,
        segment,
        retrieval: None,
        cache_hit: None,
        usage: super::Usage::default(),
        prompt: Vec::new(),
        promotions_filled: false,
        script_errors: Vec::new(),
        reading,
        carried: BTreeSet::new(),
        language,
        untranslated: false,
        parts: &parts,
        part_answers: Vec::new(),
        memory_changes: Vec::new(),
        said,
        card_alone,
        sent: &request.message,
        event,
        stored_token,
        images: &request.images,
    };
    // "别再推送了": answered before anything else reads the message (a flow waiting stays
    // waiting).
    let opt = match event {
        Some(_) => None,
        None => super::proactive::opt_reading(&turn.message),
    };
    let mut answer = host::with_host(host.clone(), || match (event, opt) {
        (Some(event), _) => turn.answer_event(event),
        (None, Some(out)) => turn.answer_opt(out),
        (None, None) => match turn.decide() {
            Decision::Answer(answer) => answer,
            Decision::Llm(call) => turn.ask_model(call, on_delta),
        },
    });
    if let Some(question) = turn.pending_question.take() {
        if answer.handoff.is_some() {
            turn.session.flow = None;
        } else {
            answer.reply = format!("{}\n{question}", answer.reply);
        }
    }
    // Only a turn that hands off looks at the queues.
    if answer.handoff.is_some() {
        turn.route(&mut answer, &host);
    }
    if matches!(
        answer.source,
        AnswerSource::Rule
            | AnswerSource::Flow
            | AnswerSource::Promotion
            | AnswerSource::Faq
            | AnswerSource::Cache
            | AnswerSource::Handoff
            | AnswerSource::Fallback
    ) && let Some(text) = turn.translated(&answer.reply)
    {
        answer.reply = text;
    }
    if host.ticket_failed.load(std::sync::atomic::Ordering::Relaxed) {
        // Never tell the customer a ticket was submitted when it was not recorded.
        answer.reply = TICKET_NOT_RECORDED.to_string();
    }
    for note in host.notes.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        turn.trace.push(step("host", note));
    }
    turn.finish(answer, now_ms)
}

/// Gives the customer's message just remembered (the history's last entry) its images.
fn with_images(session: &mut Session, images: &[crate::dialogue::ImageRef]) {
    if !images.is_empty()
        && let Some(last) = session.history.back_mut()
    {
        last.images = images.to_vec();
    }
}

pub(super) fn step(stage: &str, detail: impl Into<String>) -> TraceStep {
    TraceStep {
        stage: stage.to_string(),
        detail: detail.into(),
    }
}

fn describe_findings(findings: &[crate::safety::Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let action = match f.action {
                crate::safety::Action::Block => "block",
                crate::safety::Action::Mask => "mask",
                crate::safety::Action::Pii => "pii",
                crate::safety::Action::Flag => "flag",
            };
            format!("{action} {}", f.category)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_understanding(u: &Understanding, explain: bool) -> String {
    let intent = u.intent.as_deref().unwrap_or("none");
    let mut s = format!("intent {intent} ({:.2}), emotion {}", u.confidence, u.emotion.as_str());
    for e in &u.entities {
        let _ = write!(s, ", {}={}", e.name, e.value);
    }
    // What the classifier nearly chose: an editor reading a wrong answer sees which
    // intent's examples to sharpen.
    for (n, (name, p)) in u.runners_up().enumerate().filter(|_| explain) {
        let _ = write!(s, "{}{name} ({p:.2})", if n == 0 { "; runners-up " } else { ", " });
    }
    s
}

impl<'a> Turn<'a> {
    /// When the turn began (before it read its session), for registering its model
    /// generation with the engine's silence registry.
    pub(super) fn began(&self) -> std::time::Instant {
        self.read.began()
    }

    /// Runs `eval` in the turn's scope, then drops any variables the script declared; an
    /// error gives `fallback` and goes to the trace.
    ///
    /// `what` names the script for the trace; it is formatted only on an error, since
    /// naming every evaluated condition cost an allocation each on the hot path.
    fn in_scope<T>(
        &mut self,
        what: fmt::Arguments<'_>,
        fallback: T,
        eval: impl FnOnce(&rhai::Engine, &mut Scope<'static>) -> Result<T, ScriptError>,
    ) -> T {
        let mark = self.scope.len();
        let result = eval(&self.rules.engine, &mut self.scope);
        self.scope.rewind(mark);
        result.unwrap_or_else(|e| {
            self.script_error(what, &e);
            fallback
        })
    }

    /// Evaluates a condition; an error counts as false and goes to the trace.
    pub(super) fn holds(&mut self, script: &Script, what: fmt::Arguments<'_>) -> bool {
        self.promotions_for(script);
        self.in_scope(what, false, |engine, scope| script.eval_bool(engine, scope))
    }

    /// Evaluates a value; an error reads as `()` and goes to the trace.
    pub(super) fn value(&mut self, script: &Script, what: fmt::Arguments<'_>) -> Dynamic {
        self.promotions_for(script);
        self.in_scope(what, Dynamic::UNIT, |engine, scope| script.eval(engine, scope))
    }

    /// The variant of a text in the turn's language, or the shop language's (noted in
    /// `untranslated`) when it has none.
    pub(super) fn pick<'t, T>(&mut self, texts: &'t Localized<T>) -> &'t T {
        if self.language == self.rules.shop.language() {
            return &texts.default;
        }
        texts.variant(self.language).unwrap_or_else(|| {
            self.untranslated = true;
            &texts.default
        })
    }

    /// Renders a text in the turn's language; a failing hole renders as nothing and goes
    /// to the trace.
    pub(super) fn render(&mut self, texts: &Texts, what: fmt::Arguments<'_>) -> String {
        let template = self.pick(texts);
        if !self.rules.promotion_readers.is_empty() {
            for part in &template.parts {
                if let crate::script::Part::Hole(hole) = part {
                    self.promotions_for(hole);
                }
            }
        }
        let mut errors = Vec::new();
        let text = template.render_lenient(&self.rules.engine, &mut self.scope, &mut |e| errors.push(e));
        for e in errors {
            self.script_error(what, &e);
        }
        text
    }

    fn script_error(&mut self, what: fmt::Arguments<'_>, error: &ScriptError) {
        let kind = if error.limit {
            "stopped by the sandbox"
        } else {
            "failed"
        };
        self.trace
            .push(step("error", format!("{what}: script {kind}: {}", error.message)));
        self.script_errors.push(super::ScriptFailure {
            item: what.to_string(),
            location: error.location.to_string(),
            message: error.message.clone(),
            limit: error.limit,
        });
    }

    /// Runs a `remember` or `forget` (of rule `what` or a flow step): the value, masked
    /// as everything a session keeps, goes into the session's memory and the `memory`
    /// variable at once, so the reply after it can read it. A script that fails changes
    /// nothing (and is a script error); a value over the bounds is not kept (the trace
    /// says why).
    pub(super) fn memo(&mut self, memo: &Memo, what: fmt::Arguments<'_>) {
        let (name, value) = match memo {
            Memo::Remember { name, value } => {
                self.promotions_for(value);
                let Some(v) = self.in_scope(what, None, |engine, scope| value.eval(engine, scope).map(Some)) else {
                    return;
                };
                let mut kept = scope::dynamic_to_json(&v);
                redact_json(&self.rules.safety, &mut kept);
                (name, Some(kept).filter(|k| !k.is_null()))
            }
            Memo::Forget(name) => (name, None),
        };
        self.keep(name, value, what);
    }

    /// Remembers `value` (already masked) under `name` for the conversation, or forgets
    /// the name (`None`): in the session, in the `memory` variable at once, and in the
    /// turn's changes, which the save lays over what landed meanwhile. The one way a turn
    /// changes the memory; a value over the bounds is not kept and the trace says why.
    pub(super) fn keep(&mut self, name: &str, value: Option<serde_json::Value>, what: fmt::Arguments<'_>) {
        match self.session.keep(name, value.clone()) {
            Ok(()) => {
                let did = if value.is_some() { "remembered" } else { "forgot" };
                self.trace.push(step("memory", format!("{did} {name}")));
                self.memory_changes.push((name.to_string(), value));
                if self.rules.reads_memory {
                    self.scope.set_value("memory", scope::memory_map(&self.session));
                }
            }
            Err(why) => {
                self.trace
                    .push(step("memory", format!("{what}: {name} not remembered: {why}")));
            }
        }
    }

    /// Refreshes the `session` and `slots` variables after the session changed.
    pub(super) fn refresh_session_vars(&mut self) {
        self.scope
            .set_value("session", scope::session_map(&self.session, self.rules.reads_past));
        self.scope.set_value("slots", scope::slots_map(&self.session));
    }

    fn decide(&mut self) -> Decision {
        if let Some(state) = self.session.flow.take()
            && let Some(decision) = self.continue_flow(state)
        {
            return decision;
        }
        if let Some(answer) = self.answer_card_alone() {
            return Decision::Answer(answer);
        }
        if !self.parts.is_empty()
            && let Some(answer) = self.answer_parts()
        {
            return Decision::Answer(answer);
        }
        if let Some(answer) = self.answer_by_rules() {
            return Decision::Answer(answer);
        }
        // A flow the editor starts on a yes or no to a rule's offer takes it before the
        // shop's short-reply answers (an acknowledgement, "what else").
        let candidates = self.candidates;
        if !candidates.answer_starts.is_empty()
            && let Some(answer) = self.start_flow_among(&candidates.answer_starts)
        {
            return Decision::Answer(answer);
        }
        if let Some(answer) = self.answer_in_context() {
            return Decision::Answer(answer);
        }
        if let Some(answer) = self.answer_by_promotions() {
            return Decision::Answer(answer);
        }
        if let Some(answer) = self.start_flow() {
            return Decision::Answer(answer);
        }
        // "可以", "第二个": words the knowledge base would match on nothing but chance
        // (and a message of photos alone has no words at all).
        if !self.reading.is_short_reply()
            && !self.message.is_empty()
            && let Some(answer) = self.answer_by_faq()
        {
            return Decision::Answer(answer);
        }
        self.fallback(false)
    }

    /// The answer to a customer asking for no more proactive messages (`out`), or for
    /// them again: the session's `proactive.opted_out` set or cleared, the shop's
    /// `opt_out_message` (or the built-in opt-in words) said, as the built-in rule
    /// `退订推送` (`恢复推送`).
    fn answer_opt(&mut self, out: bool) -> Answer {
        use super::proactive::{OPT_IN_MESSAGE, OPT_IN_RULE, OPT_OUT_RULE};
        self.session.proactive.opted_out = out;
        let (rule, reply) = match out {
            true => (OPT_OUT_RULE, self.pick(&self.rules.shop.opt_out_message).clone()),
            false => (OPT_IN_RULE, OPT_IN_MESSAGE.to_string()),
        };
        let did = if out {
            "the customer asked for no more proactive messages: opted out"
        } else {
            "the customer asked for proactive messages again: opted in"
        };
        self.trace.push(step("proactive", did));
        self.covered.push(format!("rule:{rule}"));
        let mut answer = Answer::new(AnswerSource::Rule, reply);
        answer.rule = Some(rule.to_string());
        answer
    }

    /// An event's answer: the first `on event` rule whose `when` holds, else the first
    /// flow started on it; else nothing at all ([`AnswerSource::Silent`]), since an event
    /// no rule expects (a follow in a shop without a welcome) is no failure to answer.
    fn answer_event(&mut self, event: &str) -> Answer {
        if let Some(answer) = self.first_rule(false) {
            return answer;
        }
        if let Some(answer) = self.start_flow() {
            return answer;
        }
        self.trace.push(step(
            "event",
            format!("no rule or flow starts on event {event}: nothing said"),
        ));
        Answer::new(AnswerSource::Silent, "")
    }

    /// A short reply no rule took up, answered by the shop's words for it: a goodbye to
    /// "没有了" (or a no to "还有其他可以帮您的吗？"), "what else" to a bare yes to that
    /// question, and an acknowledgement to "嗯" or "好的". A yes, no or choice answering a
    /// question of a rule's or the model's goes on to the fallback chain, whose model
    /// reads the question in the history.
    fn answer_in_context(&mut self) -> Option<Answer> {
        let shop = &self.rules.shop;
        let anything_else = self.session.asked.kind == PendingKind::AnythingElse;
        let (reply, what) = match self.reading {
            Reading::Bye => (&shop.goodbye_message, "goodbye"),
            Reading::No if anything_else => (&shop.goodbye_message, "goodbye"),
            Reading::Yes if anything_else => (&shop.more_message, "what else"),
            // A no to an offer no rule takes up is taken note of, like an acknowledgement.
            Reading::No if matches!(self.session.asked.kind, PendingKind::YesNo | PendingKind::Choice(_)) => {
                (&shop.ack_message, "acknowledgement")
            }
            Reading::Ack => (&shop.ack_message, "acknowledgement"),
            _ => return None,
        };
        self.trace
            .push(step("context", format!("answered with the shop's {what}")));
        self.covered.push(format!("context:{what}"));
        let reply = self.pick(reply).clone();
        Some(Answer::new(AnswerSource::Context, reply))
    }

    /// The message's retrieval terms and the product in focus (named in the message, or
    /// the request's or session's `product`), computed once per turn.
    pub(super) fn retrieval(&mut self) -> (&Query, Option<usize>) {
        if self.retrieval.is_none() {
            let kb = &self.rules.kb;
            let focus = kb.focus(&self.message, self.session.product.as_ref());
            if let Some(f) = focus {
                let p = &kb.products[f];
                self.trace
                    .push(step("kb", format!("product in focus: {} {}", p.id, p.name)));
            }
            self.retrieval = Some((kb.query(&self.message), focus));
        }
        let (query, focus) = self.retrieval.as_ref().expect("set above");
        (query, *focus)
    }

    /// The answer-cache key of this turn's message, for an answer made as `scope` says.
    pub(super) fn cache_key(&self, scope: CacheScope) -> cache::Key {
        cache::Key {
            version: self.rules.version.clone(),
            segment: self.segment.clone(),
            language: self.language,
            message: kb::text::cache_form(&self.message),
            scope,
        }
    }

    /// The answer cache's entry for `key`, noting that the turn looked (`finish` counts
    /// the lookup, once per turn).
    pub(super) fn cached(&mut self, key: &cache::Key) -> Option<cache::Entry> {
        let cached = self.engine.cache.get(key);
        self.cache_hit = Some(cached.is_some());
        cached
    }

    /// The knowledge base's FAQ step: a cached answer for this question, else the best
    /// entry when it is confident and clearly ahead of the next (see `kb`).
    pub(super) fn answer_by_faq(&mut self) -> Option<Answer> {
        let rules = self.rules;
        let kb = &rules.kb;
        if kb.faqs.is_empty() {
            return None;
        }
        let focus = self.retrieval().1;
        let key = self.cache_key(CacheScope::Faq {
            product: focus.map(|f| kb.products[f].id.clone()),
        });
        // The knowledge base is written in the shop's language.
        let other_language = self.language != rules.shop.language();
        if let Some(hit) = self.cached(&key) {
            self.trace.push(step("cache", format!("hit: {}", hit.origin)));
            self.untranslated |= other_language;
            let mut answer = Answer::new(AnswerSource::Cache, hit.reply);
            answer.faq = hit.origin.strip_prefix("faq ").map(str::to_string);
            return Some(answer);
        }
        // Scored only on a cache miss.
        let best = kb.best_faq(self.retrieval().0, focus)?;
        let threshold = rules.shop.faq_threshold;
        let faq = &kb.faqs[best.faq];
        let scores = format!("{:.2}, runner-up {:.2}", best.confidence, best.runner_up);
        if !best.answers(threshold) {
            let why = if best.confidence < threshold {
                format!("below {threshold}")
            } else {
                format!("lead under {}", kb::FAQ_MARGIN)
            };
            self.trace
                .push(step("faq", format!("best {} ({scores}): {why}", faq.id)));
            return None;
        }
        self.trace.push(step("faq", format!("{} answers ({scores})", faq.id)));
        self.engine.cache.insert(
            key,
            cache::Entry {
                reply: faq.answer.trim().to_string(),
                origin: format!("faq {}", faq.id),
            },
        );
        self.untranslated |= other_language;
        let mut answer = Answer::new(AnswerSource::Faq, faq.answer.trim());
        answer.faq = Some(faq.id.clone());
        Some(answer)
    }

    /// A message that is a card and nothing else, answered by the card's `alone` reply.
    fn answer_card_alone(&mut self) -> Option<Answer> {
        let rules = self.rules;
        let card = &rules.cards[self.card_alone?];
        let alone = card.alone.as_ref()?;
        self.covered.push(format!("card:{}", card.name));
        self.trace.push(step(
            "card",
            format!("{} ({}) alone: its `alone` reply answers", card.name, card.location),
        ));
        let reply = self.render(alone, format_args!("card {}", card.name));
        Some(Answer::new(AnswerSource::Rule, reply))
    }

    /// The first candidate rule, in answer order, whose `when` holds.
    pub(super) fn answer_by_rules(&mut self) -> Option<Answer> {
        self.first_rule(false)
    }

    /// The first candidate rule that answers, among those that end or cancel a flow only
    /// when `flow_rules_only` (asked before a waiting flow takes the message).
    pub(super) fn first_rule(&mut self, flow_rules_only: bool) -> Option<Answer> {
        let rules = self.rules;
        let candidates = self.candidates;
        for &i in &candidates.rules {
            let rule = &rules.rules[i];
            if flow_rules_only && rule.flow_action.is_none() {
                continue;
            }
            if let Some(when) = &rule.when
                && !self.holds(when, format_args!("rule {}", rule.name))
            {
                self.trace.push(step(
                    "rule",
                    format!("{} ({}): `when` does not hold", rule.name, rule.location),
                ));
                continue;
            }
            self.covered.push(format!("rule:{}", rule.name));
            self.trace
                .push(step("rule", format!("{} ({}) answers", rule.name, rule.location)));
            for memo in &rule.memos {
                self.memo(memo, format_args!("rule {}", rule.name));
            }
            let reply = rule
                .reply
                .as_ref()
                .map(|t| self.render(t, format_args!("rule {}", rule.name)));
            let mut answer = match &rule.handoff {
                Some(spec) => {
                    // The customer always hears the shop's handoff message (or its queue's
                    // off-hours text), after the rule's own words if it has any.
                    let said = self.pick(&rules.shop.handoff_message).clone();
                    let mut a = Answer::new(AnswerSource::Handoff, reply.unwrap_or_default());
                    a.handoff = Some(Box::new(Handing::new(spec, || format!("rule {}", rule.name), said)));
                    a
                }
                None => Answer::new(AnswerSource::Rule, reply.unwrap_or_default()),
            };
            answer.rule = Some(rule.name.clone());
            if let Some(action) = rule.flow_action
                && let Some(flow) = self.session.flow.take()
            {
                let verb = match action {
                    FlowAction::End => "ends",
                    FlowAction::Cancel => {
                        super::flow::forget_slots(rules, &mut self.session, &flow.name);
                        self.covered.push(format!("flow:{}:cancel", flow.name));
                        "cancels"
                    }
                };
                self.trace
                    .push(step("flow", format!("rule {} {verb} flow {}", rule.name, flow.name)));
                self.refresh_session_vars();
            }
            return Some(answer);
        }
        None
    }

    /// The first candidate promotion that is on now and whose audience includes the user.
    pub(super) fn answer_by_promotions(&mut self) -> Option<Answer> {
        let rules = self.rules;
        let candidates = self.candidates;
        for &i in &candidates.promotions {
            let promo = &rules.promotions[i];
            if !promo.is_on(&self.now) {
                self.trace.push(step(
                    "promotion",
                    format!("{}: not on at {}", promo.name, self.now.format("%Y-%m-%d %H:%M")),
                ));
                continue;
            }
            if let Some(audience) = &promo.audience
                && !self.holds(audience, format_args!("promotion {}", promo.name))
            {
                self.trace
                    .push(step("promotion", format!("{}: not for this user", promo.name)));
                continue;
            }
            self.covered.push(format!("promotion:{}", promo.name));
            self.trace.push(step(
                "promotion",
                format!("{} ({}) answers", promo.name, promo.location),
            ));
            let reply = self.render(&promo.say, format_args!("promotion {}", promo.name));
            let mut answer = Answer::new(AnswerSource::Promotion, reply);
            answer.promotion = Some(promo.name.clone());
            return Some(answer);
        }
        None
    }

    /// Starts the first candidate flow whose start condition holds.
    fn start_flow(&mut self) -> Option<Answer> {
        let candidates = self.candidates;
        self.start_flow_among(&candidates.flow_starts)
    }

    /// Starts the first flow of `starts` (candidates, in answer order) whose start
    /// condition holds.
    fn start_flow_among(&mut self, starts: &'a [(usize, usize)]) -> Option<Answer> {
        let rules = self.rules;
        for &(f, s) in starts {
            let flow = &rules.flows[f];
            if let Some(when) = &flow.starts[s].when
                && !self.holds(when, format_args!("flow {} start", flow.name))
            {
                self.trace
                    .push(step("flow", format!("{}: start condition does not hold", flow.name)));
                continue;
            }
            self.trace
                .push(step("flow", format!("{} ({}) starts", flow.name, flow.location)));
            return Some(self.begin_flow(f));
        }
        None
    }

    /// Whether the best intent is one that starts `flow`.
    pub(super) fn intent_starts(&self, flow: usize) -> bool {
        let Some(intent) = &self.understanding.intent else {
            return false;
        };
        self.rules.flows[flow].starts.iter().any(|s| match &s.trigger {
            Trigger::Intents(patterns) => patterns.iter().any(|p| p.matches(intent)),
            _ => false,
        })
    }

    /// Whether a keyword of some rule occurs in the message.
    pub(super) fn keyword_rule_hit(&self) -> bool {
        self.candidates.keyword_rule
    }

    /// Whether the best intent is confident.
    pub(super) fn confident(&self) -> bool {
        self.understanding.intent.is_some() && self.understanding.confidence >= self.rules.shop.threshold
    }

    pub(super) fn fallback(&mut self, skip_llm: bool) -> Decision {
        let rules = self.rules;
        for arm in &rules.fallback {
            if let Some(when) = &arm.when
                && !self.holds(when, format_args!("fallback"))
            {
                continue;
            }
            match &arm.action {
                FallbackAction::Handoff { handoff, reply } => {
                    let reason = handoff.reason.clone().unwrap_or_else(|| "fallback".into());
                    self.trace.push(step("fallback", format!("handoff: {reason}")));
                    // The arm's own words replace the shop's handoff message (unlike a
                    // rule's reply, which comes before it): the editor wrote what the
                    // customer is told on this way to a person. Should every hole of it
                    // fail, the customer still hears the shop's message.
                    let said = reply
                        .as_ref()
                        .map(|t| self.render(t, format_args!("fallback")))
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or_else(|| self.pick(&rules.shop.handoff_message).clone());
                    let mut answer = Answer::new(AnswerSource::Handoff, "");
                    answer.handoff = Some(Box::new(Handing::new(handoff, || reason, said)));
                    return Decision::Answer(answer);
                }
                FallbackAction::Reply(template) => {
                    self.trace.push(step("fallback", "reply"));
                    let mut answer =
                        Answer::new(AnswerSource::Fallback, self.render(template, format_args!("fallback")));
                    answer.failure = true;
                    return Decision::Answer(answer);
                }
                FallbackAction::Llm(_) if skip_llm => continue,
                FallbackAction::Llm(call) => {
                    if self.engine.llm.is_some() {
                        return Decision::Llm(*call);
                    }
                    self.trace.push(step("fallback", "llm: no model is configured"));
                    return self.fail_and_fall_back();
                }
            }
        }
        self.trace
            .push(step("fallback", "nothing applies; the shop's fallback message"));
        let mut answer = Answer::new(AnswerSource::Fallback, self.pick(&rules.shop.fallback_message).clone());
        answer.failure = true;
        Decision::Answer(answer)
    }

    /// Routes a handoff (`answer.handoff`) to its queue and finishes what the customer is
    /// told: the queue is the handoff's `to`, else the first queue in routing order whose
    /// `for` holds, else the default queue, else none. A queue closed at the turn's time
    /// (`as_of` respected) answers with its `off_hours` text and raises a `handoff` ticket
    /// (recorded before the answer, as a flow's `create_ticket`); the bot keeps the
    /// conversation. Otherwise the shop's handoff message (or the arm's words) is followed
    /// by the queue's `waiting` text, its holes reading the customer's place.
    fn route(&mut self, answer: &mut Answer, host: &TurnHost) {
        let rules = self.rules;
        let Some(handing) = answer.handoff.as_mut() else {
            return;
        };
        // A flow that hands off has ended, but the queues' `for` see it as the
        // conversation's flow (`session.flow`): where its customer goes depends on it.
        let flow_ended = handing.to.is_none() && self.session.flow.is_none() && answer.flow.is_some();
        if flow_ended {
            let mut session = scope::session_map(&self.session, rules.reads_past);
            session.insert("flow".into(), answer.flow.clone().map_or(Dynamic::UNIT, Dynamic::from));
            self.scope.set_value("session", session);
        }
        let queue = match handing.to {
            Some(i) => Some(i),
            None => rules
                .queues
                .iter()
                .enumerate()
                .find(|(_, q)| {
                    q.audience
                        .as_ref()
                        .is_some_and(|when| self.holds(when, format_args!("queue {}", q.name)))
                })
                .map(|(i, _)| i)
                .or(rules.default_queue),
        };
        if flow_ended {
            self.refresh_session_vars();
        }
        let Some(queue) = queue.map(|i| &rules.queues[i]) else {
            answer.reply = joined(&answer.reply, &handing.said);
            return;
        };
        handing.group = Some(queue.name.clone());
        let how = if handing.to.is_some() {
            "to"
        } else if queue.audience.is_some() {
            "for"
        } else {
            "default"
        };
        let closed = queue.hours.as_ref().is_some_and(|h| !h.is_open(self.now.naive_local()));
        let said = if closed {
            handing.off_hours = true;
            self.trace.push(step(
                "queue",
                format!(
                    "{} ({}, {how}): closed at {}; off-hours reply and a ticket, the bot keeps the conversation",
                    queue.name,
                    queue.location,
                    self.now.format("%a %H:%M")
                ),
            ));
            let mut details = std::collections::BTreeMap::new();
            details.insert("reason".to_string(), handing.reason.clone());
            details.insert("group".to_string(), queue.name.clone());
            details.insert("kind".to_string(), handing.kind.name().to_string());
            let message = self.said.as_deref().unwrap_or(&self.message);
            details.insert("message".to_string(), message.to_string());
            match host
                .tickets
                .create_with("handoff", &queue.name, details, &host.session_id, &host.date, host.at)
            {
                Ok(ticket) => {
                    host.note(format!("ticket {} created (handoff {})", ticket.id, queue.name));
                    if let Some(observer) = &host.observer {
                        observer.observe(&super::Event::Ticket { ticket: &ticket });
                    }
                }
                Err(error) => {
                    tracing::error!(session = %host.session_id, kind = "handoff", %error, "ticket not recorded");
                    host.note(format!("ticket not recorded (handoff {}): {error}", queue.name));
                    host.ticket_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            match &queue.off_hours {
                Some(text) => self.render(text, format_args!("queue {}", queue.name)),
                None => handing.said.clone(),
            }
        } else {
            let place = self.engine.queues.as_ref().map_or(
                super::queue::Place {
                    position: 1,
                    wait_minutes: None,
                },
                |q| q.place(&queue.name),
            );
            handing.place = Some(place.position);
            self.trace.push(step(
                "queue",
                format!(
                    "{} ({}, {how}): waiting, place {}",
                    queue.name, queue.location, place.position
                ),
            ));
            match &queue.waiting {
                Some(text) => {
                    let mut map = Map::new();
                    map.insert("position".into(), Dynamic::from(place.position as i64));
                    map.insert(
                        "wait_minutes".into(),
                        Dynamic::from(place.wait_minutes.map_or(0, |m| m.min(i64::MAX as u64) as i64)),
                    );
                    map.insert("label".into(), self.pick(&queue.label).clone().into());
                    map.insert("name".into(), queue.name.clone().into());
                    let mark = self.scope.len();
                    self.scope.push("queue", map);
                    let waiting = self.render(text, format_args!("queue {}", queue.name));
                    self.scope.rewind(mark);
                    joined(&handing.said, &waiting)
                }
                None => handing.said.clone(),
            }
        };
        answer.reply = joined(&answer.reply, &said);
    }

    /// Counts a failure and runs the fallback chain again without its model arms, so that
    /// `when session.failures >= 3 handoff` sees the failure that just happened.
    pub(super) fn fail_and_fall_back(&mut self) -> Decision {
        self.session.failures += 1;
        self.failure_counted = true;
        self.refresh_session_vars();
        self.fallback(true)
    }

    /// Updates the session with the answer, saves it and builds the response.
    fn finish(mut self, mut answer: Answer, now_ms: i64) -> Result<TurnResponse, EngineError> {
        if let Some(hit) = self.cache_hit {
            self.engine.cache.record(hit);
        }
        // No text reaches a customer without passing safety: rule and flow replies too (an
        // order record may hold a phone number), not only the model's.
        if !answer.reply.is_empty() && answer.source != AnswerSource::Safety {
            let verdict = self.rules.safety.check_output(&answer.reply);
            if let Some(blocked) = verdict.blocked {
                self.trace
                    .push(step("safety", format!("reply blocked: {}", blocked.category)));
                answer = Answer::new(AnswerSource::Safety, blocked.reply);
            } else if !verdict.findings.is_empty() {
                self.trace.push(step(
                    "safety",
                    format!("reply masked: {}", describe_findings(&verdict.findings)),
                ));
                answer.reply = verdict.masked;
            }
        }
        if answer.source == AnswerSource::Silent {
            let mut response = silent(self.rules, &self.session, self.trace, self.stored_token);
            response.covered = self.covered;
            response.script_errors = self.script_errors;
            return Ok(response);
        }
        let event = self.event.is_some();
        let session = &mut self.session;
        session.turns += 1;
        if event {
            // An event is no attempt of the customer's: it neither fails nor succeeds.
        } else if answer.failure {
            if !self.failure_counted {
                session.failures += 1;
            }
        } else if answer.handoff.is_none() && answer.source != AnswerSource::Context {
            // An acknowledgement or a goodbye neither fails nor resolves anything: the
            // count of failed turns in a row stands.
            session.failures = 0;
        }
        if self.understanding.intent.is_some() && self.understanding.confidence >= self.rules.shop.threshold {
            session.last_intent = self.understanding.intent.clone();
        }
        let said = self.said.take().unwrap_or(self.message);
        // An event said nothing: the history keeps kefu's answer to it only.
        if !event {
            session.feel(self.understanding.emotion);
            session.remember(Role::User, &said, now_ms);
            with_images(session, self.images);
        }
        if !answer.reply.is_empty() {
            session.remember(Role::Bot, &answer.reply, now_ms);
        }
        session.asked = asked_by(self.rules, session, &answer);
        if let Some(handing) = &answer.handoff {
            session.flow = None;
            // After hours the bot keeps the conversation: a ticket stands in for the wait.
            if !handing.off_hours {
                session.takeover = Some(crate::dialogue::Takeover {
                    reason: Some(handing.reason.clone()),
                    since: now_ms,
                    kind: handing.kind,
                    group: handing.group.clone(),
                    ..crate::dialogue::Takeover::default()
                });
            }
        }
        session.updated_at = now_ms;
        let history = usize::from(!event) + usize::from(!answer.reply.is_empty());
        let mut response = response_for(
            self.rules,
            &self.session,
            &self.understanding,
            answer,
            self.engine.config.explain,
        );
        response.trace = self.trace;
        response.covered = self.covered;
        response.usage = self.usage;
        response.prompt = self.prompt;
        response.script_errors = self.script_errors;
        response.parts = self.part_answers;
        response.message = said;
        response.choices = choices(&self.session, &response);
        let added = save::Added {
            message: &response.message,
            history,
            answered: true,
            queued: false,
            memory: &self.memory_changes,
        };
        let saved = save_turn(self.engine, self.read, self.session, added, &response, self.sent)?;
        Ok(saved_response(response, saved))
    }
}

/// Which answer an answer is, to say each once when two questions get the same one.
fn answer_identity(a: &Answer) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    (
        a.rule.as_deref(),
        a.promotion.as_deref(),
        a.faq.as_deref(),
        a.flow.as_deref(),
    )
}

impl<'a> Turn<'a> {
    /// Makes `text` (as `u` understood it, triggering `candidates`) the message the
    /// answering steps and scripts see (`message`, `intent`, `confidence`, `entities`);
    /// returns the one it replaces.
    fn enter_message(
        &mut self,
        text: String,
        u: Understanding,
        candidates: &'a Candidates,
    ) -> (String, Understanding, &'a Candidates) {
        self.scope.set_value("message", text.clone());
        self.scope
            .set_value("intent", u.intent.clone().map_or(Dynamic::UNIT, Dynamic::from));
        self.scope.set_value("confidence", u.confidence);
        self.scope.set_value("entities", Dynamic::from_map(u.entities_map()));
        if self.rules.reads_all_entities {
            self.scope
                .set_value("all_entities", Dynamic::from_map(u.all_entities_map()));
        }
        self.retrieval = None;
        (
            std::mem::replace(&mut self.message, text),
            std::mem::replace(&mut self.understanding, u),
            std::mem::replace(&mut self.candidates, candidates),
        )
    }

    /// Answers a message that asks several questions, one part at a time in the
    /// message's order, by the steps that need only the part: rules, promotions, a flow
    /// start and the FAQ. Up to the shop's `max_answers` answers are joined into one
    /// reply; a part answered the same way as an earlier one is not said twice. A flow's
    /// question must end the reply, so a part that would start a flow before the last
    /// answer is taken up after the others (one flow a message). A part that hands off
    /// hands the whole turn off, after the answers before it. A part nothing answers is
    /// named in the trace (and in the response's `parts`) and left; when no part is
    /// answered, `None`: the whole message goes the usual way (its fallback, its model).
    fn answer_parts(&mut self) -> Option<Answer> {
        let parts: &'a [Part] = self.parts;
        let limit = self.rules.shop.max_answers;
        let quoted: Vec<String> = parts.iter().map(|p| format!("«{}»", p.text)).collect();
        self.trace.push(step(
            "split",
            format!("{} questions: {}", parts.len(), quoted.join(" ")),
        ));
        let whole = self.enter_message(String::new(), Understanding::default(), self.candidates);
        self.part_answers = parts
            .iter()
            .map(|part| super::PartAnswer {
                text: part.text.clone(),
                intent: part.understanding.intent.clone(),
                confidence: part.understanding.confidence,
                source: None,
                rule: None,
                flow: None,
                promotion: None,
                faq: None,
            })
            .collect();
        let mut answers: Vec<Answer> = Vec::new();
        let mut last_answered: Option<usize> = None;
        // A part that would start a flow before the last answer: taken up at the end.
        let mut deferred: Option<usize> = None;
        let mut stopped = false;
        for (i, part) in parts.iter().enumerate() {
            let n = i + 1;
            if stopped {
                self.trace
                    .push(step("split", format!("part {n}: not looked at after the handoff")));
                continue;
            }
            let taken = answers.len() + usize::from(deferred.is_some());
            if taken >= limit {
                self.trace.push(step(
                    "split",
                    format!(
                        "part {n}: not answered: the shop answers at most {limit} questions of a message (max_answers)"
                    ),
                ));
                continue;
            }
            self.enter_message(part.text.clone(), part.understanding.clone(), &part.candidates);
            self.trace.push(step(
                "nlu",
                format!(
                    "part {n}: {}",
                    describe_understanding(&part.understanding, self.engine.config.explain)
                ),
            ));
            let last = n == parts.len() || taken + 1 == limit;
            let mut answer = self.answer_by_rules().or_else(|| self.answer_by_promotions());
            if answer.is_none() && !part.candidates.flow_starts.is_empty() && deferred.is_none() {
                if !last {
                    self.trace.push(step(
                        "split",
                        format!("part {n}: would start a flow; taken up after the other answers, so that its question ends the reply"),
                    ));
                    deferred = Some(i);
                    continue;
                }
                answer = self.start_flow();
            }
            let answer = answer.or_else(|| self.answer_by_faq());
            stopped = self.take_part_answer(i, answer, &mut answers);
            if self.part_answers[i].source.is_some() {
                last_answered = Some(i);
            }
        }
        if let Some(i) = deferred {
            let n = i + 1;
            if stopped {
                self.trace
                    .push(step("split", format!("part {n}: not looked at after the handoff")));
            } else {
                let part = &parts[i];
                self.enter_message(part.text.clone(), part.understanding.clone(), &part.candidates);
                let answer = self.start_flow().or_else(|| self.answer_by_faq());
                self.take_part_answer(i, answer, &mut answers);
                if self.part_answers[i].source.is_some() {
                    last_answered = Some(i);
                }
            }
        }
        // Back to the whole message; the intent the session remembers is the last
        // answered question's, what a follow-up ("那红色的呢") is about.
        let (message, mut understanding, candidates) = whole;
        if let Some(i) = last_answered {
            let part = &parts[i].understanding;
            understanding.intent.clone_from(&part.intent);
            understanding.confidence = part.confidence;
            understanding.levels.clone_from(&part.levels);
        }
        self.enter_message(message, understanding, candidates);
        let Some(mut answer) = answers.pop() else {
            self.trace.push(step(
                "split",
                "no question was answered on its own; the whole message is answered as one",
            ));
            self.part_answers.clear();
            return None;
        };
        if !answers.is_empty() {
            let mut reply: Vec<&str> = answers.iter().map(|a| a.reply.as_str()).collect();
            reply.push(&answer.reply);
            answer.reply = reply.join("\n");
        }
        Some(answer)
    }

    /// Records what answered part `i` (nothing, when `answer` is `None`) and adds the
    /// answer to `answers` unless an earlier part got the same one; whether the answer
    /// ends the turn (a handoff, or a flow that now waits for the customer).
    fn take_part_answer(&mut self, i: usize, answer: Option<Answer>, answers: &mut Vec<Answer>) -> bool {
        let n = i + 1;
        let Some(answer) = answer else {
            self.trace.push(step(
                "split",
                format!("part {n}: not answered: no rule, promotion, flow or FAQ entry takes it alone"),
            ));
            return false;
        };
        let record = &mut self.part_answers[i];
        record.source = Some(answer.source);
        record.rule.clone_from(&answer.rule);
        record.flow.clone_from(&answer.flow);
        record.promotion.clone_from(&answer.promotion);
        record.faq.clone_from(&answer.faq);
        if answer.handoff.is_none()
            && let Some(same) = answers
                .iter()
                .position(|a| answer_identity(a) == answer_identity(&answer))
        {
            self.trace.push(step(
                "split",
                format!("part {n}: the same answer as the {} one; said once", ordinal(same + 1)),
            ));
            return false;
        }
        let stops = answer.handoff.is_some() || answer.flow.is_some();
        answers.push(answer);
        stops
    }
}

/// Two texts on their own lines, either left out when empty.
fn joined(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty()) {
        (true, _) => second.to_string(),
        (_, true) => first.to_string(),
        _ => format!("{first}\n{second}"),
    }
}

/// "first", "second" … for the trace.
fn ordinal(n: usize) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        n => format!("{n}th"),
    }
}

/// The quick replies of a reply (`TurnResponse::choices`): the options of a question
/// that offers some (read from the reply, or a flow's question, by `asked_by`), and for a
/// yes-or-no question its two answers in the turn's language, worded so that the reply
/// reads as a clear yes or no ("是" / "不用了"; "Yes" / "No"). None for another language,
/// which kefu's reading of short replies does not know, and none after a handoff.
fn choices(session: &Session, response: &TurnResponse) -> Vec<String> {
    if response.handoff.is_some() || response.reply.is_empty() {
        return Vec::new();
    }
    match &session.asked.kind {
        PendingKind::Choice(options) => options.clone(),
        PendingKind::YesNo if response.language == Lang::ZH => vec!["是".into(), "不用了".into()],
        PendingKind::YesNo if response.language == Lang::EN => vec!["Yes".into(), "No".into()],
        _ => Vec::new(),
    }
}

/// The response to an event nothing answered ([`AnswerSource::Silent`]): no reply, and
/// the conversation as it was read (nothing saved; `token` is the stored one, empty for
/// a conversation that does not exist yet).
fn silent(rules: &RuleSet, session: &Session, trace: Vec<TraceStep>, token: String) -> TurnResponse {
    let mut response = response_for(
        rules,
        session,
        &Understanding::default(),
        Answer::new(AnswerSource::Silent, ""),
        false,
    );
    response.session_token = token;
    response.trace = trace;
    response
}

/// What the answer asks the customer, for reading their next message: the flow's
/// question when a flow waits (a `confirm` step asks yes or no; any other question is at
/// least open), else what the reply's last question asks. Nothing after a handoff.
fn asked_by(rules: &RuleSet, session: &Session, answer: &Answer) -> crate::dialogue::Asked {
    use crate::ruleset::OpKind;
    if answer.handoff.is_some() {
        return crate::dialogue::Asked::default();
    }
    let waiting = session
        .flow
        .as_ref()
        .filter(|f| f.awaiting.is_some())
        .and_then(|state| {
            let flow = rules.flows.iter().find(|f| f.name == state.name)?;
            flow.ops.get(state.pc)
        });
    let kind = match waiting.map(|op| &op.kind) {
        Some(OpKind::Ask { confirm: true, .. }) => PendingKind::YesNo,
        Some(_) => match reading::pending_of(&answer.reply) {
            PendingKind::Nothing => PendingKind::Open,
            kind => kind,
        },
        None => reading::pending_of(&answer.reply),
    };
    crate::dialogue::Asked {
        rule: (kind != PendingKind::Nothing).then(|| answer.rule.clone()).flatten(),
        kind,
    }
}

/// Saves the session of a turn that ended before it was understood (its message blocked,
/// or `queued` for the agent who holds the conversation) and finishes its response. The
/// turn added the message to the history, and kefu's reply unless it was queued.
fn end_early(
    engine: &Engine,
    read: save::Read,
    session: Session,
    mut response: TurnResponse,
    (message, sent): (String, &str),
    queued: bool,
) -> Result<TurnResponse, EngineError> {
    response.message = message;
    let added = save::Added {
        message: &response.message,
        history: if queued { 1 } else { 2 },
        answered: false,
        queued,
        memory: &[],
    };
    let saved = save_turn(engine, read, session, added, &response, sent)?;
    Ok(saved_response(response, saved))
}

/// Saves the turn's session (`save::save`); when that fails, keeps the turn's answer
/// (`response`, to the message as `sent`) as [`Unsure`], in case the write did land.
fn save_turn(
    engine: &Engine,
    read: save::Read,
    session: Session,
    added: save::Added<'_>,
    response: &TurnResponse,
    sent: &str,
) -> Result<save::Saved, EngineError> {
    let (updated_at, turns, history) = (session.updated_at, session.turns, session.history.len());
    save::save(engine, read, session, added).inspect_err(|_| {
        let unsure = Unsure {
            message: sent.to_string(),
            // What an unopposed save stores; a merged one has a higher rev, and is not
            // mistaken for this turn's.
            rev: read.rev().wrapping_add(1),
            updated_at,
            turns,
            history,
            response: response.clone(),
        };
        engine.unsure.insert(response.session_id.clone(), Arc::new(unsure));
        engine.unsure_kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
}

/// The response as the save left it: the conversation's count and token as stored, or,
/// when a person acted during the turn, the answer withdrawn (not shown: the agent has
/// the conversation now).
fn saved_response(mut response: TurnResponse, saved: save::Saved) -> TurnResponse {
    match saved {
        save::Saved::AsIs => {}
        save::Saved::Kept { turns, token } => {
            response.turn = turns;
            response.session_token = token;
        }
        save::Saved::Dropped { reason } => {
            let what = match (&response.rule, &response.flow, &response.promotion, &response.faq) {
                (Some(rule), ..) => format!("rule {rule}"),
                (_, Some(flow), ..) => format!("flow {flow}"),
                (_, _, Some(promotion), _) => format!("promotion {promotion}"),
                (.., Some(faq)) => format!("faq {faq}"),
                _ => format!("{:?} answer", response.source).to_lowercase(),
            };
            response.trace.push(step(
                "takeover",
                format!("a person took the conversation over during the turn; the {what} was dropped"),
            ));
            response.reply.clear();
            response.source = AnswerSource::Human;
            response.rule = None;
            response.flow = None;
            response.step = None;
            response.promotion = None;
            response.faq = None;
            response.answer_confidence = None;
            response.handoff = Some(Handoff {
                reason,
                kind: HandoffKind::Agent,
                ..Handoff::default()
            });
            response.dropped = true;
        }
    }
    response
}

/// Masks personal data in every string of `value`, in place.
pub(super) fn redact_json(safety: &crate::safety::Safety, value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(masked) = safety.redact_pii(text) {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(safety, v)),
        Value::Object(map) => map.values_mut().for_each(|v| redact_json(safety, v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn response_for(rules: &RuleSet, session: &Session, u: &Understanding, answer: Answer, explain: bool) -> TurnResponse {
    TurnResponse {
        session_id: session.id.clone(),
        reply: answer.reply,
        source: answer.source,
        rule: answer.rule,
        flow: answer.flow,
        step: answer.step,
        promotion: answer.promotion,
        faq: answer.faq,
        intent: u.intent.clone(),
        confidence: u.confidence,
        runners_up: u
            .runners_up()
            .filter(|_| explain)
            .map(|(intent, confidence)| super::RunnerUp {
                intent: intent.clone(),
                confidence: *confidence,
            })
            .collect(),
        emotion: u.emotion,
        language: session.language.unwrap_or_else(|| rules.shop.language()),
        entities: u.entities.clone(),
        handoff: answer.handoff.map(|h| {
            let h = *h;
            Handoff {
                reason: h.reason,
                kind: h.kind,
                group: h.group,
                off_hours: h.off_hours,
                place: h.place,
            }
        }),
        rules_version: rules.version.clone(),
        rules_role: crate::dialogue::RulesRole::Live,
        session_token: session.token.clone(),
        choices: Vec::new(),
        trace: Vec::new(),
        latency_ms: 0.0,
        script_time: std::time::Duration::ZERO,
        covered: Vec::new(),
        message: String::new(),
        answer_confidence: answer.confidence,
        turn: session.turns,
        dropped: false,
        usage: super::Usage::default(),
        prompt: Vec::new(),
        script_errors: Vec::new(),
        parts: Vec::new(),
    }
}
