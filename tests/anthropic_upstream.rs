//! Cloud models of `kind: anthropic`: an OpenAI chat request (JSON, stream, tools, a JSON schema) is sent as a
//! Messages request to a fake Anthropic upstream (a real HTTP server speaking Anthropic's wire
//! format and events, which checks `x-api-key` and `anthropic-version`), and comes back as an
//! OpenAI answer with Anthropic's usage (cache reads and writes at their own prices); a Messages client
//! reaches the same model with its `anthropic-version` and `anthropic-beta` passed on; Anthropic's
//! 529 reaches an OpenAI client as 503; `reasoning_effort` is Anthropic's thinking (adaptive, or a
//! budget), held by the fake upstream to Anthropic's rules for thinking requests; a web search is
//! Anthropic's web search tool, its citations OpenAI's `url_citation` annotations.

mod common;

use common::*;
use serde_json::{json, Value};

const UPSTREAM_KEY: &str = "sk-ant-upstream-secret";

async fn gateway(up: &FakeUpstream) -> TestGateway {
    let base = |variant: &str| quoted(&format!("http://{}/anthropic{variant}", up.addr));
    let price = "{ input_per_million: 3, output_per_million: 15, cached_input_per_million: 0.3, cache_write_per_million: 3.75, web_search_per_thousand: 10 }";
    let mut p = PolicyBuilder::new();
    for (name, variant, reasoning) in [
        ("claude", "", "effort"),
        ("claude-tool", "-tool", "effort"),
        ("claude-cached", "-cached", "effort"),
        ("claude-busy", "-529", "effort"),
        ("claude-nousage", "-nousage", "effort"),
        ("claude-budget", "", "budget"),
        ("claude-plain", "", "none"),
    ] {
        p = p.model(
            name,
            &[
                ("kind", "anthropic"),
                ("base_url", &base(variant)),
                ("api_key", &quoted("${ANTHROPIC_KEY}")),
                ("upstream_model", "claude-sonnet-test"),
                ("price", price),
                ("retries", "{ max_retries: 0 }"),
                ("reasoning", reasoning),
            ],
        );
    }
    let policy = p
        .rule("budget", "{ tags: [budget] }", "claude-budget", &[])
        .rule("plain", "{ tags: [plain] }", "claude-plain", &[])
        .rule("tool", "{ tags: [tool] }", "claude-tool", &[])
        .rule("cached", "{ tags: [cached] }", "claude-cached", &[])
        .rule("busy", "{ tags: [busy] }", "claude-busy", &[])
        .rule("nousage", "{ tags: [nousage] }", "claude-nousage", &[])
        .default_route("claude", &[])
        .render();
    start_gateway(&policy, &[("ANTHROPIC_KEY", UPSTREAM_KEY)]).await
}

