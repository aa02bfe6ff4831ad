//! Capability-aware routing: a request that needs tools, a JSON mode, log probabilities,
//! several choices, images, audio (in or out), files or a web search never goes to a model
//! that lacks it. It falls back to one that has it (and says so), or gets a 400 naming what it
//! needs; never a 200 without it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The standard policy with its on-box model declared text-only (as a model whose engine
/// reports no JSON modes, tools, logprobs or `n`).
fn text_only_box(base: &str) -> PolicyBuilder {
    PolicyBuilder::standard(base).model_field("local-echo", "capabilities", "[completions]")
}

/// `auto` goes to the on-box model first, then the cloud.
fn local_first(base: &str) -> String {
    text_only_box(base)
        .default_route("local-echo", &["cloud"])
        .render()
}

fn with(model: &str, extra: Value) -> Value {
    let mut body = ask(model, "Give me the answer as JSON.");
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn schema() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}},
                   "required": ["answer"], "additionalProperties": false}}})
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {}}}}])
}

#[tokio::test]
async fn requests_needing_what_the_box_lacks_go_to_the_cloud_and_say_why() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_first(&up.base("ok")), KEY).await;
    let cases = [
        (json!({"response_format": schema()}), "lacks_json_schema"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "lacks_json_object",
        ),
        (
            json!({"tools": tools(), "tool_choice": "required"}),
            "lacks_tools",
        ),
        (
            json!({"logprobs": true, "top_logprobs": 2}),
            "lacks_logprobs",
        ),
        (json!({"n": 2}), "lacks_n"),
        (
            json!({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
            "lacks_audio",
        ),
        (
            json!({"web_search_options": {"search_context_size": "low"}}),
            "lacks_web_search",
        ),
    ];
    for (i, (extra, reason)) in cases.iter().enumerate() {
        let r = chat(&gw, with("auto", extra.clone()), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{reason}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("x-switchyard-model"), "cloud", "{reason}");
        assert_eq!(
            r.header("x-switchyard-fallback"),
            format!("local-echo; reason={reason}")
        );
        // The upstream got the request as sent.
        let sent = &up.recorded()[i].body;
        for (k, v) in extra.as_object().expect("object") {
            assert_eq!(&sent[k], v, "{reason}: {k}");
        }
    }
    let image = json!({"role": "user", "content": [{"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]});
    let r = chat(&gw, json!({"model": "auto", "messages": [image]}), &[]).await;
    assert_eq!(
        r.header("x-switchyard-fallback"),
        "local-echo; reason=lacks_images"
    );
    // `tool_choice: "none"` needs no tools; a plain request stays on the box.
    let r = chat(
        &gw,
        with("auto", json!({"tools": tools(), "tool_choice": "none"})),
        &[],
    )
    .await;
    assert_eq!(r.header("x-switchyard-model"), "local-echo");
    assert_eq!(r.header("x-switchyard-fallback"), "");
    assert_eq!(gw.local.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_no_model_that_can_serve_it_the_client_gets_a_400_naming_the_capability() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_first(&up.base("ok")), KEY).await;
    let cases = [
        (
            json!({"response_format": schema()}),
            "json_schema",
            "response_format",
        ),
        (json!({"logprobs": true}), "logprobs", "logprobs"),
        (json!({"n": 3}), "n", "n"),
        (json!({"tools": tools()}), "tools", "tools"),
        (
            json!({"modalities": ["text", "audio"]}),
            "audio",
            "modalities",
        ),
        (
            json!({"web_search_options": {}}),
            "web_search",
            "web_search_options",
        ),
    ];
    for model in ["local", "local-echo"] {
        for (extra, capability, param) in &cases {
            let r = chat(&gw, with(model, extra.clone()), &[]).await;
            assert_eq!(r.status, 400, "{model} {capability}");
            let e = &r.json()["error"];
            assert_eq!(e["code"], "unsupported_capability");
            assert_eq!(e["type"], "invalid_request_error");
            assert_eq!(e["param"], *param);
            let message = e["message"].as_str().expect("message");
            assert!(
                message.contains(&format!("`local-echo` cannot do `{capability}`")),
                "{message}"
            );
        }
    }
    for (part, capability) in [
        (
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "audio",
        ),
        (
            json!({"type": "file", "file": {"file_id": "file-1"}}),
            "files",
        ),
    ] {
        let body = json!({"model": "local", "messages": [{"role": "user", "content": [part]}]});
        let r = chat(&gw, body, &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (400, "unsupported_capability".into())
        );
        assert_eq!(r.json()["error"]["param"], "messages");
        assert!(String::from_utf8_lossy(&r.body).contains(&format!("cannot do `{capability}`")));
    }
    assert_eq!(gw.local.calls.load(Ordering::SeqCst), 0);
    assert!(up.recorded().is_empty());
}

/// Responses and Messages requests are answered through chat's fields, but their errors name
/// their own: the web search tool, `text.format`, `input` and `max_output_tokens` (in `param`
/// and in the message), `output_config.format` (in Anthropic's message).
#[tokio::test]
async fn translated_dialects_get_errors_naming_their_own_fields() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_first(&up.base("ok")), KEY).await;
    let lookup = json!({"type": "function", "name": "lookup", "parameters": {"type": "object"}});
    let image = json!([{"role": "user", "content": [{"type": "input_text", "text": "What is it?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]);
    let cases = [
        (
            json!({"tools": [lookup, {"type": "web_search"}], "tool_choice": "none"}),
            "web_search",
            "tools[1]",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}}),
            "json_schema",
            "text.format",
        ),
        (json!({"input": image}), "images", "input"),
    ];
    for (extra, capability, param) in cases {
        let mut body = json!({"model": "local", "input": "Give me the answer as JSON."});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = post_responses(&gw, &body, &[]).await;
        assert_eq!(r.status, 400, "{capability}");
        let e = &r.json()["error"];
        assert_eq!(
            (&e["code"], &e["param"]),
            (&json!("unsupported_capability"), &json!(param)),
            "{capability}"
        );
        let message = e["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("needs `{capability}` (set by `{param}`)")),
            "{message}"
        );
    }
    let body = json!({"model": "local", "input": "Hi", "max_output_tokens": 10_000_000});
    let r = post_responses(&gw, &body, &[]).await;
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!(e["param"], "max_output_tokens");
    let message = e["message"].as_str().expect("message");
    assert!(
        message.starts_with("`max_output_tokens` is 10000000"),
        "{message}"
    );
    // Anthropic's error shape has only a message: it names the output format as sent.
    for (field, format) in [
        (
            "output_config",
            json!({"format": {"type": "json_schema", "schema": {"type": "object"}}}),
        ),
        (
            "output_format",
            json!({"type": "json_schema", "schema": {"type": "object"}}),
        ),
    ] {
        let mut body = json!({"model": "local", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Give me the answer as JSON."}]});
        body[field] = format;
        let r = post_messages(&gw, &body, &[]).await;
        assert_eq!(r.status, 400);
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let own = if field == "output_config" {
            "output_config.format"
        } else {
            field
        };
        assert!(
            message.contains(&format!("needs `json_schema` (set by `{own}`)")),
            "{message}"
        );
    }
    assert_eq!(gw.local.calls.load(Ordering::SeqCst), 0);
    assert!(up.recorded().is_empty());
}

/// With no cloud key, a request that needs tools does not fall back to the box (which would
/// answer in plain text): the cloud's unavailability reaches the client.
#[tokio::test]
async fn a_capable_model_that_is_down_is_an_error_not_a_silent_answer_from_the_box() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&text_only_box(&up.base("ok")).render(), &[]).await;
    let r = chat(
        &gw,
        with("auto", json!({"tools": tools(), "tool_choice": "required"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "cloud");
    assert_eq!(gw.local.calls.load(Ordering::SeqCst), 0);
    // The same request without tools is answered by the box.
    assert_eq!(chat(&gw, ask("auto", "hi"), &[]).await.status, 200);
    assert_eq!(gw.local.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn declared_capabilities_narrow_a_cloud_model() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .cloud("text-only", &up.base("ok"))
        .model_field("text-only", "capabilities", "[tools]")
        .default_route("text-only", &["cloud"])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let r = chat(&gw, with("auto", json!({"response_format": schema()})), &[]).await;
    assert_eq!(r.header("x-switchyard-model"), "cloud");
    assert_eq!(
        r.header("x-switchyard-fallback"),
        "text-only; reason=lacks_json_schema"
    );
    let r = chat(&gw, with("auto", json!({"tools": tools()})), &[]).await;
    assert_eq!(r.header("x-switchyard-model"), "text-only");
}

#[test]
fn explain_says_which_model_was_passed_over_and_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = tmp.path().join("p.yaml");
    std::fs::write(
        &policy,
        "version: 1\nmodels:\n  small: { kind: local, capabilities: [completions] }\n  big: { kind: openai, base_url: 'http://127.0.0.1:9/v1' }\n  narrow: { kind: openai, base_url: 'http://127.0.0.1:9/v1', capabilities: [tools] }\ndefault: { route: small, fallbacks: [narrow, big] }\n",
    )
    .expect("write");
    let request = tmp.path().join("r.json");
    std::fs::write(
        &request,
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
               "response_format": {"type": "json_object"}})
        .to_string(),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "explain", "--policy"])
        .arg(&policy)
        .arg("--request")
        .arg(&request)
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("needs json_object"), "{text}");
    assert!(
        text.contains("decision: big (cloud) by rule `default`"),
        "{text}"
    );
    assert!(
        text.contains("passed over: small cannot do `json_object`"),
        "{text}"
    );
}

#[test]
fn an_on_box_model_cannot_claim_what_the_engine_lacks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policy = tmp.path().join("p.yaml");
    std::fs::write(
        &policy,
        "version: 1\nmodels:\n  small: { kind: local, capabilities: [images] }\n  big: { kind: openai, base_url: 'http://127.0.0.1:9/v1', capabilities: [vision] }\ndefault: { route: small }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "check"])
        .arg(&policy)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the on-box engine cannot do `images`"),
        "{err}"
    );
    assert!(err.contains("unknown capability `vision`"), "{err}");
}
