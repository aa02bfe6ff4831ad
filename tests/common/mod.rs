//! Test harness: the real gateway on a loopback port, a fake cloud upstream that is a real
//! HTTP server speaking the OpenAI wire format (JSON, SSE, errors, stalls, cut connections),
//! a scripted on-box engine, and a plain HTTP client.
#![allow(dead_code)]

pub mod mutation;
pub mod policy_builder;
pub mod redis_server;
#[allow(unused_imports)]
pub use policy_builder::{key_sha256, quoted, PolicyBuilder};
#[allow(unused_imports)]
pub use redis_server::RedisServer;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::classifier::batcher::Batcher;
use switchyard::engines::{
    ChatEngine, Chunk, Completion, EngineError, EngineRequest, Streaming, Usage,
};
use switchyard::server::{self, Gateway};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};

/// Upper bound for anything a test waits on; reaching it fails the test instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A request the fake upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body's bytes as they came.
    pub raw: Bytes,
}

/// A fake OpenAI-compatible upstream. The first path segment picks its behaviour:
/// `/ok/v1/chat/completions`, `/status-500/v1/...` and so on (see `respond`). It also serves
/// the Responses API (`…/v1/responses`), legacy completions (`…/v1/completions`) and, under
/// `/anthropic…`, Anthropic's Messages API.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Released by a test to let a `gated` stream go on, or `held` requests be answered.
    pub gate: Arc<Notify>,
    /// How many requests have been recorded (for waiting on arrivals).
    arrived: Arc<watch::Sender<usize>>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let up = FakeUpstream {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            gate: Arc::new(Notify::new()),
            arrived: Arc::new(watch::Sender::new(0)),
        };
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            let mut resp = state.respond(req).await;
                            provider_headers(
                                resp.headers_mut(),
                                state.requests.lock().expect("lock").len(),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up
    }

    /// Base URL of a behaviour, for a policy's `base_url`.
    pub fn base(&self, behaviour: &str) -> String {
        format!("http://{}/{behaviour}/v1", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Waits (bounded by `TEST_TIMEOUT`) until at least `n` requests have been recorded, and
    /// returns how many there are then.
    pub async fn wait_for_requests(&self, n: usize) -> usize {
        let mut rx = self.arrived.subscribe();
        let seen = tokio::time::timeout(TEST_TIMEOUT, rx.wait_for(|&got| got >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the upstream got {} requests, not {n}, in {TEST_TIMEOUT:?}",
                    self.recorded().len()
                )
            })
            .map(|got| *got)
            .expect("the upstream is running");
        seen
    }

    /// Answers every `held` request that has been recorded so far.
    pub fn release_held(&self) {
        self.gate.notify_waiters();
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let headers = req.headers().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let raw = body;
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        let behaviour = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        // `held`: answered (like `ok`) once the test calls `release_held`. The wait is registered
        // before the request is recorded, so a test that sees it recorded can release it.
        let gate = self.gate.clone();
        let held = gate.notified();
        tokio::pin!(held);
        if behaviour == "held" {
            held.as_mut().enable();
        }
        self.requests.lock().expect("lock").push(Recorded {
            path: path.clone(),
            query,
            headers: headers.clone(),
            body: body.clone(),
            raw,
        });
        self.arrived.send_modify(|n| *n += 1);
        if behaviour == "held" {
            held.await;
        }
        let stream = body["stream"].as_bool().unwrap_or(false);
        let include_usage = body["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        let model = body["model"].as_str().unwrap_or("").to_string();
        // `flaky-N`: the first N requests of this behaviour get a 503, the rest are answered.
        // `limited-N`: the first N get a 429 asking to retry after 1 s.
        // `failing-after-N`: the first N are answered, the rest get a 503.
        let seen = {
            let p = format!("/{behaviour}/");
            self.requests
                .lock()
                .expect("lock")
                .iter()
                .filter(|r| r.path.starts_with(&p))
                .count()
        };
        for (prefix, status) in [("flaky-", 503u16), ("limited-", 429)] {
            if let Some(n) = behaviour
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<usize>().ok())
            {
                if seen <= n {
                    let mut r = full_response(
                        StatusCode::from_u16(status).expect("status"),
                        "application/json",
                        json!({"error": {"message": "try again", "type": "server_error"}})
                            .to_string(),
                    );
                    if status == 429 {
                        r.headers_mut()
                            .insert("retry-after", "1".parse().expect("header"));
                    }
                    return r;
                }
            }
        }
        if let Some(n) = behaviour
            .strip_prefix("failing-after-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if seen > n {
                return full_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    json!({"error": {"message": "down", "type": "server_error"}}).to_string(),
                );
            }
        }
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // The providers' token counts: a number no estimate of these prompts comes near.
        if behaviour.starts_with("anthropic") && path.ends_with("/v1/messages/count_tokens") {
            let v = json!({"input_tokens": FAKE_COUNTED_TOKENS});
            return full_response(StatusCode::OK, "application/json", v.to_string());
        }
        if behaviour == "ok" && path.ends_with("/v1/responses/input_tokens") {
            let v = json!({"object": "response.input_tokens", "input_tokens": FAKE_COUNTED_TOKENS});
            return full_response(StatusCode::OK, "application/json", v.to_string());
        }
        // `mutated` / `anthropic-mutated`: a chat completion or a Messages answer, JSON or
        // stream, mutated as tests/common/mutation.rs mutates, drawn from how many requests
        // this behaviour has had.
        if behaviour == "mutated" || behaviour == "anthropic-mutated" {
            return mutated_respond(behaviour == "anthropic-mutated", stream, seen as u64);
        }
        if let Some(variant) = behaviour.strip_prefix("anthropic") {
            return anthropic_respond(variant, &headers, &body);
        }
        if behaviour == "ok" && path.ends_with("/v1/responses") {
            return responses_respond(&body);
        }
        if behaviour == "ok" && path.ends_with("/v1/embeddings") {
            return embeddings_respond(&body);
        }
        if behaviour == "ok" && path.ends_with("/v1/responses/compact") {
            return compaction_respond(&body);
        }
        if behaviour == "ok"
            && path.ends_with("/v1/completions")
            && !path.ends_with("/chat/completions")
        {
            return text_completion_respond(&body, include_usage);
        }
        if behaviour == "leaky" {
            // Echoes the credentials it got: in a response header and body, or in a stream's
            // error event.
            let mut r = if stream {
                let mut r = full_response(
                    StatusCode::OK,
                    "text/event-stream",
                    format!(
                        "data: {}\n\ndata: {}\n\n",
                        chunk(&model, json!({"content": "Hi"}), None),
                        json!({"error": {"message": format!("quota exceeded for key {auth}"), "type": "server_error"}})
                    ),
                );
                r.headers_mut()
                    .insert("content-type", "text/event-stream".parse().expect("header"));
                r
            } else {
                let mut v = completion(&model, true);
                v["choices"][0]["message"]["content"] = json!("fine");
                v["system_fingerprint"] = json!(format!("served for {auth}"));
                full_response(StatusCode::OK, "application/json", v.to_string())
            };
            if let Ok(v) = auth.parse() {
                r.headers_mut().insert("x-echo-authorization", v);
            }
            return r;
        }
        if behaviour == "huge" {
            // Larger than any limit: 40 MiB of JSON, or one 9 MiB stream event.
            return if stream {
                let mut r = full_response(
                    StatusCode::OK,
                    "text/event-stream",
                    format!("data: {{\"pad\": \"{}\"}}\n\n", "x".repeat(9 << 20)),
                );
                r.headers_mut()
                    .insert("content-type", "text/event-stream".parse().expect("header"));
                r
            } else {
                full_response(
                    StatusCode::OK,
                    "application/json",
                    format!("{{\"pad\": \"{}\"}}", "x".repeat(40 << 20)),
                )
            };
        }
        // `status-N`: status N with an OpenAI error body that echoes the credentials;
        // `status-N-after-S`: with `Retry-After: S`; `html-N`: status N with an HTML page.
        if let Some(code) = behaviour.strip_prefix("html-") {
            let status = StatusCode::from_u16(code.parse().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return full_response(status, "text/html", "<html>oops</html>".into());
        }
        if let Some(code) = behaviour.strip_prefix("status-") {
            let (code, after) = code.split_once("-after-").unwrap_or((code, ""));
            let status = StatusCode::from_u16(code.parse().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let msg = format!("upstream says no ({code}); you sent {auth}");
            let mut r = full_response(status, "application/json", json!({"error": {"message": msg, "type": "invalid_request_error", "code": "upstream_code"}}).to_string());
            if !after.is_empty() {
                r.headers_mut()
                    .insert("retry-after", after.parse().expect("header"));
            } else if status.as_u16() == 429 {
                r.headers_mut()
                    .insert("retry-after", "7".parse().expect("header"));
            }
            return r;
        }
        match behaviour.as_str() {
            "hang" => std::future::pending().await,
            // `tool`: a call of `get_weather` with `{"city": "Paris"}`, as JSON or a stream.
            "tool" if !stream => {
                let mut v = completion(&model, true);
                v["choices"][0]["message"] = json!({"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_fake_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]});
                v["choices"][0]["finish_reason"] = json!("tool_calls");
                full_response(StatusCode::OK, "application/json", v.to_string())
            }
            // `cutbody`: a 200 head and half a completion, then the connection breaks. The body
            // waits once between the two, so the server writes the head and the half out first.
            "cutbody" if !stream => {
                let text = completion(&model, true).to_string();
                let half = Bytes::from(text[..text.len() / 2].to_string());
                let frames = async_stream::stream! {
                    yield Ok::<_, std::io::Error>(Frame::data(half));
                    tokio::task::yield_now().await;
                    yield Err(std::io::Error::other("connection cut"));
                };
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
                r.headers_mut()
                    .insert("content-type", "application/json".parse().expect("header"));
                r
            }
            "json-for-stream" => full_response(
                StatusCode::OK,
                "application/json",
                completion(&model, true).to_string(),
            ),
            // `judge-N`: a judge that rates every candidate N ([[N]]); other calls get the usual answer.
            _ if !stream
                && behaviour.starts_with("judge-")
                && body.to_string().contains("[Candidate answer]") =>
            {
                let n = behaviour.trim_start_matches("judge-");
                let mut v = completion(&model, true);
                v["choices"][0]["message"]["content"] = json!(format!("[[{n}]]"));
                full_response(StatusCode::OK, "application/json", v.to_string())
            }
            _ if !stream => {
                let mut v = completion(&model, behaviour != "nousage");
                if let Some(u) = odd_usage(&behaviour) {
                    v["usage"] = u;
                }
                full_response(StatusCode::OK, "application/json", v.to_string())
            }
            _ => self.sse(&behaviour, &model, include_usage),
        }
    }

    fn sse(&self, behaviour: &str, model: &str, include_usage: bool) -> Response<BoxBody> {
        let gate = self.gate.clone();
        let behaviour = behaviour.to_string();
        let model = model.to_string();
        let frames = async_stream::stream! {
            let frame = |v: Value| Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("data: {v}\n\n"))));
            yield frame(chunk(&model, json!({"role": "assistant", "content": ""}), None));
            if behaviour == "tool" {
                yield frame(chunk(&model, json!({"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}), None));
                for piece in ["{\"city\"", ": \"Paris\"}"] {
                    yield frame(chunk(&model, json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None));
                }
                yield frame(chunk(&model, json!({}), Some("tool_calls")));
                if include_usage {
                    yield frame(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                        "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}}));
                }
                yield Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")));
                return;
            }
            yield frame(chunk(&model, json!({"content": "Hello"}), None));
            match behaviour.as_str() {
                "gated" => gate.notified().await,
                "cut" => {
                    gate.notified().await;
                    yield Err(std::io::Error::other("connection cut"));
                    return;
                }
                "stall" => std::future::pending::<()>().await,
                "badsse" => {
                    yield Ok(Frame::data(Bytes::from_static(b"data: {this is not json\n\n")));
                    return;
                }
                _ => {}
            }
            yield frame(chunk(&model, json!({"content": " from the"}), None));
            yield frame(chunk(&model, json!({"content": " cloud"}), None));
            yield frame(chunk(&model, json!({}), Some("stop")));
            if include_usage && behaviour != "nousage" {
                let usage = odd_usage(&behaviour).unwrap_or_else(
                    || json!({"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}),
                );
                yield frame(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": usage}));
            }
            yield Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")));
        };
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().expect("header"));
        r
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A fake Anthropic Messages upstream (`/anthropic…/v1/messages`): it requires `x-api-key` and
/// `anthropic-version` (401 in Anthropic's error shape otherwise) and answers a `message` with
/// 21 input and 4 output tokens, or the Messages event stream. Variants: `-tool` (a `tool_use`
/// of get_weather), `-cached` (100 input tokens, 900 read from the prompt cache, 200 written to
/// it, 10 output), `-error` (a stream that ends in an `error` event after its first text),
/// `-cut` (a stream that stops before `message_stop`),
/// `-529` (overloaded). With `thinking` on, it holds the request to Anthropic's rules (a
/// budget of 1,024 tokens or more and below `max_tokens`, no temperature but 1, `top_p` from
/// 0.95, no forced tool, a tool call's continuation starting with its thinking block: 400
/// otherwise) and answers a `thinking` block (or its events) before the text. With its web
/// search tool, it searches ([`anthropic_search_answer`]).
fn anthropic_respond(variant: &str, headers: &HeaderMap, body: &Value) -> Response<BoxBody> {
    let error = |status: u16, kind: &str, message: &str| {
        full_response(
            StatusCode::from_u16(status).expect("status"),
            "application/json",
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
        )
    };
    if headers.get("x-api-key").is_none() || headers.get("anthropic-version").is_none() {
        return error(
            401,
            "authentication_error",
            "x-api-key and anthropic-version are required",
        );
    }
    if body["max_tokens"].as_u64().is_none() || !body["messages"].is_array() {
        return error(
            400,
            "invalid_request_error",
            "max_tokens and messages are required",
        );
    }
    if variant == "-529" {
        return error(529, "overloaded_error", "Overloaded");
    }
    let searches = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["type"] == "web_search_20250305"));
    if searches {
        return anthropic_search_answer(body);
    }
    let thinking = !body["thinking"].is_null();
    if thinking {
        if let Some(broken) = thinking_rule_broken(body) {
            return error(400, "invalid_request_error", broken);
        }
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    let usage = if variant == "-cached" {
        json!({"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 200})
    } else {
        json!({"input_tokens": 21, "output_tokens": 4, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    };
    let (block, stop) = if variant == "-tool" {
        (
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": "get_weather", "input": {"city": "Paris"}}),
            "tool_use",
        )
    } else {
        (
            json!({"type": "text", "text": "Hello from Claude"}),
            "end_turn",
        )
    };
    let thought =
        json!({"type": "thinking", "thinking": "The user greets me.", "signature": "sig_fake"});
    if body["stream"] != json!(true) {
        let content = if thinking {
            json!([thought, block])
        } else {
            json!([block])
        };
        let mut v = json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage});
        // `-nousage`: an Anthropic-compatible server that counts nothing.
        if variant == "-nousage" {
            if let Some(m) = v.as_object_mut() {
                m.remove("usage");
            }
        }
        return full_response(StatusCode::OK, "application/json", v.to_string());
    }
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1,
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"]}}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    // The answer's block comes after the thinking block, when there is one.
    let index = u64::from(thinking);
    if thinking {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": thought["thinking"]}}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": thought["signature"]}}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
    }
    if variant == "-tool" {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": "toolu_fake_1", "name": "get_weather", "input": {}}})));
        for piece in ["{\"city\"", ": \"Paris\"}"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in ["Hello", " from Claude"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
    }
    if variant == "-error" {
        events.push((
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
    }
    if variant == "-error" || variant == "-cut" {
        let text: String = events
            .iter()
            .map(|(kind, data)| format!("event: {kind}\ndata: {data}\n\n"))
            .collect();
        return full_response(StatusCode::OK, "text/event-stream", text);
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": usage["output_tokens"]}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let text: String = events
        .iter()
        .map(|(kind, data)| format!("event: {kind}\ndata: {data}\n\n"))
        .collect();
    full_response(StatusCode::OK, "text/event-stream", text)
}

/// Anthropic's answer to a request with its web search tool: a text block, the search
/// (`server_tool_use`) and its results, a text block citing a result, and a last text block;
/// 30 input and 20 output tokens and one search. As JSON, or as the event stream that builds it
/// (the search's query as `input_json_delta`, the citation as `citations_delta`).
fn anthropic_search_answer(body: &Value) -> Response<BoxBody> {
    let model = body["model"].as_str().unwrap_or("");
    let usage = json!({"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0, "server_tool_use": {"web_search_requests": 1}});
    let citation = json!({"type": "web_search_result_location", "url": "https://tokio.example/blog",
        "title": "Tokio blog", "encrypted_index": "RW5j", "cited_text": "Tokio 2.0 is out."});
    let search = json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
        "input": {"query": "tokio release"}});
    let results = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
        {"type": "web_search_result", "url": "https://tokio.example/blog", "title": "Tokio blog",
            "encrypted_content": "RW5j", "page_age": "1 day"}]});
    if body["stream"] != json!(true) {
        let v = json!({"id": "msg_search", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Let me look. "}, search, results,
                {"type": "text", "text": "Tokio 2.0 is out", "citations": [citation]},
                {"type": "text", "text": "."}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": usage});
        return full_response(StatusCode::OK, "application/json", v.to_string());
    }
    let delta = |index: u64, delta: Value| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let start = |index: u64, block: Value| {
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    };
    let stop = |index: u64| {
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    let events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_search",
            "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Let me look. "})),
        stop(0),
        start(
            1,
            json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"query\": \"tokio release\"}"}),
        ),
        stop(1),
        start(2, results),
        stop(2),
        start(3, json!({"type": "text", "text": "", "citations": []})),
        delta(3, json!({"type": "citations_delta", "citation": citation})),
        delta(3, json!({"type": "text_delta", "text": "Tokio 2.0 is out"})),
        stop(3),
        start(4, json!({"type": "text", "text": ""})),
        delta(4, json!({"type": "text_delta", "text": "."})),
        stop(4),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
            "stop_sequence": null}, "usage": {"output_tokens": 20, "server_tool_use": {"web_search_requests": 1}}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let text: String = events
        .iter()
        .map(|(kind, data)| format!("event: {kind}\ndata: {data}\n\n"))
        .collect();
    full_response(StatusCode::OK, "text/event-stream", text)
}

/// Which of Anthropic's rules for a request with `thinking` the request breaks, if any
/// (Anthropic's extended and adaptive thinking guides).
fn thinking_rule_broken(body: &Value) -> Option<&'static str> {
    let t = &body["thinking"];
    match (t["type"].as_str(), t["budget_tokens"].as_u64()) {
        (Some("adaptive"), None) => {}
        (Some("enabled"), Some(budget)) => {
            if budget < 1024 {
                return Some(
                    "thinking.budget_tokens: Input should be greater than or equal to 1024",
                );
            }
            if budget >= body["max_tokens"].as_u64().unwrap_or(0) {
                return Some("`max_tokens` must be greater than `thinking.budget_tokens`");
            }
        }
        _ => return Some("thinking: unknown type or a budget where none belongs"),
    }
    if body["temperature"].as_f64().is_some_and(|t| t != 1.0) {
        return Some("`temperature` may only be set to 1 when thinking is enabled");
    }
    if body["top_p"].as_f64().is_some_and(|p| p < 0.95) {
        return Some("`top_p` must be greater than or equal to 0.95 when thinking is enabled");
    }
    if matches!(body["tool_choice"]["type"].as_str(), Some("any" | "tool")) {
        return Some("Thinking may not be enabled when tool_choice forces tool use.");
    }
    let last_assistant = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"));
    if let Some(content) = last_assistant.and_then(|m| m["content"].as_array()) {
        let uses_tool = content.iter().any(|b| b["type"] == "tool_use");
        if uses_tool && content.first().map(|b| &b["type"]) != Some(&json!("thinking")) {
            return Some("Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block.");
        }
    }
    None
}

/// The fake Responses API (`/ok/v1/responses`): a `response` echoing the request's
/// `instructions` and `max_output_tokens`, its text "Hello from Responses" (12 input and 3
/// output tokens, 4 of them cached), or the typed event stream that builds it.
fn responses_respond(body: &Value) -> Response<BoxBody> {
    let model = body["model"].as_str().unwrap_or("");
    let response = |status: &str, text: &str, usage: Value| {
        let content = if status == "completed" {
            json!([{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        } else {
            json!([])
        };
        json!({"id": "resp_fake", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": content, "instructions": body["instructions"], "max_output_tokens": body["max_output_tokens"],
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage, "error": null,
            "incomplete_details": null, "metadata": {}, "temperature": body["temperature"], "top_p": null,
            "text": {"format": {"type": "text"}}, "truncation": "disabled"})
    };
    let usage = json!({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15,
        "input_tokens_details": {"cached_tokens": 4}, "output_tokens_details": {"reasoning_tokens": 0}});
    if body["stream"] != json!(true) {
        let v = response("completed", "Hello from Responses", usage);
        return full_response(StatusCode::OK, "application/json", v.to_string());
    }
    let part = json!({"type": "output_text", "text": "", "annotations": []});
    let item = json!({"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []});
    let mut events = vec![
        (
            "response.created",
            json!({"response": response("in_progress", "", Value::Null)}),
        ),
        (
            "response.in_progress",
            json!({"response": response("in_progress", "", Value::Null)}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0, "part": part}),
        ),
    ];
    for piece in ["Hello", " from Responses"] {
        events.push((
            "response.output_text.delta",
            json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": piece}),
        ));
    }
    let text = "Hello from Responses";
    events.push((
        "response.output_text.done",
        json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0, "text": text}),
    ));
    events.push((
        "response.content_part.done",
        json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0,
        "part": {"type": "output_text", "text": text, "annotations": []}}),
    ));
    let done = response("completed", text, usage);
    events.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": done["output"][0]}),
    ));
    events.push(("response.completed", json!({"response": done})));
    let text: String = events
        .into_iter()
        .enumerate()
        .map(|(i, (kind, mut data))| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(i);
            format!("event: {kind}\ndata: {data}\n\n")
        })
        .collect();
    full_response(StatusCode::OK, "text/event-stream", text)
}

/// The fake Responses compaction (`/ok/v1/responses/compact`): a `response.compaction` whose
/// output is the request's user messages and one `compaction` item (120 input and 30 output
/// tokens, 20 of them reasoning).
fn compaction_respond(body: &Value) -> Response<BoxBody> {
    let user = |text: &Value| {
        json!({"type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]})
    };
    let mut output: Vec<Value> = match &body["input"] {
        Value::String(_) => vec![user(&body["input"])],
        Value::Array(items) => items
            .iter()
            .filter(|i| i["role"] == "user")
            .map(|i| match &i["content"] {
                Value::String(_) => user(&i["content"]),
                parts => user(&parts[0]["text"]),
            })
            .collect(),
        _ => Vec::new(),
    };
    for (n, item) in output.iter_mut().enumerate() {
        item["id"] = json!(format!("msg_{n}"));
    }
    output.push(
        json!({"type": "compaction", "id": "cmp_fake", "encrypted_content": "gAAAAB-compacted"}),
    );
    let v = json!({"id": "resp_cmp_fake", "object": "response.compaction", "created_at": 1,
        "output": output,
        "usage": {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 20}}});
    full_response(StatusCode::OK, "application/json", v.to_string())
}

/// The prompt tokens the fake's token-count endpoints (Anthropic's `count_tokens`, the
/// Responses API's `input_tokens`) answer, whatever the prompt.
pub const FAKE_COUNTED_TOKENS: u64 = 4321;

/// The fake embeddings API (`/ok/v1/embeddings`): one vector of `dimensions` values (default 4)
/// per input, `[i, words, 0.5, 0.5, ...]` for the i-th input of that many words (or token ids),
/// as floats or, with `encoding_format: "base64"`, as little-endian f32 bytes in base64 (what
/// the OpenAI SDKs ask for); the prompt tokens are the inputs' words. `dimensions` outside 1 to
/// 3072 is a 400.
fn embeddings_respond(body: &Value) -> Response<BoxBody> {
    let words = |v: &Value| match v {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(tokens) => tokens.len(),
        _ => 1,
    };
    let inputs: Vec<usize> = match &body["input"] {
        Value::Array(items) if items.iter().all(Value::is_u64) => vec![items.len()],
        Value::Array(items) => items.iter().map(words).collect(),
        one => vec![words(one)],
    };
    let dimensions = match body["dimensions"].as_u64().unwrap_or(4) {
        d @ 1..=3072 => d as usize,
        _ => {
            // As OpenAI answers a `dimensions` its model does not have.
            let v = json!({"error": {"message": "dimensions must be between 1 and 3072",
                "type": "invalid_request_error", "param": "dimensions", "code": null}});
            return full_response(StatusCode::BAD_REQUEST, "application/json", v.to_string());
        }
    };
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut v = vec![0.5f32; dimensions];
            v[0] = i as f32;
            if dimensions > 1 {
                v[1] = *n as f32;
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                use base64::Engine as _;
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().sum();
    let v = json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    full_response(StatusCode::OK, "application/json", v.to_string())
}

/// The fake legacy completions API (`/ok/v1/completions`): "Paris, of course" (5 prompt and 4
/// completion tokens), as a `text_completion` or its stream (usage last when asked for).
fn text_completion_respond(body: &Value, include_usage: bool) -> Response<BoxBody> {
    let model = body["model"].as_str().unwrap_or("");
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9});
    let piece = |text: &str, finish: Option<&str>| {
        json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
    };
    if body["stream"] != json!(true) {
        let mut v = piece(" Paris, of course", Some("stop"));
        v["usage"] = usage;
        return full_response(StatusCode::OK, "application/json", v.to_string());
    }
    let mut events = vec![
        piece(" Paris,", None),
        piece(" of course", None),
        piece("", Some("stop")),
    ];
    if include_usage {
        events.push(
            json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
            "choices": [], "usage": usage}),
        );
    }
    let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    text.push_str("data: [DONE]\n\n");
    full_response(StatusCode::OK, "text/event-stream", text)
}

