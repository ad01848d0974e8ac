//! What agents do to a conversation: take it over, reply, release, note, resolve,
//! requeue, and the suggested reply, each through the engine, on the blocking pool when
//! sessions are remote.
//!
//! **Stand-ins until Part E2 merges (issue #23).** The engine in this branch has
//! `takeover(id, agent)`, `agent_reply(id, text)` and `release(id)` only. Until the
//! engine's own `takeover(id, agent, force)`, `agent_reply(id, agent, text)`,
//! `release(id, agent, resume)`, `note`, `resolve`, `requeue`, `suggest` and `silence`
//! are merged, [`Acts`] does what the contract says they do: the checks (held by another
//! agent, a waiting conversation assigned before a reply) around the old methods, and
//! `note`, `resolve` and `requeue` as one atomic store update each whose event it reports
//! to the service's observer itself. At the merge each method body becomes the one engine
//! call it names, and the store and observer leave this struct.

use std::sync::Arc;

use serde::Serialize;

use crate::Engine;
use crate::dialogue::{ConvState, Note, Resolution, Role, Session};
use crate::engine::{AnswerSource, EngineError, Event, Observer, TraceStep, TurnRequest};
use crate::store::{MemoryStore, SessionStore, Write};

/// `Engine::with_queues(queues)` (Part E1, issue #23): the engine asks the inbox for a
/// waiting customer's place. Stand-in until it is merged: the engine is returned as it is
/// (its handoffs say position 1, no wait).
pub fn with_queues(engine: Engine, queues: Arc<dyn crate::engine::queue::Queues>) -> Engine {
    let _ = queues;
    engine
}

/// `Engine::silence(id)` for a takeover made on another node (see [`Acts::silence`]).
pub fn silence(engine: &std::sync::Weak<Engine>, id: &str) {
    let _ = (engine.upgrade(), id);
}

/// Why an act was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ActError {
    /// What the engine said.
    Engine(EngineError),
    /// Another named agent holds the conversation.
    HeldBy(String),
    /// The request is not acceptable (an outcome too long...).
    Invalid(String),
}

impl From<EngineError> for ActError {
    fn from(error: EngineError) -> Self {
        ActError::Engine(error)
    }
}

impl From<ActError> for super::super::ApiError {
    fn from(error: ActError) -> Self {
        use super::super::ApiError;
        match error {
            ActError::Engine(e) => ApiError::from_engine(e),
            ActError::HeldBy(agent) => ApiError::new(
                hyper::StatusCode::CONFLICT,
                "held_by_other",
                format!("`{agent}` holds this conversation; take it over with `force: true` to take it from them"),
            )
            .with_details(serde_json::json!({ "agent": agent })),
            ActError::Invalid(message) => ApiError::invalid(message),
        }
    }
}

/// What the rules or the knowledge base would answer the customer's last message now.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Suggestion {
    /// The customer's message it answers (empty when there is none).
    pub message: String,
    /// The suggested answer (empty when nothing confident answers).
    pub reply: String,
    /// What answered.
    pub source: Option<AnswerSource>,
    /// The rule.
    pub rule: Option<String>,
    /// The FAQ entry.
    pub faq: Option<String>,
    /// The flow.
    pub flow: Option<String>,
    /// The promotion.
    pub promotion: Option<String>,
    /// The intent.
    pub intent: Option<String>,
    /// Its confidence.
    pub confidence: f64,
    /// The model's draft (the rules deferred to it).
    pub model: bool,
    /// How it was decided.
    pub trace: Vec<TraceStep>,
}

/// The longest outcome of a resolution, in characters.
pub const OUTCOME_CHARS: usize = 64;

/// Agents' acts on conversations (see the module header).
pub struct Acts {
    engine: Arc<Engine>,
    /// Stand-in only: the engine's store, for `note`, `resolve` and `requeue`.
    sessions: Arc<dyn SessionStore>,
    /// Stand-in only: the service's observer, told of those three acts.
    observer: Arc<dyn Observer>,
}

