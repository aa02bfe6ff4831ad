//! Requests passed on in the client's own dialect: an Anthropic Messages request to a model of
//! `kind: anthropic`, a Responses request to an OpenAI-compatible model with `responses: true`,
//! a legacy completion to one with `completions: true`, an embeddings request to one with
//! `embeddings: true`. Each goes upstream as it came with only
//! `model` replaced, and its answer and stream events come back as the upstream sent them, while
//! the gateway still settles their usage and cost. Against the fake upstreams of
//! `tests/common` (real HTTP servers speaking each API), and driven by the official SDKs.

mod common;

use common::*;
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-ant-upstream-secret";
const KEY: &str = "sk-gateway-native";

/// Anthropic models on the fake's variants (`claude` the default route), OpenAI-compatible
/// `gpt` (serving Responses, completions and embeddings) and `plain` (chat only), each chosen by a tag;
/// the tenant `team` has the key [`KEY`].
async fn gateway(up: &FakeUpstream) -> TestGateway {
    gateway_with(up, "claude", true).await
}

/// [`gateway`] with another default route, and with no tenant (any key is let in) unless
/// `tenant`.
async fn gateway_with(up: &FakeUpstream, default: &str, tenant: bool) -> TestGateway {
    let anthropic = |variant: &str| quoted(&format!("http://{}/anthropic{variant}", up.addr));
    let price = "{ input_per_million: 3, output_per_million: 15, cached_input_per_million: 0.3, cache_write_per_million: 3.75 }";
    let mut p = PolicyBuilder::new();
    for (name, variant) in [
        ("claude", ""),
        ("claude-tool", "-tool"),
        ("claude-cached", "-cached"),
        ("claude-error", "-error"),
        ("claude-cut", "-cut"),
        ("claude-busy", "-529"),
    ] {
        p = p.model(
            name,
            &[
                ("kind", "anthropic"),
                ("base_url", &anthropic(variant)),
                ("api_key", &quoted("${ANTHROPIC_KEY}")),
                ("upstream_model", "claude-sonnet-test"),
                ("price", price),
                ("retries", "{ max_retries: 0 }"),
            ],
        );
    }
    let base = quoted(&up.base("ok"));
    let key = quoted("${CLOUD_KEY}");
    let price = "{ input_per_million: 2, output_per_million: 8, cached_input_per_million: 1 }";
    for (name, upstream, serves) in [("gpt", "gpt-up", "true"), ("plain", "plain-up", "false")] {
        p = p.model(
            name,
            &[
                ("kind", "openai"),
                ("base_url", &base),
                ("api_key", &key),
                ("upstream_model", upstream),
                ("price", price),
                ("responses", serves),
                ("completions", serves),
                ("embeddings", serves),
            ],
        );
    }
    if tenant {
        p = p.tenant("team", KEY);
    }
    // Savings are measured against a model priced apart from `gpt`.
    p = p.reference_model("claude");
    let policy = p
        // Embeddings named for `gpt`: with an e-mail address they are kept off the cloud (the
        // route's model serves no embeddings, so they are refused); with a phone number the
        // number is replaced before they go.
        .rule(
            "private-embeddings",
            "{ model: [gpt], pii: [email] }",
            "plain",
            &[],
        )
        .rule(
            "redacted-embeddings",
            "{ model: [gpt], pii: [phone] }",
            "gpt",
            &[],
        )
        .rule_field("redacted-embeddings", "redact", "[phone]")
        .rule("tool", "{ tags: [tool] }", "claude-tool", &[])
        .rule("cached", "{ tags: [cached] }", "claude-cached", &[])
        .rule("error", "{ tags: [error] }", "claude-error", &[])
        .rule("cut", "{ tags: [cut] }", "claude-cut", &[])
        .rule("busy", "{ tags: [busy] }", "claude-busy", &["gpt"])
        .rule("gpt", "{ tags: [gpt] }", "gpt", &[])
        .rule("plain", "{ tags: [plain] }", "plain", &[])
        .rule("agent", "{ tags: [agent] }", "plain", &["gpt"])
        .rule(
            "claude-agent",
            "{ tags: [claude-agent] }",
            "plain",
            &["claude"],
        )
        .default_route(default, &[])
        .render();
    start_gateway(
        &policy,
        &[
            ("ANTHROPIC_KEY", UPSTREAM_KEY),
            ("CLOUD_KEY", "sk-openai-upstream"),
        ],
    )
    .await
}