/// The response headers an OpenAI upstream sends with every answer, errors included: its
/// request id (`req_fake_<n>`, n counting requests), rate-limit state, timing, and two that a
/// gateway must not pass back by default (a cookie and the organization).
fn provider_headers(h: &mut HeaderMap, n: usize) {
    for (name, value) in [
        ("x-request-id", format!("req_fake_{n}")),
        ("x-ratelimit-limit-requests", "500".into()),
        (
            "x-ratelimit-remaining-requests",
            format!("{}", 500usize.saturating_sub(n)),
        ),
        ("x-ratelimit-reset-tokens", "6m0s".into()),
        ("openai-processing-ms", "42".into()),
        ("openai-organization", "org-fake".into()),
        ("set-cookie", "__cf_bm=upstream-session; path=/".into()),
    ] {
        h.insert(
            http::HeaderName::from_static(name),
            value.parse().expect("header"),
        );
    }
}

/// A mutated answer ([`mutation`]): a chat completion (or with `anthropic` a Messages answer)
/// with one to three mutations, or its stream with one event mutated, as the `n`-th draw.
fn mutated_respond(anthropic: bool, stream: bool, n: u64) -> Response<BoxBody> {
    let mut m = mutation::Mutator::new(1_000 + n);
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if !stream {
        let seed = if anthropic {
            mutation::anthropic_answer_seed()
        } else {
            mutation::completion_seed()
        };
        return full_response(StatusCode::OK, "application/json", lossy(&m.mutated(&seed)));
    }
    let events = if anthropic {
        mutation::anthropic_event_seeds()
    } else {
        mutation::chunk_seeds()
    };
    let (at, mutated) = m.one_of(&events);
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        if anthropic {
            text.push_str(&format!("event: {}\n", e["type"].as_str().unwrap_or("")));
        }
        let data = if i == at {
            lossy(&mutated)
        } else {
            e.to_string()
        };
        text.push_str(&format!("data: {data}\n\n"));
    }
    if !anthropic {
        text.push_str("data: [DONE]\n\n");
    }
    full_response(StatusCode::OK, "text/event-stream", text)
}

