//! The on-box model as a [`ChatEngine`]: a bounded queue in front of a decode thread that runs
//! up to `workers` generations at once on one copy of the weights, stepping them together (one
//! batched product per weight matrix per token, so the weights are read once for all of them).
//! A full queue is an [`EngineError::Overloaded`] (the route's fallback takes the request, else
//! 503 with `Retry-After`); a receiver that goes away (client disconnected) stops its generation.

use super::generate::{Finish, Generation, Outcome, Params, Piece};
use super::request::LocalRequest;
use super::response::{logprobs_json, ChoiceState};
use super::sampling::TokenLogprob;
use super::{LocalError, LocalModel};
use crate::accounting::LocalMetrics;
use crate::api::{Capabilities, Capability, ChatRequest};
use crate::engines::{ChatEngine, Chunk, Completion, EngineError, EngineRequest, Streaming, Usage};
use async_trait::async_trait;
use bytes::Bytes;
use llguidance::Matcher;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Generations decoded at once (stepped together in one batch).
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// `max_tokens` when the request sets none, and the largest one honoured.
    pub max_output_tokens: usize,
}

/// What the decode thread reports about a request's generations (one per choice).
enum Event {
    /// The next piece of choice `choice`'s text, with its tokens' log probabilities when they
    /// were asked for.
    Piece {
        choice: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        choice: usize,
        outcome: Outcome,
    },
    Failed(String),
}

struct Job {
    prompt: Vec<u32>,
    params: Params,
    /// Choices: generations continuing from the one prompt run.
    n: usize,
    constraint: Option<Matcher>,
    events: UnboundedSender<Event>,
}

/// An on-box model serving chat requests.
pub struct LocalEngine {
    /// The policy's name of the model (the `model` of responses).
    name: String,
    model: Arc<LocalModel>,
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    settings: PoolSettings,
    metrics: LocalMetrics,
}

impl LocalEngine {
    /// Starts the decode thread for `model`, published as `name`.
    pub fn start(
        name: &str,
        model: Arc<LocalModel>,
        settings: PoolSettings,
        metrics: LocalMetrics,
    ) -> Result<LocalEngine, String> {
        let (jobs, rx) = sync_channel::<Job>(settings.queue);
        let waiting = Arc::new(AtomicUsize::new(0));
        let slots = settings.workers.max(1);
        {
            let (model, waiting, metrics, name) = (
                model.clone(),
                waiting.clone(),
                metrics.clone(),
                name.to_string(),
            );
            std::thread::Builder::new()
                .name(format!("decode-{name}"))
                .spawn(move || decode_loop(&name, &model, rx, slots, &waiting, &metrics))
                .map_err(|e| format!("cannot start the decode thread: {e}"))?;
        }
        metrics.queue_depth(name, 0);
        Ok(LocalEngine {
            name: name.to_string(),
            model,
            jobs,
            waiting,
            settings,
            metrics,
        })
    }

    /// The loaded model.
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// Reads the request's fields for this model ([`super::request::read`]).
    fn read(&self, req: &ChatRequest) -> Result<LocalRequest, EngineError> {
        super::request::read(
            req,
            self.model.capabilities(),
            self.model.weights.vocab_size(),
            self.settings.max_output_tokens,
        )
    }

