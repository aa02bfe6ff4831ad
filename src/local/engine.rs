//! The on-box model as a [`ChatEngine`]: a bounded queue in front of a decode thread that runs
//! up to `workers` generations at once on one copy of the weights, stepping them together (one
//! batched product per weight matrix per token, so the weights are read once for all of them).
//! A full queue is an [`EngineError::Overloaded`] (the route's fallback takes the request, else
//! 503 with `Retry-After`); a receiver that goes away (client disconnected) stops its generation.

use super::generate::{Finish, Generation, Outcome, Params};
use super::LocalModel;
use crate::accounting::LocalMetrics;
use crate::api::{Capabilities, ChatRequest};
use crate::engines::{ChatEngine, Chunk, Completion, EngineError, EngineRequest, Streaming, Usage};
use async_trait::async_trait;
use bytes::Bytes;
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

/// What a worker reports about one generation.
enum Event {
    Text(String),
    Done(Outcome),
    Failed(String),
}

struct Job {
    prompt: Vec<u32>,
    params: Params,
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
                .spawn(move || {
                    super::on_compute_pool(move || {
                        decode_loop(&name, &model, &rx, slots, &waiting, &metrics)
                    })
                })
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

    /// Sampling settings from the request, with OpenAI's defaults.
    fn params(&self, req: &ChatRequest) -> Result<Params, EngineError> {
        let body = req.body();
        let invalid =
            |message: String, param: &'static str| EngineError::Invalid { message, param };
        // Routing never sends a request here that needs what this engine lacks; a request
        // that still does (a custom dispatch, a test) is refused, never answered without it.
        if let Some(c) = req.needs.first_missing(capabilities()) {
            return Err(invalid(
                format!("the on-box model cannot serve requests that need `{c}`"),
                c.param(),
            ));
        }
        if let Some(part) = &req.unknown_part {
            return Err(invalid(
                format!(
                    "`{}` is a content part of type `{}`, which the on-box model cannot read (it reads `text` parts)",
                    part.param, part.kind
                ),
                "messages",
            ));
        }
        let seed = match body.get("seed") {
            None | Some(Value::Null) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u,
                (None, Some(i)) => i as u64,
                _ => {
                    return Err(invalid(
                        format!("`seed` must be an integer, got {n}"),
                        "seed",
                    ))
                }
            },
            Some(_) => return Err(invalid("`seed` must be an integer".into(), "seed")),
        };
        let stop = match body.get("stop") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        if stop.len() > 4 {
            return Err(invalid("`stop` takes at most 4 sequences".into(), "stop"));
        }
        let max = self.settings.max_output_tokens.max(1);
        Ok(Params {
            max_tokens: req.max_tokens.map_or(max, |m| (m as usize).min(max)),
            temperature: body
                .get("temperature")
                .and_then(Value::as_f64)
                .unwrap_or(1.0),
            top_p: body.get("top_p").and_then(Value::as_f64).unwrap_or(1.0),
            seed,
            stop,
            ignore_eos: match body.get("ignore_eos") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        "`ignore_eos` must be a boolean".into(),
                        "ignore_eos",
                    ))
                }
            },
        })
    }

    /// Queues a generation; its events arrive on the returned receiver.
    async fn submit(&self, req: &ChatRequest) -> Result<UnboundedReceiver<Event>, EngineError> {
        let params = self.params(req)?;
        // Templating and tokenising a long prompt takes a while (about 0.25 s per MB here):
        // off the runtime thread, which serves every other connection meanwhile.
        let (model, messages, raw) = (self.model.clone(), req.messages(), req.raw_prompt);
        let prompt = tokio::task::spawn_blocking(move || match (raw, messages.last()) {
            // A legacy completion continues its prompt as it is.
            (true, Some((_, text))) => super::tokenizer::encode(&model.tokenizer, text),
            _ => model.prompt(&messages),
        })
        .await
        .map_err(|e| EngineError::Failed(format!("tokenising the prompt: {e}")))?
        .map_err(|e| EngineError::Failed(e.to_string()))?;
        let context = self.model.weights.context_length;
        if prompt.len() >= context {
            return Err(EngineError::ContextLength(format!(
                "the prompt is {} tokens, more than the model's context of {context} tokens",
                prompt.len()
            )));
        }
        let (events, rx) = unbounded_channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(Job {
            prompt,
            params,
            events,
        }) {
            Ok(()) => {
                self.publish_depth();
                Ok(rx)
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
    next: u32,
    started: Instant,
}

/// Sends text to the client; `false` once it has gone away.
fn emitter(events: &UnboundedSender<Event>) -> impl FnMut(&str) -> bool + '_ {
    move |text: &str| {
        !events.is_closed()
            && (text.is_empty() || events.send(Event::Text(text.to_string())).is_ok())
    }
}

/// Reports a generation's end (and its metrics).
fn conclude(name: &str, metrics: &LocalMetrics, active: Active<'_>) {
    let Active {
        generation,
        events,
        started,
        ..
    } = active;
    let result = generation.finish(&mut emitter(&events));
    report(name, metrics, &events, started, result);
}

fn report(
    name: &str,
    metrics: &LocalMetrics,
    events: &UnboundedSender<Event>,
    started: Instant,
    result: Result<Outcome, super::LocalError>,
) {
    let took = started.elapsed();
    match result {
        Ok(outcome) => {
            metrics.generation_done(name, took, outcome.finish.label());
            metrics.speed(name, "prefill", outcome.prefill_rate());
            if outcome.completion_tokens > 1 {
                metrics.speed(name, "decode", outcome.decode_rate());
            }
            let _ = events.send(Event::Done(outcome));
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
    events: UnboundedSender<Event>,
    started: Instant,
}

/// The decode thread: admits a queued job when a slot is free and no other prompt is running,
/// runs its prompt (alone: all of it at once; beside running generations: a piece per step),
/// and steps every running generation by one token in one batch.
fn decode_loop(
    name: &str,
    model: &LocalModel,
    jobs: &Receiver<Job>,
    slots: usize,
    waiting: &AtomicUsize,
    metrics: &LocalMetrics,
) {
    let mut active: Vec<Active> = Vec::with_capacity(slots);
    let mut prefilling: Option<Prefilling> = None;
    loop {
        while prefilling.is_none() && active.len() < slots {
            let job = if active.is_empty() {
                match jobs.recv() {
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
                Ok(generation) => {
                    prefilling = Some(Prefilling {
                        generation,
                        prompt: job.prompt,
                        events: job.events,
                        started,
                    })
                }
                Err(e) => report(name, metrics, &job.events, started, Err(e)),
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
                    let step = a.generation.advance(&logits, &mut emitter(&a.events));
                    match step {
                        Ok(Some(next)) => {
                            a.next = next;
                            still.push(a);
                        }
                        Ok(None) => conclude(name, metrics, a),
                        Err(e) => report(name, metrics, &a.events, a.started, Err(e)),
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
                        a.started,
                        Err(super::LocalError::Format(msg.clone())),
                    );
                }
            }
        }
    }
}

/// Runs the next piece of a prompt (all that is left when nothing else runs). Returns the
/// generation while its prompt is unfinished; once it is, the first token goes out and the
/// generation joins `active` (or ends there).
fn prefill_step<'m>(
    name: &str,
    metrics: &LocalMetrics,
    mut p: Prefilling<'m>,
    active: &mut Vec<Active<'m>>,
) -> Option<Prefilling<'m>> {
    if p.events.is_closed() {
        let result = p.generation.cancel();
        report(name, metrics, &p.events, p.started, result);
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
            report(name, metrics, &p.events, p.started, Err(e));
            return None;
        }
    };
    if end < p.prompt.len() {
        return Some(p);
    }
    let first = p.generation.advance(&logits, &mut emitter(&p.events));
    match first {
        Ok(next) => {
            let a = Active {
                generation: p.generation,
                events: p.events,
                next: next.unwrap_or(0),
                started: p.started,
            };
            if next.is_some() {
                active.push(a);
            } else {
                conclude(name, metrics, a);
            }
        }
        Err(e) => report(name, metrics, &p.events, p.started, Err(e)),
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

fn usage_of(o: &Outcome) -> Usage {
    Usage {
        prompt_tokens: o.prompt_tokens as u64,
        completion_tokens: o.completion_tokens as u64,
        cached_prompt_tokens: 0,
        cache_write_prompt_tokens: 0,
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// What the on-box engine supports beyond plain text chat: raw prompts (legacy completions),
/// and nothing else yet (no tools, JSON modes, log probabilities, several choices, images,
/// audio or files). Policies default an on-box model's capabilities to this, and cannot claim
/// more.
pub fn capabilities() -> Capabilities {
    Capabilities::NONE.with(crate::api::Capability::Completions)
}

#[async_trait]
impl ChatEngine for LocalEngine {
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    fn count_prompt_tokens(&self, req: &ChatRequest) -> Option<u64> {
        let messages = req.messages();
        let ids = match (req.raw_prompt, messages.last()) {
            (true, Some((_, text))) => super::tokenizer::encode(&self.model.tokenizer, text),
            _ => self.model.prompt(&messages),
        };
        ids.ok().map(|ids| ids.len() as u64)
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        let mut rx = self.submit(req.request).await?;
        let mut text = String::new();
        loop {
            match rx.recv().await {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Done(outcome)) => {
                    let usage = usage_of(&outcome);
                    let body = json!({
                        "id": completion_id(),
                        "object": "chat.completion",
                        "created": now_secs(),
                        "model": self.name,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": null,
                            "finish_reason": outcome.finish.reason(),
                        }],
                        "usage": usage_json(usage),
                    });
                    return Ok(Completion {
                        body: Bytes::from(body.to_string()),
                        usage,
                        usage_estimated: false,
                        headers: http::HeaderMap::new(),
                        dialect: None,
                    });
                }
                Some(Event::Failed(e)) => return Err(EngineError::Failed(e)),
                None => return Err(EngineError::Failed("the decode worker stopped".into())),
            }
        }
    }

    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        let mut rx = self.submit(req.request).await?;
        let id = completion_id();
        let created = now_secs();
        let model = self.name.clone();
        // `chat.completion.chunk` envelopes: choices with one delta, or (last) usage alone.
        let envelope = move |choices: Value, usage: Option<Value>| {
            let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": choices});
            if let Some(u) = usage {
                v["usage"] = u;
            }
            Bytes::from(v.to_string())
        };
        let chunk = {
            let envelope = envelope.clone();
            move |delta: Value, finish: Option<&str>| {
                envelope(
                    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
                    None,
                )
            }
        };
        let stream = async_stream::stream! {
            yield Ok(Chunk {
                payload: chunk(json!({"role": "assistant", "content": ""}), None),
                event: None,
                text_bytes: 0,
                usage: None,
                usage_only: false,
            });
            loop {
                match rx.recv().await {
                    Some(Event::Text(t)) => yield Ok(Chunk {
                        text_bytes: t.len() as u64,
                        payload: chunk(json!({"content": t}), None),
                        event: None,
                        usage: None,
                        usage_only: false,
                    }),
                    Some(Event::Done(outcome)) => {
                        let usage = usage_of(&outcome);
                        let finish = match outcome.finish {
                            Finish::Cancelled => Finish::Stop,
                            f => f,
                        };
                        yield Ok(Chunk {
                            payload: chunk(json!({}), Some(finish.reason())),
                            event: None,
                            text_bytes: 0,
                            usage: None,
                            usage_only: false,
                        });
                        yield Ok(Chunk {
                            payload: envelope(json!([]), Some(usage_json(usage))),
                            event: None,
                            text_bytes: 0,
                            usage: Some(usage.into()),
                            usage_only: true,
                        });
                        return;
                    }
                    Some(Event::Failed(e)) => {
                        yield Err(EngineError::Failed(e));
                        return;
                    }
                    None => {
                        yield Err(EngineError::Failed("the decode worker stopped".into()));
                        return;
                    }
                }
            }
        };
        Ok(Streaming::new(Box::pin(stream)))
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
