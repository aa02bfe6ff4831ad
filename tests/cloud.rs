//! The cloud path through a real gateway to a real (fake) upstream HTTP server.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

#[tokio::test]
async fn non_streaming_answer_is_forwarded_with_routing_headers() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), KEY).await;
    let mut body = ask("auto", "hello there");
    body["logit_bias"] = json!({"50256": -100});
    body["user"] = json!("u-1");
    let r = chat(
        &gw,
        body,
        &[("authorization", "Bearer client-key-must-not-leak")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from the cloud"
    );
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(r.header("x-switchyard-model"), "cloud");
    assert_eq!(r.header("x-switchyard-rule"), "default");
    // 21 input tokens at $1 each and 4 output tokens at $2 each, from the upstream's usage.
    assert_eq!(
        r.header("x-switchyard-cost-usd").parse::<f64>().unwrap(),
        29.0
    );

    let sent = up.recorded().pop().unwrap();
    assert_eq!(sent.path, "/ok/v1/chat/completions");
    assert_eq!(
        sent.body["model"], "upstream-model-x",
        "the policy's upstream name is sent"
    );
    assert_eq!(
        sent.body["logit_bias"],
        json!({"50256": -100}),
        "unknown fields pass through"
    );
    assert_eq!(sent.body["user"], "u-1");
    assert_eq!(sent.headers["authorization"], "Bearer sk-upstream-secret");
    assert!(!format!("{:?}", sent.headers).contains("client-key-must-not-leak"));
}

#[tokio::test]
async fn streaming_is_forwarded_chunk_by_chunk() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("gated")).render(), KEY).await;
    let mut body = ask("auto", "stream please");
    body["stream"] = json!(true);
    let resp = open_chat(&gw, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-switchyard-route"], "cloud");
    assert_eq!(resp.headers()["x-switchyard-rule"], "default");
    // A stream still running when its head goes out is chunked, not sized.
    assert!(resp.headers().get("content-length").is_none());
    let mut body = resp.into_body();
    // The upstream holds the rest of its stream until the gate opens: "Hello" must arrive
    // before that, or the gateway is buffering.
    let mut seen = String::new();
    while !seen.contains("Hello") {
        let frame = tokio::time::timeout(TEST_TIMEOUT, body.frame())
            .await
            .expect("chunk before the gate opens");
        let frame = frame.expect("stream open").expect("frame");
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    up.gate.notify_one();
    let rest = tokio::time::timeout(TEST_TIMEOUT, body.collect())
        .await
        .expect("rest in time")
        .expect("rest")
        .to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
    assert!(
        !seen.contains("\"usage\":{"),
        "usage chunk not asked for by the client: {seen}"
    );
    let sent = up.recorded().pop().unwrap();
    assert_eq!(
        sent.body["stream_options"]["include_usage"], true,
        "the gateway asks for usage upstream"
    );
    // Cost settles from the upstream's usage when the stream ends.
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_tokens_total{direction="input",model="cloud"}"#
        )
        .await,
        21.0
    );
}

#[tokio::test]
async fn include_usage_is_honoured() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), KEY).await;
    let mut body = ask("auto", "count me");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = chat(&gw, body, &[]).await;
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 21);
    assert_eq!(usage["choices"], json!([]));
}

#[tokio::test]
async fn missing_upstream_usage_is_estimated() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("nousage")).render(), KEY).await;
    let r = chat(&gw, ask("auto", "a prompt of some length to estimate"), &[]).await;
    assert_eq!(r.status, 200);
    let output = metric(
        &gw,
        r#"switchyard_tokens_total{direction="output",model="cloud"}"#,
    )
    .await;
    let input = metric(
        &gw,
        r#"switchyard_tokens_total{direction="input",model="cloud"}"#,
    )
    .await;
    // "Hello from the cloud" is 20 bytes: about 5 tokens; the prompt about 9 + framing.
    assert_eq!(output, 5.0);
    assert!(input > 9.0, "{input}");
}

