//! Private data stays on the box: a `pii` condition routes requests that carry it to the on-box
//! model, `redact` replaces it with typed placeholders before a cloud model gets the request
//! (OpenAI chat, streamed or not; Anthropic Messages, Responses and legacy completions passed on
//! natively), metrics count it
//! by kind, the request log and `replay` never see a value, and `policy explain` says where it
//! was. Through a real gateway on loopback and the fake upstreams of `tests/common`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

const KEY: &[(&str, &str)] = &[("CLOUD_KEY", "sk-upstream-test")];
const EMAIL: &str = "dana.okafor@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const IP: &str = "203.0.113.42";

fn policy(up: &FakeUpstream, log: &Path) -> String {
    format!(
        r#"version: 1
models:
  local-echo: {{ kind: local }}
  cloud:
    kind: openai
    base_url: "{base}"
    api_key: "${{CLOUD_KEY}}"
    price: {{ input_per_million: 2, output_per_million: 8 }}
  claude:
    kind: anthropic
    base_url: "http://{addr}/anthropic"
    api_key: "${{CLOUD_KEY}}"
    upstream_model: claude-test
    price: {{ input_per_million: 3, output_per_million: 15 }}
  native:
    kind: openai
    base_url: "{base}"
    api_key: "${{CLOUD_KEY}}"
    responses: true
    completions: true
    price: {{ input_per_million: 2, output_per_million: 8 }}
recording: {{ path: "{log}", prompts: keep }}
rules:
  - name: regulated
    when: {{ pii: [credit_card, iban, national_id] }}
    route: local-echo
  - name: claude
    when: {{ tags: [claude] }}
    route: claude
    redact: true
  - name: native
    when: {{ tags: [native] }}
    route: native
    redact: true
  - name: hard
    when: {{ tags: [hard] }}
    route: cloud
    fallbacks: [local-echo]
    redact: [email, phone, secret]
default: {{ route: local-echo }}
"#,
        base = up.base("ok"),
        addr = up.addr,
        log = log.display()
    )
}

