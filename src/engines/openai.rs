//! OpenAI-compatible cloud provider: pooled hyper client, per-model timeouts, streaming
//! forwarded chunk by chunk, usage taken from the upstream (asked for on streams).

use super::{ChatEngine, Chunk, ChunkStream, Completion, EngineError, EngineRequest, Usage};
use crate::api::sse;
use crate::features::estimate_text_tokens;
use crate::policy::{Model, Secret, Timeouts};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

/// Largest non-streaming upstream response accepted.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A cloud model behind an OpenAI-compatible API.
pub struct OpenAiEngine {
    endpoint: Uri,
    authorization: Option<HeaderValue>,
    key: Option<Secret>,
    upstream_model: String,
    timeouts: Timeouts,
    disabled: Option<String>,
    client: HttpClient,
}

impl OpenAiEngine {
    /// Builds the engine of a policy model of kind `openai`.
    pub fn new(model: &Model) -> Result<OpenAiEngine, String> {
        let p = model.provider.as_ref().ok_or("not a cloud model")?;
        let endpoint: Uri = format!("{}/chat/completions", p.base_url)
            .parse()
            .map_err(|e| format!("invalid base_url for model `{}`: {e}", model.name))?;
        let authorization = match &p.api_key {
            Some(k) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                        format!(
                            "the API key of model `{}` contains characters not allowed in a header",
                            model.name
                        )
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(p.timeouts.connect));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(OpenAiEngine {
            endpoint,
            authorization,
            key: p.api_key.clone(),
            upstream_model: p.upstream_model.clone(),
            timeouts: p.timeouts,
            disabled: p.disabled_reason.clone(),
            client,
        })
    }