/// POSTs `body` (sent as these exact bytes) to `path` with the gateway key, a tag, and `extra`.
async fn post(
    gw: &TestGateway,
    path: &str,
    body: &str,
    tag: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-api-key", KEY),
        ("x-switchyard-tags", tag),
    ];
    headers.extend_from_slice(extra);
    request(
        "POST",
        &format!("{}{path}", gw.url),
        body.to_string(),
        &headers,
    )
    .await
}

/// A GET of `path`, which only takes POSTs: 405 with `Allow: POST`.
async fn only_posted(gw: &TestGateway, path: &str) {
    let r = request(
        "GET",
        &format!("{}{path}", gw.url),
        "",
        &[("x-api-key", KEY)],
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
}

/// What the fake upstream itself answers to the request it recorded last (the same bytes and
/// headers sent again, straight to it): the answer a pass-through must give back unchanged.
async fn upstream_answer(up: &FakeUpstream) -> Reply {
    let last = up.recorded().pop().expect("a request upstream");
    let url = format!("http://{}{}", up.addr, last.path);
    let headers: Vec<(String, String)> = last
        .headers
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "host" | "content-length"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    request("POST", &url, last.raw.clone(), &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_request_reaches_an_anthropic_model_as_it_came() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    // Odd spacing, member order and fields the translation would not keep (cache_control,
    // metadata): all of it goes upstream as sent, only `model` replaced.
    let system = r#"[ {"type":"text", "text":"Be brief.", "cache_control":{"type":"ephemeral"}} ]"#;
    let messages = r#"[{"role":"user","content":[{"type":"text","text":"H\u00e9llo"}]}]"#;
    let body = format!(
        "{{ \"max_tokens\" : 64, \"model\": \"auto\",\n \"system\": {system}, \"messages\": {messages}, \"metadata\": {{\"user_id\": \"u-1\"}} }}"
    );
    let betas = [
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "prompt-caching-2024-07-31,fine-grained-tool-streaming-2025-05-14",
        ),
    ];
    let r = post(&gw, "/v1/messages", &body, "", &betas).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/anthropic/v1/messages");
    assert_eq!(
        String::from_utf8_lossy(&sent.raw),
        format!(
            "{{\"model\":\"claude-sonnet-test\",\"max_tokens\":64,\"system\":{system},\"messages\":{messages},\"metadata\":{{\"user_id\": \"u-1\"}}}}"
        )
    );
    assert_eq!(sent.headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["anthropic-beta"], betas[1].1);
    assert!(sent.headers.get("authorization").is_none());
    // The answer is the upstream's own, byte for byte (a translation would say `auto`).
    assert_eq!(r.body, upstream_answer(&up).await.body);
    assert_eq!(r.json()["model"], "claude-sonnet-test");
    assert_eq!(r.header("x-switchyard-model"), "claude");
    // 21 input at $3 and 4 output at $15 per million.
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00012300");

    // The prompt cache's reads and writes at their own prices: 100 input at $3, 900 read at
    // $0.30, 200 written at $3.75, 10 output at $15 per million.
    let r = post(&gw, "/v1/messages", &body, "cached", &[]).await;
    assert_eq!(r.json()["usage"]["cache_creation_input_tokens"], 200);
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00147000");
    let m =
        |d: &str| format!("switchyard_tokens_total{{direction=\"{d}\",model=\"claude-cached\"}}");
    assert_eq!(metric(&gw, &m("input")).await, 1200.0);
    assert_eq!(metric(&gw, &m("cached_input")).await, 900.0);
    assert_eq!(metric(&gw, &m("cache_write_input")).await, 200.0);
    assert!(!String::from_utf8_lossy(&r.body).contains(UPSTREAM_KEY));
}

/// Claude Code's shape with extended thinking and a server tool: only an Anthropic model can
/// answer it, as it came; a route without one is a 400 in Anthropic's shape naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_only_the_messages_api_serves_goes_only_to_an_anthropic_model() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
                  {"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}],
        "messages": [
            {"role": "user", "content": "What changed in the latest tokio release?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should search.", "signature": "c2ln"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "tokio release"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                    {"type": "web_search_result", "url": "https://tokio.example/blog", "title": "Tokio", "encrypted_content": "RW5j"}]}]},
            {"role": "user", "content": "Summarise it in one line."}]}"#;
    let version = [("anthropic-version", "2023-06-01")];
    let r = post(&gw, "/v1/messages", body, "claude-agent", &version).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "claude");
    assert_eq!(
        r.header("x-switchyard-fallback"),
        "plain; reason=lacks_messages"
    );
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/anthropic/v1/messages");
    let mut expected: Value = serde_json::from_str(body).expect("json");
    expected["model"] = json!("claude-sonnet-test");
    assert_eq!(sent.body, expected);
    // The answer searched (the fake upstream runs the web search tool): one search counted.
    wait_metric(&gw, r#"switchyard_web_searches_total{model="claude"}"#, 1.0).await;

    let before = up.recorded().len();
    let r = post(&gw, "/v1/messages", body, "plain", &version).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let message = e["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("needs `messages` (set by `thinking`)")
            && message.contains("`plain` cannot do `messages`"),
        "{message}"
    );
    assert_eq!(up.recorded().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_events_pass_through_and_are_settled() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model":"auto","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let r = post(&gw, "/v1/messages", body, "", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let direct = upstream_answer(&up).await;
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(&direct.body),
        "the events as the upstream sent them, and nothing after them"
    );
    let m = |d: &str| format!("switchyard_tokens_total{{direction=\"{d}\",model=\"claude\"}}");
    assert_eq!(metric(&gw, &m("input")).await, 21.0);
    assert_eq!(metric(&gw, &m("output")).await, 4.0);

    // The upstream's error event reaches the client as it came, once, and ends the stream.
    let r = post(&gw, "/v1/messages", body, "error", &[]).await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(text.matches("event: error").count(), 1, "{text}");
    let (name, data) = r.last_event();
    assert_eq!(name, "error", "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&data).ok(),
        Some(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        ),
        "{text}"
    );
    assert!(
        !text.contains("[DONE]") && !text.contains("message_stop"),
        "{text}"
    );
    let failed = "switchyard_upstream_errors_total{kind=\"in_stream\",model=\"claude-error\"}";
    assert_eq!(metric(&gw, failed).await, 1.0);

    // A stream that stops before `message_stop` ends with an Anthropic error event.
    let r = post(&gw, "/v1/messages", body, "cut", &[]).await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    let (name, data) = r.last_event();
    assert_eq!(name, "error", "{text}");
    let error: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("closed"));
    // Cut before its usage: billed the prompt `message_start` reported (21 tokens), not the
    // gateway's estimate of "Hi".
    let input = "switchyard_tokens_total{direction=\"input\",model=\"claude-cut\"}";
    assert_eq!(metric(&gw, input).await, 21.0);
    // The same stream read by an OpenAI client (translated into chunks).
    let chat = r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let r = post(&gw, "/v1/chat/completions", chat, "cut", &[]).await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("closed"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(metric(&gw, input).await, 42.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_to_an_openai_model_is_translated_back() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model":"auto","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}"#;
    let r = post(&gw, "/v1/messages", body, "busy", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "gpt");
    assert!(r.header("x-switchyard-fallback").starts_with("claude-busy"));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "auto");
    assert_eq!(v["content"][0]["text"], "Hello from the cloud");
    let sent = up.recorded().pop().expect("the fallback's request");
    assert_eq!(sent.path, "/ok/v1/chat/completions");
}