#[tokio::test]
async fn upstream_client_errors_pass_through_and_server_errors_become_502() {
    let up = FakeUpstream::start().await;
    let rules = |b: &str| PolicyBuilder::standard(&up.base(b)).render();
    let gw = start_gateway(&rules("status-400"), KEY).await;
    let r = chat(&gw, ask("cloud", "x"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error_code(),
        "upstream_code",
        "the upstream's own error body"
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("sk-upstream-secret"),
        "provider key redacted"
    );

    // A 500 falls back to the local model when the route has one...
    let gw = start_gateway(&rules("status-500"), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_fallbacks_total{from="cloud",to="local-echo"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_upstream_errors_total{kind="status_5xx",model="cloud"}"#
        )
        .await,
        1.0
    );

    // ...and is a 502 when it has none.
    let no_fallback = PolicyBuilder::standard(&up.base("status-500"))
        .rule("only-cloud", "{ tags: [only] }", "cloud", &[])
        .render();
    let gw = start_gateway(&no_fallback, KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[("x-switchyard-tags", "only")]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-switchyard-upstream-status"), "500");
    assert_eq!(r.error_code(), "upstream_code", "the upstream's own error");
    assert_eq!(r.header("x-switchyard-rule"), "only-cloud");
}

#[tokio::test]
async fn upstream_429_keeps_retry_after_and_401_is_a_gateway_error() {
    let up = FakeUpstream::start().await;
    let only = |b: &str| {
        PolicyBuilder::standard(&up.base(b))
            .rule("only-cloud", "{ tags: [only] }", "cloud", &[])
            .render()
    };
    let gw = start_gateway(&only("status-429"), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[("x-switchyard-tags", "only")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "7");

    let gw = start_gateway(&only("status-401"), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[("x-switchyard-tags", "only")]).await;
    assert_eq!(
        r.status, 502,
        "the client's key is fine; the gateway's provider key is not"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("sk-upstream-secret"));
}

#[tokio::test]
async fn without_a_key_the_cloud_is_disabled_and_requests_are_served_locally() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), &[]).await;
    let r = chat(&gw, ask("auto", "hello"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: hello");
    // Asking for the cloud model by name follows its rule's fallback too.
    let r = chat(&gw, ask("cloud", "hello"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-switchyard-model")),
        (200, "local-echo")
    );
    assert!(up.recorded().is_empty(), "nothing was sent upstream");
    let ready = request("GET", &format!("{}/readyz", gw.url), "", &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["models"]["cloud"]["available"], false);
    assert_eq!(
        ready.json()["models"]["cloud"]["reason"],
        "CLOUD_KEY is not set"
    );
    assert_eq!(
        metric(&gw, r#"switchyard_model_available{model="cloud"}"#).await,
        0.0
    );
}

/// An Azure-style OpenAI model: a deployment path in `base_url`, the key in `api-key` instead of
/// `Authorization`, and `api-version` in the query. The client's own `api-key` and `x-api-key`
/// (gateway keys) never go upstream.
#[tokio::test]
async fn an_azure_style_model_gets_its_key_header_and_query() {
    let up = FakeUpstream::start().await;
    let base = format!("{}/openai/deployments/gpt-4o-prod", up.base("ok"));
    let policy = PolicyBuilder::new()
        .cloud("azure", &base)
        .model_field("azure", "api_key", &quoted("${AZURE_OPENAI_KEY}"))
        .model_field("azure", "auth_header", "api-key")
        .model_field(
            "azure",
            "query",
            "{ api-version: '2024-10-21', tag: 'a b&c' }",
        )
        .model_field("azure", "forward_headers", "[x-request-id]")
        .default_route("azure", &[])
        .render();
    let gw = start_gateway(&policy, &[("AZURE_OPENAI_KEY", "azure-secret-key")]).await;
    let r = chat(
        &gw,
        ask("auto", "hi"),
        &[("api-key", "client-side"), ("x-api-key", "client-side")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = up.recorded().pop().expect("a request");
    assert_eq!(
        got.path,
        "/ok/v1/openai/deployments/gpt-4o-prod/chat/completions"
    );
    assert_eq!(got.query, "api-version=2024-10-21&tag=a%20b%26c");
    assert_eq!(
        got.headers.get("api-key").map(|v| v.as_bytes()),
        Some(&b"azure-secret-key"[..])
    );
    assert!(got.headers.get("authorization").is_none());
    assert!(got.headers.get("x-api-key").is_none());
}

/// `reasoning: none` (a model that does not reason, such as gpt-4o-mini, which refuses the
/// field): a request's reasoning effort is not sent, from a chat request or a Responses one; by
/// default it goes as it came.
#[tokio::test]
async fn reasoning_effort_reaches_only_models_that_reason() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::new()
        .cloud("reasoner", &up.base("ok"))
        .cloud("plain", &up.base("ok"))
        .model_field("plain", "reasoning", "none")
        .rule("plain", "{ tags: [plain] }", "plain", &[])
        .default_route("reasoner", &[])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let mut chat_body = ask("auto", "Prove that there are infinitely many primes.");
    chat_body["reasoning_effort"] = json!("high");
    let responses_body =
        json!({"model": "auto", "input": "Prove it.", "reasoning": {"effort": "low"}});
    for (path, body, effort) in [
        ("/v1/chat/completions", &chat_body, "high"),
        ("/v1/responses", &responses_body, "low"),
    ] {
        for (tags, sent_effort) in [("", Some(effort)), ("plain", None)] {
            let r = post_json(&gw, path, body, &[("x-switchyard-tags", tags)]).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let sent = up.recorded().pop().expect("a request").body;
            assert_eq!(
                sent["reasoning_effort"].as_str(),
                sent_effort,
                "{path} {tags}: {sent}"
            );
            assert_eq!(sent["messages"][0]["role"], "user", "{path}: {sent}");
        }
    }
}

/// OpenAI's search models search before every answer and bill each request as one web search
/// call, but report no count of searches: a chat request with `web_search_options` to an
/// OpenAI-compatible model counts one, priced at its `web_search_per_thousand`, in the answer's
/// cost and the metrics, streamed or not; a request without it counts none.
#[tokio::test]
async fn a_search_models_answer_counts_one_web_search() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .model_field(
            "cloud",
            "price",
            "{ input_per_million: 1000000, output_per_million: 2000000, web_search_per_thousand: 25000 }",
        )
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let searches = r#"switchyard_web_searches_total{model="cloud"}"#;
    // 21 input tokens at $1 and 4 output tokens at $2, as without a search.
    let r = chat(&gw, ask("auto", "hello there"), &[]).await;
    assert_eq!(
        r.header("x-switchyard-cost-usd").parse::<f64>().ok(),
        Some(29.0)
    );
    assert_eq!(metric_opt(&gw, searches).await, None);
    let mut search = ask("auto", "What happened in Oslo today?");
    search["web_search_options"] = json!({"search_context_size": "low"});
    let r = chat(&gw, search.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // ... and one search at $25.
    assert_eq!(
        r.header("x-switchyard-cost-usd").parse::<f64>().ok(),
        Some(54.0)
    );
    assert_eq!(
        up.recorded()
            .pop()
            .map(|s| s.body["web_search_options"].clone()),
        Some(json!({"search_context_size": "low"}))
    );
    search["stream"] = json!(true);
    let r = chat(&gw, search, &[]).await;
    assert_eq!(r.status, 200);
    wait_metric(&gw, searches, 2.0).await;
    let cost = r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#;
    // The stream is billed its tokens and its search too.
    let billed = metric(&gw, cost).await;
    assert!(billed >= 29.0 + 54.0 + 25.0, "{billed}");
}