fn full_response(status: StatusCode, ct: &str, body: String) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", ct.parse().expect("header"));
    r
}

/// The `usage` of the `usage-*` behaviours, which answer as `ok` with odd token counts:
/// `usage-nocompletion` (no `completion_tokens`), `usage-nullprompt` (`prompt_tokens: null`),
/// `usage-float` (`completion_tokens: 4.0`), `usage-text` (`usage: "n/a"`), `usage-cached`
/// (900 of 1000 prompt tokens from the prompt cache, 10 answer tokens).
fn odd_usage(behaviour: &str) -> Option<Value> {
    Some(match behaviour.strip_prefix("usage-")? {
        "nocompletion" => json!({"prompt_tokens": 21, "total_tokens": 21}),
        "nullprompt" => json!({"prompt_tokens": null, "completion_tokens": 4, "total_tokens": 4}),
        "float" => json!({"prompt_tokens": 21, "completion_tokens": 4.0, "total_tokens": 25.0}),
        "text" => json!("n/a"),
        "cached" => json!({"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
            "prompt_tokens_details": {"cached_tokens": 900}}),
        _ => return None,
    })
}

fn completion(model: &str, usage: bool) -> Value {
    let mut v = json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the cloud"}, "finish_reason": "stop"}],
    });
    if usage {
        v["usage"] = json!({"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25});
    }
    v
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// A scripted on-box engine: answers `echo: <last message>` word by word.
#[derive(Default)]
pub struct EchoEngine {
    pub calls: AtomicUsize,
}

impl EchoEngine {
    fn answer(req: &EngineRequest<'_>) -> (String, Usage) {
        let messages = req.request.messages();
        let last = messages.last().map(|(_, t)| t.clone()).unwrap_or_default();
        let text = format!("echo: {last}");
        let prompt: u64 = messages
            .iter()
            .map(|(_, t)| t.split_whitespace().count() as u64)
            .sum();
        (
            text.clone(),
            Usage {
                prompt_tokens: prompt,
                completion_tokens: text.split_whitespace().count() as u64,
                cached_prompt_tokens: 0,
                cache_write_prompt_tokens: 0,
                web_searches: 0,
            },
        )
    }
}

#[async_trait]
impl ChatEngine for EchoEngine {
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    async fn infer(&self, req: EngineRequest<'_>) -> Result<Completion, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (text, usage) = Self::answer(&req);
        let body = json!({"id": "chatcmpl-local", "object": "chat.completion", "created": 1, "model": "echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.prompt_tokens + usage.completion_tokens}});
        Ok(Completion {
            body: Bytes::from(body.to_string()),
            usage,
            usage_estimated: false,
            headers: http::HeaderMap::new(),
            dialect: None,
        })
    }

    async fn infer_stream(&self, req: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (text, usage) = Self::answer(&req);
        let mut chunks: Vec<Result<Chunk, EngineError>> = text
            .split_inclusive(' ')
            .map(|w| {
                Ok(Chunk {
                    payload: Bytes::from(chunk("echo", json!({"content": w}), None).to_string()),
                    event: None,
                    text_bytes: w.len() as u64,
                    usage: None,
                    usage_only: false,
                })
            })
            .collect();
        chunks.push(Ok(Chunk {
            payload: Bytes::from(chunk("echo", json!({}), Some("stop")).to_string()),
            event: None,
            text_bytes: 0,
            usage: None,
            usage_only: false,
        }));
        let u = json!({"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 1, "model": "echo", "choices": [],
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.prompt_tokens + usage.completion_tokens}});
        chunks.push(Ok(Chunk {
            payload: Bytes::from(u.to_string()),
            event: None,
            text_bytes: 0,
            usage: Some(usage.into()),
            usage_only: true,
        }));
        Ok(Streaming::new(futures_util::stream::iter(chunks).boxed()))
    }
}

/// An on-box engine whose every generation fails (wired to the model `local-broken`).
pub struct BrokenEngine;

#[async_trait]
impl ChatEngine for BrokenEngine {
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }

    async fn infer(&self, _: EngineRequest<'_>) -> Result<Completion, EngineError> {
        Err(EngineError::Failed("the model crashed".into()))
    }

    async fn infer_stream(&self, _: EngineRequest<'_>) -> Result<Streaming, EngineError> {
        Err(EngineError::Failed("the model crashed".into()))
    }
}

/// A gateway serving on a loopback port.
pub struct TestGateway {
    pub url: String,
    pub gateway: Arc<Gateway>,
    pub local: Arc<EchoEngine>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a gateway on `policy` (YAML, `${VAR}` resolved from `env`), with the echo engine
/// for the model named `local-echo` when the policy has it.
pub async fn start_gateway(policy: &str, env: &[(&str, &str)]) -> TestGateway {
    start_gateway_with(policy, env, None).await
}

/// As `start_gateway`, with `classifier` as the request classifier instead of the one the
/// policy's `classifier:` section would load.
pub async fn start_gateway_with(
    policy: &str,
    env: &[(&str, &str)],
    classifier: Option<Batcher>,
) -> TestGateway {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let policy = switchyard::policy::parse(policy, "test-policy.yaml", &lookup)
        .unwrap_or_else(|e| panic!("{e}"));
    let has_local = policy.models.contains_key("local-echo");
    let local = Arc::new(EchoEngine::default());
    let mut gateway =
        Gateway::build(policy, Default::default(), None).unwrap_or_else(|e| panic!("{e}"));
    if has_local {
        gateway = gateway.with_engine("local-echo", local.clone());
    }
    if gateway.policy.models.contains_key("local-broken") {
        gateway = gateway.with_engine("local-broken", Arc::new(BrokenEngine));
    }
    if let Some(batcher) = classifier {
        gateway = gateway.with_classifier(batcher);
    }
    let gateway = Arc::new(gateway);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, gateway.clone(), async move {
        let _ = rx.await;
    }));
    TestGateway {
        url,
        gateway,
        local,
        shutdown: Some(tx),
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// `data:` payloads of an SSE body.
    pub fn events(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
    /// The last event of an SSE body: its `event:` name (empty when none) and its data.
    pub fn last_event(&self) -> (String, String) {
        let text = String::from_utf8_lossy(&self.body);
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or("");
        let mut name = String::new();
        let mut data = String::new();
        for line in last.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = d.to_string();
            }
        }
        (name, data)
    }
    /// The error code of an OpenAI error body (asserting the shape).
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"].is_string(),
            "not an OpenAI error: {v}"
        );
        assert!(v["error"]["type"].is_string(), "not an OpenAI error: {v}");
        v["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and returns the response head with its streaming body.
pub async fn send(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    send_within(TEST_TIMEOUT, method, url, body, headers).await
}

/// [`send`] with another bound on the wait for the response head.
pub async fn send_within(
    limit: Duration,
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).expect("request");
    tokio::time::timeout(limit, client().request(req))
        .await
        .expect("response head in time")
        .expect("response head")
}

/// Sends a request and reads the whole response.
pub async fn request(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    request_within(TEST_TIMEOUT, method, url, body, headers).await
}

/// [`request`] with another bound on each wait (head, then body).
pub async fn request_within(
    limit: Duration,
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let resp = send_within(limit, method, url, body, headers).await;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(limit, body.collect())
        .await
        .expect("body in time")
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs a chat completion (JSON content type plus `headers`).
pub async fn chat(gw: &TestGateway, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        body.to_string(),
        &h,
    )
    .await
}

/// POSTs `body` to `path` with a JSON content type plus `headers`.
pub async fn post_json(
    gw: &TestGateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request("POST", &format!("{}{path}", gw.url), body.to_string(), &h).await
}

/// POSTs an OpenAI Responses request (JSON content type plus `headers`).
pub async fn post_responses(gw: &TestGateway, body: &Value, headers: &[(&str, &str)]) -> Reply {
    post_json(gw, "/v1/responses", body, headers).await
}

/// POSTs an Anthropic Messages request (JSON content type, `anthropic-version: 2023-06-01`,
/// plus `headers`).
pub async fn post_messages(gw: &TestGateway, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("anthropic-version", "2023-06-01")];
    h.extend_from_slice(headers);
    post_json(gw, "/v1/messages", body, &h).await
}

