//! `kefu chat`: the terminal REPL that talks to the shop, with `:` commands for the trace,
//! the session, tickets, takeover and feedback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use kefu::{Engine, TurnRequest};

use super::load;
use super::model::ModelArgs;

/// Runs the REPL on the rules in `dir` until `:quit` or Ctrl-D.
pub fn run(
    dir: &Path,
    user: Option<String>,
    context: Option<String>,
    mut trace: bool,
    model: &ModelArgs,
    conversation_log: Option<PathBuf>,
) -> Result<()> {
    let mut user = json_map(user, "user")?;
    let mut context = json_map(context, "context")?;
    let mut engine = Engine::new(load(dir)?).with_config(kefu::engine::EngineConfig {
        llm_timeout: model.llm_timeout,
        // The terminal shows the trace: what the classifier nearly chose belongs in it.
        explain: true,
        ..kefu::engine::EngineConfig::default()
    });
    if let Some(llm) = model.open()? {
        engine = engine.with_llm(llm);
    }
    let engine = Arc::new(engine);
    // The engine reports every turn, takeover, reply, release and rating to the log, as
    // it does in `kefu serve`; the guard writes what is left when the chat ends.
    let _log_guard = match conversation_log {
        Some(dir) => {
            let current = Arc::clone(&engine);
            let (log, guard) =
                kefu::data::ConversationLog::open(kefu::data::LogConfig::new(dir), move || current.rules())?;
            engine.set_observer(Arc::new(log));
            Some(guard)
        }
        None => None,
    };
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::temp_dir().join("kefu-chat-history");
    let _ = editor.load_history(&history);
    let mut session = format!("chat-{}", std::process::id());
    let mut conversations = 0u32;
    println!(
        "kefu chat on {} (rules {}). `:help` lists commands, Ctrl-D quits.",
        dir.display(),
        engine.rules().version
    );
    loop {
        let line = match editor.readline("你> ") {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if let Some(command) = line.strip_prefix(':') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            match name {
                "help" => println!(
                    ":trace (toggle the decision trace)  :session  :tickets  :reset (new conversation)\n\
                     :user JSON  :context JSON  :takeover  :reply TEXT (as the agent)\n\
                     :release [resume] (resume: the flow the takeover paused goes on)  :note TEXT  :resolve OUTCOME\n\
                     :feedback SCORE [COMMENT] (1-5, as the customer)  :quit"
                ),
                "trace" => {
                    trace = !trace;
                    println!("trace {}", if trace { "on" } else { "off" });
                }
                "session" => println!("{}", serde_json::to_string_pretty(&engine.session(&session)?)?),
                "tickets" => println!("{}", serde_json::to_string_pretty(&engine.tickets())?),
                "reset" => {
                    conversations += 1;
                    session = format!("chat-{}-{conversations}", std::process::id());
                    println!("new conversation");
                }
                "user" => user = json_map(Some(arg.to_string()), "user")?,
                "context" => context = json_map(Some(arg.to_string()), "context")?,
                "takeover" => match engine.takeover(&session, Some("editor".into()), true) {
                    Ok(_) => println!("taken over: the bot stays silent until :release"),
                    Err(e) => println!("{e}"),
                },
                "reply" => match engine.agent_reply(&session, Some("editor"), arg) {
                    Ok(_) => println!("客服> {arg}"),
                    Err(e) => println!("{e}"),
                },
                "release" => match engine.release(&session, Some("editor"), arg == "resume") {
                    Ok(s) if s.flow.is_some() => println!("released: the bot answers again, in the flow it was in"),
                    Ok(_) => println!("released: the bot answers again"),
                    Err(e) => println!("{e}"),
                },
                "note" => match engine.note(&session, Some("editor"), arg) {
                    Ok(note) => println!("note kept: {}", note.text),
                    Err(e) => println!("{e}"),
                },
                "resolve" => match engine.resolve(&session, Some("editor"), arg) {
                    Ok(_) => println!("resolved ({}): the bot answers the next message", arg.trim()),
                    Err(e) => println!("{e}"),
                },
                "feedback" => {
                    let (score, comment) = arg.split_once(' ').unwrap_or((arg, ""));
                    match score.parse::<u8>() {
                        Ok(score @ 1..=5) => {
                            // The REPL is the customer, who holds the conversation's token.
                            let token = engine.session(&session)?.map(|s| s.token).unwrap_or_default();
                            match engine.feedback(&session, &token, score, Some(comment)) {
                                Ok(_) => println!("feedback {score} noted"),
                                Err(e) => println!("{e}"),
                            }
                        }
                        _ => println!(":feedback takes a score from 1 to 5"),
                    }
                }
                "quit" | "q" => break,
                other => println!("unknown command :{other}; :help lists them"),
            }
            continue;
        }
        let request = TurnRequest {
            session_id: session.clone(),
            message: line.to_string(),
            user: user.clone(),
            context: context.clone(),
            as_of: None,
            rules_version: None,
            channel: None,
            event: None,
            images: Vec::new(),
        };
        let response = engine.turn(request)?;
        if !response.reply.is_empty() {
            println!("客服> {}", response.reply);
        }
        let source = serde_json::to_value(response.source)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let named: Vec<&str> = [
            &response.rule,
            &response.promotion,
            &response.faq,
            &response.flow,
            &response.step,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let intent = response.intent.as_deref().unwrap_or("none");
        let handoff = response
            .handoff
            .as_ref()
            .map(|h| format!(" · handoff: {}", h.reason))
            .unwrap_or_default();
        println!(
            "      [{source} {} · {intent} {:.2} · {}{handoff} · {:.2} ms]",
            named.join(" "),
            response.confidence,
            response.emotion.as_str(),
            response.latency_ms
        );
        if trace {
            for step in &response.trace {
                println!("        {}: {}", step.stage, step.detail);
            }
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

/// Parses the JSON object of `--user`/`--context` (or `:user`/`:context`); `what` names the flag.
fn json_map(text: Option<String>, what: &str) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    text.map(|t| serde_json::from_str(&t).with_context(|| format!("--{what} must be a JSON object")))
        .transpose()
}