    /// Queues a request's generations; their events arrive on the returned receiver.
    async fn submit(
        &self,
        req: &ChatRequest,
    ) -> Result<(UnboundedReceiver<Event>, LocalRequest, u64), EngineError> {
        let local = self.read(req)?;
        // Templating and tokenising a long prompt takes a while (about 0.25 s per MB here), and
        // so does compiling a grammar: off the runtime thread, which serves every other
        // connection meanwhile.
        let (model, job) = (self.model.clone(), local.clone());
        // A legacy completion continues its prompt as it is.
        let raw = req.raw_prompt.then(|| req.messages().pop()).flatten();
        let (prompt, constraint) = tokio::task::spawn_blocking(move || {
            let prompt = match raw {
                Some((_, text)) => super::tokenizer::encode(&model.tokenizer, &text),
                None => model.chat_prompt(&job.messages, job.tools.as_deref()),
            }
            .map_err(|e| match e {
                LocalError::TemplateRefused(_) => EngineError::Invalid {
                    message: e.to_string(),
                    param: "messages",
                },
                e => EngineError::Failed(e.to_string()),
            })?;
            if prompt.is_empty() {
                // Only a legacy completion's raw prompt can be empty: a chat template always
                // writes its turn markers.
                return Err(EngineError::Invalid {
                    message: "the prompt is empty: there is nothing to continue".into(),
                    param: "prompt",
                });
            }
            let constraint = match &job.constraint {
                None => None,
                Some(c) => Some(model.grammars().and_then(|g| g.matcher(c)).map_err(
                    |message| EngineError::Invalid {
                        message,
                        param: c.param(),
                    },
                )?),
            };
            Ok::<_, EngineError>((prompt, constraint))
        })
        .await
        .map_err(|e| EngineError::Failed(format!("tokenising the prompt: {e}")))??;
        let context = self.model.weights.context_length;
        if prompt.len() >= context {
            return Err(EngineError::ContextLength(format!(
                "the prompt is {} tokens, more than the model's context of {context} tokens",
                prompt.len()
            )));
        }
        let prompt_tokens = prompt.len() as u64;
        let (events, rx) = unbounded_channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(Job {
            prompt,
            params: local.params.clone(),
            n: local.n,
            constraint,
            events,
        }) {
            Ok(()) => {
                self.publish_depth();
                Ok((rx, local, prompt_tokens))
            }
            Err(e) => {
                let queued = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
                match e {
                    TrySendError::Full(_) => Err(EngineError::Overloaded {
                        queued,
                        retry_after_secs: 1,
                    }),
                    TrySendError::Disconnected(_) => Err(EngineError::Unavailable(
                        "the decode workers stopped".into(),
                    )),
                }
            }
        }
    }

    fn publish_depth(&self) {
        self.metrics
            .queue_depth(&self.name, self.waiting.load(Ordering::SeqCst));
    }
}

/// A generation being decoded, with where its text goes.
struct Active<'m> {
    generation: Generation<'m>,
    events: UnboundedSender<Event>,
    /// Which of the request's choices it is.
    choice: usize,
    next: u32,
    started: Instant,
}

/// Sends choice `choice`'s text to the client; `false` once it has gone away.
fn emitter(events: &UnboundedSender<Event>, choice: usize) -> impl FnMut(Piece) -> bool + '_ {
    move |piece: Piece| {
        !events.is_closed()
            && ((piece.text.is_empty() && piece.logprobs.is_empty())
                || events
                    .send(Event::Piece {
                        choice,
                        text: piece.text.to_string(),
                        logprobs: piece.logprobs,
                    })
                    .is_ok())
    }
}

/// Reports a generation's end (and its metrics).
fn conclude(name: &str, metrics: &LocalMetrics, active: Active<'_>) {
    let Active {
        generation,
        events,
        choice,
        started,
        ..
    } = active;
    let result = generation.finish(&mut emitter(&events, choice));
    report(name, metrics, &events, choice, started, result);
}

fn report(
    name: &str,
    metrics: &LocalMetrics,
    events: &UnboundedSender<Event>,
    choice: usize,
    started: Instant,
    result: Result<Outcome, super::LocalError>,
) {
    let took = started.elapsed();
    match result {
        Ok(outcome) => {
            metrics.generation_done(name, took, outcome.finish.label());
            if choice == 0 {
                metrics.speed(name, "prefill", outcome.prefill_rate());
            }
            if outcome.completion_tokens > 1 {
                metrics.speed(name, "decode", outcome.decode_rate());
            }
            let _ = events.send(Event::Done { choice, outcome });
        }
        Err(e) => {
            metrics.generation_done(name, took, "error");
            tracing::error!(model = name, "on-box generation failed: {e}");
            let _ = events.send(Event::Failed(e.to_string()));
        }
    }
}