/// POSTs a chat completion and returns the response head with its streaming body.
pub async fn open_chat(gw: &TestGateway, body: &Value) -> Response<Incoming> {
    send(
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        body.to_string(),
        &[("content-type", "application/json")],
    )
    .await
}

/// A one-message chat request.
pub fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The value of one sample (`name{labels}`, labels as the exposition writes them) in a
/// Prometheus text exposition, `None` when it is not there.
pub fn sample_value(exposition: &str, sample: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let v = l.strip_prefix(sample)?.strip_prefix(' ')?.trim();
        Some(
            v.parse()
                .unwrap_or_else(|e| panic!("sample {sample} has value {v:?}: {e}")),
        )
    })
}

/// The `/metrics` text of the server at `url`.
pub async fn metrics_text(url: &str) -> String {
    let r = request("GET", &format!("{url}/metrics"), "", &[]).await;
    assert_eq!(r.status, 200, "GET {url}/metrics");
    String::from_utf8_lossy(&r.body).into_owned()
}

/// One sample from the server at `url`, `None` when absent. For waiting on a sample, or for
/// a labelled sample that may not exist yet (Prometheus shows a label set once it is used).
pub async fn metric_opt_at(url: &str, sample: &str) -> Option<f64> {
    sample_value(&metrics_text(url).await, sample)
}

