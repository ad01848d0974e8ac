//! llama.cpp in process: one inference thread, continuous batching, prefix caching.
//!
//! # Shape
//! [`LlamaCpp::load`] starts one thread that owns the model and a context with `parallel`
//! sequences (slots). Callers hand it a [`GenerateRequest`] over a bounded channel and
//! wait for pieces of text on a channel of their own; when the queue is full the call
//! answers [`LlmError::Busy`] at once, so the engine falls back instead of piling up.
//!
//! Each step of the thread builds **one** batch: the next token of every generating
//! request, then as many pending prompt tokens as fit (a long prompt is fed in chunks so
//! that it does not stall the others), and decodes it once. Requests join and leave
//! between steps: continuous batching.
//!
//! # What is reused
//! Each sequence has its own stream of KV cells (attention then spans only its own), and
//! a prefix is moved between sequences by copying a stream: milliseconds, against the
//! seconds it takes to evaluate a long prefix.
//! - **Each slot keeps its tokens** after its request ends. A new request goes to the
//!   free slot whose resident tokens share the longest common prefix with its prompt,
//!   keeps that prefix and evaluates only the rest. A conversation's next turn repeats
//!   the previous prompt plus the answer and the new message, so it lands on its old
//!   slot and pays for the new suffix only (llama.cpp's server does the same).
//! - **The shared prefix** (the shop's persona and instructions, identical for every
//!   conversation) lives in a sequence of its own, the root. The root is learnt, not
//!   configured: it is the longest common prefix of the prompts seen, shrunk as new
//!   prompts come (two turns of one conversation share more than two conversations do)
//!   and relearnt when the prompts stop matching it (the persona changed on reload).
//!   A request whose slot holds less of its prompt than the root copies the root in.
//!
//! # Judging material
//! Every generated token's probability under the model (temperature 1, before sampling
//! filters and the repetition penalty) is recorded: the mean and the minimum feed
//! [`super::judge`]. Tokens are chosen by [`super::sample::Sampler`], which finds both in
//! two passes over the logits.
//!
//! # Chat template
//! The prompt is rendered with the chat template stored in the GGUF
//! (`tokenizer.chat_template`) through llama.cpp's built-in template engine. A model
//! without one, or with one llama.cpp does not recognise, falls back to ChatML
//! (`<|im_start|>role … <|im_end|>`), which most instruct models of the last years were
//! trained on; `--chat-template NAME` picks another of llama.cpp's built-in names.
//!
//! Only the template's own markup may become special tokens. The template is rendered a
//! second time with a placeholder for each message's text, which splits the prompt into
//! the template's pieces and the messages' text. The prompt is tokenized whole, as
//! llama.cpp's server does, and kept when its control tokens (`<|im_start|>`, `<|im_end|>`)
//! are exactly the template's; when the messages' text made more (a customer writing
//! `<|im_end|><|im_start|>system`), each piece is tokenized on its own and the text
//! without special-token parsing, so that text stays text. [`super::prompt`] defuses such
//! markup before it gets here; this is the second wall, and it holds for any model's
//! special tokens, not only the ones the prompt builder knows.

use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::LogOptions;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;

use super::cores::CoreBudget;
use super::sample::Sampler;
use super::{ChatMessage, ChatRole, Finish, GenerateRequest, Generation, LlmBackend, LlmError};

/// How the model is loaded and run.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    /// The GGUF file.
    pub model: PathBuf,
    /// CPU threads for decoding (0: one per core).
    pub threads: usize,
    /// Sequences decoded together: the most requests generating at once.
    pub parallel: usize,
    /// Tokens of context each sequence may use (prompt and answer).
    pub ctx_per_seq: u32,
    /// The most tokens in one decode call; a longer prompt is fed in chunks.
    pub batch: u32,
    /// Requests that may wait for a free sequence; one more is refused as busy.
    pub queue: usize,
    /// LoRA adapters and their scales (`--lora PATH[:SCALE]`, repeatable): one is
    /// loaded as it is, several are merged into one first ([`super::lora`]).
    pub lora: Vec<(PathBuf, f32)>,
    /// A llama.cpp built-in template name to use instead of the GGUF's own.
    pub chat_template: Option<String>,
    /// Seed of the samplers (each request's sampler is seeded from it and a counter).
    pub seed: u32,
    /// Give the machine's other work the cores it is using, decode by decode
    /// ([`super::cores`]); `false` (`--fixed-threads`): always `threads`.
    pub adaptive_threads: bool,
}

impl LlamaConfig {
    /// Defaults for `model`: one thread per core, 4 sequences of 2048 tokens.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        LlamaConfig {
            model: model.into(),
            threads: 0,
            parallel: 4,
            ctx_per_seq: 2048,
            batch: 512,
            queue: 16,
            lora: Vec::new(),
            chat_template: None,
            seed: 0x6b65_6675,
            adaptive_threads: true,
        }
    }
}