/// Prompt tokens run per decode step while other generations are running: their streams go on
/// between the pieces of a long prompt instead of pausing for all of it.
const PREFILL_PIECE: usize = 32;

/// A generation whose prompt is still running.
struct Prefilling<'m> {
    generation: Generation<'m>,
    prompt: Vec<u32>,
    params: Params,
    n: usize,
    events: UnboundedSender<Event>,
    started: Instant,
}

/// The decode thread: admits a queued job when a slot is free and no other prompt is running,
/// runs its prompt (alone: all of it at once; beside running generations: a piece per step),
/// and steps every running generation by one token in one batch. A job asking for `n` choices
/// runs its prompt once and then decodes `n` generations from it, side by side.
///
/// While it has work it runs on a worker of the compute pool ([`super::on_compute_pool`]); idle,
/// it waits for the next job on its own thread, so that the pool's threads are never held by
/// idle models (several on-box models share the pool).
fn decode_loop(
    name: &str,
    model: &LocalModel,
    jobs: Receiver<Job>,
    slots: usize,
    waiting: &AtomicUsize,
    metrics: &LocalMetrics,
) {
    // The pool's worker borrows the receiver only while this thread waits for it to return;
    // the lock makes it shareable (`Receiver` is not `Sync`) and is never contended.
    let jobs = std::sync::Mutex::new(jobs);
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = next else { return };
        super::on_compute_pool(|| {
            let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
            decode_until_idle(job, name, model, &jobs, slots, waiting, metrics)
        });
    }
}

/// Runs `first` and every job that comes while generations are running; returns once none is
/// running and none is queued.
fn decode_until_idle(
    first: Job,
    name: &str,
    model: &LocalModel,
    jobs: &Receiver<Job>,
    slots: usize,
    waiting: &AtomicUsize,
    metrics: &LocalMetrics,
) {
    let mut active: Vec<Active> = Vec::with_capacity(slots);
    let mut prefilling: Option<Prefilling> = None;
    let mut first = Some(first);
    loop {
        while prefilling.is_none() && active.len() < slots {
            let job = if let Some(job) = first.take() {
                job
            } else if active.is_empty() {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            };
            let left = waiting.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
            metrics.queue_depth(name, left);
            if job.events.is_closed() {
                continue;
            }
            let started = Instant::now();
            match Generation::new(model, job.prompt.len(), &job.params) {
                Ok(mut generation) => {
                    if let Some(m) = job.constraint {
                        generation.constrain(m);
                    }
                    prefilling = Some(Prefilling {
                        generation,
                        prompt: job.prompt,
                        params: job.params,
                        n: job.n.max(1),
                        events: job.events,
                        started,
                    })
                }
                Err(e) => report(name, metrics, &job.events, 0, started, Err(e)),
            }
        }
        if let Some(p) = prefilling.take() {
            prefilling = prefill_step(name, metrics, p, &mut active);
        }
        if active.is_empty() {
            continue;
        }
        let tokens: Vec<u32> = active.iter().map(|a| a.next).collect();
        let mut sessions: Vec<_> = active
            .iter_mut()
            .map(|a| a.generation.session_mut())
            .collect();
        match model.weights.forward_batch(&mut sessions, &tokens) {
            Ok(all) => {
                let mut still = Vec::with_capacity(active.len());
                for (mut a, logits) in active.drain(..).zip(all) {
                    let step = a
                        .generation
                        .advance(&logits, &mut emitter(&a.events, a.choice));
                    match step {
                        Ok(Some(next)) => {
                            a.next = next;
                            still.push(a);
                        }
                        Ok(None) => conclude(name, metrics, a),
                        Err(e) => report(name, metrics, &a.events, a.choice, a.started, Err(e)),
                    }
                }
                active = still;
            }
            Err(e) => {
                let msg = e.to_string();
                for a in active.drain(..) {
                    report(
                        name,
                        metrics,
                        &a.events,
                        a.choice,
                        a.started,
                        Err(super::LocalError::Format(msg.clone())),
                    );
                }
            }
        }
    }
}