fn user(text: &str) -> Value {
    json!({"model": "auto", "messages": [
        {"role": "system", "content": "You are the support desk."},
        {"role": "user", "content": text}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulated_data_is_answered_on_the_box() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let gw = start_gateway(&policy(&up, &tmp.path().join("log.jsonl")), KEY).await;
    let r = chat(
        &gw,
        user(&format!("Charge {CARD} for the renewal")),
        &[("x-switchyard-tags", "hard")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-rule"), "regulated");
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert!(up.recorded().is_empty(), "nothing went to the cloud");
    assert_eq!(
        metric(&gw, "switchyard_pii_detections_total{kind=\"credit_card\"}").await,
        1.0
    );
    // A look-alike (an ISBN, an order number) is not private data.
    let r = chat(
        &gw,
        user("Order 1234567812345670 for ISBN 978-3-16-148410-0"),
        &[("x-switchyard-tags", "hard")],
    )
    .await;
    assert_eq!(r.header("x-switchyard-rule"), "hard");
    assert_eq!(r.header("x-switchyard-redacted"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_route_gets_placeholders_and_nothing_records_a_value() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("log.jsonl");
    let policy_text = policy(&up, &log);
    let gw = start_gateway(&policy_text, KEY).await;
    let text = format!(
        "I am {EMAIL}, call {PHONE} or write to {EMAIL}; my server is {IP}, key sk-proj-Ab12Cd34Ef56Gh78Ij90KlMn"
    );
    let mut body = user(&text);
    body["messages"].as_array_mut().expect("messages").push(
        json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": format!("{{\"email\": \"{EMAIL}\"}}")}}]}),
    );
    body["messages"]
        .as_array_mut()
        .expect("messages")
        .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "found"}));
    let r = chat(&gw, body, &[("x-switchyard-tags", "hard")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(r.header("x-switchyard-redacted"), "email,phone,secret");

    let sent = up.recorded().pop().expect("a cloud request");
    let raw = String::from_utf8_lossy(&sent.raw);
    assert!(
        !raw.contains(EMAIL) && !raw.contains("7946") && !raw.contains("sk-proj-"),
        "{raw}"
    );
    let content = sent.body["messages"][1]["content"].as_str().expect("text");
    assert_eq!(
        content,
        format!("I am [EMAIL_1], call [PHONE_1] or write to [EMAIL_1]; my server is {IP}, key [SECRET_1]")
    );
    // The same value gets the same placeholder in a tool call's arguments.
    assert_eq!(
        sent.body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"email\": \"[EMAIL_1]\"}"
    );
    assert_eq!(sent.body["messages"][2]["tool_calls"][0]["id"], "call_1");

    let email = "switchyard_pii_detections_total{kind=\"email\"}";
    assert_eq!(metric(&gw, email).await, 3.0);
    assert_eq!(
        metric(&gw, "switchyard_pii_detections_total{kind=\"ip_address\"}").await,
        1.0
    );
    assert_eq!(
        metric(&gw, "switchyard_pii_redactions_total{kind=\"email\"}").await,
        3.0
    );
    assert_metric_absent(&gw, "switchyard_pii_redactions_total{kind=\"ip_address\"}").await;
    let exposition = metrics_text(&gw.url).await;
    assert!(!exposition.contains(EMAIL) && !exposition.contains(IP));

    // The request log keeps the text with every kind replaced, and names the kinds.
    let rows = log_rows_when_ready(&log, 1);
    let row = serde_json::to_string(&rows[0]).expect("json");
    assert!(
        !row.contains(EMAIL) && !row.contains(IP) && !row.contains("7946"),
        "{row}"
    );
    assert!(row.contains("[IP_ADDRESS_1]"), "{row}");
    assert_eq!(
        rows[0]["pii"],
        json!(["email", "phone", "ip_address", "secret"])
    );

    // Replayed offline, the logged kinds route the request as the gateway did.
    let file = tmp.path().join("policy.yaml");
    std::fs::write(&file, policy_text.replace("${CLOUD_KEY}", "sk-x")).expect("write");
    let card_row = json!({"messages": [{"role": "user", "content": "[CREDIT_CARD_1]"}],
        "pii": ["credit_card"]});
    let input = tmp.path().join("replay.jsonl");
    std::fs::write(&input, format!("{row}\n{card_row}\n")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--json", "--policy"])
        .arg(&file)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["by_rule"]["hard"]["requests"], 1, "{report}");
    assert_eq!(report["by_rule"]["regulated"]["requests"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_native_dialects_are_redacted_too() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let gw = start_gateway(&policy(&up, &tmp.path().join("log.jsonl")), KEY).await;
    let mut body = user(&format!("Mail {EMAIL} the summary"));
    body["stream"] = json!(true);
    let r = chat(&gw, body, &[("x-switchyard-tags", "hard")]).await;
    assert_eq!(r.status, 200);
    assert!(!r.events().is_empty());
    let sent = up.recorded().pop().expect("a cloud request");
    assert_eq!(
        sent.body["messages"][1]["content"],
        "Mail [EMAIL_1] the summary"
    );
    assert_eq!(sent.body["stream"], true);

    // A request over 64 KiB of text is scanned and redacted off the runtime's threads, alike.
    let long = format!(
        "{} Mail {EMAIL} the summary",
        "the quarterly numbers ".repeat(3500)
    );
    let r = chat(&gw, user(&long), &[("x-switchyard-tags", "hard")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-redacted"), "email");
    let sent = up.recorded().pop().expect("a cloud request");
    let content = sent.body["messages"][1]["content"].as_str().expect("text");
    assert!(content.len() > 64 * 1024);
    assert!(
        content.ends_with("Mail [EMAIL_1] the summary"),
        "{}",
        &content[content.len() - 60..]
    );
    assert!(!String::from_utf8_lossy(&sent.raw).contains(EMAIL));

    // An Anthropic Messages request to an Anthropic model goes as it came, but redacted,
    // in `system` as in `messages`.
    let native = json!({"model": "auto", "max_tokens": 64,
        "system": [{"type": "text", "text": format!("The customer is {EMAIL}.")}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": format!("Call me on {PHONE}")}]}]});
    let r = post_messages(&gw, &native, &[("x-switchyard-tags", "claude")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-redacted"), "email,phone");
    let sent = up.recorded().pop().expect("an Anthropic request");
    assert_eq!(sent.path, "/anthropic/v1/messages");
    assert_eq!(sent.body["system"][0]["text"], "The customer is [EMAIL_1].");
    assert_eq!(
        sent.body["messages"][0]["content"][0]["text"],
        "Call me on [PHONE_1]"
    );
    assert_eq!(sent.body["max_tokens"], 64);
}

/// Every dialect's texts are redacted where they go upstream as they came: a Responses request
/// and a legacy completion to a model that serves them, the members that name the end user, and
/// an Anthropic conversation's tool call given as an object, whose signed thinking is left as the
/// provider wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_completions_and_anthropic_tool_calls_are_redacted_as_they_go() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let gw = start_gateway(&policy(&up, &tmp.path().join("log.jsonl")), KEY).await;
    let post = |path: &str, body: Value, tag: &'static str| {
        let url = format!("{}{path}", gw.url);
        async move {
            let r = request(
                "POST",
                &url,
                body.to_string(),
                &[
                    ("content-type", "application/json"),
                    ("anthropic-version", "2023-06-01"),
                    ("x-switchyard-tags", tag),
                ],
            )
            .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r
        }
    };

    let responses = json!({"model": "auto", "instructions": format!("The customer is {EMAIL}."),
        "input": [{"role": "user", "content": [{"type": "input_text", "text": format!("Call {PHONE}")}]}],
        "user": EMAIL, "metadata": {"customer": EMAIL}});
    let r = post("/v1/responses", responses, "native").await;
    assert_eq!(r.header("x-switchyard-redacted"), "email,phone");
    let sent = up.recorded().pop().expect("a Responses request");
    assert_eq!(sent.path, "/ok/v1/responses");
    assert_eq!(sent.body["instructions"], "The customer is [EMAIL_1].");
    assert_eq!(
        sent.body["input"][0]["content"][0]["text"],
        "Call [PHONE_1]"
    );
    assert_eq!(
        (&sent.body["user"], &sent.body["metadata"]["customer"]),
        (&json!("[EMAIL_1]"), &json!("[EMAIL_1]"))
    );

    // An agent's turn, with what only the Responses API serves: redacted where people and
    // tools wrote and in the ids that name the end user; the model's own reasoning untouched.
    let reasoning = json!({"type": "reasoning", "id": "rs_1",
        "summary": [{"type": "summary_text", "text": format!("Look up {EMAIL}")}],
        "encrypted_content": format!("gAAAA{EMAIL}")});
    let agent = json!({"model": "auto", "safety_identifier": EMAIL,
        "prompt_cache_key": format!("support:{EMAIL}"),
        "reasoning": {"effort": "low", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "tools": [{"type": "custom", "name": "crm"}],
        "input": [{"role": "user", "content": "Update the account"}, reasoning.clone(),
            {"type": "custom_tool_call", "call_id": "c1", "name": "crm", "input": format!("find {EMAIL}")},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": format!("call {PHONE}")}]});
    let r = post("/v1/responses", agent, "native").await;
    assert_eq!(r.header("x-switchyard-redacted"), "email,phone");
    let sent = up.recorded().pop().expect("a Responses request");
    assert_eq!(sent.path, "/ok/v1/responses");
    assert_eq!(
        (
            &sent.body["safety_identifier"],
            &sent.body["prompt_cache_key"]
        ),
        (&json!("[EMAIL_1]"), &json!("support:[EMAIL_1]"))
    );
    assert_eq!(sent.body["input"][1], reasoning);
    assert_eq!(sent.body["input"][2]["input"], "find [EMAIL_1]");
    assert_eq!(sent.body["input"][3]["output"], "call [PHONE_1]");

    let completion = json!({"model": "auto", "prompt": format!("Dear {EMAIL},"), "max_tokens": 8});
    let r = post("/v1/completions", completion, "native").await;
    assert_eq!(r.header("x-switchyard-redacted"), "email");
    let sent = up.recorded().pop().expect("a completions request");
    assert_eq!(sent.path, "/ok/v1/completions");
    assert_eq!(sent.body["prompt"], "Dear [EMAIL_1],");

    let thinking = format!("The user gave {EMAIL}; look it up.");
    let anthropic = json!({"model": "auto", "max_tokens": 64,
    "metadata": {"user_id": EMAIL},
    "messages": [
        {"role": "user", "content": format!("Find the account of {EMAIL}")},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thinking, "signature": "c2lnbmVk"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup",
             "input": {"email": EMAIL, "name": PHONE}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": format!("{EMAIL}: active")}
        ]}
    ]});
    let r = post("/v1/messages", anthropic, "claude").await;
    assert_eq!(r.header("x-switchyard-redacted"), "email,phone");
    let sent = up.recorded().pop().expect("an Anthropic request");
    assert_eq!(sent.path, "/anthropic/v1/messages");
    assert_eq!(sent.body["metadata"]["user_id"], "[EMAIL_1]");
    let call = &sent.body["messages"][1]["content"][1];
    assert_eq!(
        call["input"],
        json!({"email": "[EMAIL_1]", "name": "[PHONE_1]"})
    );
    assert_eq!(
        (&call["id"], &call["name"]),
        (&json!("toolu_1"), &json!("lookup"))
    );
    assert_eq!(sent.body["messages"][1]["content"][0]["thinking"], thinking);
    assert_eq!(
        sent.body["messages"][2]["content"][0]["content"],
        "[EMAIL_1]: active"
    );
}

#[test]
fn explain_names_the_kinds_and_where_but_not_the_values() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("policy.yaml");
    let up_addr = "127.0.0.1:9";
    let text = format!(
        r#"version: 1
models:
  local-echo: {{ kind: local }}
  cloud: {{ kind: openai, base_url: "http://{up_addr}/v1", api_key: sk-x }}
rules:
  - name: private
    when: {{ pii: [iban] }}
    route: local-echo
  - name: rest
    when: {{ pii: true }}
    route: cloud
    redact: [email]
default: {{ route: cloud }}
"#
    );
    std::fs::write(&file, text).expect("write");
    let explain = |msg: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["policy", "explain", "--policy"])
            .arg(&file)
            .arg(msg)
            .output()
            .expect("explain");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = explain(&format!("Pay DE89 3704 0044 0532 0130 00 and tell {EMAIL}"));
    assert!(
        out.contains("private data: iban in messages[0].content, email in messages[0].content"),
        "{out}"
    );
    assert!(out.contains("private (line"), "{out}");
    assert!(out.contains("decision: local-echo"), "{out}");
    assert!(!out.contains(EMAIL) && !out.contains("DE89"), "{out}");
    let out = explain(&format!("Tell {EMAIL} hello"));
    assert!(
        out.contains("no private data of [iban] (found [email])"),
        "{out}"
    );
    assert!(
        out.contains("redacts [email] before a cloud model"),
        "{out}"
    );
}