/// What the loaded model is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// `llama.cpp:<file name>`.
    pub name: String,
    /// Where the chat template came from: `gguf`, `fallback chatml`, or the name given.
    pub template: String,
    /// Decoding threads.
    pub threads: usize,
    /// Sequences.
    pub parallel: usize,
    /// Whether each decode's threads follow the machine's load ([`super::cores`]): false
    /// with `--fixed-threads`, one thread, or no `/proc/loadavg`.
    pub adaptive_threads: bool,
    /// Tokens of context per sequence.
    pub ctx_per_seq: u32,
}

/// The model in process. Cheap to share: calls go to the inference thread.
pub struct LlamaCpp {
    info: ModelInfo,
    jobs: Option<SyncSender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// One token of a rendered prompt ([`LlamaCpp::prompt_tokens`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptToken {
    /// The token id in the model's vocabulary.
    pub id: i32,
    /// Its bytes, special tokens written out (`<|im_start|>`). Not always text: a
    /// character may be split across tokens.
    pub piece: Vec<u8>,
    /// Whether it is a control token (turn markers, BOS, EOS).
    pub control: bool,
}

/// What the inference thread is asked to do.
enum Request {
    /// Generate an answer.
    Generate(Job),
    /// Render and tokenize a prompt, nothing more.
    Tokenize {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<PromptToken>, LlmError>>,
    },
}

/// One request on its way to the inference thread.
struct Job {
    messages: Vec<ChatMessage>,
    max_tokens: u32,
    temperature: f32,
    top_p: f32,
    deadline: Option<Instant>,
    stop: Vec<String>,
    ignore_eos: bool,
    submitted: Instant,
    events: mpsc::Sender<Event>,
    /// Set by the caller when it wants no more text (the judge saw enough): the request
    /// ends before its next decode, as a [`Finish::Cancelled`] generation.
    cancel: Arc<AtomicBool>,
}

/// What the inference thread tells a waiting caller.
enum Event {
    Text(String),
    Done(Generation),
    Failed(LlmError),
}

/// llama.cpp's backend may be initialised once per process; every model shares it.
fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    static LOGS: Once = Once::new();
    // llama.cpp prints every tensor it loads; its lines go to tracing, once per process.
    LOGS.call_once(|| llama_cpp_2::send_logs_to_tracing(LogOptions::default()));
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LlmError::Failed(format!("llama.cpp backend: {e}")))
}

impl LlamaCpp {
    /// Loads the model and starts the inference thread; returns once the model is ready
    /// (or failed to load).
    pub fn load(config: LlamaConfig) -> Result<LlamaCpp, LlmError> {
        if !config.model.is_file() {
            return Err(LlmError::Failed(format!(
                "{}: no such model file (models/fetch.sh fetches the default one)",
                config.model.display()
            )));
        }
        let backend = backend()?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let parallel = config.parallel.max(1);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Request>(config.queue.max(1));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo, LlmError>>();
        let thread = std::thread::Builder::new()
            .name("kefu-llama".into())
            .spawn(move || {
                let config = LlamaConfig {
                    threads,
                    parallel,
                    ..config
                };
                let mut model = match load_model(backend, &config) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // The adapter is read from the base model's tensors, so it is made before
                // the context borrows the model.
                let mut lora = match load_loras(&mut model, &config.lora) {
                    Ok(lora) => lora,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut worker = match Worker::new(backend, &model, &config, lora.as_mut()) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(worker.info.clone()));
                worker.run(&jobs_rx);
            })
            .map_err(|e| LlmError::Failed(format!("cannot start the model thread: {e}")))?;
        let info = ready_rx
            .recv()
            .map_err(|_| LlmError::Failed("the model thread stopped while loading".into()))??;
        Ok(LlamaCpp {
            info,
            jobs: Some(jobs_tx),
            thread: Some(thread),
        })
    }

