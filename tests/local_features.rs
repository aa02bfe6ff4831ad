//! The OpenAI features the on-box engine honours (JSON output, tool calls, logprobs, `n`,
//! `seed`, penalties and `logit_bias`) on real models through a real gateway, driven by the
//! official `openai` SDK (tests/sdk/) and by plain HTTP; and routing following what the loaded
//! model reports it can do.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

/// Qwen2.5-Coder 0.5B (its chat template offers tools) and its tokenizer, fetched by
/// `scripts/fetch-models.sh --qwen` (scripts/test.sh does).
fn qwen() -> (PathBuf, PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let (model, tokenizer) = (
        dir.join("qwen2.5-coder-0.5b-instruct.gguf"),
        dir.join("qwen2.5-tokenizer.json"),
    );
    assert!(
        model.exists() && tokenizer.exists(),
        "{} is missing: run scripts/fetch-models.sh --qwen (scripts/test.sh does)",
        model.display()
    );
    (model, tokenizer)
}

fn qwen_fields() -> Vec<(&'static str, String)> {
    let (model, tokenizer) = qwen();
    vec![
        ("kind", "local".to_string()),
        ("path", quoted(&model.display().to_string())),
        ("tokenizer", quoted(&tokenizer.display().to_string())),
    ]
}

fn fields<'a>(f: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Runs one SDK script (under tests/sdk/) against the gateway's `/v1`; panics with its output
/// unless it printed ok.
async fn run_sdk_script(script: &str, gw: &TestGateway) {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let base = format!("{}/v1", gw.url);
    let python = venv_python();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&python).arg(script).arg(base).output())
            .await
            .expect("join")
            .expect("scripts/test.sh sets up the venv with the openai SDK");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "SDK check failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_logprobs_n_and_seed_through_the_openai_sdk_on_smollm2() {
    let gw = start_gateway(&smollm2_policy(), &[]).await;
    run_sdk_script("check_openai_sdk_local_features.py", &gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_through_the_openai_sdk_on_qwen() {
    let f = qwen_fields();
    let policy = PolicyBuilder::new()
        .model("qwen", &fields(&f))
        .default_route("qwen", &[])
        .render();
    let gw = start_gateway(&policy, &[]).await;
    run_sdk_script("check_openai_sdk_tools.py", &gw).await;
}

/// The content of a greedy answer of `max_tokens` tokens with these extra fields.
async fn greedy(gw: &TestGateway, extra: Value) -> (String, Value) {
    let mut body = ask("local", "Say something.");
    body["temperature"] = json!(0);
    body["max_tokens"] = json!(6);
    body["ignore_eos"] = json!(true);
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let r = chat(gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    (text, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_and_penalties_steer_the_tokens() {
    let model = switchyard::local::LocalModel::load(&smollm2_path(), None).expect("SmolLM2");
    let id = |text: &str| {
        let ids = model.tokenizer.encode(text, false).expect("encode");
        assert_eq!(ids.get_ids().len(), 1, "{text} is one token");
        ids.get_ids()[0]
    };
    let (yes, no) = (id(" yes"), id(" no"));
    let gw = start_gateway(&smollm2_policy(), &[]).await;
    let (plain, _) = greedy(&gw, json!({})).await;
    // A bias of 100 makes the token the only choice.
    let (biased, v) = greedy(&gw, json!({"logit_bias": {yes.to_string(): 100}})).await;
    assert_eq!(biased, " yes".repeat(6), "{v}");
    assert_ne!(plain, biased);
    // Two tokens pushed far above the rest: greedy repeats the stronger one; a frequency
    // penalty of 2 takes it down by 2 per use, so the other one comes in too. (The presence
    // penalty, once per token, is checked against exact logits in the sampler's unit test.)
    let both = json!({yes.to_string(): 100, no.to_string(): 100});
    let (same, _) = greedy(&gw, json!({"logit_bias": both})).await;
    let words: Vec<&str> = same.split_whitespace().collect();
    assert!(words.iter().all(|w| *w == words[0]), "{same}");
    let (mixed, _) = greedy(&gw, json!({"logit_bias": both, "frequency_penalty": 2.0})).await;
    assert!(mixed.contains("yes") && mixed.contains("no"), "{mixed}");
    // A negative bias takes the greedy first token out.
    let (first, _) = greedy(&gw, json!({"max_tokens": 1, "logprobs": true})).await;
    let first_id = model
        .tokenizer
        .encode(first.as_str(), false)
        .expect("encode");
    let (after, _) = greedy(
        &gw,
        json!({"max_tokens": 1, "logit_bias": {first_id.get_ids()[0].to_string(): -100}}),
    )
    .await;
    assert_ne!(first, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_cloud_key_structured_requests_are_answered_on_the_box() {
    // The shipped default policy, no cloud key: a JSON-schema request is answered by the
    // on-box model, valid under its schema.
    let policy = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml"),
    )
    .expect("default policy");
    let smol = smollm2_path().display().to_string();
    let gw = start_gateway(&policy, &[("SWITCHYARD_LOCAL_MODEL", &smol)]).await;
    let schema = json!({"type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 20},
                       "sure": {"type": "boolean"}},
        "required": ["answer", "sure"], "additionalProperties": false});
    let mut body = ask("auto", "Is the sky blue? Answer as JSON.");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}});
    body["max_tokens"] = json!(100);
    // Greedy, so the answer is the same on every run (sampled schema answers are checked by
    // the SDK script, with seeds).
    body["temperature"] = json!(0);
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "on-box");
    let v = r.json();
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    let answer: Value = serde_json::from_str(text).expect("JSON");
    assert!(
        answer["answer"].is_string() && answer["sure"].is_boolean(),
        "{answer}"
    );
    // SmolLM2's template offers no tools: the loaded model reports none, and a forced tool
    // call is refused by routing (not answered without the call).
    let mut body = ask("auto", "Weather in Paris?");
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    body["tool_choice"] = json!("required");
    // Greedy: the arguments below are checked for shape, which a sampled 0.5B model can miss
    // (the tool's schema requires nothing, so echoing it is valid JSON under it).
    body["temperature"] = json!(0);
    let r = chat(&gw, body.clone(), &[]).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "model_unavailable");
    assert_eq!(r.header("x-switchyard-model"), "gpt-4o-mini");
    drop(gw);
    // The same default policy serving Qwen (its template offers tools): the forced call is
    // answered on the box, correctly shaped.
    let (qwen_path, _) = qwen();
    let gw = start_gateway(
        &policy,
        &[("SWITCHYARD_LOCAL_MODEL", &qwen_path.display().to_string())],
    )
    .await;
    let r = chat(&gw, body.clone(), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "on-box");
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather",
        "{v}"
    );
    drop(gw);
    // With a model whose template offers tools behind it, the same request skips the one
    // that reports none and is answered with the call.
    let f = qwen_fields();
    let smol_q = quoted(&smol);
    let three = PolicyBuilder::new()
        .cloud("cloud", "http://127.0.0.1:9/v1")
        .model("smol", &[("kind", "local"), ("path", &smol_q)])
        .model("qwen", &fields(&f))
        .default_route("cloud", &["smol", "qwen"])
        .render();
    let gw = start_gateway(&three, &[]).await;
    body["model"] = json!("auto");
    body["max_tokens"] = json!(60);
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "qwen");
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("arguments"))
            .expect("arguments are JSON");
    assert!(args["city"].is_string(), "{args}");
}