/// Runs the next piece of a prompt (all that is left when nothing else runs). Returns the
/// generation while its prompt is unfinished; once it is, the generation is forked into its
/// `n` choices (each seeded `seed + choice`), their first tokens go out and they join `active`
/// (or end there).
fn prefill_step<'m>(
    name: &str,
    metrics: &LocalMetrics,
    mut p: Prefilling<'m>,
    active: &mut Vec<Active<'m>>,
) -> Option<Prefilling<'m>> {
    if p.events.is_closed() {
        let result = p.generation.cancel();
        report(name, metrics, &p.events, 0, p.started, result);
        return None;
    }
    let done = p.generation.prefilled();
    let end = if active.is_empty() {
        p.prompt.len()
    } else {
        (done + PREFILL_PIECE).min(p.prompt.len())
    };
    let logits = match p.generation.prefill(&p.prompt[done..end]) {
        Ok(logits) => logits,
        Err(e) => {
            report(name, metrics, &p.events, 0, p.started, Err(e));
            return None;
        }
    };
    if end < p.prompt.len() {
        return Some(p);
    }
    let mut choices = Vec::with_capacity(p.n);
    for choice in 1..p.n {
        match p
            .generation
            .fork(&p.params, p.params.seed.wrapping_add(choice as u64))
        {
            Ok(g) => choices.push((choice, g)),
            Err(e) => {
                report(name, metrics, &p.events, choice, p.started, Err(e));
                return None;
            }
        }
    }
    choices.insert(0, (0, p.generation));
    for (choice, mut generation) in choices {
        let first = generation.advance(&logits, &mut emitter(&p.events, choice));
        match first {
            Ok(next) => {
                let a = Active {
                    generation,
                    events: p.events.clone(),
                    choice,
                    next: next.unwrap_or(0),
                    started: p.started,
                };
                if next.is_some() {
                    active.push(a);
                } else {
                    conclude(name, metrics, a);
                }
            }
            Err(e) => report(name, metrics, &p.events, choice, p.started, Err(e)),
        }
    }
    None
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("chatcmpl-local-{t:x}{n:x}")
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// What the on-box engine supports beyond plain text chat: raw prompts (legacy completions),
/// JSON output (`json_object`, `json_schema`, enforced by a grammar), `tools` (for a model whose
/// chat template offers them: [`LocalModel::capabilities`]), `logprobs` and `n`; not images,
/// audio or files. Policies default an on-box model's capabilities to this, and cannot claim
/// more; the loaded model's report narrows it for routing.
pub fn capabilities() -> Capabilities {
    [
        Capability::Completions,
        Capability::JsonObject,
        Capability::JsonSchema,
        Capability::Tools,
        Capability::Logprobs,
        Capability::N,
    ]
    .into_iter()
    .collect()
}

/// The choices of one request as its events arrive, and its usage: the prompt counted once,
/// the completion tokens of every choice added up.
struct Choices {
    states: Vec<ChoiceState>,
    /// The request's stop strings.
    stops: Vec<String>,
    logprobs: bool,
    done: usize,
    usage: Usage,
}

impl Choices {
    fn new(local: &LocalRequest, id: &str) -> Choices {
        Choices {
            states: (0..local.n)
                .map(|i| {
                    let unique = id.trim_start_matches("chatcmpl-local-");
                    ChoiceState::new(local.tool_names(), &format!("call_{unique}{i}"))
                })
                .collect(),
            stops: local.params.stop.clone(),
            logprobs: local.logprobs,
            done: 0,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_prompt_tokens: 0,
                cache_write_prompt_tokens: 0,
                web_searches: 0,
            },
        }
    }

    fn finished(&self) -> bool {
        self.done >= self.states.len()
    }

    /// A piece of a choice's text: its deltas, and its logprobs entries when asked for.
    fn piece(
        &mut self,
        model: &LocalModel,
        choice: usize,
        text: &str,
        logprobs: &[TokenLogprob],
    ) -> Option<(Vec<Value>, Option<Vec<Value>>)> {
        let logprobs = self.logprobs.then(|| logprobs_json(model, logprobs));
        let state = self.states.get_mut(choice)?;
        if let Some(l) = &logprobs {
            state.logprobs.extend(l.iter().cloned());
        }
        Some((state.push(text), logprobs))
    }

    /// A choice's end: its last deltas, its finish reason and the stop string that ended it.
    fn done(
        &mut self,
        choice: usize,
        outcome: &Outcome,
    ) -> Option<(Vec<Value>, &'static str, Option<String>)> {
        let state = self.states.get_mut(choice)?;
        let finish = match outcome.finish {
            Finish::Cancelled => Finish::Stop,
            f => f,
        };
        let stop = outcome.stop_string.and_then(|i| self.stops.get(i).cloned());
        let deltas = state.end(finish, stop);
        self.done += 1;
        self.usage.prompt_tokens = outcome.prompt_tokens as u64;
        self.usage.completion_tokens += outcome.completion_tokens as u64;
        Some((
            deltas,
            state.finish_reason(),
            state.stop_reason().map(str::to_string),
        ))
    }
}