/// POSTs `body` to `path` on the `agent` route, whose first model speaks only chat: it is
/// passed over (for lacking `capability`) for `gpt`, which serves the Responses API and
/// embeddings and gets the body as it came (only `model` replaced, with its own key), and whose
/// answer comes back unchanged.
async fn passed_over_to_gpt(
    gw: &TestGateway,
    up: &FakeUpstream,
    path: &str,
    body: &str,
    capability: &str,
) -> Reply {
    let r = post(gw, path, body, "agent", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "gpt");
    assert_eq!(
        r.header("x-switchyard-fallback"),
        format!("plain; reason=lacks_{capability}")
    );
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, format!("/ok{path}"));
    let mut expected: Value = serde_json::from_str(body).expect("json");
    expected["model"] = json!("gpt-up");
    assert_eq!(sent.body, expected);
    assert_eq!(sent.headers["authorization"], "Bearer sk-openai-upstream");
    assert_eq!(r.body, upstream_answer(up).await.body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_request_reaches_a_model_that_serves_responses_as_it_came() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "input": [{"role": "user", "content": "Hi"}], "instructions": "Be brief.", "max_output_tokens": 32, "store": false, "temperature": 0.5}"#;
    let r = post(&gw, "/v1/responses", body, "gpt", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/responses");
    assert_eq!(
        String::from_utf8_lossy(&sent.raw),
        r#"{"model":"gpt-up","input":[{"role": "user", "content": "Hi"}],"instructions":"Be brief.","max_output_tokens":32,"store":false,"temperature":0.5}"#
    );
    assert_eq!(sent.headers["authorization"], "Bearer sk-openai-upstream");
    assert_eq!(r.body, upstream_answer(&up).await.body);
    // 12 input (4 of them cached, at $1) and 3 output: 8 × 2 + 4 × 1 + 3 × 8 per million.
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00004400");

    let stream = body.replace("\"store\"", "\"stream\": true, \"store\"");
    let r = post(&gw, "/v1/responses", &stream, "gpt", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(&upstream_answer(&up).await.body)
    );
    let m = |d: &str| format!("switchyard_tokens_total{{direction=\"{d}\",model=\"gpt\"}}");
    assert_eq!(metric(&gw, &m("input")).await, 24.0);
    assert_eq!(metric(&gw, &m("output")).await, 6.0);

    // A model without `responses: true` gets the chat translation.
    let r = post(&gw, "/v1/responses", body, "plain", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["object"], "response");
    assert_eq!(r.json()["model"], "auto");
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/chat/completions");
}