    fn request(
        &self,
        req: &EngineRequest<'_>,
        stream: bool,
    ) -> Result<Request<Full<Bytes>>, EngineError> {
        let body = serde_json::to_vec(&Outgoing {
            body: &req.request.body,
            model: &self.upstream_model,
            stream,
        })
        .map_err(|e| EngineError::Protocol(format!("cannot encode the request: {e}")))?;
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .header(
                USER_AGENT,
                concat!("switchyard/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.authorization {
            b = b.header(AUTHORIZATION, auth.clone());
        }
        b.body(Full::new(Bytes::from(body)))
            .map_err(|e| EngineError::Protocol(e.to_string()))
    }

    /// Sends the request and waits for the response head.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, EngineError> {
        match timeout(self.timeouts.first_byte, self.client.request(req)).await {
            Err(_) => Err(EngineError::FirstByteTimeout(self.timeouts.first_byte)),
            Ok(Err(e)) if e.is_connect() => Err(EngineError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(EngineError::Transport(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Replaces the provider key wherever an upstream echoes it.
    fn redact(&self, body: Bytes) -> Bytes {
        let Some(key) = self
            .key
            .as_ref()
            .map(Secret::expose)
            .filter(|k| k.len() >= 4)
        else {
            return body;
        };
        let text = String::from_utf8_lossy(&body);
        if text.contains(key) {
            Bytes::from(text.replace(key, "***"))
        } else {
            body
        }
    }

    async fn status_error(&self, resp: http::Response<Incoming>, deadline: Instant) -> EngineError {
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        let body = match timeout_at(deadline, read_limited(resp.into_body(), 64 * 1024)).await {
            Ok(Ok(b)) => self.redact(b),
            _ => Bytes::new(),
        };
        EngineError::Status {
            status,
            body,
            retry_after,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Reads a body up to `limit` bytes.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, EngineError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| EngineError::Transport(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(EngineError::Protocol(format!(
                    "the response is larger than {limit} bytes"
                )));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The client's request as sent upstream: every field kept, `model` replaced and, on
/// streams, usage asked for.
struct Outgoing<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        for (k, v) in self.body {
            match k.as_str() {
                "model" => {}
                "stream_options" if self.stream => {}
                _ => m.serialize_entry(k, v)?,
            }
        }
        if self.stream {
            let mut opts = match self.body.get("stream_options") {
                Some(Value::Object(o)) => o.clone(),
                _ => Map::new(),
            };
            opts.insert("include_usage".into(), Value::Bool(true));
            m.serialize_entry("stream_options", &opts)?;
        }
        m.end()
    }
}

#[derive(Deserialize)]
struct UsageOf {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionView<'a> {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceView<'a>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    message: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[async_trait]
impl ChatEngine for OpenAiEngine {
    fn availability(&self) -> Result<(), String> {
        match &self.disabled {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        self.availability().map_err(EngineError::Unavailable)?;
        let deadline = Instant::now() + self.timeouts.total;
        let resp = self.send(self.request(&req, false)?).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, deadline).await);
        }
        let body = timeout_at(deadline, read_limited(resp.into_body(), MAX_RESPONSE_BYTES))
            .await
            .map_err(|_| EngineError::TotalTimeout(self.timeouts.total))??;
        let view: CompletionView = serde_json::from_slice(&body).map_err(|e| {
            EngineError::Protocol(format!("the response is not a chat completion: {e}"))
        })?;
        let (usage, usage_estimated) = match view.usage {
            Some(u) => (u, false),
            None => {
                let text: u64 = view
                    .choices
                    .iter()
                    .filter_map(|c| c.message.as_ref()?.content.as_ref().map(|s| s.len() as u64))
                    .sum();
                let prompt = crate::features::estimate_prompt_tokens(
                    req.request.text_bytes,
                    req.request.message_count,
                    req.request.tool_bytes,
                    req.request.image_count,
                );
                (
                    Usage {
                        prompt_tokens: prompt,
                        completion_tokens: estimate_text_tokens(text),
                    },
                    true,
                )
            }
        };
        Ok(Completion {
            body,
            usage,
            usage_estimated,
        })
    }

    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<ChunkStream, EngineError> {
        self.availability().map_err(EngineError::Unavailable)?;
        let deadline = Instant::now() + self.timeouts.total;
        let resp = self.send(self.request(&req, true)?).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, deadline).await);
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            return Err(EngineError::Protocol(
                "the upstream did not answer the stream request with text/event-stream".into(),
            ));
        }
        let total = self.timeouts.total;
        let mut body = resp.into_body();
        Ok(Box::pin(async_stream::try_stream! {
            let mut decoder = sse::Decoder::default();
            let mut finished = false;
            let mut ended = false;
            while !ended {
                let frame = match timeout_at(deadline, body.frame()).await {
                    Err(_) => Err(EngineError::TotalTimeout(total))?,
                    Ok(None) => {
                        ended = true;
                        None
                    }
                    Ok(Some(Err(e))) => Err(EngineError::Transport(error_chain(&e)))?,
                    Ok(Some(Ok(frame))) => frame.into_data().ok(),
                };
                if let Some(data) = frame {
                    decoder.push(&data);
                }
                loop {
                    let event = match decoder.next_event() {
                        Ok(Some(e)) => Some(e),
                        Ok(None) if ended => decoder.finish(),
                        Ok(None) => None,
                        Err(e) => Err(EngineError::Protocol(e.to_string()))?,
                    };
                    let Some(event) = event else { break };
                    if event.is_done() {
                        return;
                    }
                    let chunk = parse_chunk(event.data)?;
                    if chunk.1 {
                        finished = true;
                    }
                    yield chunk.0;
                }
            }
            if !finished {
                Err(EngineError::Transport("the upstream closed the stream before it finished".into()))?;
            }
        }))
    }
}

/// Reads what the gateway needs from one chunk; the bool says whether it finished a choice.
fn parse_chunk(payload: Bytes) -> Result<(Chunk, bool), EngineError> {
    let view: ChunkView = serde_json::from_slice(&payload)
        .map_err(|e| EngineError::Protocol(format!("a stream event is not JSON: {e}")))?;
    if view.error.is_some() {
        return Err(EngineError::InStream(payload.clone()));
    }
    let choices = view.choices.unwrap_or_default();
    let text_bytes = choices
        .iter()
        .filter_map(|c| c.delta.as_ref()?.content.as_ref().map(|s| s.len() as u64))
        .sum();
    let finished = choices.iter().any(|c| c.finish_reason.is_some());
    let usage_only = choices.is_empty() && view.usage.is_some();
    let usage = view.usage;
    drop(choices);
    Ok((
        Chunk {
            payload,
            text_bytes,
            usage,
            usage_only,
        },
        finished || usage_only,
    ))
}

/// Reads `usage` from a completion body (for engines and tests).
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageOf>(body).ok()?.usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_replaces_model_and_asks_for_usage_on_streams() {
        let body: Map<String, Value> = serde_json::from_str(
            r#"{"model":"auto","messages":[],"stream":true,"stream_options":{"x":1},"seed":7}"#,
        )
        .unwrap();
        let out: Value = serde_json::to_value(Outgoing {
            body: &body,
            model: "gpt-4o",
            stream: true,
        })
        .unwrap();
        assert_eq!(out["model"], "gpt-4o");
        assert_eq!(out["seed"], 7);
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"x": 1, "include_usage": true})
        );
        let out: Value = serde_json::to_value(Outgoing {
            body: &body,
            model: "m",
            stream: false,
        })
        .unwrap();
        assert_eq!(out["stream_options"], serde_json::json!({"x": 1}));
    }

    #[test]
    fn chunks_report_text_usage_and_errors() {
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[{"delta":{"content":"h\u00e9"},"finish_reason":null}]}"#,
        ))
        .unwrap();
        assert_eq!((c.text_bytes, c.usage_only, fin), (3, false, false));
        let (c, fin) = parse_chunk(Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ))
        .unwrap();
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        assert!(c.usage_only && fin);
        assert!(matches!(
            parse_chunk(Bytes::from_static(br#"{"error":{"message":"x"}}"#)),
            Err(EngineError::InStream(_))
        ));
        assert!(matches!(
            parse_chunk(Bytes::from_static(b"nope")),
            Err(EngineError::Protocol(_))
        ));
    }
}