fn ask(stream: bool) -> Value {
    let mut v = json!({"model": "auto", "stream": stream,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    if stream {
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

#[tokio::test]
async fn openai_clients_reach_an_anthropic_model() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let r = chat(&gw, ask(false), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from Claude");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (
            v["usage"]["prompt_tokens"].as_u64(),
            v["usage"]["completion_tokens"].as_u64()
        ),
        (Some(21), Some(4))
    );
    // 21 x $3 + 4 x $15 per million.
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00012300");
    let sent = up.recorded().pop().expect("a request");
    assert_eq!(sent.path, "/anthropic/v1/messages");
    assert_eq!(sent.headers["x-api-key"], UPSTREAM_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.body["model"], "claude-sonnet-test");
    assert_eq!(sent.body["system"], "Be brief.");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    );
    assert!(sent.body.get("output_config").is_none(), "{}", sent.body);

    // A JSON schema is Anthropic's structured output: the model gets it, not a route past it.
    let schema = json!({"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"], "additionalProperties": false});
    let mut structured = ask(false);
    structured["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "g", "schema": schema, "strict": true}});
    let r = chat(&gw, structured, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "claude");
    let sent = up.recorded().pop().expect("a request");
    assert_eq!(
        sent.body["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );

    let r = chat(&gw, ask(true), &[]).await;
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from Claude");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(
        chunks.last().expect("usage")["usage"]["completion_tokens"],
        4
    );

    let r = chat(&gw, ask(false), &[("x-switchyard-tags", "tool")]).await;
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap_or("")).ok(),
        Some(json!({"city": "Paris"}))
    );
    let r = chat(&gw, ask(true), &[("x-switchyard-tags", "tool")]).await;
    let args: String = r
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).ok(),
        Some(json!({"city": "Paris"}))
    );

    // The prompt cache: 100 input at $3, 900 read at $0.30, 200 written at $3.75, 10 output at
    // $15 per million.
    let r = chat(&gw, ask(false), &[("x-switchyard-tags", "cached")]).await;
    let usage = &r.json()["usage"];
    assert_eq!(usage["prompt_tokens"], 1200);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 900);
    assert_eq!(usage["cache_read_input_tokens"], 900);
    assert_eq!(usage["cache_creation_input_tokens"], 200);
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00147000");
    let metrics = metrics_text(&gw.url).await;
    assert!(
        metrics.contains(
            r#"switchyard_tokens_total{direction="cache_write_input",model="claude-cached"} 200"#
        ),
        "{metrics}"
    );

    // Anthropic's overloaded is an OpenAI client's 503, its message kept.
    let r = chat(&gw, ask(false), &[("x-switchyard-tags", "busy")]).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-upstream-status"), "529");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("Overloaded"));
    assert!(!String::from_utf8_lossy(&r.body).contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn anthropic_clients_reach_an_anthropic_model_with_their_version_and_betas() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let body =
        json!({"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let headers = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        // A list of betas may come in several lines: each is passed on.
        ("anthropic-beta", "output-128k-2025-02-19"),
    ];
    let r = request(
        "POST",
        &format!("{}/v1/messages", gw.url),
        body.to_string(),
        &headers,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from Claude");
    assert_eq!(v["usage"]["input_tokens"], 21);
    let sent = up.recorded().pop().expect("a request");
    let betas: Vec<_> = sent.headers.get_all("anthropic-beta").iter().collect();
    assert_eq!(
        betas,
        ["prompt-caching-2024-07-31", "output-128k-2025-02-19"],
        "{:?}",
        sent.headers
    );
    assert_eq!(sent.body["max_tokens"], 64);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = request(
        "POST",
        &format!("{}/v1/messages", gw.url),
        streamed.to_string(),
        &headers,
    )
    .await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        text.contains(r#""text":"Hello""#) && text.contains("event: message_stop"),
        "{text}"
    );
}

/// An Anthropic-wire server that sends no `usage`: the answer is billed on the gateway's
/// estimates (and counted as estimated), not as free.
#[tokio::test]
async fn an_answer_without_usage_is_estimated_not_free() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let r = chat(&gw, ask(false), &[("x-switchyard-tags", "nousage")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "claude-nousage");
    assert!(r.json()["usage"].is_null(), "{}", r.json());
    let cost: f64 = r.header("x-switchyard-cost-usd").parse().expect("cost");
    assert!(cost > 0.0, "{cost}");
    let estimated = r#"switchyard_usage_estimated_total{model="claude-nousage"}"#;
    assert_eq!(metric(&gw, estimated).await, 1.0);
}

/// The text of an OpenAI answer or of its stream's chunks.
fn answer_text(r: &Reply, stream: bool) -> String {
    answer_field(r, stream, "content")
}

/// One text field of an OpenAI answer's message, or of its stream's deltas joined.
fn answer_field(r: &Reply, stream: bool, field: &str) -> String {
    if !stream {
        return r.json()["choices"][0]["message"][field]
            .as_str()
            .unwrap_or("")
            .to_string();
    }
    r.events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["delta"][field].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn reasoning_effort_is_thinking_for_an_anthropic_model() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let thinking = |stream: bool, effort: &str| {
        let mut v = ask(stream);
        v["reasoning_effort"] = json!(effort);
        v["temperature"] = json!(0.2);
        v
    };
    // Claude 4.6 and later (`reasoning: effort`, the default): adaptive thinking at that effort.
    for stream in [false, true] {
        let r = chat(&gw, thinking(stream, "high"), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        // The model's thinking is no part of the answer: it comes as `reasoning_content`.
        assert_eq!(answer_text(&r, stream), "Hello from Claude");
        assert_eq!(
            answer_field(&r, stream, "reasoning_content"),
            "The user greets me."
        );
        let sent = up.recorded().pop().expect("a request").body;
        assert_eq!(sent["thinking"], json!({"type": "adaptive"}));
        assert_eq!(sent["output_config"], json!({"effort": "high"}));
        assert!(sent.get("temperature").is_none(), "{sent}");
    }
    // Claude 3.7 to 4.5 (`reasoning: budget`): a share of max_tokens.
    let mut budgeted = thinking(false, "medium");
    budgeted["max_tokens"] = json!(4000);
    let r = chat(&gw, budgeted, &[("x-switchyard-tags", "budget")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "claude-budget");
    let sent = up.recorded().pop().expect("a request").body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 2000})
    );
    assert!(sent.get("output_config").is_none(), "{sent}");
    // A model that does not reason is given no effort, and the request as it was.
    let r = chat(
        &gw,
        thinking(false, "high"),
        &[("x-switchyard-tags", "plain")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = up.recorded().pop().expect("a request").body;
    assert!(sent.get("thinking").is_none() && sent.get("output_config").is_none());
    assert_eq!(sent["temperature"], 0.2);
    // A tool call's result goes back without thinking: the client kept no thinking block for
    // the turn that called the tool, which Anthropic would refuse.
    let mut continued = thinking(false, "high");
    continued["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    continued["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_fake_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_fake_1", "content": "18 C, sunny"}]);
    for tags in ["", "budget"] {
        let r = chat(&gw, continued.clone(), &[("x-switchyard-tags", tags)]).await;
        assert_eq!(
            r.status,
            200,
            "{tags}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let sent = up.recorded().pop().expect("a request").body;
        assert!(sent.get("thinking").is_none(), "{sent}");
    }
}

#[tokio::test]
async fn a_web_search_is_anthropics_web_search_tool_and_its_citations_annotations() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let ask_search = |stream: bool| {
        let mut v = ask(stream);
        v["web_search_options"] = json!({"search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"city": "Oslo", "country": "NO"}}});
        v["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {}}}}]);
        v
    };
    // "Let me look. " is 13 characters; the cited text the next 16.
    let annotation = json!({"type": "url_citation", "url_citation": {"start_index": 13,
        "end_index": 29, "url": "https://tokio.example/blog", "title": "Tokio blog"}});
    let r = chat(&gw, ask_search(false), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "claude");
    let message = &r.json()["choices"][0]["message"];
    assert_eq!(message["content"], "Let me look. Tokio 2.0 is out.");
    assert_eq!(message["annotations"], json!([annotation]));
    // The search is the API's own call, not one for the client to make.
    assert!(message.get("tool_calls").is_none(), "{message}");
    // Anthropic bills it: 30 x $3 + 20 x $15 per million, and one search at $10 per thousand.
    assert_eq!(
        r.json()["usage"]["server_tool_use"],
        json!({"web_search_requests": 1})
    );
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.01039000");
    let sent = up.recorded().pop().expect("a request").body;
    assert_eq!(
        sent["tools"][1],
        json!({"type": "web_search_20250305", "name": "web_search",
            "user_location": {"type": "approximate", "city": "Oslo", "country": "NO"}})
    );
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert!(sent.get("web_search_options").is_none(), "{sent}");

    let r = chat(&gw, ask_search(true), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(answer_text(&r, true), "Let me look. Tokio 2.0 is out.");
    let chunks: Vec<Value> = r
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let annotations: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("annotations"))
        .collect();
    assert_eq!(annotations, [&json!([annotation])]);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().expect("usage")["usage"]["completion_tokens"],
        20
    );
    // Both searches are counted and priced.
    wait_metric(&gw, r#"switchyard_web_searches_total{model="claude"}"#, 2.0).await;
    let cost = r#"switchyard_cost_usd_total{model="claude",tenant="anonymous"}"#;
    wait_metric(&gw, cost, 2.0 * 0.01039 - 1e-9).await;
}

/// A Responses client (Codex CLI with web search on) reaches the same search: the web search
/// tool is chat's `web_search_options`, the citations `output_text` annotations.
#[tokio::test]
async fn a_responses_web_search_reaches_an_anthropic_model() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let annotation = json!({"type": "url_citation", "start_index": 13, "end_index": 29,
        "url": "https://tokio.example/blog", "title": "Tokio blog"});
    for stream in [false, true] {
        let body = json!({"model": "auto", "input": "What is new in tokio?", "stream": stream,
            "tools": [{"type": "web_search", "user_location": {"type": "approximate", "country": "NO"}}]});
        let r = post_responses(&gw, &body, &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-switchyard-model"), "claude");
        let sent = up.recorded().pop().expect("a request").body;
        assert_eq!(
            sent["tools"],
            json!([{"type": "web_search_20250305", "name": "web_search",
                "user_location": {"type": "approximate", "country": "NO"}}])
        );
        let response = if stream {
            // Typed events: `event: <type>` then `data: <json>`.
            let events: Vec<Value> = String::from_utf8_lossy(&r.body)
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            let added: Vec<&Value> = events
                .iter()
                .filter(|e| e["type"] == "response.output_text.annotation.added")
                .collect();
            assert_eq!(added.len(), 1, "{events:?}");
            assert_eq!(added[0]["annotation"], annotation);
            events
                .iter()
                .find(|e| e["type"] == "response.completed")
                .expect("response.completed")["response"]
                .clone()
        } else {
            r.json()
        };
        let part = &response["output"][0]["content"][0];
        assert_eq!(part["text"], "Let me look. Tokio 2.0 is out.");
        assert_eq!(part["annotations"], json!([annotation]));
    }
}
