//! The on-box sentence encoder as an engine (`kind: encoder`): it answers embeddings requests
//! (`POST /v1/embeddings`) in-process with the classifier's BERT forward pass
//! ([`crate::classifier::encoder::Encoder`]: the last layer mean-pooled over the tokens and
//! L2-normalised, as sentence-transformers defines the embedding of all-MiniLM-L6-v2), and
//! nothing else. An input longer than the model's limit is refused, never cut.

use super::{ChatEngine, Completion, EngineError, EngineRequest, Streaming};
use crate::api::{embeddings, Capabilities, Capability, Dialect, Usage};
use crate::classifier::encoder::Encoder;
use crate::policy::Model;
use async_trait::async_trait;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Inputs embedded in one forward pass (sorted by length, so that little is padding).
const BATCH: usize = 16;

/// An encoder model's engine.
pub struct EncoderEngine {
    /// The policy's name of the model (the answer's `model`).
    name: String,
    encoder: Arc<Encoder>,
    /// Most tokens of one input, special tokens included.
    max_input_tokens: usize,
    /// One request's batches on the CPU at a time: a forward pass fills the compute pool.
    running: Semaphore,
    /// Requests waiting for `running`, and how many may.
    waiting: AtomicUsize,
    queue: usize,
}

/// A request counted in [`EncoderEngine::waiting`] until it is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EncoderEngine {
    /// Loads the encoder of `m` (its `encoder` settings).
    ///
    /// Errors: a message naming the model and the folder, when the model has no settings or
    /// the folder is not a BERT folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(m: &Model) -> Result<EncoderEngine, String> {
        let settings = m
            .encoder
            .as_ref()
            .ok_or_else(|| format!("model `{}`: no encoder settings", m.name))?;
        let started = std::time::Instant::now();
        let encoder = Encoder::load(&settings.path)
            .map_err(|e| format!("model `{}` ({}): {e}", m.name, settings.path.display()))?;
        let max_input_tokens = settings
            .max_input_tokens
            .unwrap_or(encoder.max_positions)
            .min(encoder.max_positions);
        tracing::info!(
            "model {}: loaded the encoder {} ({} dimensions, inputs up to {} tokens) in {:.2}s",
            m.name,
            settings.path.display(),
            encoder.hidden,
            max_input_tokens,
            started.elapsed().as_secs_f64()
        );
        Ok(EncoderEngine {
            name: m.name.clone(),
            encoder: Arc::new(encoder),
            max_input_tokens,
            running: Semaphore::new(1),
            waiting: AtomicUsize::new(0),
            queue: settings.queue,
        })
    }

    /// This request's turn on the CPU: at once when no other request is being embedded, else
    /// after those before it, unless `queue` of them are waiting already.
    ///
    /// Errors: [`EngineError::Overloaded`] when the queue is full (503 with `Retry-After`).
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, EngineError> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _counted = Waiting(&self.waiting);
        if queued >= self.queue {
            return Err(EngineError::Overloaded {
                queued,
                retry_after_secs: 1,
            });
        }
        self.running
            .acquire()
            .await
            .map_err(|_| EngineError::Unavailable("the encoder is shut down".into()))
    }

    /// The embeddings of `request`'s texts and the tokens they took.
    async fn embed(
        &self,
        request: embeddings::EmbeddingsRequest,
    ) -> Result<Completion, EngineError> {
        let invalid =
            |message: String, param: &'static str| EngineError::Invalid { message, param };
        if request.token_ids {
            return Err(invalid(
                "an on-box encoder embeds text: token ids are another tokenizer's; send the strings (LangChain's OpenAIEmbeddings sends token ids unless `check_embedding_ctx_length=False`)".into(),
                "input",
            ));
        }
        let width = self.encoder.hidden as u64;
        if let Some(d) = request.dimensions.filter(|d| *d != width) {
            return Err(invalid(
                format!(
                    "`dimensions` is {d}, but this model's embeddings have {width} (its only size)"
                ),
                "dimensions",
            ));
        }
        let _turn = self.turn().await?;
        let encoder = self.encoder.clone();
        let limit = self.max_input_tokens;
        let texts = request.texts;
        let computed = tokio::task::spawn_blocking(move || {
            let mut tokens = Vec::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                let t = encoder
                    .tokenize(text, limit)
                    .map_err(|e| EngineError::Failed(e.to_string()))?;
                if t.truncated {
                    return Err(EngineError::Invalid {
                        message: format!(
                            "`input[{i}]` is {} tokens long, and this model embeds at most {limit} (its two special tokens included): split it",
                            t.original + 2
                        ),
                        param: "input",
                    });
                }
                tokens.push(t.ids);
            }
            let mut order: Vec<usize> = (0..tokens.len()).collect();
            order.sort_by_key(|&i| tokens[i].len());
            let mut vectors = vec![Vec::new(); tokens.len()];
            for chunk in order.chunks(BATCH) {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| tokens[i].as_slice()).collect();
                let embedded = encoder
                    .embed(&batch)
                    .map_err(|e| EngineError::Failed(e.to_string()))?;
                for (&i, v) in chunk.iter().zip(embedded) {
                    vectors[i] = v;
                }
            }
            let counted: usize = tokens.iter().map(Vec::len).sum();
            Ok((vectors, counted as u64))
        })
        .await
        .map_err(|e| EngineError::Failed(format!("the encoder task failed: {e}")))??;
        let (vectors, prompt_tokens) = computed;
        let body = embeddings::list_body(&self.name, &vectors, request.base64, prompt_tokens);
        Ok(Completion {
            body: body.into(),
            usage: Usage {
                prompt_tokens,
                ..Usage::default()
            },
            usage_estimated: false,
            headers: http::HeaderMap::new(),
            dialect: Some(Dialect::Embeddings),
        })
    }
}