#[test]
fn tool_turns_are_rendered_back_by_the_models_own_template() {
    use switchyard::api::Role;
    use switchyard::local::template::TemplateMessage;
    let (path, tokenizer) = qwen();
    let qwen = switchyard::local::LocalModel::load(&path, Some(&tokenizer)).expect("Qwen");
    assert!(qwen.template.has_tools());
    let tools = [
        json!({"type": "function", "function": {"name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
    ];
    let messages = [
        TemplateMessage::text(Role::User, "Weather in Paris?".into()),
        TemplateMessage {
            tool_calls: Some(vec![json!({"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}})]),
            ..TemplateMessage::text(Role::Assistant, String::new())
        },
        TemplateMessage {
            tool_call_id: Some("call_1".into()),
            ..TemplateMessage::text(Role::Tool, r#"{"temperature": 18}"#.into())
        },
    ];
    let text = qwen
        .template
        .render_with(&messages, Some(&tools))
        .expect("render");
    for part in [
        "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}\n</tools>",
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>",
        "<|im_start|>user\n<tool_response>\n{\"temperature\": 18}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    // Without tools the prompt has no tools section; SmolLM2's template has none at all.
    let plain = qwen
        .template
        .render_with(&messages[..1], None)
        .expect("render");
    assert!(!plain.contains("<tools>"), "{plain}");
    let smol = switchyard::local::LocalModel::load(&smollm2_path(), None).expect("SmolLM2");
    assert!(!smol.template.has_tools());
    assert!(!smol.capabilities().has(switchyard::api::Capability::Tools));
    assert!(qwen.capabilities().has(switchyard::api::Capability::Tools));
}

#[test]
fn generate_constrains_its_answer_to_a_schema_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"colors": {"type": "array", "maxItems": 2,
            "items": {"type": "string", "enum": ["red", "blue"]}}},
            "required": ["colors"], "additionalProperties": false}"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["generate", "--threads", "1", "--max-tokens", "40", "--json"])
        .arg("--model")
        .arg(smollm2_path())
        .arg("--json-schema")
        .arg(&schema)
        .arg("Name two colors.")
        .output()
        .expect("generate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(v["constrained"], true);
    assert_eq!(v["finish_reason"], "stop", "{v}");
    let answer: Value =
        serde_json::from_str(v["answer"].as_str().expect("answer")).expect("the answer is JSON");
    let colors = answer["colors"].as_array().expect("colors");
    assert!(
        colors.len() <= 2 && colors.iter().all(|c| c == "red" || c == "blue"),
        "{answer}"
    );
}