/// One sample from the server at `url`; a sample that is not there fails the test, naming it
/// and listing the samples of its family that are there.
pub async fn metric_at(url: &str, sample: &str) -> f64 {
    let text = metrics_text(url).await;
    sample_value(&text, sample).unwrap_or_else(|| {
        let name = sample.split('{').next().unwrap_or(sample);
        let family = ["_count", "_sum", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let present: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(family))
            .collect();
        panic!("no metric sample `{sample}` in /metrics; samples of `{family}` there: {present:#?}")
    })
}

/// Reads `/metrics` and returns the value of one sample (`name{labels}`); fails the test when
/// the sample is absent.
pub async fn metric(gw: &TestGateway, sample: &str) -> f64 {
    metric_at(&gw.url, sample).await
}

/// Reads `/metrics` and returns one sample, `None` when absent.
pub async fn metric_opt(gw: &TestGateway, sample: &str) -> Option<f64> {
    metric_opt_at(&gw.url, sample).await
}

/// Asserts that a sample is absent (e.g. a labelled counter nothing has touched).
pub async fn assert_metric_absent(gw: &TestGateway, sample: &str) {
    let v = metric_opt(gw, sample).await;
    assert_eq!(v, None, "metric sample `{sample}` should be absent");
}

/// Waits (bounded by `TEST_TIMEOUT`) until a sample exists and reaches `value`.
pub async fn wait_metric(gw: &TestGateway, sample: &str, value: f64) {
    wait_metric_at(&gw.url, sample, value).await;
}

