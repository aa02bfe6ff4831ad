//! The request log: `serve` records routed requests (text kept or hashed), and `replay` reads the
//! file as it is.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// Waits until the log has `n` lines (the writer is a background thread).
fn lines_when_ready(path: &Path, n: usize) -> Vec<Value> {
    log_rows_when_ready(path, n)
}

/// `switchyard replay --json` of `log` with `policy_text` (its key variable filled in), as a user
/// runs it; the report.
fn replay(dir: &Path, policy_text: &str, log: &Path) -> Value {
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy_text.replace("${CLOUD_KEY}", "sk-x")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["replay", "--json", "--policy"])
        .arg(&policy_file)
        .arg("--input")
        .arg(log)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn recording_policy(base: &str, path: &Path, prompts: &str) -> String {
    PolicyBuilder::standard(base)
        .recording(path, Some(prompts))
        .rule("premium", "{ tags: [premium] }", "local-echo", &[])
        .render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_records_requests_that_replay_reads() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("logs/requests.jsonl");
    let policy_text = recording_policy(&up.base("ok"), &log, "keep");
    let gw = start_gateway(&policy_text, KEY).await;
    assert_eq!(
        chat(&gw, ask("auto", "first question"), &[]).await.status,
        200
    );
    assert_eq!(
        chat(
            &gw,
            ask("auto", "second"),
            &[("x-switchyard-tags", "premium")]
        )
        .await
        .status,
        200
    );
    assert_eq!(chat(&gw, ask("cloud", "third"), &[]).await.status, 200);
    let rows = lines_when_ready(&log, 3);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["messages"][0]["content"], "first question");
    assert_eq!(rows[1]["tags"][0], "premium");
    assert_eq!(rows[1]["decision"]["rule"], "premium");
    assert_eq!(rows[2]["model"], "cloud");
    assert!(rows[0]["prompt_tokens"].as_u64().is_some_and(|n| n > 0));

    // The same file, replayed offline with the same policy, gives the same decisions.
    let r = replay(tmp.path(), &policy_text, &log);
    assert_eq!(r["requests"], 3);
    assert_eq!(r["by_rule"]["premium"]["requests"], 1);
    assert_eq!(r["by_rule"]["default"]["requests"], 1);
    assert_eq!(r["by_rule"]["cloud-on-request"]["requests"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_recording_keeps_no_prompt_text() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    let gw = start_gateway(&recording_policy(&up.base("ok"), &log, "hash"), KEY).await;
    assert_eq!(
        chat(&gw, ask("auto", "my secret plan"), &[]).await.status,
        200
    );
    let rows = lines_when_ready(&log, 1);
    assert_eq!(rows.len(), 1);
    let text = std::fs::read_to_string(&log).expect("read");
    assert!(!text.contains("secret"), "{text}");
    assert!(rows[0]["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.starts_with("sha256:")));
}

/// A row is written when the request is settled, with what it cost: the answer's usage (cached
/// prompt tokens included), its cost at the cached input price, and how it ended; `replay`
/// prices the recorded tokens the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_carry_the_answers_usage_and_cost_and_replay_prices_them_alike() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    // $1 per input token, $0.10 per cached one, $2 per output token.
    let price = "{ input_per_million: 1000000, cached_input_per_million: 100000, output_per_million: 2000000 }";
    let policy_text = PolicyBuilder::standard(&up.base("usage-cached"))
        .model_field("cloud", "price", price)
        .recording(&log, Some("keep"))
        .default_route("cloud", &[])
        .render();
    let gw = start_gateway(&policy_text, KEY).await;
    let plain = chat(&gw, ask("auto", "hi"), &[("x-request-id", "plain")]).await;
    let mut body = ask("auto", "hi");
    body["stream"] = serde_json::json!(true);
    let streamed = chat(&gw, body, &[("x-request-id", "streamed")]).await;
    assert_eq!(
        (plain.status.as_u16(), streamed.status.as_u16()),
        (200, 200)
    );
    let rows = lines_when_ready(&log, 2);
    assert_eq!(rows.len(), 2);
    for id in ["plain", "streamed"] {
        let row = rows
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no row for {id}: {rows:?}"));
        // 1000 prompt tokens, 900 of them cached, and 10 answer tokens:
        // 100 x $1 + 900 x $0.10 + 10 x $2.
        assert_eq!(row["usage"]["prompt_tokens"], 1000, "{row}");
        assert_eq!(row["usage"]["completion_tokens"], 10, "{row}");
        assert_eq!(row["usage"]["prompt_tokens_details"]["cached_tokens"], 900);
        assert_eq!(row["cost_usd"], 210.0, "{row}");
        assert_eq!(row["result"]["status"], "200");
        assert_eq!(row["result"]["model"], "cloud");
        assert_eq!(row["result"]["usage_estimated"], false);
        assert_eq!(row["decision"]["model"], "cloud");
    }

    let r = replay(tmp.path(), &policy_text, &log);
    assert_eq!(r["requests"], 2);
    assert_eq!(r["cost_usd"], 420.0, "{r}");
}

/// A log written under a policy without sticky routes names each `auto` request's conversation
/// (a key; neither the `x-switchyard-session` value nor any text), and `replay` of a sticky
/// version of the policy follows pins by it: the second turn, which the header alone ties to
/// the first, stays on the model that answered the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_policy_replays_over_a_log_that_a_policy_without_pins_wrote() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    let serving = recording_policy(&up.base("ok"), &log, "hash");
    let gw = start_gateway(&serving, KEY).await;
    let session = ("x-switchyard-session", "chat-7f3a");
    let turns = [
        (
            ask("auto", "plan a trip"),
            vec![session, ("x-switchyard-tags", "premium")],
        ),
        (ask("auto", "and the hotels"), vec![session]),
        (ask("auto", "another chat"), vec![]),
    ];
    for (body, headers) in turns {
        assert_eq!(chat(&gw, body, &headers).await.status, 200);
    }
    let rows = lines_when_ready(&log, 3);
    let sessions: Vec<&str> = rows
        .iter()
        .map(|r| r["session"].as_str().unwrap_or_else(|| panic!("{r}")))
        .collect();
    assert!(sessions
        .iter()
        .all(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_eq!(
        sessions[0], sessions[1],
        "the header names the conversation"
    );
    assert_ne!(sessions[0], sessions[2]);
    let text = std::fs::read_to_string(&log).expect("read");
    assert!(!text.contains("chat-7f3a"), "{text}");
    // Served without pins: the second turn took the default route.
    assert_eq!(rows[1]["decision"]["model"], "cloud");

    let as_served = replay(tmp.path(), &serving, &log);
    assert_eq!(as_served["by_model"]["local-echo"]["requests"], 1);
    assert!(as_served["sticky"].is_null());
    let sticky = PolicyBuilder::standard(&up.base("ok"))
        .rule("premium", "{ tags: [premium] }", "local-echo", &[])
        .rule_field("premium", "sticky", "true")
        .render();
    let r = replay(tmp.path(), &sticky, &log);
    assert_eq!(r["by_model"]["local-echo"]["requests"], 2, "{r}");
    assert_eq!(r["by_rule"]["premium"]["requests"], 2, "{r}");
    assert_eq!(
        r["sticky"],
        serde_json::json!({"hit": 1, "new": 2, "overridden": 0})
    );
}

/// The request log holds routing decisions, which `replay` reads again as chats: an embedding
/// (no chat model could answer it) is settled and counted, but not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_is_not_logged() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    let policy_text = PolicyBuilder::standard(&up.base("ok"))
        .model_field("cloud", "embeddings", "true")
        .recording(&log, Some("keep"))
        .render();
    let gw = start_gateway(&policy_text, KEY).await;
    let embedding = request(
        "POST",
        &format!("{}/v1/embeddings", gw.url),
        r#"{"model": "cloud", "input": "first question"}"#.to_string(),
        &[
            ("content-type", "application/json"),
            ("x-request-id", "embedding"),
        ],
    )
    .await;
    assert_eq!(embedding.status, 200);
    let tokens = r#"switchyard_tokens_total{direction="input",model="cloud"}"#;
    assert_eq!(metric(&gw, tokens).await, 2.0);
    let answered = chat(&gw, ask("auto", "second"), &[("x-request-id", "chat")]).await;
    assert_eq!(answered.status, 200);
    // Rows are written in the order the requests were settled: the chat's is the first.
    let rows = lines_when_ready(&log, 1);
    assert_eq!(rows[0]["request_id"], "chat", "{rows:?}");
}

/// What a request needed of its model, some of which its body no longer says once it is read as
/// a chat (a Responses request's reasoning items), is logged, so that `replay` sends it where
/// `serve` did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_routes_a_request_by_what_it_needed() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    let policy_text = PolicyBuilder::standard(&up.base("ok"))
        .model(
            "responses-model",
            &[
                ("kind", "openai"),
                ("base_url", &quoted(&up.base("ok"))),
                ("api_key", &quoted("${CLOUD_KEY}")),
                ("responses", "true"),
            ],
        )
        .recording(&log, Some("keep"))
        .default_route("cloud", &["responses-model"])
        .render();
    let gw = start_gateway(&policy_text, KEY).await;
    let agent = serde_json::json!({"model": "auto", "input": [
        {"type": "message", "role": "user", "content": "Fix the parser"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
        {"type": "message", "role": "user", "content": "Now add a test"}]});
    let r = request(
        "POST",
        &format!("{}/v1/responses", gw.url),
        agent.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "responses-model");
    let rows = lines_when_ready(&log, 1);
    assert_eq!(rows[0]["needs"], serde_json::json!(["responses"]));
    let r = replay(tmp.path(), &policy_text, &log);
    assert_eq!(r["requests"], 1);
    assert_eq!(r["by_model"]["responses-model"]["requests"], 1, "{r}");
}