#[async_trait]
impl ChatEngine for EncoderEngine {
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    fn capabilities(&self) -> Option<Capabilities> {
        Some(Capabilities::NONE.with(Capability::Embeddings))
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        let Some(native) = req.native.filter(|n| n.dialect == Dialect::Embeddings) else {
            return Err(EngineError::Invalid {
                message: "a sentence encoder serves embeddings only (`POST /v1/embeddings`)".into(),
                param: "model",
            });
        };
        let request = embeddings::read(native.body).map_err(|e| EngineError::Invalid {
            message: e.to_string(),
            param: "input",
        })?;
        self.embed(request).await
    }

    async fn infer_stream(&self, _req: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        Err(EngineError::Invalid {
            message: "a sentence encoder serves embeddings only (`POST /v1/embeddings`), which are not streamed".into(),
            param: "stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// The engine of an encoder on the classifier's folder (fetched by scripts/fetch-models.sh)
    /// with this `queue`.
    fn engine(queue: usize) -> EncoderEngine {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2");
        let yaml = format!(
            "version: 1\nmodels:\n  box: {{ kind: local }}\n  enc: {{ kind: encoder, path: '{dir}', queue: {queue} }}\ndefault: {{ route: box }}\n"
        );
        let policy = crate::policy::parse(&yaml, "p.yaml", &|_| None).expect("policy");
        EncoderEngine::load(&policy.models["enc"]).expect("encoder")
    }

    #[test]
    fn a_request_waits_its_turn_unless_the_queue_is_full() {
        let full = engine(0);
        let running = full
            .running
            .try_acquire()
            .expect("a request being embedded");
        match full.turn().now_or_never() {
            Some(Err(EngineError::Overloaded { queued: 0, .. })) => {}
            other => panic!("expected a full queue, got {:?}", other.map(|r| r.is_ok())),
        }
        drop(running);
        assert!(matches!(full.turn().now_or_never(), Some(Ok(_))));

        let one = engine(1);
        let running = one.running.try_acquire().expect("a request being embedded");
        // The first to wait waits (and leaves the queue when it gives up), a second is refused.
        let mut waiting = Box::pin(one.turn());
        assert!((&mut waiting).now_or_never().is_none());
        assert!(matches!(
            one.turn().now_or_never(),
            Some(Err(EngineError::Overloaded { queued: 1, .. }))
        ));
        drop(running);
        assert!(matches!(waiting.now_or_never(), Some(Ok(_))));
        assert_eq!(one.waiting.load(Ordering::Relaxed), 0);
    }
}