/// As `wait_metric`, for the server at `url`.
pub async fn wait_metric_at(url: &str, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let now = metric_opt_at(url, sample).await;
        if now.is_some_and(|v| v >= value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} did not reach {value} in {TEST_TIMEOUT:?} (it is {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Environment with the cloud key set.
pub const KEY: &[(&str, &str)] = &[("CLOUD_KEY", "sk-upstream-secret")];

/// The classifier's encoder folder (fetched by `scripts/fetch-models.sh`).
pub fn encoder_path() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The SmolLM2 GGUF the tests run (fetched by `scripts/fetch-models.sh`), or
/// `SWITCHYARD_TEST_MODEL`.
pub fn smollm2_path() -> std::path::PathBuf {
    let p = std::env::var_os("SWITCHYARD_TEST_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A policy whose one model is the real on-box SmolLM2 (`smollm2`), the default route.
pub fn smollm2_policy() -> String {
    PolicyBuilder::new()
        .model(
            "smollm2",
            &[
                ("kind", "local"),
                ("path", &quoted(&smollm2_path().display().to_string())),
            ],
        )
        .default_route("smollm2", &[])
        .render()
}

/// The test venv's Python (`SWITCHYARD_PYTHON`, else the venv scripts/test.sh makes).
pub fn venv_python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/switchyard/venv/bin/python")
    })
}

/// Runs tests/sdk/`script` with `args` in the test venv, and asserts it printed `ok`.
pub async fn sdk_script(script: &str, args: Vec<String>) {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python())
            .arg(path)
            .args(args)
            .output()
    })
    .await
    .expect("task")
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; scripts/setup.sh --test makes the venv",
            venv_python()
        )
    });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("ok"),
        "{script}: {text}"
    );
}

/// The JSON rows of a request log once it has at least `n` (the writer is a background thread;
/// bounded by `TEST_TIMEOUT`, after which the rows so far are returned).
pub fn log_rows_when_ready(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let rows: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