impl Acts {
    /// Acts on `engine`'s conversations (`sessions` and `observer` being the engine's).
    pub fn new(engine: Arc<Engine>, sessions: Arc<dyn SessionStore>, observer: Arc<dyn Observer>) -> Self {
        Acts {
            engine,
            sessions,
            observer,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Refuses when another named agent holds `id` (unless `force`).
    fn check_holder(&self, id: &str, agent: Option<&str>, force: bool) -> Result<Option<Session>, ActError> {
        let session = self.engine.session(id)?;
        if let (Some(held), Some(agent)) = (
            session
                .as_ref()
                .and_then(|s| s.takeover.as_ref())
                .filter(|t| t.held())
                .and_then(|t| t.agent.as_deref()),
            agent,
        ) && held != agent
            && !force
        {
            return Err(ActError::HeldBy(held.to_string()));
        }
        Ok(session)
    }

    /// `Engine::takeover(id, agent, force)`: held by another named agent and not `force`
    /// → [`ActError::HeldBy`].
    pub fn takeover(&self, id: &str, agent: Option<String>, force: bool) -> Result<Session, ActError> {
        self.check_holder(id, agent.as_deref(), force)?;
        let session = self.engine.takeover(id, agent)?;
        self.silence(id);
        Ok(session)
    }

    /// `Engine::agent_reply(id, agent, text)`: a waiting conversation is assigned to the
    /// agent first; held by another named agent → [`ActError::HeldBy`].
    pub fn reply(&self, id: &str, agent: Option<&str>, text: &str) -> Result<Session, ActError> {
        let session = self.check_holder(id, agent, false)?;
        if session.as_ref().is_some_and(|s| s.state() == ConvState::Waiting) {
            self.engine.takeover(id, agent.map(str::to_string))?;
        }
        Ok(self.engine.agent_reply(id, text)?)
    }

    /// `Engine::release(id, agent, resume)` (the flow cannot resume before E2: the old
    /// engine ends a flow at takeover).
    pub fn release(&self, id: &str, agent: Option<&str>, resume: bool) -> Result<Session, ActError> {
        self.check_holder(id, agent, false)?;
        let _ = resume;
        Ok(self.engine.release(id)?)
    }

    /// `Engine::note(id, agent, text)`: masked, kept (the oldest past the bound dropped).
    pub fn note(&self, id: &str, agent: Option<&str>, text: &str) -> Result<Note, ActError> {
        let note = Note {
            agent: agent.map(str::to_string),
            text: self.engine.rules().safety.redact_pii(text.trim()).into_owned(),
            at: super::now_ms(),
        };
        self.update(id, |session| {
            session.notes.push(note.clone());
            if session.notes.len() > crate::dialogue::session::NOTES_LIMIT {
                session.notes.remove(0);
            }
            Ok(())
        })?;
        self.observer.observe(&Event::Note {
            session: id,
            note: &note,
        });
        Ok(note)
    }

    /// `Engine::resolve(id, agent, outcome)`: the takeover ends, the flow is dropped,
    /// `resolved` set.
    pub fn resolve(&self, id: &str, agent: Option<&str>, outcome: &str) -> Result<Session, ActError> {
        let outcome = outcome.trim();
        let chars = outcome.chars().count();
        if chars == 0 || chars > OUTCOME_CHARS {
            return Err(ActError::Invalid(format!(
                "`outcome` must have 1 to {OUTCOME_CHARS} characters"
            )));
        }
        self.check_holder(id, agent, false)?;
        let resolution = Resolution {
            outcome: outcome.to_string(),
            agent: agent.map(str::to_string),
            at: super::now_ms(),
        };
        let mut ended = None;
        let session = self.update(id, |session| {
            ended = session.takeover.take();
            if let Some(agent) = ended.as_ref().and_then(|t| t.agent.clone()) {
                session.last_agent = Some(agent);
            }
            session.flow = None;
            session.failures = 0;
            session.resolved = Some(resolution.clone());
            session.human_acts += 1;
            session.updated_at = resolution.at;
            Ok(())
        })?;
        self.observer.observe(&Event::Resolve {
            session: id,
            ended: ended.as_ref(),
            resolution: &resolution,
        });
        Ok(session)
    }

    /// `Engine::requeue(id, agent)`: held by that agent → waiting again (agent and
    /// pick-up cleared, `since` kept); anything else changes nothing.
    pub fn requeue(&self, id: &str, agent: Option<&str>) -> Result<Session, ActError> {
        let mut moved = false;
        let session = self.update(id, |session| {
            moved = false;
            match &mut session.takeover {
                Some(t) if t.held() && t.agent.as_deref() == agent => {
                    t.agent = None;
                    t.assigned_at = None;
                    t.first_reply_at = None;
                    moved = true;
                    Ok(())
                }
                _ => Err(None),
            }
        })?;
        if moved {
            self.observer.observe(&Event::Requeue { session: id, agent });
        }
        Ok(session)
    }

    /// `Engine::silence(id)`: stops a model generating for `id` (E2's in-process
    /// registry). Until it is merged, a takeover still drops the running turn's answer at
    /// its save (`human_acts`), which is what keeps it from the customer.
    pub fn silence(&self, id: &str) {
        let _ = id;
    }

    /// `Engine::suggest(id)`: a turn on a copy of the conversation with the takeover
    /// removed, in a sibling engine over a throwaway store, no observer: nothing saved,
    /// no event.
    pub fn suggest(
        &self,
        id: &str,
        profile: Option<serde_json::Map<String, serde_json::Value>>,
        context: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Suggestion, ActError> {
        let Some(mut session) = self.engine.session(id)? else {
            return Err(EngineError::NoSession(id.to_string()).into());
        };
        let Some(message) = session
            .history
            .iter()
            .rev()
            .find(|e| e.role == Role::User)
            .map(|e| e.text.to_string())
        else {
            return Ok(Suggestion::default());
        };
        session.takeover = None;
        session.resolved = None;
        session.human_acts = 0;
        let scratch: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        let copy = session.clone();
        scratch
            .update(id, &mut |stored| {
                *stored = Some(copy.clone());
                Write::Store
            })
            .map_err(|e| EngineError::Store(e.to_string()))?;
        let sibling = self.engine.sibling(self.engine.rules(), scratch);
        let mut request = TurnRequest::new(id, message.clone());
        request.user = profile;
        request.context = context;
        let response = sibling.turn(request)?;
        let confident = !matches!(response.source, AnswerSource::Fallback | AnswerSource::Handoff);
        Ok(Suggestion {
            message,
            reply: if confident { response.reply } else { String::new() },
            source: Some(response.source),
            rule: response.rule,
            faq: response.faq,
            flow: response.flow,
            promotion: response.promotion,
            intent: response.intent,
            confidence: response.confidence,
            model: response.source == AnswerSource::Llm,
            trace: response.trace,
        })
    }

    /// One atomic change of a kept session (`Err(None)`: nothing to do, stored as is).
    fn update(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Session) -> Result<(), Option<ActError>>,
    ) -> Result<Session, ActError> {
        let mut refused = None;
        let mut missing = false;
        let stored = self
            .sessions
            .update(id, &mut |stored| {
                refused = None;
                let Some(session) = stored.as_mut() else {
                    missing = true;
                    return Write::Leave;
                };
                match change(session) {
                    Ok(()) => Write::Store,
                    Err(e) => {
                        refused = e;
                        Write::Leave
                    }
                }
            })
            .map_err(|e| EngineError::Store(e.to_string()))?;
        if let Some(e) = refused {
            return Err(e);
        }
        match stored {
            Some(session) if !missing => Ok(session),
            _ => Err(EngineError::NoSession(id.to_string()).into()),
        }
    }
}