/// A coding agent's Responses request (Codex CLI's shape): reasoning carried across turns, a
/// reasoning summary asked for, custom and shell tools. Only a model that serves the Responses
/// API can answer it, as it came; a route without one is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_only_the_responses_api_serves_goes_only_to_a_model_that_serves_it() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "instructions": "You are a coding agent.", "store": false, "stream": false,
        "reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-42", "parallel_tool_calls": false,
        "client_metadata": {"session_id": "019ad3c1-7f3a", "thread_id": "019ad3c1-7f3a"},
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files"}, {"type": "local_shell"}],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Make the test pass"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB"},
            {"type": "local_shell_call", "id": "lsh_1", "call_id": "c1", "status": "completed", "action": {"type": "exec", "command": ["cargo", "test"]}},
            {"type": "local_shell_call_output", "call_id": "c1", "output": "1 failed"}]}"#;
    passed_over_to_gpt(&gw, &up, "/v1/responses", body, "responses").await;

    // A route with no such model: refused, naming the field, and nothing goes upstream.
    let before = up.recorded().len();
    let r = post(&gw, "/v1/responses", body, "plain", &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(e["error"]["code"], "unsupported_capability");
    assert_eq!(e["error"]["param"], "reasoning.summary");
    let message = e["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("`plain` cannot do `responses`"),
        "{message}"
    );
    assert_eq!(up.recorded().len(), before);

    // Without them, the identifiers, the effort and the verbosity reach a chat model too.
    let plain = r#"{"model": "auto", "input": "Hi", "safety_identifier": "user-7f3a", "prompt_cache_key": "conv-42",
        "reasoning": {"effort": "low"}, "text": {"verbosity": "low"}, "client_metadata": {"session_id": "019ad3c1-7f3a"}}"#;
    let r = post(&gw, "/v1/responses", plain, "plain", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (&v["safety_identifier"], &v["reasoning"]["effort"]),
        (&json!("user-7f3a"), &json!("low"))
    );
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/chat/completions");
    for (field, value) in [
        ("safety_identifier", "user-7f3a"),
        ("prompt_cache_key", "conv-42"),
        ("reasoning_effort", "low"),
        ("verbosity", "low"),
    ] {
        assert_eq!(sent.body[field], value, "{field}");
    }
    // Codex CLI's metadata is OpenAI's to read: a chat model is not sent it.
    assert!(sent.body.get("client_metadata").is_none(), "{}", sent.body);
}