fn stopped() -> EngineError {
    EngineError::Failed("the decode worker stopped".into())
}

#[async_trait]
impl ChatEngine for LocalEngine {
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    fn capabilities(&self) -> Option<Capabilities> {
        Some(self.model.capabilities())
    }

    fn count_prompt_tokens(&self, req: &ChatRequest) -> Option<u64> {
        let ids = match req.raw_prompt.then(|| req.messages().pop()).flatten() {
            Some((_, text)) => super::tokenizer::encode(&self.model.tokenizer, &text),
            None => {
                let local = self.read(req).ok()?;
                self.model
                    .chat_prompt(&local.messages, local.tools.as_deref())
            }
        };
        ids.ok().map(|ids| ids.len() as u64)
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        let (mut rx, local, _) = self.submit(req.request).await?;
        let id = completion_id();
        let mut choices = Choices::new(&local, &id);
        while !choices.finished() {
            match rx.recv().await {
                Some(Event::Piece {
                    choice,
                    text,
                    logprobs,
                }) => {
                    choices.piece(&self.model, choice, &text, &logprobs);
                }
                Some(Event::Done { choice, outcome }) => {
                    choices.done(choice, &outcome);
                }
                Some(Event::Failed(e)) => return Err(EngineError::Failed(e)),
                None => return Err(stopped()),
            }
        }
        let usage = choices.usage;
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": now_secs(),
            "model": self.name,
            "choices": choices.states.iter().enumerate()
                .map(|(i, s)| s.choice_json(i, local.logprobs)).collect::<Vec<_>>(),
            "usage": usage_json(usage),
        });
        Ok(Completion {
            body: Bytes::from(body.to_string()),
            usage,
            usage_estimated: false,
            headers: http::HeaderMap::new(),
            dialect: None,
        })
    }

    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        let (mut rx, local, prompt_tokens) = self.submit(req.request).await?;
        let id = completion_id();
        let created = now_secs();
        let model_name = self.name.clone();
        let model = self.model.clone();
        let mut choices = Choices::new(&local, &id);
        let n = local.n;
        // `chat.completion.chunk` envelopes: choices with one delta, or (last) usage alone.
        let envelope = move |choices: Value, usage: Option<Value>| {
            let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                               "model": model_name, "choices": choices});
            if let Some(u) = usage {
                v["usage"] = u;
            }
            Bytes::from(v.to_string())
        };
        let chunk = {
            let envelope = envelope.clone();
            move |index: usize,
                  delta: Value,
                  logprobs: Value,
                  finish: Option<(&str, Option<&str>)>| {
                // Text and tool-call arguments are both generated output.
                let arguments: u64 = delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.pointer("/function/arguments")?.as_str())
                    .map(|a| a.len() as u64)
                    .sum();
                let text_bytes = arguments
                    + delta
                        .get("content")
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.len() as u64);
                let mut choice = json!({"index": index, "delta": delta, "logprobs": logprobs,
                                        "finish_reason": finish.map(|(f, _)| f)});
                if let Some((_, Some(stop))) = finish {
                    choice["stop_reason"] = json!(stop);
                }
                Chunk {
                    payload: envelope(json!([choice]), None),
                    event: None,
                    text_bytes,
                    usage: None,
                    usage_only: false,
                }
            }
        };
        let stream = async_stream::stream! {
            for i in 0..n {
                yield Ok(chunk(i, json!({"role": "assistant", "content": ""}), Value::Null, None));
            }
            loop {
                match rx.recv().await {
                    Some(Event::Piece { choice, text, logprobs }) => {
                        let Some((deltas, lp)) = choices.piece(&model, choice, &text, &logprobs)
                        else { continue };
                        let mut lp = lp.map(|l| json!({"content": l}));
                        if deltas.is_empty() {
                            if let Some(l) = lp.take() {
                                yield Ok(chunk(choice, json!({"content": ""}), l, None));
                            }
                        }
                        for delta in deltas {
                            yield Ok(chunk(choice, delta, lp.take().unwrap_or(Value::Null), None));
                        }
                    }
                    Some(Event::Done { choice, outcome }) => {
                        let Some((deltas, finish, stop)) = choices.done(choice, &outcome) else {
                            continue;
                        };
                        for delta in deltas {
                            yield Ok(chunk(choice, delta, Value::Null, None));
                        }
                        yield Ok(chunk(choice, json!({}), Value::Null, Some((finish, stop.as_deref()))));
                        if choices.finished() {
                            let usage = choices.usage;
                            yield Ok(Chunk {
                                payload: envelope(json!([]), Some(usage_json(usage))),
                                event: None,
                                text_bytes: 0,
                                usage: Some(usage.into()),
                                usage_only: true,
                            });
                            return;
                        }
                    }
                    Some(Event::Failed(e)) => {
                        yield Err(EngineError::Failed(e));
                        return;
                    }
                    None => {
                        yield Err(stopped());
                        return;
                    }
                }
            }
        };
        Ok(Streaming {
            prompt_tokens: Some(prompt_tokens),
            ..Streaming::new(Box::pin(stream))
        })
    }
}