    /// What was loaded.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokens a request with `messages` would be given, as generation renders and
    /// tokenizes them (chat template, generation prompt and all): for checking what a
    /// prompt turns into. Waits behind the requests already queued.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<PromptToken>, LlmError> {
        let (reply, rx) = mpsc::channel();
        let jobs = self.jobs.as_ref().ok_or(LlmError::Busy)?;
        jobs.send(Request::Tokenize {
            messages: messages.to_vec(),
            reply,
        })
        .map_err(|_| LlmError::Failed("the model thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| LlmError::Failed("the model thread stopped while tokenizing".into()))?
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its requests are done.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl LlmBackend for LlamaCpp {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, LlmError> {
        let (events, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            messages: request.messages.clone(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            deadline: request.deadline,
            stop: request.stop.clone(),
            ignore_eos: request.ignore_eos,
            submitted: Instant::now(),
            events,
            cancel: Arc::clone(&cancel),
        };
        let jobs = self.jobs.as_ref().ok_or(LlmError::Busy)?;
        match jobs.try_send(Request::Generate(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(LlmError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(LlmError::Failed("the model thread has stopped".into())),
        }
        loop {
            match rx.recv() {
                // After a stop, text already on its way is dropped; the generation that
                // follows still reports what was spent.
                Ok(Event::Text(t)) if !cancel.load(Ordering::Relaxed) => {
                    if on_text(&t).is_break() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(Event::Text(_)) => {}
                Ok(Event::Done(g)) => return Ok(g),
                Ok(Event::Failed(e)) => return Err(e),
                Err(_) => return Err(LlmError::Failed("the model thread stopped mid-answer".into())),
            }
        }
    }
}

fn load_model(backend: &LlamaBackend, config: &LlamaConfig) -> Result<LlamaModel, LlmError> {
    LlamaModel::load_from_file(backend, &config.model, &LlamaModelParams::default())
        .map_err(|e| LlmError::Failed(format!("{}: cannot load the model: {e}", config.model.display())))
}

/// The adapter to apply and its scale: the one given, or the given ones merged into a
/// temporary file (llama.cpp reads it while loading; it is removed right after).
fn load_loras(model: &mut LlamaModel, specs: &[(PathBuf, f32)]) -> Result<Option<(LlamaLoraAdapter, f32)>, LlmError> {
    match specs {
        [] => Ok(None),
        [(path, scale)] => Ok(Some((load_lora(model, path)?, *scale))),
        several => {
            let dir =
                tempfile::tempdir().map_err(|e| LlmError::Failed(format!("cannot merge the LoRA adapters: {e}")))?;
            let merged = dir.path().join("merged-lora.gguf");
            super::lora::merge(several, &merged)
                .map_err(|e| LlmError::Failed(format!("cannot merge the LoRA adapters: {e}")))?;
            Ok(Some((load_lora(model, &merged)?, 1.0)))
        }
    }
}

fn load_lora(model: &mut LlamaModel, path: &Path) -> Result<LlamaLoraAdapter, LlmError> {
    if !path.is_file() {
        return Err(LlmError::Failed(format!("{}: no such LoRA adapter", path.display())));
    }
    model
        .lora_adapter_init(path)
        .map_err(|e| LlmError::Failed(format!("{}: cannot load the LoRA adapter: {e}", path.display())))
}

/// A shared prefix shorter than this is not worth a sequence.
const MIN_ROOT_TOKENS: usize = 16;
/// Prompts in a row that share less than [`MIN_ROOT_TOKENS`] with the root before it is
/// relearnt.
const ROOT_MISSES: u32 = 3;

/// One sequence of the context.
struct Slot {
    seq: i32,
    /// Tokens resident in the KV cache for this sequence, in order from position 0.
    cached: Vec<LlamaToken>,
    /// When it last served a request (for least-recently-used choice).
    last_used: u64,
    active: Option<Active>,
}

/// A request being served by a slot.
struct Active {
    job: Job,
    prompt: Vec<LlamaToken>,
    /// Index into `prompt` of the next prompt token to evaluate.
    next_prompt: usize,
    /// Prompt tokens that were already resident (reused, not evaluated).
    reused: usize,
    sampler: Sampler,
    /// The last sampled token, to be evaluated in the next batch.
    pending: Option<LlamaToken>,
    /// Where this slot's logits are in the current batch.
    logits_at: Option<i32>,
    generated: u32,
    prob_sum: f64,
    min_prob: f64,
    /// Text generated so far (streamed or held back).
    text: String,
    /// How much of `text` has been sent to the caller: the rest could still turn out to
    /// be the start of a stop string.
    sent: usize,
    /// Bytes of a character split across tokens.
    partial: Vec<u8>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

/// Everything the inference thread owns.
struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    template: LlamaChatTemplate,
    info: ModelInfo,
    slots: Vec<Slot>,
    root_seq: i32,
    /// Tokens resident in the root sequence.
    root: Vec<LlamaToken>,
    root_misses: u32,
    /// The previous prompt, to learn the root from.
    last_prompt: Vec<LlamaToken>,
    /// A root to copy from a slot once that slot's prefill has evaluated these tokens.
    pending_root: Option<(usize, Vec<LlamaToken>)>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    clock: u64,
    seed: u32,
    /// The threads of each decode ([`super::cores`]).
    budget: CoreBudget,
    /// `ctx` as llama.cpp's pointer, for the one call llama-cpp-2 does not wrap
    /// (`llama_set_n_threads`); `None`: the threads stay as created.
    raw: Option<RawContext>,
}

/// A `llama_context` pointer, used on the inference thread only, while the
/// [`LlamaContext`] it was read from is alive (both belong to the same [`Worker`]).
struct RawContext(std::ptr::NonNull<llama_cpp_sys_2::llama_context>);

#[allow(unsafe_code)]
impl RawContext {
    /// The pointer inside `ctx`. llama-cpp-2 (pinned exactly in Cargo.toml) keeps it
    /// private but prints it as the one field of its `Debug` output
    /// (`LlamaContext { context: 0x… }`); it is read back from there and checked against
    /// the context's own answer for its size, so a crate whose output changed gives
    /// `None` (fixed threads), not a wrong pointer.
    fn of(ctx: &LlamaContext<'_>) -> Option<RawContext> {
        let debug = format!("{ctx:?}");
        let hex = debug.split("context: 0x").nth(1)?;
        let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
        let address = usize::from_str_radix(&hex[..end], 16).ok()?;
        let ptr = std::ptr::NonNull::new(address as *mut llama_cpp_sys_2::llama_context)?;
        // SAFETY: the address is the one `ctx` holds (its Debug output prints nothing
        // else after `context: `); `llama_n_ctx` only reads the context.
        let n_ctx = unsafe { llama_cpp_sys_2::llama_n_ctx(ptr.as_ptr()) };
        (n_ctx == ctx.n_ctx()).then_some(RawContext(ptr))
    }

    /// Sets the threads of the next decodes (prompt batches and single tokens alike).
    fn set_threads(&self, threads: usize) {
        let n = i32::try_from(threads).unwrap_or(1);
        // SAFETY: called on the inference thread between decodes, while the context
        // lives; llama.cpp reads the count when it plans the next graph.
        unsafe { llama_cpp_sys_2::llama_set_n_threads(self.0.as_ptr(), n, n) }
    }
}

impl<'m> Worker<'m> {
    fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        config: &LlamaConfig,
        lora: Option<&mut (LlamaLoraAdapter, f32)>,
    ) -> Result<Self, LlmError> {
        let parallel = config.parallel;
        // A stream of `ctx_per_seq` cells for every slot and one for the shared prefix.
        let n_ctx = config.ctx_per_seq.saturating_mul(parallel as u32 + 1).max(512);
        let threads = i32::try_from(config.threads).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(config.batch)
            .with_n_ubatch(config.batch.min(512))
            .with_n_seq_max(parallel as u32 + 1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            // Each sequence its own stream of cells: attention then spans only that
            // sequence's cells. One shared pool made prefix copies free but every token
            // attended over all sequences' cells (masked), and 8 streams generated 12 %
            // fewer tokens/s (benches/model.sh; docs/model.md).
            .with_kv_unified(false)
            // Models with sliding-window attention (Gemma 3) otherwise drop the cells a
            // later turn would reuse.
            .with_swa_full(true);
        let mut ctx = model
            .new_context(backend, params)
            .map_err(|e| LlmError::Failed(format!("cannot create the llama.cpp context: {e}")))?;
        if let Some((adapter, scale)) = lora {
            ctx.lora_adapter_set(adapter, *scale)
                .map_err(|e| LlmError::Failed(format!("cannot apply the LoRA adapter: {e}")))?;
        }
        let (template, template_source) = chat_template(model, config.chat_template.as_deref())?;
        // models/default.gguf is a link: name the file it points to.
        let name = std::fs::canonicalize(&config.model)
            .unwrap_or_else(|_| config.model.clone())
            .file_name()
            .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
        let slots = (0..parallel)
            .map(|i| Slot {
                seq: i as i32,
                cached: Vec::new(),
                last_used: 0,
                active: None,
            })
            .collect();
        let batch_size = config.batch as usize;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let raw = RawContext::of(&ctx);
        let budget = CoreBudget::new(config.threads, cores, config.adaptive_threads && raw.is_some());
        if config.adaptive_threads && raw.is_none() {
            tracing::warn!(
                "cannot reach llama.cpp's context to adapt its threads; using {} always",
                config.threads
            );
        }
        let info = ModelInfo {
            name: format!("llama.cpp:{name}"),
            template: template_source,
            threads: config.threads,
            parallel,
            adaptive_threads: budget.adaptive(),
            ctx_per_seq: config.ctx_per_seq,
        };
        Ok(Worker {
            model,
            ctx,
            template,
            info,
            slots,
            root_seq: parallel as i32,
            root: Vec::new(),
            root_misses: 0,
            last_prompt: Vec::new(),
            pending_root: None,
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            clock: 0,
            seed: config.seed,
            budget,
            raw,
        })
    }

    /// Serves requests until the channel closes and the last request is done.
    fn run(&mut self, jobs: &Receiver<Request>) {
        let mut closed = false;
        loop {
            // Take new requests while a slot is free; wait only when there is nothing to do.
            while !closed && self.slots.iter().any(|s| s.active.is_none()) {
                let busy = self.slots.iter().any(|s| s.active.is_some());
                let next = if busy {
                    match jobs.try_recv() {
                        Ok(j) => Some(j),
                        Err(mpsc::TryRecvError::Empty) => None,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            closed = true;
                            None
                        }
                    }
                } else {
                    match jobs.recv_timeout(Duration::from_secs(1)) {
                        Ok(j) => Some(j),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            closed = true;
                            None
                        }
                    }
                };
                match next {
                    Some(Request::Generate(job)) => self.admit(job),
                    Some(Request::Tokenize { messages, reply }) => {
                        let _ = reply.send(self.render(&messages).map(|tokens| self.describe(&tokens)));
                    }
                    None => break,
                }
            }
            if self.slots.iter().all(|s| s.active.is_none()) {
                if closed {
                    return;
                }
                continue;
            }
            self.step();
        }
    }

    /// Renders and tokenizes a request and places it in the best free slot.
    fn admit(&mut self, job: Job) {
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = job.events.send(Event::Failed(LlmError::Timeout));
            return;
        }
        let prompt = match self.render(&job.messages) {
            Ok(p) => p,
            Err(e) => {
                let _ = job.events.send(Event::Failed(e));
                return;
            }
        };
        let limit = self.info.ctx_per_seq as usize;
        if prompt.len() + 1 >= limit {
            let _ = job.events.send(Event::Failed(LlmError::Failed(format!(
                "the prompt has {} tokens; a sequence holds {limit}",
                prompt.len()
            ))));
            return;
        }
        // The free slot whose resident tokens save the most beyond the prefix every prompt
        // shares (which the root provides anyway); among equals the one whose cache is
        // least worth keeping (fewest tokens thrown away, then least recently used), so a
        // new conversation does not evict another's history for nothing.
        let shared = common_prefix(&self.root, &prompt).max(common_prefix(&self.last_prompt, &prompt));
        let index = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .max_by_key(|(_, s)| {
                let reuse = common_prefix(&s.cached, &prompt);
                (
                    reuse.saturating_sub(shared),
                    std::cmp::Reverse(s.cached.len() - reuse),
                    std::cmp::Reverse(s.last_used),
                )
            })
            .map(|(i, _)| i)
            .expect("admit is only called with a free slot");
        self.learn_root(&prompt, index);
        let seq = self.slots[index].seq;
        let mut keep = common_prefix(&self.slots[index].cached, &prompt);
        let from_root = common_prefix(&self.root, &prompt);
        if from_root > keep {
            self.forget(seq, 0);
            self.slots[index].cached.clear();
            self.copy(self.root_seq, seq, from_root);
            self.slots[index].cached.extend_from_slice(&prompt[..from_root]);
            keep = from_root;
        }
        // At least the last prompt token is evaluated: its logits give the first token.
        keep = keep.min(prompt.len() - 1);
        self.forget(seq, keep);
        self.slots[index].cached.truncate(keep);
        self.clock += 1;
        let seed = self.seed.wrapping_add(self.clock as u32);
        let sampler = Sampler::new(job.temperature, job.top_p, seed);
        let slot = &mut self.slots[index];
        slot.last_used = self.clock;
        slot.active = Some(Active {
            job,
            next_prompt: keep,
            reused: keep,
            prompt,
            sampler,
            pending: None,
            logits_at: None,
            generated: 0,
            prob_sum: 0.0,
            min_prob: 1.0,
            text: String::new(),
            sent: 0,
            partial: Vec::new(),
            started: Instant::now(),
            first_token: None,
            last_token: None,
        });
        self.take_pending_root();
    }

    /// Updates the learnt shared prefix with a new prompt about to be served by slot
    /// `index` (see the module docs).
    fn learn_root(&mut self, prompt: &[LlamaToken], index: usize) {
        let shared = common_prefix(&self.root, prompt);
        if !self.root.is_empty() && shared >= MIN_ROOT_TOKENS {
            if shared < self.root.len() {
                // What all prompts have in common is shorter than it looked.
                self.forget(self.root_seq, shared);
                self.root.truncate(shared);
            }
            self.root_misses = 0;
        } else {
            self.root_misses += 1;
            if self.root.is_empty() || self.root_misses >= ROOT_MISSES {
                let candidate = common_prefix(&self.last_prompt, prompt);
                if candidate >= MIN_ROOT_TOKENS {
                    // Never evaluated twice: copied from a slot that still holds it (the
                    // previous prompt's, usually), else from this prompt's slot once its
                    // prefill has got that far.
                    self.forget(self.root_seq, 0);
                    self.root.clear();
                    self.root_misses = 0;
                    let holder = self
                        .slots
                        .iter()
                        .find(|s| common_prefix(&s.cached, prompt) >= candidate)
                        .map(|s| s.seq);
                    match holder {
                        Some(seq) => {
                            self.copy(seq, self.root_seq, candidate);
                            self.root = prompt[..candidate].to_vec();
                            self.pending_root = None;
                        }
                        None => self.pending_root = Some((index, prompt[..candidate].to_vec())),
                    }
                }
            }
        }
        self.last_prompt.clear();
        self.last_prompt.extend_from_slice(prompt);
    }

    /// Makes the pending root real once its slot holds those tokens. A slot that was
    /// given to another prompt meanwhile no longer starts with them: the root is dropped
    /// and relearnt later.
    fn take_pending_root(&mut self) {
        let Some((index, tokens)) = self.pending_root.take() else {
            return;
        };
        let slot = &self.slots[index];
        if slot.cached.len() < tokens.len() && slot.active.is_some() && tokens.starts_with(&slot.cached) {
            self.pending_root = Some((index, tokens));
            return;
        }
        if !slot.cached.starts_with(&tokens) {
            return;
        }
        let seq = slot.seq;
        self.forget(self.root_seq, 0);
        self.copy(seq, self.root_seq, tokens.len());
        self.root = tokens;
    }

    /// Removes the cells of `seq` from position `from` on.
    fn forget(&mut self, seq: i32, from: usize) {
        let _ = self.ctx.kv_cache_seq_rm(seq, Some(from as u32), None);
    }

    /// Shares the first `len` cells of `from` with `to`.
    ///
    /// Sequences live in separate streams, between which llama.cpp copies whole streams
    /// only: the whole of `from` is copied (a memory copy of that stream's cells, a few
    /// milliseconds for a small model, against seconds to evaluate the prefix) and what
    /// lies past `len` is removed.
    fn copy(&mut self, from: i32, to: i32, len: usize) {
        let _ = self.ctx.kv_cache_seq_rm(to, None, None);
        let _ = self.ctx.kv_cache_seq_cp(from, to, None, None);
        let _ = self.ctx.kv_cache_seq_rm(to, Some(len as u32), None);
    }

    /// The prompt's tokens: the chat template applied, then tokenized so that only the
    /// template's markup can be special tokens (see the module docs).
    fn render(&self, messages: &[ChatMessage]) -> Result<Vec<LlamaToken>, LlmError> {
        let pieces = render_pieces(self.model, &self.template, messages)?;
        Ok(tokenize_pieces(&self.model.vocab(), &pieces))
    }

    /// Tokens with their text, for [`LlamaCpp::prompt_tokens`].
    fn describe(&self, tokens: &[LlamaToken]) -> Vec<PromptToken> {
        let vocab = self.model.vocab();
        tokens
            .iter()
            .map(|&t| PromptToken {
                id: t.0,
                piece: vocab.token_to_piece(t, true, None),
                control: vocab.is_control(t),
            })
            .collect()
    }

    /// One batch: the next token of every generating request, then prompt chunks.
    fn step(&mut self) {
        self.batch.clear();
        let now = Instant::now();
        // Requests past their deadline, abandoned or cancelled stop before costing a decode.
        for i in 0..self.slots.len() {
            let Some(active) = self.slots[i].active.as_ref() else {
                continue;
            };
            if active.job.deadline.is_some_and(|d| now >= d) {
                self.finish(i, Err(LlmError::Timeout));
            } else if active.job.cancel.load(Ordering::Relaxed) {
                self.finish(i, Ok(Finish::Cancelled));
            }
        }
        let mut room = self.batch_size;
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            active.logits_at = None;
            if let Some(token) = active.pending.take() {
                let pos = slot.cached.len() as i32;
                if self.batch.add(token, pos, &[slot.seq], true).is_ok() {
                    active.logits_at = Some(self.batch.n_tokens() - 1);
                    slot.cached.push(token);
                    room -= 1;
                }
            }
        }
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else { continue };
            while room > 0 && active.next_prompt < active.prompt.len() {
                let token = active.prompt[active.next_prompt];
                let last = active.next_prompt + 1 == active.prompt.len();
                let pos = slot.cached.len() as i32;
                if self.batch.add(token, pos, &[slot.seq], last).is_err() {
                    break;
                }
                slot.cached.push(token);
                active.next_prompt += 1;
                room -= 1;
                if last {
                    active.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        // Every sequence has a stream of its own, `ctx_per_seq` cells long, and no request
        // is let past that length, so a decode never waits for another sequence's cells.
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            for i in 0..self.slots.len() {
                if self.slots[i].active.is_some() {
                    self.finish(i, Err(LlmError::Failed(format!("llama.cpp decode: {e}"))));
                    let seq = self.slots[i].seq;
                    self.forget(seq, 0);
                    self.slots[i].cached.clear();
                }
            }
            return;
        }
        // The next decode's threads, read now: once the tokens below are sampled, the
        // callers waiting for them wake up and would count as other work.
        if let (Some(threads), Some(raw)) = (self.budget.for_next_decode(), &self.raw) {
            raw.set_threads(threads);
        }
        self.take_pending_root();
        for i in 0..self.slots.len() {
            self.sample(i);
        }
    }

    /// Samples the next token of slot `i` if its logits are in this batch.
    fn sample(&mut self, i: usize) {
        let model: &'m LlamaModel = self.model;
        let vocab = model.vocab();
        let Some(active) = self.slots[i].active.as_mut() else {
            return;
        };
        let Some(at) = active.logits_at.take() else { return };
        let Some((token, p)) = active.sampler.pick(self.ctx.get_logits_ith(at)) else {
            self.finish(i, Err(LlmError::Failed("llama.cpp returned no logits".into())));
            return;
        };
        let now = Instant::now();
        active.first_token.get_or_insert(now);
        active.last_token = Some(now);
        let limit = self.info.ctx_per_seq as usize;
        if vocab.is_eog(token) && !active.job.ignore_eos {
            self.finish(i, Ok(Finish::Stop));
            return;
        }
        active.generated += 1;
        active.prob_sum += f64::from(p);
        active.min_prob = active.min_prob.min(f64::from(p));
        active.partial.extend(vocab.token_to_piece(token, false, None));
        let piece = take_complete_utf8(&mut active.partial);
        active.text.push_str(&piece);
        let (release, stopped) = match find_stop(&active.text, &active.job.stop) {
            Some(at) => {
                active.text.truncate(at);
                (at, true)
            }
            None => (safe_to_send(&active.text, &active.job.stop), false),
        };
        let mut gone = false;
        if release > active.sent {
            let text = active.text[active.sent..release].to_string();
            active.sent = release;
            gone = active.job.events.send(Event::Text(text)).is_err();
        }
        let full = self.slots[i].cached.len() + 1 >= limit;
        let Some(active) = self.slots[i].active.as_mut() else {
            return;
        };
        if gone || stopped {
            self.finish(i, Ok(Finish::Stop));
        } else if active.generated >= active.job.max_tokens || full {
            self.finish(i, Ok(Finish::Length));
        } else {
            active.pending = Some(token);
        }
    }

    /// Ends the request in slot `i`: a generation that ended for `outcome`'s reason, or
    /// its error.
    fn finish(&mut self, i: usize, outcome: Result<Finish, LlmError>) {
        let Some(active) = self.slots[i].active.take() else {
            return;
        };
        let event = match outcome {
            Err(e) => Event::Failed(e),
            Ok(finish) => {
                let end = active.last_token.unwrap_or_else(Instant::now);
                let first = active.first_token.unwrap_or(end);
                // Bytes left of a character cut off by the token limit are dropped; text
                // held back as a possible stop string that never completed is sent now.
                let text = active.text;
                if text.len() > active.sent {
                    let _ = active.job.events.send(Event::Text(text[active.sent..].to_string()));
                }
                let tokens = active.generated;
                Event::Done(Generation {
                    text,
                    prompt_tokens: active.prompt.len() as u32,
                    tokens,
                    mean_prob: if tokens == 0 {
                        0.0
                    } else {
                        active.prob_sum / f64::from(tokens)
                    },
                    min_prob: if tokens == 0 { 0.0 } else { active.min_prob },
                    cached_tokens: active.reused as u32,
                    queue_ms: ms(active.started - active.job.submitted),
                    prompt_ms: ms(first - active.started),
                    generation_ms: ms(end - first),
                    finish,
                })
            }
        };
        let _ = active.job.events.send(event);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The template from the GGUF, or the named built-in, or ChatML. A template is used only
/// if it keeps the messages' text apart from its markup ([`render_pieces`]).
fn chat_template(model: &LlamaModel, name: Option<&str>) -> Result<(LlamaChatTemplate, String), LlmError> {
    let probe = [
        ChatMessage::new(ChatRole::System, " 你是客服。\n"),
        ChatMessage::new(ChatRole::User, "hi"),
    ];
    if let Some(name) = name {
        let t = LlamaChatTemplate::new(name).map_err(|e| LlmError::Failed(format!("chat template {name}: {e}")))?;
        render_pieces(model, &t, &probe).map_err(|e| LlmError::Failed(format!("chat template {name}: {e}")))?;
        return Ok((t, name.to_string()));
    }
    if let Ok(t) = model.chat_template(None)
        && render_pieces(model, &t, &probe).is_ok()
    {
        return Ok((t, "gguf".into()));
    }
    let t = LlamaChatTemplate::new("chatml").expect("no NUL");
    Ok((t, "fallback chatml".into()))
}

/// A piece of a rendered prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// The chat template's own text: its special tokens are parsed.
    Markup(String),
    /// A message's text: never special tokens.
    Text(String),
}

/// Applies the chat template to `messages`, with the generation prompt.
fn apply_template(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[ChatMessage],
) -> Result<String, LlmError> {
    let chat = messages
        .iter()
        .map(|m| {
            let role = match m.role {
                ChatRole::System => "system",
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            };
            LlamaChatMessage::new(role.into(), m.content.clone())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LlmError::Failed(format!("bad chat message: {e}")))?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| LlmError::Failed(format!("cannot apply the chat template: {e}")))
}

/// The placeholder for message `i`'s text: private-use characters around the index. It
/// is never tokenized and never meets real text: it only marks where the template puts
/// each message.
fn placeholder(i: usize) -> String {
    format!("\u{F8F0}{i}\u{F8F1}")
}

/// The prompt for `messages` split into the template's markup and the messages' text.
///
/// The template is applied twice: to the messages, and to placeholders in their place.
/// The second rendering shows where each message's text goes; the text is put there
/// (trimmed, for templates that trim) and the result must be the first rendering
/// exactly, else the template does something to the text that cannot be told apart
/// from its markup and the prompt is refused.
fn render_pieces(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<Piece>, LlmError> {
    let rendered = apply_template(model, template, messages)?;
    let marked: Vec<ChatMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| ChatMessage::new(m.role, placeholder(i)))
        .collect();
    let skeleton = apply_template(model, template, &marked)?;
    // The markup between placeholders, and which message follows each piece.
    let mut markup: Vec<(&str, Option<usize>)> = Vec::new();
    let mut rest = skeleton.as_str();
    for i in 0..messages.len() {
        let mark = placeholder(i);
        // A template may leave a message out (a system message it has no place for).
        if let Some(at) = rest.find(&mark) {
            markup.push((&rest[..at], Some(i)));
            rest = &rest[at + mark.len()..];
        }
    }
    markup.push((rest, None));
    for trim in [false, true] {
        let mut pieces = Vec::with_capacity(2 * markup.len());
        for (text, message) in &markup {
            pieces.push(Piece::Markup((*text).to_string()));
            if let Some(i) = message {
                let content = &messages[*i].content;
                let content = if trim { content.trim() } else { content.as_str() };
                pieces.push(Piece::Text(content.to_string()));
            }
        }
        let joined: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Markup(t) | Piece::Text(t) => t.as_str(),
            })
            .collect();
        if joined == rendered {
            return Ok(pieces);
        }
    }
    Err(LlmError::Failed(
        "the chat template changes the messages' text; it cannot be kept apart from the template's markup".into(),
    ))
}

/// Tokenizes a rendered prompt so that only [`Piece::Markup`] makes control tokens.
///
/// The whole text is tokenized with special tokens parsed (exactly what llama.cpp's
/// server does, and what the benchmarks measured) and kept when its control tokens are
/// those of the markup alone. Otherwise the text of a message made some: each piece is
/// tokenized on its own, messages' text with special tokens not parsed.
fn tokenize_pieces(vocab: &LlamaVocab<'_>, pieces: &[Piece]) -> Vec<LlamaToken> {
    let bos = vocab.should_add_bos().then(|| vocab.bos());
    let eos = vocab.should_add_eos().then(|| vocab.eos());
    let whole: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Markup(t) | Piece::Text(t) => t.as_str(),
        })
        .collect();
    let tokens = vocab.tokenize(whole.as_bytes(), true, true);
    let mut expected: Vec<LlamaToken> = bos.into_iter().collect();
    for piece in pieces {
        if let Piece::Markup(t) = piece {
            expected.extend(vocab.tokenize(t.as_bytes(), false, true));
        }
    }
    expected.extend(eos);
    let controls =
        |ts: &[LlamaToken]| -> Vec<LlamaToken> { ts.iter().copied().filter(|&t| vocab.is_control(t)).collect() };
    if controls(&tokens) == controls(&expected) {
        return tokens;
    }
    let mut tokens: Vec<LlamaToken> = bos.into_iter().collect();
    for piece in pieces {
        match piece {
            Piece::Markup(t) => tokens.extend(vocab.tokenize(t.as_bytes(), false, true)),
            Piece::Text(t) => tokens.extend(vocab.tokenize(t.as_bytes(), false, false)),
        }
    }
    tokens.extend(eos);
    tokens
}

/// Where the first stop string in `text` starts.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// How much of `text` can be sent: all but a tail that is the beginning of a stop string.
fn safe_to_send(text: &str, stops: &[String]) -> usize {
    let mut end = text.len();
    for stop in stops {
        // The longest suffix of `text` that is a proper prefix of `stop`.
        for (i, _) in text.char_indices().rev().take(stop.chars().count()) {
            if stop.starts_with(&text[i..]) {
                end = end.min(i);
            }
        }
    }
    end
}

/// Length of the common prefix of two token lists.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Takes the complete UTF-8 characters off the front of `bytes`, leaving a character
/// that a later token will finish. Invalid bytes become U+FFFD (the judge rejects them).
fn take_complete_utf8(bytes: &mut Vec<u8>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let s = s.to_string();
            bytes.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            // An incomplete character at the end: keep it for the next token.
            let valid = e.valid_up_to();
            let s = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            bytes.drain(..valid);
            s
        }
        Err(_) => {
            let s = String::from_utf8_lossy(bytes).into_owned();
            bytes.clear();
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut bytes = "好".as_bytes()[..2].to_vec();
        assert_eq!(take_complete_utf8(&mut bytes), "");
        bytes.extend_from_slice(&"好".as_bytes()[2..]);
        bytes.extend_from_slice("的".as_bytes());
        assert_eq!(take_complete_utf8(&mut bytes), "好的");
        assert!(bytes.is_empty());
        let mut bad = vec![0xff, b'a'];
        assert_eq!(take_complete_utf8(&mut bad), "\u{FFFD}a");
    }

    #[test]
    fn stop_strings_end_the_text_and_their_beginnings_wait() {
        let stops = vec!["<客户消息>".to_string(), "<|im_end|>".to_string()];
        assert_eq!(find_stop("好的<客户消息>在吗", &stops), Some("好的".len()));
        assert_eq!(safe_to_send("好的<客", &stops), "好的".len());
        assert_eq!(safe_to_send("好的<|im", &stops), "好的".len());
        assert_eq!(safe_to_send("好的。", &stops), "好的。".len());
    }
}