/// Codex CLI compacts a long conversation with `POST /v1/responses/compact` when its provider is
/// OpenAI's own: the answer (the user messages and an encrypted summary) only the Responses
/// API writes, so it goes as it came to a model that serves that API, is settled from its
/// usage, and the next turn, which carries the `compaction` item, goes there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_goes_as_it_came_to_a_model_that_serves_responses() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "instructions": "You are a coding agent.",
        "tools": [{"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}],
        "parallel_tool_calls": false, "reasoning": {"effort": "medium"}, "text": {"verbosity": "medium"},
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the parser"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done: the parser handles tabs."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now add a test"}]}]}"#;
    let r = passed_over_to_gpt(&gw, &up, "/v1/responses/compact", body, "responses").await;
    let compacted = r.json();
    assert_eq!(compacted["object"], "response.compaction");
    // 120 input and 30 output tokens: 120 × 2 + 30 × 8 per million.
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00048000");
    let m = |d: &str| format!("switchyard_tokens_total{{direction=\"{d}\",model=\"gpt\"}}");
    assert_eq!(metric(&gw, &m("input")).await, 120.0);
    assert_eq!(metric(&gw, &m("output")).await, 30.0);

    // The next turn starts from the compacted output: its `compaction` item only the
    // Responses API reads.
    let mut items = compacted["output"].as_array().cloned().unwrap_or_default();
    let last = items.len();
    items.push(json!({"role": "user", "content": "Run it"}));
    let next = json!({"model": "auto", "input": items}).to_string();
    let r = post(&gw, "/v1/responses", &next, "agent", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        up.recorded().pop().map(|s| s.path),
        Some("/ok/v1/responses".into())
    );

    // Routes without such a model: refused, naming the field, and nothing goes upstream.
    let before = up.recorded().len();
    let r = post(&gw, "/v1/responses/compact", body, "plain", &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(
        (&e["error"]["code"], &e["error"]["param"]),
        (&json!("unsupported_capability"), &json!("input"))
    );
    let r = post(&gw, "/v1/responses", &next, "plain", &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["param"], format!("input[{}]", last - 1));
    // A compaction has no stream; a GET is not a compaction.
    let stream = body.replacen('{', r#"{"stream": true, "#, 1);
    let r = post(&gw, "/v1/responses/compact", &stream, "gpt", &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["param"], "stream");
    only_posted(&gw, "/v1/responses/compact").await;
    assert_eq!(up.recorded().len(), before);
}

/// RAG apps embed their documents through the same base URL as their chats: an embeddings
/// request goes as it came to the first model of its route that serves embeddings, is settled
/// from its usage, and is refused (naming `input`) where no model of the route serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embeddings_request_goes_as_it_came_to_a_model_that_serves_embeddings() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "input": ["The cat sat on the mat", "Dogs bark"],
        "encoding_format": "float", "dimensions": 3, "user": "u-1"}"#;
    let r = passed_over_to_gpt(&gw, &up, "/v1/embeddings", body, "embeddings").await;
    let answer = r.json();
    assert_eq!(answer["data"][1]["embedding"], json!([1.0, 2.0, 0.5]));
    // 8 input tokens at 2 USD per million, nothing written.
    assert_eq!(answer["usage"]["prompt_tokens"], 8);
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00001600");
    let m = |d: &str| format!("switchyard_tokens_total{{direction=\"{d}\",model=\"gpt\"}}");
    assert_eq!(metric(&gw, &m("input")).await, 8.0);
    assert_eq!(metric(&gw, &m("output")).await, 0.0);
    // An embedding is no answer the reference model could have given: it saves nothing.
    let saved = metric_opt_at(&gw.url, r#"switchyard_savings_usd_total{tenant="team"}"#).await;
    assert_eq!(saved.unwrap_or(0.0), 0.0);

    // Named by the client, the model answers whatever the route (token ids carry no text).
    let r = post(
        &gw,
        "/v1/embeddings",
        r#"{"model": "gpt", "input": [[10, 11, 12]]}"#,
        "none",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["usage"]["prompt_tokens"], 3);

    // Private data: the policy's rules for `gpt` read the inputs as they read a chat.
    let r = post(
        &gw,
        "/v1/embeddings",
        r#"{"model": "gpt", "input": ["Call me on +44 20 7946 0958 tomorrow"]}"#,
        "none",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-redacted"), "phone");
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.body["input"], json!(["Call me on [PHONE_1] tomorrow"]));
    let before = up.recorded().len();
    let r = post(
        &gw,
        "/v1/embeddings",
        r#"{"model": "gpt", "input": "Write to jane.doe@example.com"}"#,
        "none",
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "unsupported_capability");
    assert!(!String::from_utf8_lossy(&r.body).contains("jane.doe"));
    assert_eq!(up.recorded().len(), before);

    // Routes without such a model, and malformed requests: refused, naming the field, and
    // nothing goes upstream.
    let before = up.recorded().len();
    for (tag, body, status, param) in [
        ("plain", body, 400, "input"),
        ("none", body, 400, "input"),
        (
            "gpt",
            r#"{"model": "auto", "input": ["a", ""]}"#,
            400,
            "input[1]",
        ),
        ("gpt", r#"{"model": "auto"}"#, 400, "input"),
        (
            "gpt",
            r#"{"model": "auto", "input": "x", "encoding_format": "int8"}"#,
            400,
            "encoding_format",
        ),
        ("gpt", r#"{"model": "nope", "input": "x"}"#, 404, "model"),
    ] {
        let r = post(&gw, "/v1/embeddings", body, tag, &[]).await;
        assert_eq!(
            r.status,
            status,
            "{tag} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"]["param"], param, "{tag} {body}");
    }
    // The refusal says which models do serve embeddings.
    let r = post(&gw, "/v1/embeddings", body, "plain", &[]).await;
    let e = r.json();
    assert_eq!(e["error"]["code"], "unsupported_capability");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.ends_with("(models that serve embeddings: `gpt`)"),
        "{message}"
    );
    only_posted(&gw, "/v1/embeddings").await;
    assert_eq!(up.recorded().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_go_to_models_that_serve_them_and_are_refused_by_the_others() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body = r#"{"model": "auto", "prompt": "The capital of France is", "max_tokens": 8, "user": "u-1"}"#;
    let r = post(&gw, "/v1/completions", body, "gpt", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/completions");
    assert_eq!(
        String::from_utf8_lossy(&sent.raw),
        r#"{"model":"gpt-up","prompt":"The capital of France is","max_tokens":8,"user":"u-1"}"#
    );
    assert_eq!(r.body, upstream_answer(&up).await.body);

    // A stream: the upstream is asked for usage, which the client gets only if it asked too.
    let stream = body.replace("\"user\"", "\"stream\": true, \"user\"");
    let r = post(&gw, "/v1/completions", &stream, "gpt", &[]).await;
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.contains(" of course"), "{text}");
    let asked = body.replace(
        "\"user\"",
        "\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"user\"",
    );
    let r = post(&gw, "/v1/completions", &asked, "gpt", &[]).await;
    assert!(String::from_utf8_lossy(&r.body).contains("\"completion_tokens\":4"));
    let out = "switchyard_tokens_total{direction=\"output\",model=\"gpt\"}";
    assert_eq!(metric(&gw, out).await, 12.0);

    // A model that does not declare them is never sent one: a clear 400 when no model can.
    let before = up.recorded().len();
    let r = post(&gw, "/v1/completions", body, "plain", &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let e = r.json();
    assert_eq!(e["error"]["code"], "unsupported_capability");
    assert_eq!(e["error"]["param"], "prompt");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("completions"));
    assert_eq!(up.recorded().len(), before);
}

/// A prompt counted for a cloud model is the provider's own count where its upstream serves
/// one (Anthropic's `count_tokens`, the Responses API's `input_tokens`), passed on as it came;
/// elsewhere, and for a request the route would redact, the gateway's estimate, and nothing
/// leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_is_counted_by_the_provider_that_would_answer_it() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let messages = r#"{"model": "auto", "system": "Be brief.", "messages": [{"role": "user", "content": "What is the capital of Italy?"}]}"#;
    let version = [("anthropic-version", "2023-06-01")];
    let r = post(&gw, "/v1/messages/count_tokens", messages, "none", &version).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["input_tokens"], FAKE_COUNTED_TOKENS);
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/anthropic/v1/messages/count_tokens");
    let mut expected: Value = serde_json::from_str(messages).expect("json");
    expected["model"] = json!("claude-sonnet-test");
    assert_eq!(sent.body, expected);
    assert_eq!(sent.headers["x-api-key"], UPSTREAM_KEY);

    let input = r#"{"model": "auto", "instructions": "Be brief.", "input": "What is the capital of Italy?"}"#;
    let r = post(&gw, "/v1/responses/input_tokens", input, "gpt", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["input_tokens"], FAKE_COUNTED_TOKENS);
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/responses/input_tokens");
    assert_eq!(sent.body["model"], "gpt-up");

    // A model without a count of its own, and a request its route would redact: estimated here.
    let before = up.recorded().len();
    let private = r#"{"model": "gpt", "input": "Call me on +44 20 7946 0958"}"#;
    for (tag, body) in [("plain", input), ("none", private)] {
        let r = post(&gw, "/v1/responses/input_tokens", body, tag, &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let n = r.json()["input_tokens"].as_u64().unwrap_or(0);
        assert!(n > 0 && n < 100, "{tag}: {n}");
    }
    assert_eq!(up.recorded().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_speak_to_the_pass_through_paths() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    sdk_script(
        "check_anthropic_sdk.py",
        vec![gw.url.clone(), KEY.into(), "native".into()],
    )
    .await;
    // The tool call's result went upstream as the client wrote it.
    let last = up.recorded().pop().expect("a request upstream");
    assert_eq!(
        last.body["messages"][2]["content"][0]["type"],
        "tool_result"
    );
    // The OpenAI SDK's requests (any key, no tag) go to `gpt`.
    let gw = gateway_with(&up, "gpt", false).await;
    sdk_script(
        "check_openai_responses.py",
        vec![format!("{}/v1", gw.url), "native".into()],
    )
    .await;
    assert_eq!(
        up.recorded().pop().map(|r| r.path),
        Some("/ok/v1/responses".into())
    );
    sdk_script(
        "check_openai_completions.py",
        vec![format!("{}/v1", gw.url), "gpt".into(), "cloud".into()],
    )
    .await;
    sdk_script(
        "check_openai_embeddings.py",
        vec![format!("{}/v1", gw.url), "auto".into(), "fake".into()],
    )
    .await;
    let sent = up.recorded().pop().expect("a request upstream");
    assert_eq!(sent.path, "/ok/v1/embeddings");
}