/// Default decode workers' threads: see docs/benchmarks.md (on-box model) for the measurement.
pub const DEFAULT_THREADS: usize = 2;

/// Loads every `local` model of `models` that has a `path` and starts its engine. The compute
/// threads are set before the process starts any thread ([`super::configure_compute_threads`],
/// from the first such model's `threads`); a model asking for another count is warned about.
pub fn start_all<'a>(
    models: impl IntoIterator<Item = &'a crate::policy::Model>,
    metrics: &LocalMetrics,
) -> Result<Vec<(String, Arc<LocalEngine>)>, String> {
    let mut engines = vec![];
    for m in models {
        let Some(local) = &m.local else { continue };
        let Some(path) = &local.path else { continue };
        let wanted = local.threads.unwrap_or(DEFAULT_THREADS);
        if let Some(set) = super::compute_threads().filter(|&set| set != wanted) {
            tracing::warn!(
                "model {}: `threads: {wanted}` does not apply: the process's compute pools have {set} thread(s) (the first on-box model's setting, applied at start)",
                m.name
            );
        }
        let started = Instant::now();
        let template = local.template.as_deref();
        let model = LocalModel::load_full(
            path,
            local.tokenizer.as_deref(),
            template,
            crate::local::model::Kernels::Fast,
        )
        .map_err(|e| format!("model `{}` ({}): {e}", m.name, path.display()))?;
        tracing::info!(
            "model {}: loaded {} ({:?}, context {} tokens) in {:.2}s; {} worker(s), queue {}",
            m.name,
            model.name,
            model.weights.arch,
            model.weights.context_length,
            started.elapsed().as_secs_f64(),
            local.workers,
            local.queue
        );
        let settings = PoolSettings {
            workers: local.workers,
            queue: local.queue,
            max_output_tokens: m.max_output_tokens.unwrap_or(512) as usize,
        };
        let engine = LocalEngine::start(&m.name, Arc::new(model), settings, metrics.clone())?;
        engines.push((m.name.clone(), Arc::new(engine)));
    }
    Ok(engines)
}
